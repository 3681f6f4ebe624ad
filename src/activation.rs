//! Socket activation (systemd's `sd_listen_fds`): the sockets a service manager opened for this
//! process, checked and handed to `upcase-std` as std sockets.
//!
//! The protocol: `LISTEN_PID` is this process's id, `LISTEN_FDS` the number N of sockets, passed
//! as file descriptors 3 to 3 + N − 1, and `LISTEN_FDNAMES` (optional) their names, separated by
//! `:`. Variables meant for another process (a `LISTEN_PID` that is not ours) are ignored, as
//! `sd_listen_fds` does.

use socket2::{Socket, Type};
use std::fmt;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;
/// More than any service manager passes; a bigger `LISTEN_FDS` is a corrupt environment.
const MAX_FDS: u32 = 4096;

/// The sockets a service manager passed, sorted by kind.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    /// Listening TCP sockets.
    pub(crate) tcp: Vec<TcpListener>,
    /// Bound UDP sockets.
    pub(crate) udp: Vec<UdpSocket>,
    /// One line per socket, for the log: descriptor, name, kind and address.
    pub(crate) described: Vec<String>,
}

/// Why the inherited sockets cannot be served.
#[derive(Debug)]
pub(crate) enum ActivationError {
    /// `LISTEN_PID` or `LISTEN_FDS` is not a number (or `LISTEN_FDS` is absurdly large).
    Environment {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A descriptor is not an open socket.
    NotASocket {
        /// The descriptor.
        fd: RawFd,
        /// Its name from `LISTEN_FDNAMES`.
        name: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A socket that upcase cannot serve: not a listening TCP or a bound UDP socket over IPv4
    /// or IPv6.
    Misfit {
        /// The descriptor.
        fd: RawFd,
        /// Its name from `LISTEN_FDNAMES`.
        name: String,
        /// What it is instead.
        found: String,
    },
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment { var, value } => write!(
                f,
                "socket activation: {var}={value:?} is not a valid count or process id"
            ),
            Self::NotASocket { fd, name, source } => write!(
                f,
                "socket activation: descriptor {fd} ({name}) is not a socket: {source}"
            ),
            Self::Misfit { fd, name, found } => write!(
                f,
                "socket activation: descriptor {fd} ({name}) is {found}; upcase serves \
                 listening TCP sockets (ListenStream=, Accept=no) and UDP sockets \
                 (ListenDatagram=) over IPv4 or IPv6"
            ),
        }
    }
}

impl std::error::Error for ActivationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NotASocket { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The inherited sockets, or `None` when no service manager passed any to this process.
///
/// Takes ownership of descriptors 3 to 3 + `LISTEN_FDS` − 1 and marks them close-on-exec. It
/// does not clear the variables (that would need `unsafe` in a threaded process); a child
/// process would ignore them anyway, since `LISTEN_PID` is not its id.
pub(crate) fn inherited() -> Result<Option<Inherited>, ActivationError> {
    let var = |name: &'static str| std::env::var(name).ok().map(|v| (name, v));
    let Some((pid_var, pid)) = var("LISTEN_PID") else {
        return Ok(None);
    };
    let bad = |(var, value): (&'static str, String)| ActivationError::Environment { var, value };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| bad((pid_var, pid.clone())))?;
    if pid != std::process::id() {
        tracing::debug!(
            listen_pid = pid,
            "LISTEN_PID is another process's: not socket-activated"
        );
        return Ok(None);
    }
    let Some((fds_var, fds)) = var("LISTEN_FDS") else {
        return Ok(None);
    };
    let n: u32 = match fds.trim().parse() {
        Ok(n) if n <= MAX_FDS => n,
        _ => return Err(bad((fds_var, fds))),
    };
    if n == 0 {
        return Ok(None);
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut inherited = Inherited::default();
    for i in 0..n {
        let fd = FIRST_FD + i as RawFd;
        let name = names
            .get(i as usize)
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| "unnamed".to_owned());
        take(fd, name, &mut inherited)?;
    }
    Ok(Some(inherited))
}

/// Takes descriptor `fd`, checks what it is, and files it under TCP or UDP.
fn take(fd: RawFd, name: String, into: &mut Inherited) -> Result<(), ActivationError> {
    // SAFETY: the service manager passed descriptors 3..3+LISTEN_FDS to this process (LISTEN_PID
    // is our id), nothing else in the process has taken them, and each is taken once, here.
    // A descriptor that turns out not to be an open socket is given back below, not closed.
    #[allow(unsafe_code)]
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let ty = match socket.r#type() {
        Ok(ty) => ty,
        Err(source) => {
            // Not ours to close: it may not be open at all, or not be a socket.
            let _ = socket.into_raw_fd();
            return Err(ActivationError::NotASocket { fd, name, source });
        }
    };
    let misfit = |found: String| ActivationError::Misfit {
        fd,
        name: name.clone(),
        found,
    };
    let local = socket.local_addr().ok();
    let addr: Option<SocketAddr> = local.as_ref().and_then(socket2::SockAddr::as_socket);
    let kind = match ty {
        Type::STREAM => "stream",
        Type::DGRAM => "datagram",
        #[cfg(target_os = "linux")]
        Type::SEQPACKET => "seqpacket",
        _ => "other",
    };
    let Some(addr) = addr else {
        let family = match &local {
            Some(a) if a.is_unix() => "a Unix",
            _ => "a non-IP",
        };
        return Err(misfit(format!("{family} {kind} socket")));
    };
    #[cfg(target_os = "linux")]
    match socket.protocol() {
        Ok(None | Some(socket2::Protocol::TCP | socket2::Protocol::UDP)) | Err(_) => {}
        Ok(Some(p)) => return Err(misfit(format!("an IP {kind} socket of protocol {p:?}"))),
    }
    let marked = socket.set_cloexec(true);
    if let Err(e) = marked {
        tracing::warn!(fd, error = %e, "cannot mark an inherited socket close-on-exec");
    }
    match ty {
        Type::STREAM => {
            #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
            if !socket.is_listener().unwrap_or(true) {
                return Err(misfit(format!(
                    "a connected TCP socket ({addr}; is the unit's Accept=yes?)"
                )));
            }
            into.described
                .push(format!("fd={fd} name={name} tcp {addr}"));
            into.tcp.push(socket.into());
        }
        Type::DGRAM => {
            into.described
                .push(format!("fd={fd} name={name} udp {addr}"));
            into.udp.push(socket.into());
        }
        _ => return Err(misfit(format!("an IP {kind} socket ({addr})"))),
    }
    Ok(())
}
