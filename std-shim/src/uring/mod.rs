//! The io_uring worker (Linux): the same connections ([`Conn`]), the same UDP decisions
//! ([`Responder`](upcase_core::Responder)), the same limits, timers and counters as the epoll
//! worker (`worker.rs`), but completion-based. Every receive, send and accept of a loop turn,
//! across all connections and sockets, goes to the kernel in one `io_uring_enter`, which also
//! waits for the next completions.
//!
//! A connection's transport is a [`Link`]: the buffer of its last completed receive (read by
//! the session as from a socket, `WouldBlock` once consumed, when the next receive is armed).
//! Output is never taken by a write: the connection keeps it (under the reply budget, as when
//! a socket is full), one send operation at a time carries a copy of up to [`TX_CAP`] bytes of
//! it to the kernel, and its completion reports what the kernel took
//! ([`Conn::output_taken`]): replies count, and the stall timer sees progress, exactly when the
//! kernel has taken their bytes, as with epoll.
//!
//! A connection whose stream flows (a receive filled at least half of a [`RECV_SIZE`] buffer)
//! goes **direct** ([`Link::direct`]): it waits with poll operations, which hold no buffer, and
//! moves its bytes with non-blocking `recv`/`send` calls straight into the session's storage
//! and from its output, as the epoll worker does. A bulk turn then reads and writes as much as
//! the socket has, with no copy in user space; the receive and send operations, whose copies
//! and one-buffer-at-a-time turns cost a stream 1.24× monoio's CPU per line (bench/reasons.md),
//! stay for request-reply traffic, where one `io_uring_enter` carries a turn's receives and
//! sends across connections. A direct connection goes back to them once a wait brings less
//! than half a [`RECV_SIZE`].
//!
//! Every `unsafe` is in [`ring`]; this file is safe code. A connection's socket is closed only
//! once none of its operations is in flight, so its buffers and its descriptor number outlive
//! them; a close cancels them first.
//!
//! Memory per connection: its session (as with epoll); between messages no receive buffer
//! (its receive draws on the worker's pool of [`POOL_BUFFERS`] × [`IDLE_RECV_SIZE`] bytes, a
//! provided buffer ring, only when its request arrives; where the kernel has none, before 5.19,
//! a buffer of [`IDLE_RECV_SIZE`] bytes of its own), one of [`RECV_SIZE`] while busy, and the
//! send buffer while it holds output; a direct connection holds neither buffer.

#[allow(unsafe_code)]
mod ring;

pub(crate) use ring::probe;

use crate::config::MAX_UDP_PAYLOAD;
use crate::conn::{
    self, ACCEPT_BACKOFF, Conn, Lend, MAX_REFUSED_CLOSING, Share, Step, Stream, Why,
};
use crate::shared::{Counters, Shared};
use crate::udp::{self, UdpResponder, new_responder};
use ring::{Buf, Datagram, Done, Op, OpId, Ring};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use upcase_core::DropReason;

/// Submission queue entries of a worker's ring.
const RING_ENTRIES: u32 = 1024;
/// Receive buffer of a busy connection.
const RECV_SIZE: usize = 16 * 1024;
/// Receive buffer of a connection between messages (no partial line held): enough for a
/// request, and small, so that thousands of idle connections cost little. After a receive that
/// filled its buffer, or while a partial line is held, the next one gets [`RECV_SIZE`].
const IDLE_RECV_SIZE: usize = 256;
/// Buffers of [`IDLE_RECV_SIZE`] bytes in a worker's receive pool (256 KiB), which the receives
/// of connections between messages draw on as their requests arrive.
const POOL_BUFFERS: u16 = 1024;
/// Most output bytes one send operation hands to the kernel.
const TX_CAP: usize = 64 * 1024;
/// A send buffer kept between replies up to this capacity; a larger one is given back.
const TX_KEEP: usize = 16 * 1024;
/// Single accepts in flight per listener, where the kernel has no multishot accept (before
/// 5.19); otherwise one multishot accept per listener takes every connection.
const ACCEPTS: usize = 4;
/// Receives in flight per UDP socket (each with its datagram slot of 128 KiB, touched as far as
/// datagrams fill it).
const UDP_SLOTS: usize = 16;
/// How often a long round of turns stops to reap completions (see [`Worker::mid_round`]).
const MID_ROUND_EVERY: Duration = Duration::from_millis(10);
/// Pause after the ring itself failed, before waiting again.
const RING_BACKOFF: Duration = Duration::from_millis(10);

