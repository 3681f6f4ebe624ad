//! The platform seam: everything that differs between Unix and Windows, as small named functions
//! with one contract on every system. The rest of the crate calls these and tests no
//! `cfg(unix)` or `cfg(windows)` itself (the Linux-only UDP batching in `udp.rs` aside, which
//! is an optimisation with a portable fallback, not a difference of behaviour).
//!
//! Each function documents what it maps to on each system. `unix.rs` serves Linux, macOS, the
//! BSDs and the other Unix-likes; `windows.rs` serves Windows (Winsock 2).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

#[cfg(not(any(unix, windows)))]
compile_error!("upcase-std needs the sockets of a Unix-like system or of Windows");

use socket2::Socket;
use std::io;

/// The trait of a borrowed socket that `socket2::SockRef` can wrap: `AsFd` on Unix, `AsSocket`
/// on Windows. Every `std` and `mio` socket type implements it on both.
pub(crate) use imp::AsSocket;

/// Whether `e` says the process or the system ran out of socket handles: `EMFILE` or `ENFILE`
/// on Unix, `WSAEMFILE` (10024) on Windows. It frees up with time (a connection closes), so
/// retrying at once would spin.
pub(crate) fn is_out_of_descriptors(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(imp::is_out_of_descriptors)
}

/// Whether `e` says a resource that frees up with time ran out: socket handles (see
/// [`is_out_of_descriptors`]) or kernel memory (`ENOBUFS`, `ENOMEM` on Unix; `WSAENOBUFS`
/// (10055) on Windows, which Winsock also reports when it is out of handles). An `accept` that
/// fails so must back off instead of retrying at once.
pub(crate) fn is_out_of_resources(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(imp::is_out_of_resources)
}

/// Sets how `socket`, not yet bound, shares its address with other sockets.
///
/// - Unix: `SO_REUSEADDR` set to `rebind_past_time_wait`, which lets a TCP listener bind while
///   connections of an earlier one linger in `TIME_WAIT`. Pass `false` for UDP, where the option
///   would let a second server take over the port.
/// - Windows: `SO_REUSEADDR` is never set (there it lets a socket bind a port that another one
///   is actively using), and `SO_EXCLUSIVEADDRUSE` is set on every socket, so that no other
///   socket can take this one's address over either. `rebind_past_time_wait` has no equivalent:
///   the price of exclusive use is that Windows then counts connections of an earlier listener
///   on the port, `TIME_WAIT` included, so a restart right after a drain may be refused
///   ("address in use") until those connections are gone (libuv sets neither option for that
///   reason, and is open to the takeover).
///
/// # Errors
///
/// What `setsockopt` says.
pub(crate) fn set_address_reuse(socket: &Socket, rebind_past_time_wait: bool) -> io::Result<()> {
    imp::set_address_reuse(socket, rebind_past_time_wait)
}

/// Whether [`set_port_sharing`] can succeed on this system: false on Windows, and on the few
/// Unix-likes without `SO_REUSEPORT` (Solaris, illumos).
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "ServerConfig::validate should refuse reuse_port without it"
    )
)]
pub(crate) const PORT_SHARING: bool = cfg!(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos"))
));

