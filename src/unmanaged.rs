//! Where no systemd runs (Windows): no socket is ever inherited and no manager is notified. The
//! same names as `activation` and `notify`, so `serve` reads the same on every system.

use std::net::{TcpListener, UdpSocket};
use upcase_std::ServerCounters;

/// Inherited sockets: never any here.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    pub(crate) tcp: Vec<TcpListener>,
    pub(crate) udp: Vec<UdpSocket>,
    pub(crate) described: Vec<String>,
}

/// `Ok(None)`: socket activation is systemd's.
pub(crate) fn inherited() -> Result<Option<Inherited>, std::io::Error> {
    Ok(None)
}

/// A service manager's readiness socket: never one here.
#[derive(Debug)]
pub(crate) enum Notifier {}

impl Notifier {
    /// `None`: `NOTIFY_SOCKET` is systemd's.
    pub(crate) fn from_env() -> Option<Self> {
        None
    }

    pub(crate) fn notify(&self, _state: &str) {
        match *self {}
    }
}

/// The `STATUS=` value; never sent here.
pub(crate) fn status(doing: &str, c: &ServerCounters) -> String {
    format!("STATUS={doing}: lines={}", c.lines)
}