/// What a completion's tag names: kind in the top byte, index below.
const KIND_SHIFT: u32 = 56;
const CONN_RECV: u64 = 1;
const CONN_SEND: u64 = 2;
const ACCEPT: u64 = 3;
const UDP_RECV: u64 = 4;
const UDP_SEND: u64 = 5;
const WAKE: u64 = 6;

fn tag(kind: u64, index: usize) -> u64 {
    (kind << KIND_SHIFT) | index as u64
}

/// How a connection's input ended, once it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxEnd {
    Open,
    Eof,
    Failed,
}

/// A connection's transport: what its completed operations left, as a [`Stream`].
pub(crate) struct Link {
    sock: TcpStream,
    /// The last receive's bytes, `rx[rx_off..]` not yet read; `None` while a receive is in
    /// flight.
    rx: Option<Vec<u8>>,
    rx_off: usize,
    rx_end: RxEnd,
    /// The last receive filled at least half its buffer: a stream is flowing, so the next one
    /// is large. (Only a full buffer, before: a stream whose receives ended on a line's end
    /// flipped between 256-byte and 16 KiB buffers, freeing and allocating one per turn.)
    rx_filled: bool,
    /// A stream is flowing (the last receive operation was a large one, at least half
    /// filled): the connection waits with poll operations and moves its bytes with
    /// non-blocking system calls, until a wait brings less than half of [`RECV_SIZE`] (the
    /// module's docs say why).
    direct: bool,
    /// Bytes read directly since the connection last waited.
    direct_got: usize,
    /// The send buffer (a copy of the connection's pending output); `None` while a send is
    /// in flight.
    tx: Option<Vec<u8>>,
    tx_failed: bool,
}

impl Link {
    fn new(sock: TcpStream) -> Self {
        Self {
            sock,
            rx: Some(Vec::new()),
            rx_off: 0,
            rx_end: RxEnd::Open,
            rx_filled: false,
            direct: false,
            direct_got: 0,
            tx: Some(Vec::new()),
            tx_failed: false,
        }
    }

    /// Whether the receive buffer is free and input may still come: a receive should be armed.
    fn wants_recv(&self) -> bool {
        self.rx_end == RxEnd::Open && self.rx.as_ref().is_some_and(|rx| self.rx_off >= rx.len())
    }
}

