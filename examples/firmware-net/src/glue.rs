//! The glue between smoltcp's sockets and `upcase-core`'s sans-IO machines. Lift this file
//! into your own firmware: it needs only `smoltcp` (features `socket-tcp`, `socket-udp`) and
//! `upcase-core`, and it is the whole of what serving the protocol takes. The interface, the
//! driver, the clock and the buffers stay yours; every rule (what to answer, the timers, how to
//! close) is the core's.
//!
//! After each `Interface::poll`, call [`serve_tcp`] for each TCP socket and [`serve_udp`] for
//! the UDP socket; while either returns `true`, call `Interface::poll` and then them again
//! (they queued data that only the next `poll` sends, or freed room it can fill). Then sleep
//! until the earliest of `Interface::poll_delay` and each session's `poll_timeout`.

use core::net::SocketAddr;

use smoltcp::socket::{tcp, udp};
use upcase_core::{Closing, DropReason, Responder, Session, Transform};

/// Serves one TCP connection with its [`Session`] at `now_ms`, exactly in the session's call
/// order: its timers, its replies, its close, then more input. Returns whether anything moved.
///
/// - Replies go straight into the socket's transmit ring (`send(|ring| ...)`), with no staging
///   copy, so the ring taking them is the transport taking them (`handle_sent`). A ring left
///   full by a reply that may go on is the transport blocking (`handle_blocked`), which runs
///   the session's write-stall timer.
/// - Input goes straight into the session's line storage (`recv_slice`), and only once every
///   reply so far is queued: a client that does not read is not read either.
/// - The close is the session's: `HalfClose` is `socket.close()` (smoltcp sends the FIN after
///   the ring, and keeps receiving); `DropAndHalfClose` and `Close` are `socket.abort()`
///   (smoltcp cannot drop what its ring holds, so the peer that reads nothing gets a reset),
///   except that `Close` leaves alone a socket whose peer has already closed its side: smoltcp
///   finishes that close by itself. During `Linger` the peer's input is read and dropped.
///
/// Give the session a linger timeout (`Timeouts::linger_ms`) above 0. smoltcp sends and
/// retransmits by itself after `close()`, but it never gives up on a peer that acknowledges
/// everything and never closes its side (FIN-WAIT-2 has no timer), so the linger is the bound:
/// a peer that has not closed when it runs out is reset. With 0, every close would be a reset.
///
/// A socket with no connection is left alone: when `!socket.is_open()`, give the slot a fresh
/// session and `listen` again.
pub fn serve_tcp<B, T>(
    socket: &mut tcp::Socket<'_>,
    session: &mut Session<B, T>,
    now_ms: u64,
) -> bool
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    T: Transform,
{
    if !socket.is_active() {
        return false; // listening, or closed: no connection to serve
    }
    session.handle_time(now_ms);
    let mut moved = false;
    loop {
        // 1. Every reply that the input so far determines, into the TX ring. `said_all`: the
        // session had room and wrote nothing more, so its replies so far are all queued.
        let (mut filled, mut said_all) = (false, false);
        while !session.is_done() {
            let sent = socket.send(|ring| {
                let n = session.poll_transmit(ring);
                (n, (n, ring.len()))
            });
            match sent {
                Ok((0, 0)) if filled => session.handle_blocked(), // full, and more may wait
                Ok((0, room)) => said_all = room > 0,
                Err(_) => {}
                Ok((n, room)) => {
                    session.handle_sent(n);
                    moved = true;
                    filled = n == room;
                    continue;
                }
            }
            break;
        }
        // 2. The close, once the session says so.
        match session.poll_close() {
            None => {}
            Some(Closing::HalfClose) => {
                socket.close();
                session.handle_half_closed();
                moved = true;
                continue; // it may be closed now, or linger
            }
            Some(Closing::DropAndHalfClose) => {
                socket.abort();
                session.handle_half_closed();
                return true;
            }
            Some(Closing::Linger) => {
                return match socket.recv_slice(session.recv_buffer()) {
                    Ok(0) | Err(tcp::RecvError::InvalidState) => moved,
                    Ok(n) => {
                        session.handle_recv(n); // dropped by the session
                        true
                    }
                    Err(tcp::RecvError::Finished) => {
                        session.handle_eof();
                        true
                    }
                };
            }
            Some(Closing::Close) => {
                if socket.may_recv() {
                    socket.abort(); // the peer has not closed: the session's timer ran out
                    return true;
                }
                return moved;
            }
        }
        // 3. Only then more input, and only once every reply so far is queued: a peer that
        // does not read is not read either (and an end of stream is taken once).
        if !said_all || !session.is_open() {
            return moved;
        }
        match socket.recv_slice(session.recv_buffer()) {
            Ok(0) | Err(tcp::RecvError::InvalidState) => return moved,
            Ok(n) => session.handle_recv(n),
            Err(tcp::RecvError::Finished) => session.handle_eof(),
        }
        moved = true;
    }
}

/// Answers the datagrams waiting on `socket`, each with one reply datagram or none, through
/// `responder` (the whole UDP turn of `PROTOCOL.md` §3, the loop guard included) at `now_ms`.
/// Returns how many it handled, and calls `dropped` with the reason of each one left without a
/// reply.
///
/// `local` is the socket's own address; `reply` holds one reply, so its length is the longest
/// reply sent. A datagram is taken only while two whole replies fit the transmit ring: the
/// rest wait in the receive ring for the next call, so a reply is never dropped for want of
/// room ([`DropReason::NotSent`] is counted only if smoltcp refuses a reply all the same).
pub fn serve_udp<T: Transform, const N: usize>(
    socket: &mut udp::Socket<'_>,
    responder: &mut Responder<T, N>,
    local: SocketAddr,
    reply: &mut [u8],
    now_ms: u64,
    mut dropped: impl FnMut(DropReason),
) -> usize {
    let mut handled = 0;
    while socket.can_send()
        && socket.payload_send_capacity() - socket.send_queue() >= 2 * reply.len()
    {
        let Ok((request, meta)) = socket.peek() else {
            break;
        };
        let endpoint = meta.endpoint;
        let verdict = responder.respond(endpoint.into(), local, request, now_ms, reply);
        let _ = socket.recv(); // done with the request
        let sent = verdict.and_then(|n| {
            let reply = reply.get(..n).unwrap_or_default();
            socket
                .send_slice(reply, endpoint)
                .map_err(|_| DropReason::NotSent)
        });
        if let Err(why) = sent {
            dropped(why);
        }
        handled += 1;
    }
    handled
}
