//! The seam on Windows (Winsock 2); the contracts are in `mod.rs`. The one `unsafe` of the
//! crate is here: `socket2` has no method for `SO_EXCLUSIVEADDRUSE`.

pub(crate) use std::os::windows::io::AsSocket;

use socket2::Socket;
use std::io;
use std::os::windows::io::AsRawSocket;

/// `WSAEMFILE`: no more socket handles.
const WSAEMFILE: i32 = 10024;
/// `WSAENOBUFS`: no buffer space, which is also what Winsock says when handles run out.
const WSAENOBUFS: i32 = 10055;

pub(super) fn is_out_of_descriptors(code: i32) -> bool {
    code == WSAEMFILE
}

pub(super) fn is_out_of_resources(code: i32) -> bool {
    matches!(code, WSAEMFILE | WSAENOBUFS)
}

pub(super) fn set_address_reuse(socket: &Socket, _rebind_past_time_wait: bool) -> io::Result<()> {
    use windows_sys::Win32::Networking::WinSock::{SO_EXCLUSIVEADDRUSE, SOL_SOCKET, setsockopt};
    let on: i32 = 1;
    let raw = usize::try_from(socket.as_raw_socket())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    #[allow(unsafe_code)]
    // SAFETY: `raw` is the handle of `socket`, which is borrowed, hence open, for the call;
    // `optval` points to an i32 that lives across the call and `optlen` is its size, as
    // SO_EXCLUSIVEADDRUSE (a BOOL) expects. setsockopt does not keep the pointer.
    let rc = unsafe {
        setsockopt(
            raw,
            SOL_SOCKET,
            SO_EXCLUSIVEADDRUSE,
            (&raw const on).cast::<u8>(),
            size_of::<i32>() as i32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn set_port_sharing(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "Windows has no SO_REUSEPORT: sockets cannot share a port there",
    ))
}
