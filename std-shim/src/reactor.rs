//! TCP connections served by a few event-driven workers (mio: epoll on Linux), each driving the
//! core's sans-IO [`Session`] directly.
//!
//! Why not a thread per connection over the blocking driver: at 10,000 connections each thread
//! costs its touched stack plus its buffers, about 28 KiB, so 280 MiB (measured; see
//! BENCHMARKS.md). Here an idle connection costs its socket and about 200 bytes; a connection
//! holds a line buffer only while it has bytes in flight, and the staging buffer is per worker.
//!
//! Each worker owns its connections: no locks on the data path. The accept threads hand new
//! connections over through a small inbox and a [`mio::Waker`].

use crate::server::Shared;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use upcase_core::{LineFramer, Session, Summary, Transform};

/// The token of the worker's waker; connections use their slot index.
const WAKER: Token = Token(usize::MAX);
/// Reads one connection may do before the worker turns to the others (fairness: a peer that
/// streams without pause cannot starve its neighbours).
const READ_BUDGET: usize = 16;
/// Spare line buffers a worker keeps for reuse.
const POOL: usize = 64;

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

type Conns = Vec<(std::net::TcpStream, SocketAddr)>;

/// The accept side's view of a worker.
pub(crate) struct WorkerHandle {
    inbox: Arc<Mutex<Conns>>,
    waker: Arc<Waker>,
}

impl WorkerHandle {
    /// Hands a connection to the worker.
    pub(crate) fn give(&self, stream: std::net::TcpStream, peer: SocketAddr) {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((stream, peer));
        let _ = self.waker.wake();
    }

    /// Wakes the worker so it notices a shutdown.
    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// Creates a worker's poller and the handle to reach it.
pub(crate) fn new_worker() -> io::Result<(Poll, WorkerHandle)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    Ok((
        poll,
        WorkerHandle {
            inbox: Arc::default(),
            waker,
        },
    ))
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
    /// Counters of sessions already given back.
    done: Summary,
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
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    pool: Vec<Vec<u8>>,
    staging: Vec<u8>,
    ready: VecDeque<usize>,
    draining: bool,
}

/// Runs a worker until shutdown has drained all its connections.
pub(crate) fn run_worker(shared: &Shared, poll: Poll, inbox: &WorkerHandle) {
    let mut w = Worker {
        shared,
        poll,
        conns: Vec::new(),
        free: Vec::new(),
        pool: Vec::new(),
        staging: vec![0u8; shared.config.staging.max(1)],
        ready: VecDeque::new(),
        draining: false,
    };
    w.event_loop(inbox);
}

impl Worker<'_> {
    fn event_loop(&mut self, inbox: &WorkerHandle) {
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
            let timeout = if self.ready.is_empty() {
                next_sweep.saturating_duration_since(now)
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
                    self.adopt(inbox);
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
            if !self.draining && self.shared.stopping.load(Ordering::Acquire) {
                self.begin_drain();
                drain_deadline = Some(Instant::now() + cfg.drain_timeout);
            }
            if self.draining {
                self.adopt(inbox); // connections accepted just before the stop
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

    /// Registers the connections the accept threads handed over.
    fn adopt(&mut self, inbox: &WorkerHandle) {
        let new = std::mem::take(&mut *inbox.inbox.lock().unwrap_or_else(PoisonError::into_inner));
        for (std_stream, peer) in new {
            if let Err(e) = std_stream.set_nonblocking(true) {
                tracing::debug!(%peer, error = %e, "cannot make the connection non-blocking");
                self.shared.release_slot();
                continue;
            }
            let mut stream = TcpStream::from_std(std_stream);
            let k = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(k),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::debug!(%peer, error = %e, "cannot register the connection");
                self.free.push(k);
                self.shared.release_slot();
                continue;
            }
            tracing::debug!(%peer, "connection opened");
            self.conns[k] = Some(Conn {
                stream,
                peer,
                session: None,
                transform: Some(DynTransform((self.shared.config.transform)())),
                pending: Vec::new(),
                sent: 0,
                drained: false,
                read_closed: false,
                last_read: Instant::now(),
                stalled_since: None,
                done: Summary::default(),
            });
            if self.draining {
                self.drain_one(k);
            }
        }
    }

    /// Graceful shutdown: stop reading new data, answer what was received, then close.
    fn begin_drain(&mut self) {
        self.draining = true;
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
                self.shared
                    .counters
                    .timeouts
                    .fetch_add(1, Ordering::Relaxed);
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
        match self.step(k) {
            Step::Wait => {}
            Step::Yield => self.ready.push_back(k),
            Step::Close(why) => self.close(k, why),
        }
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
            while c.sent < c.pending.len() {
                match c.stream.write(&c.pending[c.sent..]) {
                    Ok(0) => return Step::Close("write returned 0"),
                    Ok(n) => {
                        c.sent += n;
                        c.stalled_since = None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        c.stalled_since.get_or_insert_with(Instant::now);
                        return Step::Wait;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Step::Close("peer gone"),
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
                    let mut off = 0;
                    while off < n {
                        match c.stream.write(&self.staging[off..n]) {
                            Ok(0) => return Step::Close("write returned 0"),
                            Ok(m) => off += m,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return Step::Close("peer gone"),
                        }
                    }
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
                    add(&mut c.done, session.summary());
                    let (framer, transform) = session.into_parts();
                    c.transform = Some(transform);
                    if self.pool.len() < POOL {
                        self.pool.push(framer.into_storage());
                    }
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
                c.session = Some(Session::new(LineFramer::new(buf), transform, cfg.framing));
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
            add(&mut c.done, session.summary());
            let (framer, _) = session.into_parts();
            if self.pool.len() < POOL {
                self.pool.push(framer.into_storage());
            }
        }
        let counters = &self.shared.counters;
        counters.lines.fetch_add(c.done.lines, Ordering::Relaxed);
        counters
            .overlong
            .fetch_add(c.done.overlong, Ordering::Relaxed);
        counters
            .bytes_in
            .fetch_add(c.done.bytes_in, Ordering::Relaxed);
        counters
            .bytes_out
            .fetch_add(c.done.bytes_out, Ordering::Relaxed);
        self.shared.release_slot();
        tracing::debug!(peer = %c.peer, lines = c.done.lines, why, "connection closed");
    }
}

fn add(total: &mut Summary, s: Summary) {
    total.bytes_in += s.bytes_in;
    total.bytes_out += s.bytes_out;
    total.lines += s.lines;
    total.overlong += s.overlong;
}
