//! TCP connections served by a few event-driven workers (mio: epoll on Linux), each driving the
//! core's sans-IO [`Session`] directly.
//!
//! Why not a thread per connection over the blocking driver: at 10,000 connections each thread
//! costs its touched stack plus its buffers, about 28 KiB, so 280 MiB (measured; see
//! BENCHMARKS.md). Here an idle connection costs its socket and about 200 bytes; a connection
//! holds a line buffer only while it has bytes in flight, and the staging buffer is per worker.
//!
//! Each worker owns its connections: no locks on the data path. Every worker also watches every
//! listening socket and accepts from it until the backlog is empty, so a storm of connections is
//! taken off the kernel's accept queue by all cores at once, before the queue can overflow (an
//! overflow makes the client wait a full second for its SYN to be retransmitted).

use crate::net;
use crate::server::{Shared, bump};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use upcase_core::Counters as SessionCounters;
use upcase_core::{ErrorReply, LineFramer, Session, Transform};

/// The token of the worker's waker; connections use their slot index.
const WAKER: Token = Token(usize::MAX);
/// Reads one connection may do before the worker turns to the others (fairness: a peer that
/// streams without pause cannot starve its neighbours).
const READ_BUDGET: usize = 16;
/// Spare line buffers a worker keeps for reuse.
const POOL: usize = 64;
/// Connections one listener may yield before the worker serves its connections again.
const ACCEPT_BUDGET: usize = 1024;
/// Pause after the process ran out of file descriptors, before accepting again.
const EMFILE_BACKOFF: Duration = Duration::from_millis(50);

/// A boxed user transform, as the core's `Transform` (the core has no `alloc` to do this).
pub(crate) struct DynTransform(pub(crate) Box<dyn Transform + Send>);

impl Transform for DynTransform {
    fn process(&mut self, input: &[u8], output: &mut [u8]) -> upcase_core::Progress {
        self.0.process(input, output)
    }
    fn finish(&mut self, output: &mut [u8]) -> usize {
        self.0.finish(output)
    }
}

/// What other threads hold of a worker: a way to wake it for shutdown.
pub(crate) struct WorkerHandle {
    waker: Arc<Waker>,
}

impl WorkerHandle {
    /// Wakes the worker so it notices a shutdown.
    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// Creates a worker's poller and the handle to reach it.
pub(crate) fn new_worker() -> io::Result<(Poll, WorkerHandle)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    Ok((poll, WorkerHandle { waker }))
}

/// The token of listener `i`, counted down from just below the waker's. Connection tokens are
/// slot indices, far below.
fn listener_token(i: usize) -> Token {
    Token(usize::MAX - 1 - i)
}

/// One connection.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Present while the connection has bytes in flight; `None` while idle.
    session: Option<Session<Vec<u8>, DynTransform>>,
    /// The transform while idle (it may carry state across messages in `raw` framing).
    transform: Option<DynTransform>,
    /// Reply bytes the socket did not take yet: `pending[sent..]`.
    pending: Vec<u8>,
    sent: usize,
    /// The socket had no more to read at the last try; wait for a readable event.
    drained: bool,
    /// The peer's FIN (or our own `shutdown(Read)`) is known: read until `Ok(0)`, since no
    /// further event will announce it.
    read_closed: bool,
    last_read: Instant,
    /// Since when the pending output has made no progress.
    stalled_since: Option<Instant>,
    /// Whether the socket is watched for writability too (while output is pending).
    watch_writable: bool,
    /// Counters of sessions already given back.
    done: SessionCounters,
}

enum Step {
    /// Wait for the next event.
    Wait,
    /// The read budget ran out with input left: come back after the others.
    Yield,
    /// Close the connection.
    Close(&'static str),
}

/// A worker's state.
struct Worker<'s> {
    shared: &'s Shared,
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// A listener used up its budget: accept again before sleeping.
    accept_more: bool,
    /// Out of file descriptors: no accepting until then.
    accept_paused_until: Option<Instant>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    pool: Vec<Vec<u8>>,
    staging: Vec<u8>,
    ready: VecDeque<usize>,
    draining: bool,
}

