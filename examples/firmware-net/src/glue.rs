//! The glue between smoltcp's sockets and `upcase-core`'s sans-IO machines. Lift this file
//! into your own firmware: it needs only `smoltcp` (features `socket-tcp`, `socket-udp`) and
//! `upcase-core`, and it is the whole of what serving the protocol takes. The interface, the
//! driver and the buffers stay yours.
//!
//! Call both functions after each `Interface::poll`, and poll again while they return
//! progress: that sends what they queued.

use core::net::SocketAddr;

use smoltcp::socket::{tcp, udp};
use upcase_core::{LoopGuard, Refusal, Session, Transform, transform_datagram};

/// Serves one TCP connection with its [`Session`], moving bytes both ways until neither can
/// move. Returns whether anything moved.
///
/// Replies go straight into the socket's transmit ring (`send(|ring| ...)`), with no staging
/// copy; input goes straight into the session's line storage (`recv_slice`). The peer's FIN
/// becomes `handle_eof`; once the session is done, the socket is closed (its FIN follows the
/// last reply). A socket with no connection is left alone: when `!socket.is_open()`, give the
/// slot a fresh session and `listen` again.
pub fn serve_tcp<B, T>(socket: &mut tcp::Socket<'_>, session: &mut Session<B, T>) -> bool
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    T: Transform,
{
    let mut moved = false;
    loop {
        // 1. Every reply that the input so far determines, into the TX ring.
        loop {
            let sent = socket.send(|ring| {
                let n = session.poll_transmit(ring);
                (n, (n, ring.len()))
            });
            match sent {
                Ok((0, room)) if room > 0 => break, // the session has nothing more to say
                Ok((0, _)) | Err(_) => return moved, // ring full (wait for ACKs), or not sending
                Ok(_) => moved = true,
            }
        }
        // 2. Every reply is queued: a finished session ends the connection.
        if session.is_done() {
            socket.close();
            return true;
        }
        // 3. Only then more input (so a client that does not read is not read either).
        match socket.recv_slice(session.recv_buffer()) {
            Ok(0) => return moved,
            Ok(n) => session.handle_recv(n),
            Err(tcp::RecvError::Finished) => session.handle_eof(),
            Err(_) => return moved, // not connected
        }
        moved = true;
    }
}

/// Why a datagram got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpDrop {
    /// The loop guard refused it (`PROTOCOL.md` §3.1).
    Refused(Refusal),
    /// The whole reply does not fit `reply`, and a reply is never truncated.
    TooLarge,
    /// The transmit ring had no room after all.
    NoRoom,
}

/// Answers the datagrams waiting on `socket`, each with one reply datagram, through `guard`.
/// Returns how many it handled, and calls `dropped` for each one left without a reply.
///
/// `local` is the socket's own address (for [`LoopGuard::check_source`]); `reply` holds one
/// reply, so its length is the longest reply sent; `now_ms` is any millisecond clock. A
/// datagram is taken only while two whole replies fit the transmit ring: the rest wait in the
/// receive ring for the next call.
pub fn serve_udp<T: Transform, const N: usize>(
    socket: &mut udp::Socket<'_>,
    transform: &mut T,
    guard: &mut LoopGuard<N>,
    local: SocketAddr,
    reply: &mut [u8],
    now_ms: u64,
    mut dropped: impl FnMut(UdpDrop),
) -> usize {
    let mut handled = 0;
    while socket.can_send()
        && socket.payload_send_capacity() - socket.send_queue() >= 2 * reply.len()
    {
        let Ok((request, meta)) = socket.peek() else {
            break;
        };
        let (peer, endpoint) = (SocketAddr::from(meta.endpoint), meta.endpoint);
        let verdict = guard
            .check_source(peer, local)
            .map_err(UdpDrop::Refused)
            .and_then(|()| {
                transform_datagram(transform, request, reply).map_err(|_| UdpDrop::TooLarge)
            })
            .and_then(|n| {
                guard
                    .check_reply(peer, request, &reply[..n], now_ms)
                    .map(|()| n)
                    .map_err(UdpDrop::Refused)
            });
        let _ = socket.recv(); // done with the request
        let sent = verdict.and_then(|n| {
            socket
                .send_slice(&reply[..n], endpoint)
                .map_err(|_| UdpDrop::NoRoom)
        });
        if let Err(why) = sent {
            dropped(why);
        }
        handled += 1;
    }
    handled
}
