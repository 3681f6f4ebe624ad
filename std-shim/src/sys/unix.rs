//! The seam on Unix-like systems; the contracts are in `mod.rs`.

pub(crate) use std::os::fd::AsFd as AsSocket;

use socket2::Socket;
use std::io;

pub(super) fn is_out_of_descriptors(code: i32) -> bool {
    matches!(code, libc::EMFILE | libc::ENFILE)
}

pub(super) fn is_out_of_resources(code: i32) -> bool {
    matches!(
        code,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

pub(super) fn set_address_reuse(socket: &Socket, rebind_past_time_wait: bool) -> io::Result<()> {
    socket.set_reuse_address(rebind_past_time_wait)
}

#[cfg(target_os = "freebsd")]
pub(super) fn set_port_sharing(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port_lb(true)
}

#[cfg(not(any(target_os = "freebsd", target_os = "solaris", target_os = "illumos")))]
pub(super) fn set_port_sharing(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(any(target_os = "solaris", target_os = "illumos"))]
pub(super) fn set_port_sharing(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "this system has no SO_REUSEPORT: sockets cannot share a port here",
    ))
}
