//! The worker: one event loop (mio: epoll on Linux, kqueue on the BSDs) that serves TCP
//! listeners, TCP connections and UDP sockets. A server runs one worker per core.
//!
//! Each worker owns its connections and sockets: no locks on the data path. Every worker
//! watches every listening socket and accepts from it until the backlog is empty, so a storm of
//! connections is taken off the kernel's queue by all cores at once; each UDP socket belongs to
//! one worker. Shutdown is an event: a [`Waker`] wakes the worker, which then begins to drain.
//!
//! Memory: an idle connection costs its socket and about 200 bytes; a connection with a partial
//! line also holds that line (at most `max_line + 1` bytes); replies a slow reader has not taken
//! are bounded by the server-wide reply budget. Each worker has one read buffer (64 KiB plus the
//! longest line) and one staging buffer (64 KiB), lent to the connection it is serving.

use crate::conn::{self, ACCEPT_BACKOFF, Conn, Lend, MAX_REFUSED_CLOSING, Share, Step, Why};
use crate::shared::{Counters, Shared};
use crate::udp::{self, Endpoint};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The waker's token. Listeners and UDP sockets count down from below it; connections use
/// their slot index, far below.
const WAKER: Token = Token(usize::MAX);
/// Tokens at or above this one are not connections.
const FIRST_SPECIAL: usize = usize::MAX - (1 << 20);
/// Connections one listener may yield before the worker serves its connections again.
const ACCEPT_BUDGET: usize = 256;
/// How often a long round of turns stops to look for new connections and new requests from
/// idle ones (see [`Worker::mid_round`]).
const MID_ROUND_EVERY: Duration = Duration::from_millis(10);
/// Events one such stop takes at most; the rest wait for the next poll.
const MID_ROUND_EVENTS: usize = 64;
/// Pause after the poller itself failed, before polling again.
const POLL_BACKOFF: Duration = Duration::from_millis(10);

/// What an event's token stands for.
enum Source {
    Waker,
    Listener,
    Udp,
    Conn(usize),
}

/// What other threads hold of a worker: a way to wake it.
pub(crate) struct WorkerHandle {
    waker: Arc<Waker>,
}

impl WorkerHandle {
    /// Wakes the worker so it notices a shutdown.
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake a worker");
        }
    }
}

/// What a worker serves: its poller, duplicates of every listening socket, and its share of
/// the UDP sockets.
pub(crate) struct Worker<'s> {
    shared: &'s Shared,
    poll: Poll,
    listeners: Vec<TcpListener>,
    udp: Vec<Endpoint>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections (and UDP sockets) to serve again after the others: they used up their turn.
    ready: VecDeque<Token>,
    lend: Lend,
    /// A listener used up its budget: accept again before sleeping.
    accept_more: bool,
    /// Out of descriptors or memory: no accepting until then.
    accept_paused_until: Option<Instant>,
    refused_closing: usize,
    /// Set when the shutdown began: its deadline (`None`: no deadline).
    draining: Option<Option<Instant>>,
}

impl<'s> Worker<'s> {
    /// A worker with its own poller, and the handle that wakes it.
    pub(crate) fn new(
        shared: &'s Shared,
        listeners: Vec<std::net::TcpListener>,
        udp: Vec<std::net::UdpSocket>,
    ) -> io::Result<(Self, WorkerHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut w = Self {
            shared,
            poll,
            listeners: Vec::new(),
            udp: Vec::new(),
            conns: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            lend: Lend::new(shared),
            accept_more: true,
            accept_paused_until: None,
            refused_closing: 0,
            draining: None,
        };
        for l in listeners {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            let token = Token(usize::MAX - 1 - w.listeners.len());
            w.poll
                .registry()
                .register(&mut l, token, Interest::READABLE)?;
            w.listeners.push(l);
        }
        for s in udp {
            s.set_nonblocking(true)?;
            let mut e = Endpoint::new(mio::net::UdpSocket::from_std(s), shared)?;
            let token = Token(FIRST_SPECIAL + w.udp.len());
            w.poll
                .registry()
                .register(&mut e.socket, token, Interest::READABLE)?;
            w.udp.push(e);
            // Datagrams may have queued before the poller watched the socket.
            w.ready.push_back(token);
        }
        Ok((w, WorkerHandle { waker }))
    }