/// Runs a worker until shutdown has drained all its connections. `listeners` are this worker's
/// handles of the listening sockets (duplicates of the server's, non-blocking).
pub(crate) fn run_worker(shared: &Shared, poll: Poll, listeners: Vec<std::net::TcpListener>) {
    let mut w = Worker {
        shared,
        poll,
        listeners: Vec::new(),
        accept_more: true,
        accept_paused_until: None,
        conns: Vec::new(),
        free: Vec::new(),
        pool: Vec::new(),
        staging: vec![0u8; shared.config.staging.max(1)],
        ready: VecDeque::new(),
        draining: false,
    };
    for (i, l) in listeners.into_iter().enumerate() {
        let mut l = TcpListener::from_std(l);
        match w
            .poll
            .registry()
            .register(&mut l, listener_token(i), Interest::READABLE)
        {
            Ok(()) => w.listeners.push(l),
            Err(e) => tracing::error!(error = %e, "cannot watch a listening socket"),
        }
    }
    w.event_loop();
}

impl Worker<'_> {
    fn event_loop(&mut self) {
        let cfg = &self.shared.config;
        let sweep_every = [cfg.idle_timeout, cfg.write_timeout]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::from_secs(1), |t| {
                (t / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
            });
        let mut next_sweep = Instant::now() + sweep_every;
        let mut drain_deadline = None;
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let mut wake_at = next_sweep;
            for t in [self.accept_paused_until, drain_deadline]
                .into_iter()
                .flatten()
            {
                wake_at = wake_at.min(t);
            }
            let timeout = if self.ready.is_empty() && !self.accept_more {
                wake_at.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                // Not expected from epoll; its connections close as the worker ends.
                tracing::error!(error = %e, "poll failed; worker stops");
                return;
            }
            for ev in &events {
                if ev.token() == WAKER {
                    continue;
                }
                if let Some(i) =
                    (0..self.listeners.len()).find(|&i| listener_token(i) == ev.token())
                {
                    self.accept_more |= self.accept(i);
                    continue;
                }
                let k = ev.token().0;
                if let Some(Some(c)) = self.conns.get_mut(k) {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        c.drained = false;
                    }
                    if ev.is_read_closed() || ev.is_error() {
                        c.read_closed = true;
                    }
                    self.drive(k);
                }
            }
            // Connections that used up their read budget, once each.
            for _ in 0..self.ready.len() {
                if let Some(k) = self.ready.pop_front() {
                    self.drive(k);
                }
            }
            if self
                .accept_paused_until
                .is_some_and(|t| Instant::now() >= t)
            {
                self.accept_paused_until = None;
                self.accept_more = true;
            }
            if std::mem::take(&mut self.accept_more) && self.accept_paused_until.is_none() {
                for i in 0..self.listeners.len() {
                    self.accept_more |= self.accept(i);
                }
            }
            if !self.draining && self.shared.stopping.load(Ordering::Acquire) {
                self.begin_drain();
                drain_deadline = Some(Instant::now() + cfg.drain_timeout);
            }
            if self.draining {
                if self.conns.iter().all(Option::is_none) {
                    return;
                }
                if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                    let open = self.conns.iter().flatten().count();
                    tracing::warn!(open, "drain timeout: closing connections");
                    for k in 0..self.conns.len() {
                        self.close(k, "drain timeout");
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
                Err(e) if net::is_fd_exhaustion(&e) => {
                    tracing::warn!(error = %e, "out of file descriptors; backing off");
                    self.accept_paused_until = Some(Instant::now() + EMFILE_BACKOFF);
                    return false;
                }
                // ECONNABORTED and friends: that one connection is gone, the listener is fine.
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            }
        }
        true
    }

    /// Takes a new connection under the cap, or refuses it with an error line.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let shared = self.shared;
        if !shared.take_slot() {
            bump(&shared.counters.refused, 1);
            tracing::debug!(%peer, "refused: connection cap reached");
            // Best effort: the socket is non-blocking, and a fresh one has room for one line.
            let _ = stream.write(ErrorReply::TooManyConnections.reply());
            return;
        }
        if let Err(e) = net::configure_stream(&stream, &shared.config) {
            tracing::debug!(%peer, error = %e, "cannot configure connection");
        }
        let k = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        // Readable only: writability is watched just while replies wait for room (see
        // `drive`), so a new connection costs no wake-up of its own.
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(k), Interest::READABLE)
        {
            tracing::debug!(%peer, error = %e, "cannot register the connection");
            self.free.push(k);
            shared.release_slot();
            return;
        }
        bump(&shared.counters.connections, 1);
        tracing::debug!(%peer, "connection opened");
        self.conns[k] = Some(Conn {
            stream,
            peer,
            session: None,
            transform: Some(DynTransform((shared.config.transform)())),
            pending: Vec::new(),
            sent: 0,
            drained: false,
            read_closed: false,
            last_read: Instant::now(),
            stalled_since: None,
            watch_writable: false,
            done: SessionCounters::default(),
        });
    }

    /// Graceful shutdown: stop reading new data, answer what was received, then close.
    fn begin_drain(&mut self) {
        self.draining = true;
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for k in 0..self.conns.len() {
            self.drain_one(k);
        }
    }

    fn drain_one(&mut self, k: usize) {
        if let Some(Some(c)) = self.conns.get_mut(k) {
            // Reads now return what the kernel holds, then EOF, which the session treats as a
            // shutdown: complete lines answered, a partial one refused.
            let _ = c.stream.shutdown(Shutdown::Read);
            c.drained = false;
            c.read_closed = true;
            self.ready.push_back(k);
        }
    }

    /// Closes connections past their idle or write timeout.
    fn sweep(&mut self) {
        let cfg = &self.shared.config;
        let now = Instant::now();
        for k in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get(k) else {
                continue;
            };
            let stalled = c
                .stalled_since
                .zip(cfg.write_timeout)
                .is_some_and(|(t, lim)| now - t >= lim);
            let idle = c.stalled_since.is_none()
                && cfg.idle_timeout.is_some_and(|lim| now - c.last_read >= lim);
            if stalled || idle {
                bump(&self.shared.counters.timeouts, 1);
                self.close(
                    k,
                    if stalled {
                        "write timeout"
                    } else {
                        "idle timeout"
                    },
                );
            }
        }
    }

    fn drive(&mut self, k: usize) {
        let step = match self.step(k) {
            Step::Close(why) => Step::Close(why),
            other => self
                .watch(k)
                .map_or(Step::Close("cannot watch the socket"), |()| other),
        };
        match step {
            Step::Wait => {}
            Step::Yield => self.ready.push_back(k),
            Step::Close(why) => self.close(k, why),
        }
    }

    /// Watches connection `k` for writability exactly while it has output waiting.
    fn watch(&mut self, k: usize) -> io::Result<()> {
        let Some(Some(c)) = self.conns.get_mut(k) else {
            return Ok(());
        };
        let want = c.sent < c.pending.len();
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

    /// Moves bytes until the connection has to wait for the socket.
    fn step(&mut self, k: usize) -> Step {
        let Some(Some(c)) = self.conns.get_mut(k) else {
            return Step::Wait;
        };
        let cfg = &self.shared.config;
        let mut reads = 0;
        loop {
            // 1. Output the socket did not take last time goes first (backpressure: no reading
            //    while it is there).
            if c.sent < c.pending.len() {
                let n = match write_now(&mut c.stream, &c.pending[c.sent..]) {
                    Ok(n) => n,
                    Err(why) => return Step::Close(why),
                };
                c.sent += n;
                if n > 0 {
                    c.stalled_since = None;
                }
                if c.sent < c.pending.len() {
                    c.stalled_since.get_or_insert_with(Instant::now);
                    return Step::Wait;
                }
            }
            if !c.pending.is_empty() {
                c.pending = Vec::new();
                c.sent = 0;
            }
            // 2. Replies to what is buffered.
            if let Some(session) = c.session.as_mut() {
                let n = session.poll_transmit(&mut self.staging);
                if n > 0 {
                    let off = match write_now(&mut c.stream, &self.staging[..n]) {
                        Ok(off) => off,
                        Err(why) => return Step::Close(why),
                    };
                    if off < n {
                        c.pending.extend_from_slice(&self.staging[off..n]);
                        c.stalled_since = Some(Instant::now());
                    }
                    continue;
                }
                if session.is_done() {
                    return Step::Close("done");
                }
                // Nothing in flight: give the line buffer back until the peer sends again.
                if let Some(session) = c.session.take_if(|s| s.is_idle()) {
                    c.transform = Some(recycle(&mut self.pool, &mut c.done, session));
                }
            }
            // 3. More input, unless the socket said it has none.
            if c.drained {
                return Step::Wait;
            }
            if reads == READ_BUDGET {
                return Step::Yield;
            }
            if c.session.is_none() {
                let buf = self
                    .pool
                    .pop()
                    .unwrap_or_else(|| vec![0u8; cfg.max_line + 1]);
                let transform = c
                    .transform
                    .take()
                    .unwrap_or_else(|| DynTransform((cfg.transform)()));
                c.session = Some(match cfg.framing {
                    upcase_core::Framing::Lines => Session::lines(LineFramer::new(buf), transform),
                    upcase_core::Framing::Raw => Session::raw(buf, transform),
                });
            }
            let Some(session) = c.session.as_mut() else {
                return Step::Wait;
            };
            if !session.is_open() {
                return Step::Wait;
            }
            let buf = session.recv_buffer();
            let room = buf.len();
            match c.stream.read(buf) {
                Ok(0) => {
                    if self.draining {
                        session.handle_shutdown();
                    } else {
                        session.handle_eof();
                    }
                }
                Ok(n) => {
                    session.handle_recv(n);
                    c.last_read = Instant::now();
                    reads += 1;
                    // A short read emptied the socket: epoll reports the next bytes as a new
                    // event, so no further read is needed to learn it would block. Not so for
                    // an end of stream that already arrived: it must be read.
                    c.drained = n < room && !c.read_closed;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close("peer gone"),
            }
        }
    }

    fn close(&mut self, k: usize, why: &'static str) {
        let Some(slot) = self.conns.get_mut(k) else {
            return;
        };
        let Some(mut c) = slot.take() else { return };
        self.free.push(k);
        let _ = self.poll.registry().deregister(&mut c.stream);
        if let Some(session) = c.session.take() {
            recycle(&mut self.pool, &mut c.done, session);
        }
        self.shared.counters.add_session(&c.done);
        self.shared.release_slot();
        tracing::debug!(peer = %c.peer, lines = c.done.lines, why, "connection closed");
    }
}

/// Ends a session: adds its counters to `done`, keeps its line buffer in `pool` (up to
/// [`POOL`]), and gives back the transform.
fn recycle(
    pool: &mut Vec<Vec<u8>>,
    done: &mut SessionCounters,
    session: Session<Vec<u8>, DynTransform>,
) -> DynTransform {
    let c = session.counters();
    done.bytes_in += c.bytes_in;
    done.bytes_out += c.bytes_out;
    done.lines += c.lines;
    done.overlong += c.overlong;
    let (storage, transform) = session.into_parts();
    if pool.len() < POOL {
        pool.push(storage);
    }
    transform
}

/// Writes as much of `buf` as the socket takes now; fewer bytes than `buf.len()` means it is
/// full. `Err` names why the connection must close.
fn write_now(stream: &mut TcpStream, buf: &[u8]) -> Result<usize, &'static str> {
    let mut off = 0;
    while off < buf.len() {
        match stream.write(&buf[off..]) {
            Ok(0) => return Err("write returned 0"),
            Ok(m) => off += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err("peer gone"),
        }
    }
    Ok(off)
}
