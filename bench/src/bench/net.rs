//! Connection helpers: opening a TCP connection with the run's limits, and an I/O failure told
//! in words, redis-benchmark style.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An I/O error in words, without the `(os error N)` suffix: `Connection refused`.
pub(super) fn words(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Why a connection to `addr` could not be made, redis-benchmark style.
pub(super) fn cannot_connect(addr: SocketAddr, e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
            "Could not connect to {addr}: no answer within {:.1} s",
            timeout.as_secs_f64()
        ),
        _ => format!("Could not connect to {addr}: {}", words(e)),
    }
}

/// Why connection number `conn` stopped after `done` verified replies.
pub(super) fn broken(conn: usize, done: u64, e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            format!("connection {conn}: the server closed the connection after {done} replies")
        }
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
            "connection {conn}: no reply within {:.1} s (after {done} replies)",
            timeout.as_secs_f64()
        ),
        _ => format!("connection {conn}: {} (after {done} replies)", words(e)),
    }
}

/// A TCP connection to `addr` with `TCP_NODELAY`, within `timeout`, whose every read and write
/// gives up after `timeout`.
pub(super) fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}