/// Lets several sockets, of this process or others, bind the same address, with the system
/// spreading connections and datagrams between them: `SO_REUSEPORT` on Linux, macOS and the
/// other BSDs, `SO_REUSEPORT_LB` on FreeBSD (where plain `SO_REUSEPORT` shares the port but does
/// not spread the load).
///
/// # Errors
///
/// An error of kind [`io::ErrorKind::Unsupported`] where [`PORT_SHARING`] is false (Windows has
/// no such option), and what `setsockopt` says elsewhere.
pub(crate) fn set_port_sharing(socket: &Socket) -> io::Result<()> {
    imp::set_port_sharing(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Type};
    use std::net::SocketAddr;

    fn socket(ty: Type, proto: Protocol) -> Socket {
        Socket::new(Domain::IPV4, ty, Some(proto)).unwrap()
    }

    fn loopback() -> socket2::SockAddr {
        "127.0.0.1:0".parse::<SocketAddr>().unwrap().into()
    }

    /// The error numbers each system documents for each class, and some that are not in it.
    #[cfg(unix)]
    const CLASSES: &[(i32, bool, bool)] = &[
        // (error, out of descriptors, out of resources)
        (libc::EMFILE, true, true),
        (libc::ENFILE, true, true),
        (libc::ENOBUFS, false, true),
        (libc::ENOMEM, false, true),
        (libc::ECONNABORTED, false, false),
        (libc::EAGAIN, false, false),
        (libc::EINTR, false, false),
        (libc::EPERM, false, false),
    ];
    #[cfg(windows)]
    const CLASSES: &[(i32, bool, bool)] = &[
        (10024, true, true),   // WSAEMFILE
        (10055, false, true),  // WSAENOBUFS
        (10053, false, false), // WSAECONNABORTED
        (10054, false, false), // WSAECONNRESET
        (10035, false, false), // WSAEWOULDBLOCK
        (24, false, false),    // EMFILE's number, which Winsock never reports
    ];

    #[test]
    fn error_classes_follow_the_systems_documented_numbers() {
        for &(code, descriptors, resources) in CLASSES {
            let e = io::Error::from_raw_os_error(code);
            assert_eq!(is_out_of_descriptors(&e), descriptors, "{code}: {e}");
            assert_eq!(is_out_of_resources(&e), resources, "{code}: {e}");
        }
        let not_os = io::Error::new(io::ErrorKind::OutOfMemory, "not from the system");
        assert!(!is_out_of_resources(&not_os) && !is_out_of_descriptors(&not_os));
    }

    /// The hijack that `SO_REUSEADDR` allows on Windows: a second socket asking to share the
    /// address must not get it, on any system, TCP or UDP.
    #[test]
    fn a_bound_address_cannot_be_taken_over_by_a_socket_that_asks_to_share_it() {
        for (ty, proto, rebind) in [
            (Type::STREAM, Protocol::TCP, true),
            (Type::DGRAM, Protocol::UDP, false),
        ] {
            let first = socket(ty, proto);
            set_address_reuse(&first, rebind).unwrap();
            first.bind(&loopback()).unwrap();
            if proto == Protocol::TCP {
                first.listen(8).unwrap();
            }
            let addr = first.local_addr().unwrap();
            let thief = socket(ty, proto);
            thief.set_reuse_address(true).unwrap();
            let err = thief.bind(&addr).unwrap_err();
            // Windows says WSAEACCES when the holder has exclusive use, as ours has.
            let expected = if cfg!(windows) {
                io::ErrorKind::PermissionDenied
            } else {
                io::ErrorKind::AddrInUse
            };
            assert_eq!(err.kind(), expected, "{proto:?}: {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn unix_sets_so_reuseaddr_as_asked() {
        for on in [true, false] {
            let s = socket(Type::STREAM, Protocol::TCP);
            set_address_reuse(&s, on).unwrap();
            assert_eq!(s.reuse_address().unwrap(), on);
        }
    }

    #[test]
    fn port_sharing_lets_two_sockets_bind_one_address_or_says_it_cannot() {
        let first = socket(Type::DGRAM, Protocol::UDP);
        let shared = set_port_sharing(&first);
        assert_eq!(shared.is_ok(), PORT_SHARING, "{shared:?}");
        match shared {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::Unsupported);
                assert!(e.to_string().contains("SO_REUSEPORT"), "{e}");
                return;
            }
        }
        first.bind(&loopback()).unwrap();
        let second = socket(Type::DGRAM, Protocol::UDP);
        set_port_sharing(&second).unwrap();
        second.bind(&first.local_addr().unwrap()).unwrap();
    }
}
