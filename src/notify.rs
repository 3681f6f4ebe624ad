//! The service manager's readiness protocol (systemd's `sd_notify`): one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET`. `READY=1` once every socket
//! is served, `STOPPING=1` when the drain begins, `STATUS=` with the counters in between. The
//! counters are a snapshot (`CountersHandle::snapshot`): replies whose sends a worker has not
//! yet seen complete are not in it; the log's `upcase stopped` line has the exact totals.
//!
//! A failed notification is logged and otherwise ignored: the server serves whether or not the
//! manager listens.

use std::os::unix::net::UnixDatagram;
use upcase_std::ServerCounters;

/// Where the notifications go.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    target: Target,
}

#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Abstract(std::os::unix::net::SocketAddr),
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names, or `None` when it is unset or empty, or names a
    /// socket this system cannot address (then with a warning).
    pub(crate) fn from_env() -> Option<Self> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
        let target = match bytes.first()? {
            b'/' => Target::Path(name.clone().into()),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            b'@' => {
                #[cfg(target_os = "android")]
                use std::os::android::net::SocketAddrExt;
                #[cfg(target_os = "linux")]
                use std::os::linux::net::SocketAddrExt;
                match std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..]) {
                    Ok(a) => Target::Abstract(a),
                    Err(e) => {
                        tracing::warn!(?name, error = %e, "NOTIFY_SOCKET: not a usable abstract socket name; not notifying");
                        return None;
                    }
                }
            }
            _ => {
                tracing::warn!(
                    ?name,
                    "NOTIFY_SOCKET: only Unix socket paths (and @abstract names on Linux) are supported; not notifying"
                );
                return None;
            }
        };
        match UnixDatagram::unbound() {
            Ok(socket) => Some(Self { socket, target }),
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY_SOCKET: cannot create a socket; not notifying");
                None
            }
        }
    }

    /// Sends `state` (`KEY=VALUE` lines) as one datagram.
    pub(crate) fn notify(&self, state: &str) {
        let sent = match &self.target {
            Target::Path(p) => self.socket.send_to(state.as_bytes(), p),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Target::Abstract(a) => self.socket.send_to_addr(state.as_bytes(), a),
        };
        match sent {
            Ok(_) => tracing::debug!(state, "notified the service manager"),
            Err(e) => tracing::warn!(error = %e, state, "cannot notify the service manager"),
        }
    }
}

/// The `STATUS=` value: what the server does, and the counters a status line has room for, in
/// the stop log's words.
pub(crate) fn status(doing: &str, c: &ServerCounters) -> String {
    format!(
        "STATUS={doing}: connections={} refused={} lines={} chunks={} overlong={} timeouts={} \
         datagrams={} dropped_datagrams={} bytes_in={} bytes_out={}",
        c.connections,
        c.refused,
        c.lines,
        c.chunks,
        c.overlong,
        c.timeouts,
        c.datagrams,
        c.udp_dropped.total(),
        c.bytes_in,
        c.bytes_out
    )
}
