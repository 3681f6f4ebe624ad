//! A UDP socket served by a worker: the core's [`Responder`] makes every decision (`PROTOCOL.md`
//! §3); this file receives, calls it, and sends, in batches of up to [`BATCH`] datagrams per
//! system call on Linux (`recvmmsg`/`sendmmsg`), one at a time elsewhere.

use crate::config::MAX_UDP_PAYLOAD;
use crate::shared::{Counters, Shared};
use crate::transform::DynTransform;
use mio::net::UdpSocket;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use upcase_core::{DropReason, LoopGuard, Responder};

/// Datagrams received (and replies sent) per system call.
pub(crate) const BATCH: usize = 32;
/// Batches one socket may serve per turn before the worker serves the others.
const BATCHES_PER_TURN: usize = 8;
/// One byte more than any UDP payload, so that a truncated datagram is recognised.
const SLOT: usize = 65536;
/// Records of the loop guard, per socket (24 bytes each).
const GUARD_PEERS: usize = 4096;

/// One datagram through the responder, as every driver serves it; `turn` is the datagram's
/// source, the socket's own address and the time (ms). `Some(n)`: a reply of `n` bytes in
/// `reply` goes back to the source. `None`: no reply; the drop is counted, by its
/// [`DropReason`], or as a panic of the user's transform, which costs this one datagram only
/// (the responder gets a fresh transform; the others of a batch go on).
pub(crate) fn respond(
    responder: &mut UdpResponder,
    (peer, local, now_ms): (SocketAddr, SocketAddr, u64),
    request: &[u8],
    reply: &mut [u8],
    shared: &Shared,
) -> Option<usize> {
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        responder.respond(peer, local, request, now_ms, reply)
    }));
    match answered {
        Ok(Ok(n)) => return Some(n),
        Ok(Err(why)) => shared.counters.drop_datagram(why),
        Err(_) => {
            Counters::add(&shared.counters.panics, 1);
            tracing::error!(%peer, "the transform panicked on a datagram; it was dropped");
            *responder.transform_mut() = DynTransform::new(&shared.config.transform);
        }
    }
    None
}

/// Counts what a reply's send did: a datagram and its bytes, or a drop ([`DropReason::NotSent`]).
pub(crate) fn count_sent(result: io::Result<usize>, shared: &Shared) {
    match result {
        Ok(n) => {
            Counters::add(&shared.counters.datagrams, 1);
            Counters::add(&shared.counters.bytes_out, n as u64);
        }
        Err(e) => {
            tracing::debug!(error = %e, "UDP reply not sent");
            shared.counters.drop_datagram(DropReason::NotSent);
        }
    }
}

/// The core's UDP decision maker, as every driver configures it.
pub(crate) type UdpResponder = Responder<DynTransform, GUARD_PEERS>;

/// A responder for one socket: the server's transform, limits and loop guard, with a key of
/// its own.
pub(crate) fn new_responder(shared: &Shared) -> Box<UdpResponder> {
    let limits = &shared.config.limits;
    let guard = LoopGuard::new(limits.udp_guard, random_key());
    Box::new(
        Responder::new(DynTransform::new(&shared.config.transform), guard)
            .with_max_request(limits.max_datagram)
            .with_no_amplify(limits.udp_no_amplify),
    )
}

/// One UDP socket and what serving it needs.
pub(crate) struct Endpoint {
    pub(crate) socket: UdpSocket,
    local: SocketAddr,
    responder: Box<UdpResponder>,
    /// `BATCH` request slots of `SLOT` bytes, then `BATCH` reply slots. Allocated zeroed and
    /// touched only as far as datagrams fill them.
    requests: Vec<u8>,
    replies: Vec<u8>,
}

/// What a turn left.
pub(crate) enum Turn {
    /// The socket has no more datagrams now (a receive would block).
    Drained,
    /// The turn's budget ran out with datagrams left.
    More,
}

/// A random key for a loop guard: per process and per socket, so that no one can predict
/// which peers share its records.
fn random_key() -> u128 {
    let state = std::hash::RandomState::new();
    (u128::from(state.hash_one(1u8)) << 64) | u128::from(state.hash_one(2u8))
}

impl Endpoint {
    pub(crate) fn new(socket: UdpSocket, shared: &Shared) -> io::Result<Self> {
        let local = socket.local_addr()?;
        Ok(Self {
            socket,
            local,
            responder: new_responder(shared),
            requests: vec![0u8; BATCH * SLOT],
            replies: vec![0u8; BATCH * MAX_UDP_PAYLOAD],
        })
    }