    /// Runs until a shutdown has drained every connection.
    pub(crate) fn run(mut self) {
        let sweep_every = conn::sweep_period(&self.shared.config.runtime);
        let mut next_sweep = Instant::now() + sweep_every;
        let mut events = Events::with_capacity(1024);
        let mut mid_events = Events::with_capacity(MID_ROUND_EVENTS);
        loop {
            let now = Instant::now();
            let wake_at = conn::wake_at(next_sweep, self.accept_paused_until, self.draining);
            // Accepting that waits for the end of a back-off is no work for now: polling without
            // a timeout until then would spin (issue 10, item 7); `wake_at` holds its end.
            let accept_now = self.accept_more && self.accept_paused_until.is_none();
            let timeout = if self.ready.is_empty() && !accept_now {
                wake_at.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    if self.shared.may_warn() {
                        tracing::error!(error = %e, "poll failed; retrying");
                    }
                    std::thread::sleep(POLL_BACKOFF);
                }
                continue;
            }
            let mut woken = false;
            let mut mid_round = Instant::now() + MID_ROUND_EVERY;
            for ev in &events {
                if self.take_event(ev, &mut woken) {
                    self.mid_round(&mut mid_round, &mut mid_events, &mut woken);
                }
            }
            // The busy connections of this batch, and work that used up its turn, once each.
            for _ in 0..self.ready.len() {
                if let Some(t) = self.ready.pop_front() {
                    self.serve(t);
                    self.mid_round(&mut mid_round, &mut mid_events, &mut woken);
                }
            }
            // The stop first: a connection still in the backlog when it came is not served.
            if woken && self.draining.is_none() && self.shared.stopping.load(Ordering::Acquire) {
                self.begin_drain();
            }
            self.accept_pending(Instant::now());
            if let Some(deadline) = self.draining {
                if self.conns.iter().all(Option::is_none) {
                    return;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let open = self.conns.iter().flatten().count();
                    tracing::warn!(open, "drain timeout: closing connections");
                    for k in 0..self.conns.len() {
                        self.close(k, Why::DrainTimeout);
                    }
                    return;
                }
            }
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + sweep_every;
            }
        }
    }

    /// Serves connection or UDP socket `t` for one turn, and keeps a panic of the user's
    /// transform to that one connection or datagram.
    fn serve(&mut self, t: Token) {
        self.serve_turn(t, Share::Full);
    }

    /// [`serve`](Self::serve), with a connection's `share` of the worker.
    fn serve_turn(&mut self, t: Token, share: Share) {
        let shared = self.shared;
        if t.0 >= FIRST_SPECIAL {
            let Some(e) = self.udp.get_mut(t.0 - FIRST_SPECIAL) else {
                return;
            };
            match catch_unwind(AssertUnwindSafe(|| e.turn(shared))) {
                Ok(udp::Turn::Drained) => {}
                Ok(udp::Turn::More) => self.ready.push_back(t),
                Err(_) => {
                    Counters::add(&shared.counters.panics, 1);
                    tracing::error!("the transform panicked on a datagram; it was dropped");
                    e.reset_transform(shared);
                    self.ready.push_back(t);
                }
            }
            return;
        }
        let k = t.0;
        let Some(Some(c)) = self.conns.get_mut(k) else {
            return;
        };
        let lend = &mut self.lend;
        let step = c.guarded_turn(lend, shared, share);
        let step = match step {
            Step::Close(why) => Step::Close(why),
            other => match self.watch(k) {
                Ok(()) => other,
                Err(_) => Step::Close(Why::Unwatchable),
            },
        };
        match step {
            Step::Wait => {}
            Step::Yield => self.ready.push_back(t),
            Step::Close(why) => self.close(k, why),
        }
    }

    /// Watches connection `k` for writability exactly while it has output waiting.
    fn watch(&mut self, k: usize) -> io::Result<()> {
        let Some(Some(c)) = self.conns.get_mut(k) else {
            return Ok(());
        };
        let want = c.wants_write();
        if want != c.watch_writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            self.poll
                .registry()
                .reregister(&mut c.stream, Token(k), interest)?;
            c.watch_writable = want;
        }
        Ok(())
    }

    /// Between two turns of a long round, once `next` has come (then every
    /// [`MID_ROUND_EVERY`]): a round over a thousand busy connections can take a second, and a
    /// new client or a short request must not wait for all of it (issue 10, item 8). Polls
    /// without waiting (at most [`MID_ROUND_EVENTS`] events), takes them as the main loop
    /// takes its own ([`take_event`](Self::take_event)), and accepts new connections (each is
    /// served at once).
    fn mid_round(&mut self, next: &mut Instant, events: &mut Events, woken: &mut bool) {
        let now = Instant::now();
        if now < *next || self.draining.is_some() {
            return;
        }
        *next = now + MID_ROUND_EVERY;
        if self.poll.poll(events, Some(Duration::ZERO)).is_err() {
            return; // the main loop's poll reports and handles it
        }
        for ev in events.iter() {
            self.take_event(ev, woken);
        }
        self.accept_pending(now);
    }

    /// Takes one event of a batch, the quiet before the busy (`SECURITY.md`): a connection
    /// that [wants a short turn](Conn::wants_short_turn) (idle, no stream flowing) gets it at
    /// once, which answers a request (a bulk sender yields after it); any other connection,
    /// and a UDP socket, is queued in `ready` for its full turn after the batch. Returns
    /// whether a turn was taken.
    fn take_event(&mut self, ev: &mio::event::Event, woken: &mut bool) -> bool {
        match self.source(ev.token()) {
            Source::Waker => *woken = true,
            // Accept now unless backing off (then after the pause).
            Source::Listener => self.accept_more = true,
            Source::Udp => self.ready.push_back(ev.token()),
            Source::Conn(k) => {
                if let Some(Some(c)) = self.conns.get_mut(k) {
                    c.note_event(ev);
                    if c.wants_short_turn() {
                        self.serve_turn(Token(k), Share::Short);
                        return true;
                    }
                    self.ready.push_back(Token(k));
                }
            }
        }
        false
    }

    /// What the token of an event stands for.
    fn source(&self, t: Token) -> Source {
        match t {
            WAKER => Source::Waker,
            Token(t) if t >= usize::MAX - self.listeners.len() => Source::Listener,
            Token(t) if t >= FIRST_SPECIAL => Source::Udp,
            Token(k) => Source::Conn(k),
        }
    }

    /// Accepts what the listeners hold, unless backing off after running out of resources or
    /// draining.
    fn accept_pending(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
        }
        if !self.accept_more || self.accept_paused_until.is_some() || self.draining.is_some() {
            return;
        }
        self.accept_more = false;
        for i in 0..self.listeners.len() {
            self.accept_more |= self.accept(i);
        }
    }

    /// Accepts from listener `i` until its backlog is empty or the budget is spent. Returns
    /// whether more may be waiting.
    fn accept(&mut self, i: usize) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listeners.get(i) else {
                return false;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    if conn::accept_failed(&e, self.shared) {
                        self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                        return true;
                    }
                }
            }
        }
        true
    }

    /// Takes a new connection under the cap, or refuses it with an error line and a graceful
    /// close.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let wrap = |s| s;
        if let Some(c) = conn::admit(stream, peer, wrap, &mut self.refused_closing, self.shared) {
            self.insert(c);
        }
    }

    /// Watches a new connection and serves it at once: its first bytes (or its refusal) need no
    /// other event.
    fn insert(&mut self, mut conn: Conn) {
        let peer = conn.peer;
        let k = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut conn.stream, Token(k), Interest::READABLE)
        {
            tracing::debug!(%peer, error = %e, "cannot register the connection");
            self.free.push(k);
            self.forget(conn);
            return;
        }
        self.conns[k] = Some(conn);
        self.serve(Token(k));
    }

    /// Graceful shutdown: stop accepting; every connection answers what it has read, then
    /// closes gracefully by the drain deadline.
    fn begin_drain(&mut self) {
        let deadline = Instant::now().checked_add(self.shared.config.runtime.drain_timeout);
        self.draining = Some(deadline);
        let deadline_ms = deadline.map(|d| self.shared.ms_at(d));
        // Connections the kernel completed but the server never accepted would be reset when
        // the last listener closes: they are accepted now and closed gracefully, unanswered
        // (nothing of them was received when the shutdown began; PROTOCOL.md §2.5).
        let mut backlog = Vec::new();
        for mut l in self.listeners.drain(..) {
            while backlog.len() < MAX_REFUSED_CLOSING {
                match l.accept() {
                    Ok(accepted) => backlog.push(accepted),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = self.poll.registry().deregister(&mut l);
        }
        for (stream, peer) in backlog {
            let rc = &mut self.refused_closing;
            let c = conn::unanswered(stream, peer, deadline_ms, rc, self.shared);
            self.insert(c);
        }
        for mut e in self.udp.drain(..) {
            let _ = self.poll.registry().deregister(&mut e.socket);
        }
        self.ready.retain(|t| t.0 < FIRST_SPECIAL);
        for k in 0..self.conns.len() {
            if let Some(Some(c)) = self.conns.get_mut(k) {
                c.begin_drain(deadline_ms, self.shared);
                self.ready.push_back(Token(k));
            }
        }
    }

    /// Runs every connection's timers; those whose close began or ended are served now.
    fn sweep(&mut self) {
        let now = self.shared.now_ms();
        for k in 0..self.conns.len() {
            if let Some(Some(c)) = self.conns.get_mut(k)
                && c.check_timeouts(now, self.shared)
            {
                self.ready.push_back(Token(k));
            }
        }
    }

    fn close(&mut self, k: usize, why: Why) {
        let Some(slot) = self.conns.get_mut(k) else {
            return;
        };
        let Some(mut c) = slot.take() else { return };
        self.free.push(k);
        let _ = self.poll.registry().deregister(&mut c.stream);
        tracing::debug!(peer = %c.peer, %why, "connection closed");
        self.forget(c);
        // A stale token of `k` may still wait in `ready`: serving it costs one read that
        // would block, so it is not searched for.
    }

    /// Releases what a connection holds: its counters, its unsent output, its place under the
    /// cap. Dropping it closes the socket.
    fn forget(&mut self, c: Conn) {
        if c.counted {
            self.shared.release_slot();
        } else {
            self.refused_closing -= 1;
        }
        c.finish(self.shared);
    }
}