impl Stream for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(rx) = &self.rx else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        if let Some(left) = rx.get(self.rx_off..).filter(|l| !l.is_empty()) {
            let n = left.len().min(buf.len());
            buf[..n].copy_from_slice(&left[..n]);
            self.rx_off += n;
            return Ok(n);
        }
        match self.rx_end {
            RxEnd::Eof => Ok(0),
            RxEnd::Failed => Err(io::ErrorKind::ConnectionReset.into()),
            // No receive is in flight (`rx` is here), so the bytes come in order.
            RxEnd::Open if self.direct && !buf.is_empty() => {
                match ring::recv_now(&self.sock, buf) {
                    Ok(0) => {
                        self.rx_end = RxEnd::Eof;
                        Ok(0)
                    }
                    Ok(n) => {
                        self.direct_got += n;
                        Ok(n)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The stream has dried up: the next wait is a receive operation.
                        self.direct = self.direct_got >= RECV_SIZE / 2;
                        Err(e)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
                    Err(e) => {
                        self.rx_end = RxEnd::Failed;
                        Err(e)
                    }
                }
            }
            RxEnd::Open => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Takes nothing (`WouldBlock`) but in [`direct`](Self::direct) mode with no send in
    /// flight: the worker's send operations carry the connection's pending output.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tx_failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.direct && self.tx.is_some() {
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            return socket2::SockRef::from(&self.sock).send_with_flags(buf, flags);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// At once: the session half-closes only once every reply was taken (or given up).
    fn shutdown_write(&mut self) -> io::Result<()> {
        if self.tx_failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.sock.shutdown(Shutdown::Write)
    }
}

/// One connection and its operations in flight.
struct Slot {
    conn: Conn<Link>,
    recv: Option<OpId>,
    send: Option<OpId>,
    /// Set once the connection is closing: why, and since when (ms).
    closing: Option<(Why, u64)>,
}

impl Slot {
    fn idle_ops(&self) -> bool {
        self.recv.is_none() && self.send.is_none()
    }
}

/// One UDP socket.
struct UdpEnd {
    socket: UdpSocket,
    local: SocketAddr,
    responder: Box<UdpResponder>,
    /// Operations in flight on it.
    ops: Vec<OpId>,
}

/// What other threads hold of a worker: a way to wake it.
pub(crate) struct Handle {
    tx: UnixStream,
}

impl Handle {
    /// Wakes the worker so it notices a shutdown.
    pub(crate) fn wake(&self) {
        match (&self.tx).write(&[1]) {
            Ok(_) => {}
            // A full pipe has woken the worker already.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::error!(error = %e, "cannot wake a worker"),
        }
    }
}

/// An io_uring worker: its ring, duplicates of every listening socket, its share of the UDP
/// sockets, and its connections.
pub(crate) struct Worker<'s> {
    shared: &'s Shared,
    ring: Ring,
    listeners: Vec<(TcpListener, Vec<OpId>)>,
    udp: Vec<UdpEnd>,
    conns: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Connections to serve again: they used up their turn.
    ready: VecDeque<usize>,
    lend: Lend,
    wake_rx: UnixStream,
    wake_op: Option<OpId>,
    accept_paused_until: Option<Instant>,
    /// Whether multishot accepts work here; cleared when the kernel refuses one.
    multishot_accept: bool,
    refused_closing: usize,
    /// Set when the shutdown began: its deadline (`None`: no deadline).
    draining: Option<Option<Instant>>,
    done: Vec<Done>,
    /// Completions reaped in the middle of a round.
    mid_done: Vec<Done>,
    /// Set while a batch of completions is handled, the quiet before the busy (`SECURITY.md`):
    /// a connection that [wants a short turn](Conn::wants_short_turn) gets it at once, any
    /// other one waits for its full turn in `ready`.
    in_batch: bool,
}