    /// Serves datagrams until a receive would block or the turn's budget is spent. Only
    /// `WouldBlock` means drained: a short batch says nothing (one datagram per call off Linux).
    pub(crate) fn turn(&mut self, shared: &Shared) -> Turn {
        for _ in 0..BATCHES_PER_TURN {
            let mut received = [(0usize, None::<SocketAddr>); BATCH];
            let count = match self.receive(&mut received) {
                Ok(0) => return Turn::Drained,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Turn::Drained,
                Err(e) => {
                    // ICMP errors of earlier sends surface here; the socket is fine.
                    tracing::debug!(error = %e, "UDP receive failed");
                    continue;
                }
            };
            let now_ms = shared.now_ms();
            let mut out = [(0usize, None::<SocketAddr>); BATCH];
            for (i, &(len, peer)) in received[..count].iter().enumerate() {
                let Some(peer) = peer else { continue };
                Counters::add(&shared.counters.bytes_in, len as u64);
                let request = &self.requests[i * SLOT..][..len];
                let reply = &mut self.replies[i * MAX_UDP_PAYLOAD..][..MAX_UDP_PAYLOAD];
                // Unwinding out of the batch would lose the others received with it.
                let turn = (peer, self.local, now_ms);
                if let Some(n) = respond(&mut self.responder, turn, request, reply, shared) {
                    out[i] = (n, Some(peer));
                }
            }
            self.send(&out[..count], shared);
        }
        Turn::More
    }

    /// Receives up to [`BATCH`] datagrams into the request slots: `(length, source)` each.
    /// A datagram longer than a slot reports the slot's length, which is over any limit.
    fn receive(&mut self, into: &mut [(usize, Option<SocketAddr>); BATCH]) -> io::Result<usize> {
        #[cfg(all(target_os = "linux", not(feature = "_single-datagram")))]
        {
            batch::receive(&self.socket, &mut self.requests, into)
        }
        #[cfg(any(not(target_os = "linux"), feature = "_single-datagram"))]
        {
            let (n, peer) = self.socket.recv_from(&mut self.requests[..SLOT])?;
            into[0] = (n, Some(peer));
            Ok(1)
        }
    }

    /// Sends the replies of `out` (`(length, destination)`; `None` for no reply).
    fn send(&mut self, out: &[(usize, Option<SocketAddr>)], shared: &Shared) {
        #[cfg(all(target_os = "linux", not(feature = "_single-datagram")))]
        let sent = batch::send(&self.socket, &self.replies, out);
        #[cfg(any(not(target_os = "linux"), feature = "_single-datagram"))]
        let sent: Vec<io::Result<usize>> = out
            .iter()
            .enumerate()
            .filter_map(|(i, &(n, peer))| Some((i, n, peer?)))
            .map(|(i, n, peer)| {
                self.socket
                    .send_to(&self.replies[i * MAX_UDP_PAYLOAD..][..n], peer)
            })
            .collect();
        for result in sent {
            count_sent(result, shared);
        }
    }

    /// Recovers from a panic of the user's transform: a fresh one for the next datagram.
    pub(crate) fn reset_transform(&mut self, shared: &Shared) {
        *self.responder.transform_mut() = DynTransform::new(&shared.config.transform);
    }
}

/// `recvmmsg` and `sendmmsg` through `nix`'s safe wrappers.
#[cfg(all(target_os = "linux", not(feature = "_single-datagram")))]
mod batch {
    use super::{BATCH, SLOT};
    use crate::config::MAX_UDP_PAYLOAD;
    use mio::net::UdpSocket;
    use nix::sys::socket::{
        MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg, sendmmsg,
    };
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    // The message headers are made per call: they hold raw pointers, so a worker could not be
    // moved to its thread with them, and making them costs one small allocation per batch.

    pub(super) fn receive(
        socket: &UdpSocket,
        slots: &mut [u8],
        into: &mut [(usize, Option<SocketAddr>); BATCH],
    ) -> io::Result<usize> {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = slots
            .chunks_mut(SLOT)
            .take(BATCH)
            .map(|s| [IoSliceMut::new(s)])
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for (slot, msg) in into.iter_mut().zip(results) {
            *slot = (msg.bytes, msg.address.and_then(|a| to_std(&a)));
            n += 1;
        }
        Ok(n)
    }

    pub(super) fn send(
        socket: &UdpSocket,
        replies: &[u8],
        out: &[(usize, Option<SocketAddr>)],
    ) -> Vec<io::Result<usize>> {
        let mut msgs: Vec<(&[u8], SocketAddr)> = Vec::with_capacity(out.len());
        for (i, &(len, peer)) in out.iter().enumerate() {
            if let Some(peer) = peer {
                msgs.push((&replies[i * MAX_UDP_PAYLOAD..][..len], peer));
            }
        }
        if msgs.is_empty() {
            return Vec::new();
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = msgs.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = msgs
            .iter()
            .map(|(_, peer)| Some(SockaddrStorage::from(*peer)))
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(msgs.len(), None);
        let mut results = Vec::with_capacity(msgs.len());
        // A message the kernel refuses (a full send buffer, an unreachable peer) is dropped and
        // counted; the rest of the batch is sent on.
        while results.len() < msgs.len() {
            let k = results.len();
            match sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                iovs[k..].iter(),
                &addrs[k..],
                [],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(sent) => {
                    let before = results.len();
                    results.extend(sent.map(|msg| Ok(msg.bytes)));
                    if results.len() == before {
                        results.push(Err(io::Error::from(io::ErrorKind::WriteZero)));
                    }
                }
                Err(e) => results.push(Err(io::Error::from(e))),
            }
        }
        results
    }

    fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = addr.as_sockaddr_in() {
            return Some(SocketAddr::V4((*v4).into()));
        }
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6((*v6).into()))
            .filter(|_| addr.family().is_some())
    }
}
