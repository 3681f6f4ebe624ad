//! The framer under arbitrary chunking and limits, through both its APIs, matches the reference
//! model in lines, overlong reports and consumed counts, and never holds more than its capacity.
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

fuzz_target!(|case: (Vec<u8>, Vec<u16>, u8, u8)| {
    let (input, cuts, storage, max) = case;
    let storage = usize::from(storage) % 64 + 1;
    let max = usize::from(max) % storage; // at most capacity (storage - 1)
    let expect = frame(&input, max);

    // Push API: `consumed` ends exactly after the first `\n`, or takes everything.
    let mut f = LineFramer::new(vec![0u8; storage]);
    f.set_max_line(max);
    let mut got = Vec::new();
    for r in pieces(input.len(), &cuts) {
        let mut chunk = &input[r];
        while !chunk.is_empty() {
            let want = chunk
                .iter()
                .position(|&b| b == b'\n')
                .map_or(chunk.len(), |i| i + 1);
            let fed = f.feed(chunk);
            assert_eq!(fed.consumed, want);
            record(&mut got, fed.frame);
            chunk = &chunk[want..];
            assert!(f.buffered() <= f.capacity());
        }
    }
    if let Some(t) = f.finish() {
        got.push(Event::Tail(t.to_vec()));
    }
    assert_eq!(got, expect, "feed");

    // Read-in-place API.
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
        }
    }
    if let Some(t) = f.finish() {
        got.push(Event::Tail(t.to_vec()));
    }
    assert_eq!(got, expect, "spare/commit");
});
