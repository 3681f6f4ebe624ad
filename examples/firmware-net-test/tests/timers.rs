//! The session's timers as the network firmware drives them under QEMU, with each one at 2 s
//! (feature `_test-timers`; the image's own are 60 s idle, 30 s write stall, 30 s linger): the
//! glue must close exactly as the session says, and bound how long a peer can hold a socket.

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use upcase_firmware_net_test::{Guest, build_image};

/// Each timer of the `_test-timers` image.
const TIMER: Duration = Duration::from_secs(2);
/// How late a timer may fire: the guest's clock, a sleep of up to 1.34 s, and a loaded host.
const SLACK: Duration = Duration::from_secs(8);

fn boot() -> Guest {
    Guest::boot(&build_image("test-timers", &["_test-timers"]), &[])
}

/// Reads until the end of stream; returns the bytes and when the end came.
fn read_to_end(s: &mut std::net::TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to the end of stream");
    (got, Instant::now())
}

/// The close reason of the `closed:` line after `mark`.
fn reason(guest: &mut Guest, mark: usize) -> String {
    let line = guest.line_since(mark, "closed:");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("reason="))
        .unwrap_or_default()
        .to_string()
}

/// A client that goes silent: a partial line is answered with `error: idle timeout`, then the
/// FIN; with nothing sent, the FIN alone. Neither comes before the idle timeout.
#[test]
fn a_silent_client_is_closed_at_the_idle_timeout() {
    let mut guest = boot();
    for (sent, want) in [
        (&b"half a li"[..], &b"error: idle timeout\n"[..]),
        (b"", b""),
    ] {
        let mark = guest.mark();
        let mut s = guest.connect();
        s.write_all(sent).unwrap();
        let start = Instant::now();
        let (got, end) = read_to_end(&mut s);
        assert_eq!(got, want, "after {:?}", String::from_utf8_lossy(sent));
        let waited = end - start;
        assert!(
            waited >= TIMER - Duration::from_millis(100) && waited <= TIMER + SLACK,
            "closed after {waited:?}"
        );
        assert_eq!(reason(&mut guest, mark), "idle_timeout");
    }
}

/// After the server's FIN, a client that keeps its side open for ever holds the socket only
/// for the linger time: then the guest resets it and the socket serves again. (smoltcp alone
/// would wait in FIN-WAIT-2 for as long as the peer answers.)
#[test]
fn a_client_that_never_closes_is_let_go_after_the_linger() {
    let mut guest = boot();
    let mark = guest.mark();
    let mut s = guest.connect();
    s.write_all(b"x\n").unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"X\n");
    // The idle timeout sends the FIN; this client reads it and keeps its socket open.
    let (rest, fin) = read_to_end(&mut s);
    assert_eq!(rest, b"");
    let (closed, released) = guest.line_since_at(mark, "closed:");
    assert!(closed.contains(" reason=idle_timeout "), "{closed}");
    let held = released.saturating_duration_since(fin);
    assert!(
        held >= TIMER - Duration::from_millis(100) && held <= TIMER + SLACK,
        "the socket was released {held:?} after the FIN"
    );
    // Every socket serves again: 4 clients at once get their replies.
    let mut clients: Vec<_> = (0..4).map(|_| guest.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("client {i}\n").as_bytes()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = vec![0u8; 9];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, format!("CLIENT {i}\n").as_bytes());
    }
    drop(s);
}

/// A client that sends and never reads: once QEMU's own buffers are full (about 8.9 MB of
/// replies, README), the transmit ring stays full, the write-stall timer runs, and the guest
/// gives up the replies and resets the connection.
#[test]
fn a_client_that_never_reads_is_reset_at_the_write_stall() {
    let mut guest = boot();
    let mark = guest.mark();
    let s = guest.connect();
    // Replies three times as long as the requests, so QEMU's buffers fill three times as fast.
    let line = ["\u{390}".repeat(127), "\n".to_string()]
        .concat()
        .into_bytes();
    let chunk = line.repeat(64);
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let writer = thread::spawn(move || {
        let mut written = 0usize;
        loop {
            match w.write(&chunk) {
                Ok(n) => written += n,
                Err(e) => return (written, e.kind()),
            }
        }
    });
    assert_eq!(reason(&mut guest, mark), "write_stall");
    // The guest is done with it; end the writer (whether or not QEMU passed the reset on).
    let _ = s.shutdown(std::net::Shutdown::Both);
    let (written, error) = writer.join().unwrap();
    eprintln!(
        "the client wrote {:.1} MB before the stall was detected (then {error:?})",
        written as f64 / 1e6
    );
}
