//! `LineFramer` driven through an arbitrary sequence of every public method, in any order and
//! with any counts: no panic, ever, and its invariants hold after each call. Whenever the line
//! limit is left alone and the storage keeps its size, what it hands out equals the reference
//! model for exactly the bytes it took.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use upcase_core::{Frame, LineFramer};
use upcase_model::{Event, frame};

#[derive(Debug, Arbitrary)]
enum Op {
    /// Write up to `take` input bytes into `spare`, then `commit(claim)`.
    Fill {
        take: u8,
        claim: u16,
    },
    Poll,
    Finish,
    Reset,
    SetMaxLine(u8),
    /// Swap in a storage of this many bytes.
    Replace(u8),
    Query,
}

fuzz_target!(|case: (u8, Vec<u8>, Vec<Op>)| {
    let (storage, input, ops) = case;
    let storage = usize::from(storage) % 48 + 1;
    let mut f = LineFramer::new(vec![0u8; storage]);
    let max = f.max_line();
    let mut rest = &input[..];
    let mut taken = Vec::new();
    let mut got = Vec::new();
    // The model holds while nothing changes the limit or drops input.
    let mut exact = true;
    for op in &ops {
        match *op {
            Op::Fill { take, claim } => {
                let spare = f.spare();
                let k = usize::from(take).min(spare.len()).min(rest.len());
                spare[..k].copy_from_slice(&rest[..k]);
                rest = &rest[k..];
                let accepted = usize::from(claim).min(spare.len());
                taken.extend_from_slice(&spare[..accepted]);
                let before = f.buffered();
                f.commit(usize::from(claim));
                assert_eq!(f.buffered() - before, accepted);
            }
            Op::Poll => match f.poll() {
                Frame::Line(l) => got.push(Event::Line(l.to_vec())),
                Frame::Overlong => got.push(Event::Overlong),
                Frame::Partial => {
                    // After a poll that found nothing, a partial line fits with a byte to spare
                    // (unless the framer is parked in an empty storage, which holds nothing).
                    assert!(f.buffered() <= f.capacity());
                    let parked = f.buffered() == 0 && f.capacity() == 0;
                    assert!(parked || !f.spare().is_empty());
                }
            },
            Op::Finish => {
                // The documented order: poll until `Partial`, then `finish`.
                loop {
                    match f.poll() {
                        Frame::Line(l) => got.push(Event::Line(l.to_vec())),
                        Frame::Overlong => got.push(Event::Overlong),
                        Frame::Partial => break,
                    }
                }
                if let Some(t) = f.finish() {
                    got.push(Event::Tail(t.to_vec()));
                }
                // Input after a finish starts a new stream; compare per stream.
                if exact {
                    assert_eq!(got, frame(&taken, max));
                }
                taken.clear();
                got.clear();
                exact = f.max_line() == max && f.capacity() + 1 == storage;
            }
            Op::Reset => {
                f.reset();
                assert!(f.is_empty());
                exact = false;
            }
            Op::SetMaxLine(m) => {
                f.set_max_line(usize::from(m));
                assert!(f.max_line() <= f.capacity());
                exact &= f.max_line() == max;
            }
            Op::Replace(size) => {
                let size = usize::from(size) % 64;
                let held = f.buffered();
                match f.replace_storage(vec![0u8; size]) {
                    Ok(_) => {
                        assert!(
                            size > held || (size == 0 && held == 0),
                            "an empty storage parks only an empty framer"
                        );
                        assert_eq!(f.buffered(), held);
                        exact &= size == storage;
                    }
                    Err(back) => assert!(back.len() <= held),
                }
            }
            Op::Query => {
                let _ = (f.capacity(), f.max_line(), f.buffered(), f.is_empty());
            }
        }
    }
});
