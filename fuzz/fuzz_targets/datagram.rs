//! A datagram reply is exact, or the documented error with the exact needed length; never a
//! partial reply that looks like success.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcase_core::{DatagramError, Uppercase, transform_datagram};
use upcase_model::upper;

fuzz_target!(|case: (Vec<u8>, u16)| {
    let (input, cap) = case;
    let expect = upper(&input);
    let mut out = vec![0u8; usize::from(cap) % (input.len() * 3 + 2)];
    let mut t = Uppercase::new();
    match transform_datagram(&mut t, &input, &mut out) {
        Ok(n) => assert_eq!(&out[..n], &expect[..]),
        Err(DatagramError::ReplyTooLarge { needed }) => {
            assert!(out.len() < expect.len());
            assert_eq!(needed, expect.len());
        }
    }
    // The transform is reset for the next datagram.
    let mut big = [0u8; 8];
    assert_eq!(transform_datagram(&mut t, b"ok", &mut big), Ok(2));
});
