//! The network firmware's TCP close path under QEMU, where the session's replies outgrow the
//! socket's transmit ring: the end of stream arrives while replies still wait for room, and every
//! one of them must still go out before the close.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;

use upcase_firmware_net_test::{Guest, build_image};
use upcase_model::{replies, upper};

/// The image's line limit (`sizes::MAX_LINE`).
const MAX_LINE: usize = 256;

/// Lines whose replies are three times as long (`ΐ`, 2 bytes, uppercases to 6), written at once
/// with the end of stream: the last lines are read with the FIN while the transmit ring is full.
/// A driver that took the end of stream as a reason to read again, with no room to write, would
/// spin and never send the rest (it did, with rings under 1.8 KB).
#[test]
fn replies_that_outgrow_the_ring_are_all_sent_before_the_close() {
    let mut guest = Guest::boot(&build_image("", &[]), &[]);
    for lines in [1usize, 7, 50, 200] {
        let line = "\u{390}".repeat(MAX_LINE / 2).into_bytes();
        assert_eq!(upper(&line).len(), 3 * MAX_LINE);
        let mut input = Vec::new();
        for _ in 0..lines {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let mark = guest.mark();
        let mut s = guest.connect();
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            w.write_all(&input).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
            input
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .unwrap_or_else(|e| panic!("{lines} lines: {e} after {} bytes", got.len()));
        let input = writer.join().unwrap();
        assert_eq!(got.len(), lines * (3 * MAX_LINE + 1), "{lines} lines");
        assert!(
            got == replies(&input, MAX_LINE),
            "{lines} lines: wrong bytes"
        );
        let closed = guest.line_since(mark, "closed:");
        assert!(closed.contains(" reason=eof "), "{closed}");
    }
}
