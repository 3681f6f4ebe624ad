//! Address resolution and socket setup through `socket2`. No `socket2` type leaves this module.

use crate::config::{ConfigError, SocketOptions};
use crate::sys;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};

/// Why [`Server::bind`](crate::Server::bind) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BindError {
    /// The address could not be parsed or its host name could not be resolved.
    Resolve {
        /// The address as given.
        addr: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// A socket could not be created, configured, bound or put in listening mode.
    Socket {
        /// The resolved address.
        addr: SocketAddr,
        /// What the system said (for example "address already in use").
        source: io::Error,
    },
    /// The configuration cannot work.
    Config(ConfigError),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Resolve { addr, source } => write!(f, "cannot resolve {addr:?}: {source}"),
            // Windows' text for it does not say "in use": say it ourselves, on every system.
            Self::Socket { addr, source } if source.kind() == io::ErrorKind::AddrInUse => {
                write!(f, "cannot bind {addr}: address in use ({source})")
            }
            Self::Socket { addr, source } => write!(f, "cannot bind {addr}: {source}"),
            Self::Config(e) => write!(f, "invalid configuration: {e}"),
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Resolve { source, .. } | Self::Socket { source, .. } => Some(source),
            Self::Config(e) => Some(e),
        }
    }
}

impl From<ConfigError> for BindError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Resolves `host:port`; an empty host means all IPv4 interfaces (`0.0.0.0`).
/// Duplicate results are bound once.
pub(crate) fn resolve(spec: &str) -> Result<Vec<SocketAddr>, BindError> {
    let full = if spec.starts_with(':') {
        format!("0.0.0.0{spec}")
    } else {
        spec.to_owned()
    };
    let err = |source| BindError::Resolve {
        addr: spec.to_owned(),
        source,
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    // Every duplicate, not only adjacent ones (`Vec::dedup`), in the resolver's order.
    for a in full.to_socket_addrs().map_err(err)? {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(err(io::Error::new(io::ErrorKind::NotFound, "no address")));
    }
    Ok(addrs)
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol, cfg: &SocketOptions) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    // SO_REUSEADDR lets a TCP listener bind past connections in TIME_WAIT. On UDP it would let
    // a second server bind the same port and take its traffic, so it is never set there.
    // (Windows: exclusive address use on every socket instead; see sys.)
    sys::set_address_reuse(&socket, cfg.reuse_address && proto == Protocol::TCP)?;
    if cfg.reuse_port {
        sys::set_port_sharing(&socket)?;
    }
    if let (Some(only), SocketAddr::V6(_)) = (cfg.only_v6, addr) {
        socket.set_only_v6(only)?;
    }
    if let Some(size) = cfg.recv_buffer_size {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = cfg.send_buffer_size {
        socket.set_send_buffer_size(size)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A listening TCP socket with the configured options and backlog.
pub(crate) fn tcp_listener(
    addr: SocketAddr,
    cfg: &SocketOptions,
) -> Result<TcpListener, BindError> {
    let make = || {
        let s = socket(addr, Type::STREAM, Protocol::TCP, cfg)?;
        s.listen(i32::try_from(cfg.backlog).unwrap_or(i32::MAX))?;
        Ok(s.into())
    };
    make().map_err(|source| BindError::Socket { addr, source })
}

/// A bound UDP socket with the configured options.
pub(crate) fn udp_socket(addr: SocketAddr, cfg: &SocketOptions) -> Result<UdpSocket, BindError> {
    socket(addr, Type::DGRAM, Protocol::UDP, cfg)
        .map(Into::into)
        .map_err(|source| BindError::Socket { addr, source })
}

/// Per-connection options: `TCP_NODELAY` and keepalive. (The idle and write timeouts are kept
/// by the workers, since the sockets are non-blocking.)
pub(crate) fn configure_stream(stream: &impl sys::AsSocket, cfg: &SocketOptions) -> io::Result<()> {
    let stream = SockRef::from(stream);
    // Urgent data is data, in its place in the stream (PROTOCOL.md §2).
    stream.set_out_of_band_inline(true)?;
    stream.set_tcp_nodelay(cfg.nodelay)?;
    if let Some(k) = cfg.keepalive {
        let params = TcpKeepalive::new()
            .with_time(k.time)
            .with_interval(k.interval)
            .with_retries(k.retries);
        stream.set_tcp_keepalive(&params)?;
    }
    Ok(())
}

/// Whether an `accept` failed for want of file descriptors (`EMFILE`, `ENFILE`; Windows:
/// `WSAEMFILE`).
pub(crate) fn is_fd_exhaustion(e: &io::Error) -> bool {
    sys::is_out_of_descriptors(e)
}

/// Whether an `accept` failed for want of a resource that frees up with time: file descriptors
/// or kernel memory ([`sys::is_out_of_resources`]). Retrying at once would spin.
pub(crate) fn is_resource_exhaustion(e: &io::Error) -> bool {
    sys::is_out_of_resources(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_host_means_all_ipv4_interfaces() {
        assert_eq!(
            resolve(":1234").unwrap(),
            vec!["0.0.0.0:1234".parse().unwrap()]
        );
    }

    #[test]
    fn names_and_literals_resolve() {
        assert_eq!(
            resolve("[::1]:0").unwrap(),
            vec!["[::1]:0".parse().unwrap()]
        );
        assert!(
            resolve("localhost:1")
                .unwrap()
                .iter()
                .all(|a| a.ip().is_loopback())
        );
        assert!(matches!(resolve("no port"), Err(BindError::Resolve { .. })));
    }

    #[test]
    fn bind_errors_name_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let mut cfg = SocketOptions::new();
        cfg.reuse_address = false;
        let err = tcp_listener(addr, &cfg).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("cannot bind {addr}:")),
            "{err}"
        );
    }

    #[test]
    fn a_second_udp_bind_fails_unless_reuse_port_is_asked_for() {
        let cfg = SocketOptions::default();
        let first = udp_socket("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        let addr = first.local_addr().unwrap();
        let err = udp_socket(addr, &cfg).unwrap_err();
        let BindError::Socket { source, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
        if !sys::PORT_SHARING {
            return; // Windows: sys tests that asking for it fails
        }
        let mut shared = cfg;
        shared.reuse_port = true;
        let a = udp_socket("127.0.0.1:0".parse().unwrap(), &shared).unwrap();
        udp_socket(a.local_addr().unwrap(), &shared).unwrap();
    }
}
