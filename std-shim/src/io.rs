//! The `embedded_io` view of a `TcpStream` that the core's blocking driver serves.
//!
//! `embedded-io-adapters`' `FromStd` would do the plain part, but it maps a timed-out read to
//! `Other` and has no way to tell a graceful shutdown from a peer's EOF. This adapter does both in
//! the same few lines: a timeout becomes `TimedOut`, and a read that returns 0 while the server
//! drains becomes a [`Draining`] error, so the connection thread can answer a partial line with
//! `error: shutting down` instead of transforming it. `Interrupted` passes through; the driver
//! retries it.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};

/// A connection's stream, seen through `embedded_io`.
pub(crate) struct Conn<'a> {
    pub(crate) stream: &'a TcpStream,
    pub(crate) draining: &'a AtomicBool,
}

/// The marker error a read returns at EOF while the server is draining.
#[derive(Debug)]
pub(crate) struct Draining;

impl std::fmt::Display for Draining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("server is shutting down")
    }
}
impl std::error::Error for Draining {}

/// Whether `e` is the drain marker.
pub(crate) fn is_draining(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Draining>())
}

/// Whether `e` is a socket timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO` expiring).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl embedded_io::ErrorType for Conn<'_> {
    type Error = io::Error;
}

impl embedded_io::Read for Conn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, io::Error> {
        match self.stream.read(buf) {
            Ok(0) if !buf.is_empty() && self.draining.load(Ordering::Acquire) => {
                Err(io::Error::other(Draining))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::Error::new(io::ErrorKind::TimedOut, e))
            }
            other => other,
        }
    }
}

impl embedded_io::Write for Conn<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, io::Error> {
        match self.stream.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::Error::new(io::ErrorKind::TimedOut, e))
            }
            other => other,
        }
    }
    fn flush(&mut self) -> Result<(), io::Error> {
        Ok(())
    }
}
