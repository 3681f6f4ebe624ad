//! What a TCP client has received, and when: the checks that server tests share.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::Instant;

/// Reads until exactly `n` more bytes have arrived, by `deadline`. Panics, naming how many did
/// arrive, on a timeout, an end of stream or an error: a server that withholds bytes the input
/// determines fails here. Leaves the stream's read timeout as it found it.
pub fn read_exactly(s: &mut TcpStream, n: usize, deadline: Instant) -> Vec<u8> {
    let timeout = s.read_timeout().ok().flatten();
    let mut got = vec![0u8; n];
    let mut have = 0;
    while have < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {have} of {n} bytes arrived in time; the server withholds the rest"
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut got[have..]) {
            Ok(0) => panic!("end of stream after {have} of {n} bytes"),
            Ok(k) => have += k,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {have} of {n} bytes: {e}"),
        }
    }
    s.set_read_timeout(timeout).unwrap();
    got
}

/// Reads until the peer closes its side, by `deadline` (the read timeout is set to what is left
/// before each read). Panics, naming how many bytes did arrive, on the deadline, a reset or any
/// other error: the close must be a clean end of stream. Leaves the stream's read timeout as it
/// found it.
pub fn read_to_eof(s: &mut TcpStream, deadline: Instant) -> Vec<u8> {
    let timeout = s.read_timeout().ok().flatten();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no end of stream in time: {} bytes arrived",
            out.len()
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "no clean end of stream after {} bytes: {e} ({:?})",
                out.len(),
                e.kind()
            ),
        }
    }
    s.set_read_timeout(timeout).unwrap();
    out
}

/// Fails if a byte has arrived that was not read yet, or the stream ended (without waiting):
/// the server sent more than the input determines.
pub fn assert_nothing_more(s: &mut TcpStream, context: &str) {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 256];
    let r = s.read(&mut b);
    s.set_nonblocking(false).unwrap();
    match r {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok(0) => panic!("{context}: end of stream too early"),
        Ok(n) => panic!(
            "{context}: {n} bytes more than the input determines: {:?}",
            String::from_utf8_lossy(&b[..n])
        ),
        Err(e) => panic!("{context}: {e}"),
    }
}
