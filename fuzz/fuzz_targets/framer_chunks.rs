//! The framer under arbitrary chunking and limits matches the reference model in lines and
//! overlong reports, never holds more than its capacity, and is unchanged by parking its partial
//! line in a small buffer between reads (as the std server does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcase_core::{Frame, LineFramer};
use upcase_model::{Event, frame, pieces};

fn record(events: &mut Vec<Event>, f: Frame<'_>) -> bool {
    match f {
        Frame::Line(l) => events.push(Event::Line(l.to_vec())),
        Frame::Overlong => events.push(Event::Overlong),
        Frame::Partial => return false,
    }
    true
}

fuzz_target!(|case: (Vec<u8>, Vec<u16>, u8, u8, bool)| {
    let (input, cuts, storage, max, park) = case;
    let storage = usize::from(storage) % 64 + 1;
    let max = usize::from(max) % storage; // at most capacity (storage - 1)
    let expect = frame(&input, max);

    let mut f = LineFramer::new(vec![0u8; storage]);
    f.set_max_line(max);
    let mut got = Vec::new();
    for r in pieces(input.len(), &cuts) {
        let mut chunk = &input[r];
        while !chunk.is_empty() {
            let spare = f.spare();
            assert!(!spare.is_empty(), "spare() must never be empty");
            let n = spare.len().min(chunk.len());
            spare[..n].copy_from_slice(&chunk[..n]);
            f.commit(n);
            chunk = &chunk[n..];
            while record(&mut got, f.poll()) {}
            assert!(f.buffered() <= f.capacity());
            if park {
                let big = f.replace_storage(vec![0u8; f.buffered() + 1]).unwrap();
                assert_eq!(big.len(), storage);
                f.replace_storage(big).unwrap();
            }
        }
    }
    if let Some(t) = f.finish() {
        got.push(Event::Tail(t.to_vec()));
    }
    assert_eq!(got, expect);
});