impl<'s> Worker<'s> {
    /// A worker with its own ring, and the handle that wakes it. The sockets are made
    /// blocking: io_uring waits for them itself, and fails a non-blocking one with `EAGAIN`.
    pub(crate) fn new(
        shared: &'s Shared,
        listeners: Vec<TcpListener>,
        udp: Vec<UdpSocket>,
    ) -> io::Result<(Self, Handle)> {
        let (tx, wake_rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        let mut w = Self {
            shared,
            ring: Ring::new(RING_ENTRIES, (POOL_BUFFERS, IDLE_RECV_SIZE))?,
            listeners: Vec::new(),
            udp: Vec::new(),
            conns: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            lend: Lend::new(shared),
            wake_rx,
            wake_op: None,
            accept_paused_until: None,
            multishot_accept: true,
            refused_closing: 0,
            draining: None,
            done: Vec::new(),
            mid_done: Vec::new(),
            in_batch: false,
        };
        for l in listeners {
            l.set_nonblocking(false)?;
            w.listeners.push((l, Vec::new()));
        }
        for s in udp {
            s.set_nonblocking(false)?;
            let local = s.local_addr()?;
            w.udp.push(UdpEnd {
                socket: s,
                local,
                responder: new_responder(shared),
                ops: Vec::new(),
            });
        }
        Ok((w, Handle { tx }))
    }

    /// Runs until a shutdown has drained every connection.
    pub(crate) fn run(mut self) {
        let sweep_every = conn::sweep_period(&self.shared.config.runtime);
        self.arm_wake();
        for i in 0..self.listeners.len() {
            self.arm_accepts(i);
        }
        for i in 0..self.udp.len() {
            for _ in 0..UDP_SLOTS {
                self.arm_udp_recv(i, Datagram::new(MAX_UDP_PAYLOAD));
            }
        }
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            let now = Instant::now();
            let wake_at = conn::wake_at(next_sweep, self.accept_paused_until, self.draining);
            let (want, timeout) = if self.ready.is_empty() {
                (1, wake_at.saturating_duration_since(now))
            } else {
                (0, Duration::ZERO)
            };
            if let Err(e) = self.ring.submit_and_wait(want, timeout) {
                if self.shared.may_warn() {
                    tracing::error!(error = %e, "io_uring wait failed; retrying");
                }
                std::thread::sleep(RING_BACKOFF);
            }
            let mut done = std::mem::take(&mut self.done);
            self.ring.reap(&mut done);
            let mut woken = false;
            let mut mid_round = Instant::now() + MID_ROUND_EVERY;
            self.in_batch = true;
            for d in done.drain(..) {
                self.complete(d, &mut woken);
                self.mid_round(&mut mid_round, &mut woken);
            }
            self.in_batch = false;
            self.done = done;
            // The busy connections of this batch, and work that used up its turn, once each.
            for _ in 0..self.ready.len() {
                if let Some(k) = self.ready.pop_front() {
                    self.serve(k);
                    self.mid_round(&mut mid_round, &mut woken);
                }
            }
            if woken && self.draining.is_none() && self.shared.stopping.load(Ordering::Acquire) {
                self.begin_drain();
            }
            if self
                .accept_paused_until
                .is_some_and(|t| Instant::now() >= t)
            {
                self.accept_paused_until = None;
                if self.draining.is_none() {
                    for i in 0..self.listeners.len() {
                        self.arm_accepts(i);
                    }
                }
            }
            if let Some(deadline) = self.draining {
                // Done once no connection is open and no accept is in flight: a cancelled
                // accept may still complete with a connection, which is then served as the
                // backlog's rather than reset by the ring's drop.
                if self.conns.iter().all(Option::is_none)
                    && self.listeners.iter().all(|(_, ops)| ops.is_empty())
                {
                    return;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let open = self.conns.iter().flatten().count();
                    tracing::warn!(open, "drain timeout: closing connections");
                    self.abort_all();
                    return;
                }
            }
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + sweep_every;
            }
        }
    }

    /// Between two turns of a long round, once `next` has come (then every
    /// [`MID_ROUND_EVERY`]), as the epoll worker does (issue 10, item 8): a round over many busy
    /// connections can take a second, and a new client or a short request must not wait for
    /// all of it. Submits what is queued, reaps what has completed without waiting, and handles
    /// it: accepts and UDP at once, a connection that was idle with a short turn, a busy one
    /// queued in `ready`.
    fn mid_round(&mut self, next: &mut Instant, woken: &mut bool) {
        let now = Instant::now();
        if now < *next || self.draining.is_some() {
            return;
        }
        *next = now + MID_ROUND_EVERY;
        if self.ring.submit_and_wait(0, Duration::ZERO).is_err() {
            return; // the main loop's wait reports and handles it
        }
        let mut done = std::mem::take(&mut self.mid_done);
        self.ring.reap(&mut done);
        let in_batch = std::mem::replace(&mut self.in_batch, true);
        for d in done.drain(..) {
            self.complete(d, woken);
        }
        self.in_batch = in_batch;
        self.mid_done = done;
    }

    /// Routes one completion.
    fn complete(&mut self, d: Done, woken: &mut bool) {
        let index = (d.tag & ((1 << KIND_SHIFT) - 1)) as usize;
        match d.tag >> KIND_SHIFT {
            CONN_RECV => self.recv_done(index, d),
            CONN_SEND => self.send_done(index, d),
            ACCEPT => self.accept_done(index, d),
            UDP_RECV => self.udp_recv_done(index, d),
            UDP_SEND => self.udp_send_done(index, d),
            WAKE => {
                self.wake_op = None;
                *woken = true;
                if self.draining.is_none() {
                    self.arm_wake();
                }
            }
            _ => {}
        }
    }

    fn arm_wake(&mut self) {
        let buf = Vec::with_capacity(64);
        let fd = self.wake_rx.as_raw_fd();
        self.wake_op = Some(self.ring.push(tag(WAKE, 0), Op::Recv { fd, buf }));
    }

    // ---- TCP: accepting ----

    fn arm_accepts(&mut self, i: usize) {
        let Some((l, ops)) = self.listeners.get_mut(i) else {
            return;
        };
        let fd = l.as_raw_fd();
        if self.multishot_accept {
            if ops.is_empty() {
                ops.push(self.ring.push(tag(ACCEPT, i), Op::AcceptMulti { fd }));
            }
            return;
        }
        while ops.len() < ACCEPTS {
            ops.push(self.ring.push(tag(ACCEPT, i), Op::Accept { fd }));
        }
    }

    fn accept_done(&mut self, i: usize, d: Done) {
        if !d.more
            && let Some((_, ops)) = self.listeners.get_mut(i)
        {
            ops.retain(|&id| id != d.id);
        }
        let Buf::Accepted(stream) = d.buf else { return };
        match (stream, d.result) {
            (Some(stream), _) => {
                if self.draining.is_some() {
                    self.backlog_conn(stream);
                } else {
                    self.admit(stream);
                }
            }
            (None, Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => return,
            (None, Err(e)) if e.raw_os_error() == Some(libc::EINVAL) && self.multishot_accept => {
                tracing::info!(
                    "no multishot accept in this kernel (5.19); accepting one at a time"
                );
                self.multishot_accept = false;
            }
            (None, Err(e)) => {
                if conn::accept_failed(&e, self.shared) {
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
            (None, Ok(_)) => {}
        }
        if !d.more && self.draining.is_none() && self.accept_paused_until.is_none() {
            self.arm_accepts(i);
        }
    }

    /// Takes a new connection under the cap, or refuses it with an error line and a graceful
    /// close (as the epoll worker does).
    fn admit(&mut self, stream: TcpStream) {
        let peer = peer_of(&stream);
        let rc = &mut self.refused_closing;
        if let Some(c) = conn::admit(stream, peer, Link::new, rc, self.shared) {
            self.insert(c);
        }
    }

    /// A connection accepted after the shutdown began: closed gracefully, unanswered.
    fn backlog_conn(&mut self, stream: TcpStream) {
        let peer = peer_of(&stream);
        let deadline = self.draining.flatten().map(|d| self.shared.ms_at(d));
        let rc = &mut self.refused_closing;
        let c = conn::unanswered(Link::new(stream), peer, deadline, rc, self.shared);
        self.insert(c);
    }

    fn insert(&mut self, conn: Conn<Link>) {
        let k = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.conns[k] = Some(Slot {
            conn,
            recv: None,
            send: None,
            closing: None,
        });
        self.serve(k);
    }

    // ---- TCP: connections ----

    /// Serves connection `k` for one turn, then arms the operations it needs. A panic of the
    /// user's transform closes that connection only.
    fn serve(&mut self, k: usize) {
        let shared = self.shared;
        let Some(Some(slot)) = self.conns.get_mut(k) else {
            return;
        };
        if slot.closing.is_some() {
            return;
        }
        let share = match (self.in_batch, slot.conn.wants_short_turn()) {
            (false, _) => Share::Full,
            (true, true) => Share::Short,
            (true, false) => return self.ready.push_back(k),
        };
        let lend = &mut self.lend;
        let conn = &mut slot.conn;
        let step = conn.guarded_turn(lend, shared, share);
        match step {
            Step::Wait => {}
            Step::Yield => self.ready.push_back(k),
            Step::Close(why) => return self.close(k, why),
        }
        self.arm(k);
    }

    /// Arms a receive if the connection's input buffer is free, and a send if output waits.
    fn arm(&mut self, k: usize) {
        let Some(Some(slot)) = self.conns.get_mut(k) else {
            return;
        };
        let small = slot.conn.between_messages() && !slot.conn.stream.rx_filled;
        let link = &mut slot.conn.stream;
        let fd = link.sock.as_raw_fd();
        if slot.recv.is_none() && slot.closing.is_none() && link.wants_recv() && link.direct {
            if link.rx.as_ref().is_some_and(|rx| rx.capacity() > 0) {
                link.rx = Some(Vec::new()); // direct reads need no receive buffer
            }
            if link.tx.as_ref().is_some_and(|tx| tx.capacity() > 0) {
                link.tx = Some(Vec::new()); // nor direct writes a send buffer
            }
            // Not while the session may still read: it is served again from `ready`.
            if !slot.conn.readable {
                link.direct_got = 0;
                let op = Op::Poll {
                    fd,
                    events: libc::POLLIN as u32,
                };
                slot.recv = Some(self.ring.push(tag(CONN_RECV, k), op));
            }
        } else if slot.recv.is_none()
            && slot.closing.is_none()
            && link.wants_recv()
            && let Some(mut buf) = link.rx.take()
        {
            buf.clear();
            link.rx_off = 0;
            let op = if small && self.ring.pool_buffer().is_some() {
                // Between messages: the kernel picks a pool buffer when the request arrives,
                // so a connection that waits holds no receive buffer.
                Op::RecvPooled { fd }
            } else {
                if !small {
                    buf.reserve_exact(RECV_SIZE);
                } else if buf.capacity() > IDLE_RECV_SIZE {
                    buf = Vec::with_capacity(IDLE_RECV_SIZE); // the large one is given back
                } else {
                    buf.reserve_exact(IDLE_RECV_SIZE);
                }
                Op::Recv { fd, buf }
            };
            slot.recv = Some(self.ring.push(tag(CONN_RECV, k), op));
        }
        let link = &slot.conn.stream;
        // A closing connection's last replies go out by a send operation: nothing would write
        // them after a poll.
        if slot.send.is_none()
            && !link.tx_failed
            && slot.conn.wants_write()
            && link.direct
            && slot.closing.is_none()
        {
            let op = Op::Poll {
                fd,
                events: libc::POLLOUT as u32,
            };
            slot.send = Some(self.ring.push(tag(CONN_SEND, k), op));
        } else if slot.send.is_none()
            && !slot.conn.stream.tx_failed
            && slot.conn.wants_write()
            && let Some(mut buf) = slot.conn.stream.tx.take()
        {
            let pending = slot.conn.pending_output();
            buf.clear();
            buf.extend_from_slice(&pending[..pending.len().min(TX_CAP)]);
            let op = Op::Send { fd, buf };
            slot.send = Some(self.ring.push(tag(CONN_SEND, k), op));
        }
    }

    fn recv_done(&mut self, k: usize, d: Done) {
        let Some(Some(slot)) = self.conns.get_mut(k) else {
            return;
        };
        slot.recv = None;
        let link = &mut slot.conn.stream;
        // A poll's completion says only that the socket is readable (or failed, or ended):
        // the turn's direct reads find out which.
        if let Buf::Recv(buf) = d.buf {
            // (Not for an end of stream or an error, whose buffer may be none at all.)
            link.rx_filled = matches!(d.result, Ok(n) if n > 0) && buf.len() * 2 >= buf.capacity();
            link.direct = link.rx_filled && buf.capacity() >= RECV_SIZE;
            link.direct_got = buf.len();
            link.rx = Some(buf);
            link.rx_off = 0;
            match d.result {
                Ok(0) => link.rx_end = RxEnd::Eof,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        // ENOBUFS: the pool ran dry in this turn; armed again, the
                        // receive finds it refilled.
                        Some(libc::ECANCELED | libc::EINTR | libc::EAGAIN | libc::ENOBUFS)
                    ) => {}
                Err(_) => link.rx_end = RxEnd::Failed,
            }
        }
        if slot.closing.is_some() {
            self.finish_if_done(k);
        } else {
            slot.conn.readable = true;
            self.serve(k);
        }
    }

    fn send_done(&mut self, k: usize, d: Done) {
        let Some(Some(slot)) = self.conns.get_mut(k) else {
            return;
        };
        slot.send = None;
        let mut buf = match d.buf {
            Buf::Send(buf) => buf,
            // A poll: the socket can take more (or has failed), which the turn finds out.
            Buf::Polled => {
                let cancelled = d
                    .result
                    .is_err_and(|e| e.raw_os_error() == Some(libc::ECANCELED));
                match slot.closing {
                    None => self.serve(k),
                    // A graceful close's last replies go out by a send operation, unless the
                    // linger timeout cancelled the wait.
                    Some((Why::Session(_), _)) if !cancelled => {
                        self.arm(k);
                        self.finish_if_done(k);
                    }
                    Some(_) => self.finish_if_done(k),
                }
                return;
            }
            _ => return,
        };
        let sent = buf.len();
        buf.clear();
        if buf.capacity() > TX_KEEP {
            buf = Vec::new();
        }
        slot.conn.stream.tx = Some(buf);
        match d.result {
            Ok(n) if n > 0 || sent == 0 => slot.conn.output_taken(n, self.shared),
            // A send of nothing (the peer gone), an error, or the close's cancel.
            _ => slot.conn.stream.tx_failed = true,
        }
        if slot.closing.is_some() {
            self.finish_if_done(k);
        } else {
            self.serve(k);
        }
    }

    /// Closes connection `k`: its operations are cancelled (a graceful close lets its last
    /// send finish, within the linger timeout), and it is released when none is in flight.
    fn close(&mut self, k: usize, why: Why) {
        let now = self.shared.now_ms();
        let Some(Some(slot)) = self.conns.get_mut(k) else {
            return;
        };
        let graceful = matches!(why, Why::Session(_));
        if slot.closing.is_none() {
            slot.closing = Some((why, now));
            if graceful {
                // The last replies, taken in the turn that ended in the close, still go out.
                self.arm(k);
            }
        }
        let Some(Some(slot)) = self.conns.get_mut(k) else {
            return;
        };
        if let Some(id) = slot.recv {
            self.ring.cancel(id);
        }
        if let (Some(id), false) = (slot.send, graceful) {
            self.ring.cancel(id);
        }
        self.finish_if_done(k);
    }

    /// Releases connection `k` if it is closing and none of its operations is in flight: its
    /// counters, its unsent output, its place under the cap; dropping it closes the socket.
    fn finish_if_done(&mut self, k: usize) {
        let Some(slot) = self.conns.get_mut(k) else {
            return;
        };
        if !slot
            .as_ref()
            .is_some_and(|s| s.closing.is_some() && s.idle_ops())
        {
            return;
        }
        let Some(slot) = slot.take() else { return };
        self.free.push(k);
        let why = slot.closing.map_or(Why::PeerGone, |(w, _)| w);
        tracing::debug!(peer = %slot.conn.peer, %why, "connection closed");
        if slot.conn.counted {
            self.shared.release_slot();
        } else {
            self.refused_closing -= 1;
        }
        slot.conn.finish(self.shared);
    }

    /// The drain deadline passed: every connection is closed now. Their operations are
    /// cancelled and submitted before the sockets close (so no operation can meet a reused
    /// descriptor number); the ring keeps their buffers until the cancels complete.
    fn abort_all(&mut self) {
        for k in 0..self.conns.len() {
            if let Some(Some(slot)) = self.conns.get_mut(k) {
                slot.closing = Some((Why::DrainTimeout, 0));
                for id in [slot.recv, slot.send].into_iter().flatten() {
                    self.ring.cancel(id);
                }
            }
        }
        let _ = self.ring.submit_and_wait(0, Duration::ZERO);
        for k in 0..self.conns.len() {
            if let Some(Some(slot)) = self.conns.get_mut(k) {
                slot.recv = None;
                slot.send = None;
            }
            self.finish_if_done(k);
        }
    }

    /// Graceful shutdown: stop accepting; every connection answers what it has read, then
    /// closes gracefully by the drain deadline. Connections still in the backlog are accepted
    /// and closed unanswered (`PROTOCOL.md` §2.5), as the epoll worker does.
    fn begin_drain(&mut self) {
        let deadline = Instant::now().checked_add(self.shared.config.runtime.drain_timeout);
        self.draining = Some(deadline);
        let deadline_ms = deadline.map(|d| self.shared.ms_at(d));
        let mut backlog = Vec::new();
        for (l, ops) in &self.listeners {
            for &id in ops {
                self.ring.cancel(id);
            }
            // The listener stays open until the worker ends: the accepts cancelled above may
            // still complete with a connection, served as the backlog's.
            if l.set_nonblocking(true).is_ok() {
                while backlog.len() < MAX_REFUSED_CLOSING {
                    match l.accept() {
                        Ok((s, _)) => backlog.push(s),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
        }
        for s in backlog {
            if s.set_nonblocking(false).is_ok() {
                self.backlog_conn(s);
            }
        }
        for e in &self.udp {
            for &id in &e.ops {
                self.ring.cancel(id);
            }
        }
        if let Some(id) = self.wake_op {
            self.ring.cancel(id);
        }
        for k in 0..self.conns.len() {
            if let Some(Some(slot)) = self.conns.get_mut(k)
                && slot.closing.is_none()
            {
                slot.conn.begin_drain(deadline_ms, self.shared);
                self.ready.push_back(k);
            }
        }
    }

    /// Runs every connection's timers; those whose close began or ended are served now. A
    /// graceful close whose last send has not completed within the linger timeout is cut.
    fn sweep(&mut self) {
        let now = self.shared.now_ms();
        let linger = u64::try_from(self.shared.config.runtime.linger_timeout.as_millis())
            .unwrap_or(u64::MAX);
        for k in 0..self.conns.len() {
            let Some(Some(slot)) = self.conns.get_mut(k) else {
                continue;
            };
            match slot.closing {
                Some((_, since)) if now.saturating_sub(since) >= linger => {
                    if let Some(id) = slot.send {
                        self.ring.cancel(id);
                    }
                }
                Some(_) => {}
                None => {
                    if slot.conn.check_timeouts(now, self.shared) {
                        self.ready.push_back(k);
                    }
                }
            }
        }
    }

    // ---- UDP ----

    fn arm_udp_recv(&mut self, i: usize, dg: Box<Datagram>) {
        if self.draining.is_some() {
            return;
        }
        let Some(e) = self.udp.get_mut(i) else { return };
        let fd = e.socket.as_raw_fd();
        e.ops
            .push(self.ring.push(tag(UDP_RECV, i), Op::RecvMsg { fd, dg }));
    }

    fn udp_recv_done(&mut self, i: usize, d: Done) {
        let shared = self.shared;
        let Some(e) = self.udp.get_mut(i) else { return };
        e.ops.retain(|&id| id != d.id);
        let Buf::Datagram(mut dg) = d.buf else { return };
        match d.result {
            Ok(len) => {
                Counters::add(&shared.counters.bytes_in, len as u64);
                if let Some(peer) = dg.source() {
                    let now_ms = shared.now_ms();
                    let (request, reply) = dg.parts();
                    let turn = (peer, e.local, now_ms);
                    match udp::respond(&mut e.responder, turn, request, reply, shared) {
                        Some(n) if self.draining.is_none() => {
                            let fd = e.socket.as_raw_fd();
                            let op = Op::SendMsg {
                                fd,
                                dg,
                                len: n,
                                to: peer,
                            };
                            e.ops.push(self.ring.push(tag(UDP_SEND, i), op));
                            return;
                        }
                        Some(_) => shared.counters.drop_datagram(DropReason::NotSent),
                        None => {}
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return,
            // ICMP errors of earlier sends surface here; the socket is fine.
            Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
        }
        self.arm_udp_recv(i, dg);
    }

    fn udp_send_done(&mut self, i: usize, d: Done) {
        let shared = self.shared;
        let Some(e) = self.udp.get_mut(i) else { return };
        e.ops.retain(|&id| id != d.id);
        udp::count_sent(d.result, shared);
        if let Buf::Datagram(dg) = d.buf {
            self.arm_udp_recv(i, dg);
        }
    }
}

/// The peer of an accepted connection; the unspecified address if it is already gone.
fn peer_of(stream: &TcpStream) -> SocketAddr {
    stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
