//! One TCP connection of a worker: the core's sans-IO [`Session`] driven over a non-blocking
//! socket. The session decides everything (replies, timers, the graceful close); this file
//! moves bytes, keeps the output the socket did not take yet, and counts what it handed over.
//!
//! The transport is a [`Stream`]: a non-blocking socket for the epoll worker (`worker.rs`), the
//! io_uring worker's view of its completed operations for that one (`uring/`). Everything else
//! here is the same for both.
//!
//! Between turns the session's storage is parked in a buffer just large enough for its partial
//! line (none at all between messages), so a waiting connection costs its socket and the
//! session's state; during a turn it reads into the worker's large read buffer.

use crate::net;
use crate::shared::{Counters, Shared};
use crate::sys::AsSocket;
use crate::transform::DynTransform;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};
use upcase_core::{
    CloseReason, Closing, Framing, LineFramer, ReplyEnd, ReplyKind, Session, Timeouts,
};

/// Reads one connection may do in one turn before the worker serves the others; also the cap
/// on reads that discard a closing peer's input.
const READS_PER_TURN: usize = 4;
/// The read size while the reply budget is spent: enough for an honest request.
const SMALL_READ: usize = 4096;
/// The worker's read room beyond the longest partial line.
const READ_SIZE: usize = 64 * 1024;
/// Refused connections (and those taken from the backlog at shutdown) a worker keeps for their
/// graceful close; beyond this many, one is closed at once: a flood must not pin descriptors.
pub(crate) const MAX_REFUSED_CLOSING: usize = 1024;
/// Pause after the process ran out of descriptors or memory, before accepting again.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Takes a connection a worker accepted, as every worker does: under the connection cap it is
/// configured, counted and served; over it, it is refused (`error: too many connections`, then
/// the graceful close by the linger timeout) while fewer than [`MAX_REFUSED_CLOSING`] refusals
/// are closing (`refused_closing` counts them; the worker lowers it as they end), and closed at
/// once otherwise (`None`). `wrap` makes the worker's transport of the socket.
pub(crate) fn admit<T: AsSocket, S: Stream>(
    sock: T,
    peer: SocketAddr,
    wrap: impl FnOnce(T) -> S,
    refused_closing: &mut usize,
    shared: &Shared,
) -> Option<Conn<S>> {
    if shared.take_slot() {
        if let Err(e) = net::configure_stream(&sock, &shared.config.socket) {
            tracing::debug!(%peer, error = %e, "cannot configure connection");
        }
        Counters::add(&shared.counters.connections, 1);
        tracing::debug!(%peer, "connection opened");
        let transform = DynTransform::new(&shared.config.transform);
        return Some(Conn::new(wrap(sock), peer, transform, shared));
    }
    Counters::add(&shared.counters.refused, 1);
    tracing::debug!(%peer, "refused: connection cap reached");
    if *refused_closing >= MAX_REFUSED_CLOSING {
        return None;
    }
    *refused_closing += 1;
    let linger = shared.config.runtime.linger_timeout.as_millis();
    let deadline = u64::try_from(linger)
        .ok()
        .and_then(|ms| shared.now_ms().checked_add(ms));
    Some(Conn::refused(wrap(sock), peer, deadline, shared))
}

/// A connection accepted after the shutdown began: nothing of it was received when the
/// shutdown began, so it is closed gracefully, unanswered, by `deadline` (ms) (PROTOCOL.md
/// §2.5). It counts among the `refused_closing` of [`admit`].
pub(crate) fn unanswered<S: Stream>(
    stream: S,
    peer: SocketAddr,
    deadline: Option<u64>,
    refused_closing: &mut usize,
    shared: &Shared,
) -> Conn<S> {
    tracing::debug!(%peer, "accepted from the backlog at shutdown: closed unanswered");
    let mut c = Conn::new(stream, peer, DynTransform::unused(), shared);
    c.counted = false;
    c.begin_drain(deadline, shared);
    *refused_closing += 1;
    c
}

/// How often a worker runs its connections' timers: a quarter of the shortest timeout, between
/// 50 ms and 1 s (1 s when no timeout is set), so a timeout fires at most a quarter late.
pub(crate) fn sweep_period(rt: &crate::config::Runtime) -> Duration {
    [rt.idle_timeout, rt.write_timeout, Some(rt.linger_timeout)]
        .into_iter()
        .flatten()
        .min()
        .map_or(Duration::from_secs(1), |t| {
            (t / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
        })
}

/// When a worker with nothing ready must wake: the next sweep, the end of an accept back-off,
/// or the drain deadline, whichever comes first.
pub(crate) fn wake_at(
    next_sweep: Instant,
    accept_paused_until: Option<Instant>,
    drain_deadline: Option<Option<Instant>>,
) -> Instant {
    [accept_paused_until, drain_deadline.flatten()]
        .into_iter()
        .flatten()
        .fold(next_sweep, Instant::min)
}

/// Logs a failed accept; `true` if it failed for want of descriptors or memory, when the worker
/// pauses accepting for [`ACCEPT_BACKOFF`] (retrying at once would spin). Other failures
/// (`ECONNABORTED` and friends) lose that one connection; the listener is fine.
pub(crate) fn accept_failed(e: &io::Error, shared: &Shared) -> bool {
    if !net::is_resource_exhaustion(e) {
        tracing::debug!(error = %e, "accept failed");
        return false;
    }
    if shared.may_warn() {
        let what = if net::is_fd_exhaustion(e) {
            "out of file descriptors"
        } else {
            "out of kernel memory"
        };
        tracing::warn!(error = %e, "cannot accept: {what}; backing off 50 ms (logged at most once a second)");
    }
    true
}

/// The transport under a [`Conn`], as a non-blocking socket behaves: `WouldBlock` when nothing
/// can move now, `Ok(0)` from `read` at the peer's end of stream.
pub(crate) trait Stream {
    /// Reads what has arrived into `buf`, at most its length.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Takes as much of `buf` as the transport can now: the count taken. Bytes taken count as
    /// handed to the kernel. A completion-based transport takes nothing here (`WouldBlock`):
    /// its driver sends [`Conn::pending_output`] and reports [`Conn::output_taken`].
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Ends the output (`shutdown(Write)`) once every byte taken has been sent.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Buffers a worker lends to the connection it is serving, for one turn.
pub(crate) struct Lend {
    /// The read buffer: the session's storage for the turn. Read size plus the longest line.
    pub(crate) read: Vec<u8>,
    /// Where replies are batched before each write.
    pub(crate) staging: Vec<u8>,
    /// Where the replies of one batch end, as the session reports them.
    pub(crate) ends: Vec<ReplyEnd>,
}

impl Lend {
    pub(crate) fn new(shared: &Shared) -> Self {
        let limits = &shared.config.limits;
        Self {
            read: read_buffer(limits.framing, limits.max_line),
            staging: vec![0u8; 64 * 1024],
            ends: Vec::new(),
        }
    }
}

/// Why the worker closes a connection: the session's reason, or one of the socket's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The session closed it.
    Session(CloseReason),
    /// The peer reset the connection, or the socket failed.
    PeerGone,
    /// A write returned 0.
    WriteZero,
    /// The user's transform panicked.
    Panicked,
    /// The worker could not watch the socket.
    Unwatchable,
    /// The worker's drain deadline passed.
    DrainTimeout,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Session(r) => write!(f, "{r}"),
            Self::PeerGone => f.write_str("peer gone"),
            Self::WriteZero => f.write_str("write returned 0"),
            Self::Panicked => f.write_str("transform panicked"),
            Self::Unwatchable => f.write_str("cannot watch the socket"),
            Self::DrainTimeout => f.write_str("drain timeout"),
        }
    }
}

/// How much of the worker a turn may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Share {
    /// Up to [`READS_PER_TURN`] reads of the whole read buffer.
    Full,
    /// One read of at most [`SMALL_READ`] bytes: enough to answer a request, after which a
    /// bulk sender yields (a connection that was idle gets one between two long turns).
    Short,
}

/// What the worker does with the connection after a turn.
pub(crate) enum Step {
    /// Wait for the next event.
    Wait,
    /// The turn's budget ran out with work left: serve it again after the others.
    Yield,
    /// Close the socket now.
    Close(Why),
}

/// Reply bytes the socket did not take yet, `pending[sent..]`, with where the replies in them
/// end, as offsets of the connection's whole output.
#[derive(Default)]
struct Output {
    pending: Vec<u8>,
    sent: usize,
    /// Output bytes the socket has taken, in all.
    taken: u64,
    /// Ends of replies not yet taken whole: `(offset of the whole output, kind)`.
    ends: VecDeque<(u64, ReplyKind)>,
}

/// One connection over the transport `S`.
pub(crate) struct Conn<S = TcpStream> {
    pub(crate) stream: S,
    pub(crate) peer: SocketAddr,
    session: Session<Vec<u8>, DynTransform>,
    out: Output,
    /// The socket may have bytes to read: set by an event, cleared only when a read would
    /// block. A short read says nothing (an urgent byte stops one short of the rest).
    pub(crate) readable: bool,
    /// Whether the socket is watched for writability (only while output waits).
    pub(crate) watch_writable: bool,
    /// Whether this connection holds a place under the connection cap.
    pub(crate) counted: bool,
    /// Whether its timeout was counted.
    timed_out: bool,
    /// Its last turn read more than a short turn's read, or used up a full share: a stream
    /// flows. (A short turn yields after its one read whatever the socket holds.)
    flowing: bool,
}

impl Conn<TcpStream> {
    /// Records what a poller event says about the socket.
    pub(crate) fn note_event(&mut self, ev: &mio::event::Event) {
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.readable = true;
        }
    }
}

impl<S: Stream> Conn<S> {
    /// A served connection.
    pub(crate) fn new(
        stream: S,
        peer: SocketAddr,
        transform: DynTransform,
        shared: &Shared,
    ) -> Self {
        let mut session = new_session(transform, shared);
        session.handle_time(shared.now_ms());
        Self {
            stream,
            peer,
            session,
            out: Output::default(),
            readable: true,
            watch_writable: false,
            counted: true,
            timed_out: false,
            flowing: false,
        }
    }

    /// A connection refused at the cap: it gets `error: too many connections`, then the
    /// graceful close, which ends by `deadline` (ms) at the latest.
    pub(crate) fn refused(
        stream: S,
        peer: SocketAddr,
        deadline: Option<u64>,
        shared: &Shared,
    ) -> Self {
        let mut c = Self::new(stream, peer, DynTransform::unused(), shared);
        c.counted = false;
        c.session.refuse();
        c.session.set_deadline(deadline);
        c
    }

    /// Whether output waits for the socket: the worker then watches for writability.
    pub(crate) fn wants_write(&self) -> bool {
        self.out.waiting()
    }

    /// Whether the session is between messages (no partial line held), whatever output still
    /// waits: the next input starts a new request.
    // Used by the io_uring worker, which is Linux only.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn between_messages(&self) -> bool {
        self.session.is_idle()
    }

    /// Whether the connection is between messages with nothing to send.
    pub(crate) fn is_idle(&self) -> bool {
        self.session.is_idle() && !self.out.waiting()
    }

    /// Whether a turn for it now costs only what a request asks: it is [idle](Self::is_idle)
    /// and its last turn read at most a short turn's [`SMALL_READ`] bytes without using up a
    /// full share (no stream flows). Of a batch of events, the workers give such a connection
    /// a [`Share::Short`] turn at once and every other one its full turn after them
    /// (`SECURITY.md`).
    pub(crate) fn wants_short_turn(&self) -> bool {
        self.is_idle() && !self.flowing
    }

    /// [`turn`](Self::turn), where a panic of the user's transform closes this connection only
    /// ([`Why::Panicked`], counted; its reply budget given back) and the worker goes on, with its
    /// lent read buffer restored if the panic took it.
    pub(crate) fn guarded_turn(&mut self, lend: &mut Lend, shared: &Shared, share: Share) -> Step {
        let turn = std::panic::AssertUnwindSafe(|| self.turn(lend, shared, share));
        if let Ok(step) = std::panic::catch_unwind(turn) {
            return step;
        }
        Counters::add(&shared.counters.panics, 1);
        self.abandon(shared);
        tracing::error!(peer = %self.peer, "the transform panicked; connection closed");
        if lend.read.is_empty() {
            let limits = &shared.config.limits;
            lend.read = read_buffer(limits.framing, limits.max_line);
        }
        Step::Close(Why::Panicked)
    }

    /// Moves bytes until the connection has to wait for its socket, or has had its `share`.
    pub(crate) fn turn(&mut self, lend: &mut Lend, shared: &Shared, share: Share) -> Step {
        self.session.handle_time(shared.now_ms());
        // Lend the read buffer for this turn; the parking buffer is kept for its end. (It
        // cannot refuse: a session is parked only once it has nothing to transmit.)
        let mut park = self
            .session
            .replace_storage(std::mem::take(&mut lend.read))
            .unwrap_or_else(|read| {
                lend.read = read;
                Vec::new()
            });
        self.flowing = false;
        let step = self.run(lend, shared, share);
        // Park what is buffered in a buffer of its size (nothing between messages), and take
        // the read buffer back.
        let held = self.session.buffered();
        park.clear();
        if held > 0 {
            park.resize(held + 1, 0);
        } else {
            park = Vec::new();
        }
        if let Ok(read) = self.session.replace_storage(park)
            && lend.read.is_empty()
        {
            lend.read = read;
        }
        self.account(shared);
        if lend.read.is_empty() {
            let limits = &shared.config.limits;
            lend.read = read_buffer(limits.framing, limits.max_line);
        }
        step
    }

    fn run(&mut self, lend: &mut Lend, shared: &Shared, share: Share) -> Step {
        let (mut reads, mut got) = (0, 0);
        let max_reads = match share {
            Share::Full => READS_PER_TURN,
            Share::Short => 1,
        };
        loop {
            // 1. Output the socket did not take yet goes first: no reading while it waits.
            match self.flush(shared) {
                Ok(true) => {}
                Ok(false) => {
                    self.session.handle_blocked();
                    if !self.gave_up_output() {
                        return Step::Wait;
                    }
                }
                Err(why) => return Step::Close(why),
            }
            // 2. Replies to what is buffered, all of them: a turn ends with the session holding
            //    only a partial line, so its storage can be parked.
            loop {
                lend.ends.clear();
                let ends = &mut lend.ends;
                let n = self
                    .session
                    .poll_transmit_with(&mut lend.staging, |e| ends.push(e));
                if n == 0 {
                    break;
                }
                if let Err(why) = self.send(&lend.staging[..n], &lend.ends, shared) {
                    return Step::Close(why);
                }
                // Counted as soon as they are handed over: should the user's transform panic
                // in the next batch, the counters not yet taken are that lost batch's only.
                self.account(shared);
            }
            if self.out.waiting() {
                self.session.handle_blocked();
            }
            // 3. The session is closing: do as it says.
            match self.session.poll_close() {
                None => {}
                Some(Closing::HalfClose) if self.out.waiting() => return Step::Wait,
                Some(Closing::HalfClose | Closing::DropAndHalfClose) => {
                    self.out.drop_pending(shared);
                    if self.stream.shutdown_write().is_err() {
                        return Step::Close(Why::PeerGone);
                    }
                    self.session.handle_half_closed();
                    continue;
                }
                Some(Closing::Linger) => return self.discard(lend),
                Some(Closing::Close) => return Step::Close(self.why()),
            }
            // 4. More input, until the socket says it has none, and none while output waits:
            //    input read now would stay unanswered in the session's storage, which then
            //    could not be parked, and the worker would allocate another read buffer.
            if !self.readable || self.out.waiting() {
                return Step::Wait;
            }
            if reads == max_reads {
                self.flowing |= share == Share::Full;
                return Step::Yield;
            }
            let buf = self.session.recv_buffer();
            let room = if share == Share::Short || shared.over_budget() {
                buf.len().min(SMALL_READ)
            } else {
                buf.len()
            };
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    if self.session.buffered() > 0 && shared.config.limits.framing == Framing::Lines
                    {
                        hint_unterminated(self.peer, "the peer closed");
                    }
                    self.session.handle_eof();
                }
                Ok(n) => {
                    self.session.handle_recv(n);
                    got += n;
                    self.flowing |= got > SMALL_READ;
                    reads += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close(Why::PeerGone),
            }
        }
    }

    /// While output waits: whether the session gave it up (a stall or the deadline), so the
    /// turn goes on to close rather than wait for the socket.
    fn gave_up_output(&self) -> bool {
        matches!(
            self.session.poll_close(),
            Some(Closing::DropAndHalfClose | Closing::Close)
        )
    }

    /// Lingering: reads and drops input until it would block (`Wait`), ends (`Close`), or the
    /// turn's share is spent (`Yield`: a peer that keeps sending cannot keep the worker).
    fn discard(&mut self, lend: &mut Lend) -> Step {
        for _ in 0..READS_PER_TURN {
            let buf = self.session.recv_buffer();
            let buf = if buf.is_empty() {
                &mut lend.staging[..]
            } else {
                buf
            };
            match self.stream.read(buf) {
                Ok(0) => {
                    self.session.handle_eof();
                    return Step::Close(self.why());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    self.session.handle_no_input();
                    if self.session.is_closed() {
                        return Step::Close(self.why());
                    }
                    return Step::Wait;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close(Why::PeerGone),
            }
        }
        Step::Yield
    }

    fn why(&self) -> Why {
        Why::Session(self.session.close_reason().unwrap_or(CloseReason::Eof))
    }

    /// Graceful shutdown (`PROTOCOL.md` §2.5): no more input is a request. The session answers
    /// what it has read and refuses a partial line, or, with nothing pending, closes at once;
    /// in any case the connection is closed by `deadline` (ms).
    pub(crate) fn begin_drain(&mut self, deadline: Option<u64>, shared: &Shared) {
        self.session.handle_time(shared.now_ms());
        self.session.handle_shutdown();
        self.session.set_deadline(deadline);
        self.readable = true;
    }

    /// Runs the session's timers at `now_ms`. Returns whether the connection must be served
    /// now: a timer began its close, or ended it.
    pub(crate) fn check_timeouts(&mut self, now_ms: u64, shared: &Shared) -> bool {
        let due = self.session.poll_timeout().is_some_and(|at| now_ms >= at);
        if !due {
            return false;
        }
        let partial = self.session.buffered() > 0 && shared.config.limits.framing == Framing::Lines;
        self.session.handle_time(now_ms);
        let reason = self.session.close_reason();
        if !self.timed_out
            && matches!(
                reason,
                Some(CloseReason::IdleTimeout | CloseReason::WriteStall)
            )
        {
            self.timed_out = true;
            Counters::add(&shared.counters.timeouts, 1);
            if partial && reason == Some(CloseReason::IdleTimeout) {
                hint_unterminated(self.peer, "idle timeout");
            }
        }
        true
    }

    /// Moves the session's counters into the server's.
    fn account(&mut self, shared: &Shared) {
        let c = self.session.take_counters();
        Counters::add(&shared.counters.bytes_in, c.bytes_in.into());
        Counters::add(&shared.counters.overlong, c.overlong.into());
    }

    /// After the user's transform panicked in this connection's turn: the replies of the batch
    /// it was producing never left, and were never counted (replies count when handed over).
    /// The bytes it read still count. The worker then closes the connection.
    pub(crate) fn abandon(&mut self, shared: &Shared) {
        self.account(shared);
    }

    /// Closes the socket: called by the worker, which deregisters it first. Output still
    /// unsent is given up, and its replies were never counted.
    pub(crate) fn finish(mut self, shared: &Shared) {
        self.account(shared);
        self.out.drop_pending(shared);
    }

    /// Hands `bytes` (one batch, whose replies end at `ends`) to the socket now, and keeps
    /// what it does not take. Replies count once their last byte is taken.
    fn send(&mut self, bytes: &[u8], ends: &[ReplyEnd], shared: &Shared) -> Result<(), Why> {
        let base = self.out.taken + (self.out.pending.len() - self.out.sent) as u64;
        let took = if self.out.waiting() {
            0
        } else {
            let (took, failed) = write_now(&mut self.stream, bytes);
            self.note_taken(took, shared);
            if let Some(why) = failed {
                return Err(why);
            }
            took
        };
        for e in ends {
            if e.at <= took {
                count_reply(e.kind, shared);
            } else {
                self.out.ends.push_back((base + e.at as u64, e.kind));
            }
        }
        if took < bytes.len() {
            if !self.out.waiting() {
                self.out.pending.clear();
                self.out.sent = 0;
            }
            self.out.pending.extend_from_slice(&bytes[took..]);
            shared.buffer_change(bytes.len() - took, 0);
        }
        Ok(())
    }

    /// The output the transport has not taken yet: what a completion-based driver hands to
    /// its next send operation (a copy; the bytes stay here until [`output_taken`]).
    ///
    /// [`output_taken`]: Self::output_taken
    // Used by the io_uring worker, which is Linux only.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn pending_output(&self) -> &[u8] {
        self.out.pending.get(self.out.sent..).unwrap_or(&[])
    }

    /// A completion-based driver's send operation took the first `n` bytes of
    /// [`pending_output`](Self::pending_output): progress for the stall timer, and the replies
    /// that end within them count, exactly as when a socket takes them. More than is pending
    /// (a send that completes after its output was given up) counts only what is pending.
    // Used by the io_uring worker, which is Linux only.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn output_taken(&mut self, n: usize, shared: &Shared) {
        let n = n.min(self.out.pending.len() - self.out.sent);
        self.out.sent += n;
        shared.buffer_change(0, n);
        self.note_taken(n, shared);
        if !self.out.waiting() {
            self.out.pending = Vec::new();
            self.out.sent = 0;
        }
    }

    /// Writes pending output. `Ok(true)` when none is left.
    fn flush(&mut self, shared: &Shared) -> Result<bool, Why> {
        if !self.out.waiting() {
            return Ok(true);
        }
        let (n, failed) = write_now(&mut self.stream, &self.out.pending[self.out.sent..]);
        self.out.sent += n;
        shared.buffer_change(0, n);
        self.note_taken(n, shared);
        if let Some(why) = failed {
            return Err(why);
        }
        if self.out.waiting() {
            return Ok(false);
        }
        // Give the memory back: a connection that waited for a slow reader keeps nothing.
        self.out.pending = Vec::new();
        self.out.sent = 0;
        Ok(true)
    }

    /// The socket took `n` more bytes: progress for the session's stall timer, and the replies
    /// that end within them count.
    fn note_taken(&mut self, n: usize, shared: &Shared) {
        if n == 0 {
            return;
        }
        Counters::add(&shared.counters.bytes_out, n as u64);
        self.session.handle_sent(n);
        self.out.taken += n as u64;
        while let Some(&(end, kind)) = self.out.ends.front() {
            if end > self.out.taken {
                break;
            }
            self.out.ends.pop_front();
            count_reply(kind, shared);
        }
    }
}

impl Output {
    fn waiting(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// Gives up unsent output: its replies are never counted.
    fn drop_pending(&mut self, shared: &Shared) {
        shared.buffer_change(0, self.pending.len() - self.sent);
        self.pending = Vec::new();
        self.sent = 0;
        self.ends.clear();
    }
}

/// Counts a reply handed whole to the kernel.
fn count_reply(kind: ReplyKind, shared: &Shared) {
    match kind {
        ReplyKind::Line => Counters::add(&shared.counters.lines, 1),
        ReplyKind::Chunk => Counters::add(&shared.counters.chunks, 1),
        ReplyKind::Error(_) => {}
    }
}

/// A session of the configured framing and timers, with no storage yet (the worker lends its
/// read buffer for each turn).
fn new_session(transform: DynTransform, shared: &Shared) -> Session<Vec<u8>, DynTransform> {
    let cfg = &shared.config;
    let session = match cfg.limits.framing {
        Framing::Lines => {
            let mut framer = LineFramer::new(Vec::new());
            framer.set_max_line(cfg.limits.max_line);
            Session::lines(framer, transform)
        }
        Framing::Raw => Session::raw(Vec::new(), transform),
    };
    session.with_timeouts(timeouts(&cfg.runtime))
}

/// The session's timers from the server's: a duration past `u32::MAX` ms (49 days) is as
/// good as none, and none is 0.
fn timeouts(rt: &crate::Runtime) -> Timeouts {
    let ms = |d: Option<std::time::Duration>| {
        d.map_or(0, |d| d.as_millis().clamp(1, u128::from(u32::MAX)) as u32)
    };
    Timeouts::NONE
        .idle_ms(ms(rt.idle_timeout))
        .write_stall_ms(ms(rt.write_timeout))
        .linger_ms(ms(Some(rt.linger_timeout)))
}

/// A worker's read buffer: 64 KiB of reading room beyond the longest partial line.
pub(crate) fn read_buffer(framing: Framing, max_line: usize) -> Vec<u8> {
    match framing {
        Framing::Lines => vec![0u8; READ_SIZE + max_line + 1],
        Framing::Raw => vec![0u8; READ_SIZE],
    }
}

fn hint_unterminated(peer: SocketAddr, when: &str) {
    tracing::info!(
        %peer,
        when,
        "unterminated line: no newline received; is the client expecting --framing raw?"
    );
}

/// Writes as much of `buf` as the socket takes now: how many bytes it took, and why the
/// connection must close if a write failed (after the bytes it took, which are counted).
fn write_now<S: Stream>(stream: &mut S, buf: &[u8]) -> (usize, Option<Why>) {
    let mut off = 0;
    while off < buf.len() {
        match stream.write(&buf[off..]) {
            Ok(0) => return (off, Some(Why::WriteZero)),
            Ok(m) => off += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (off, Some(Why::PeerGone)),
        }
    }
    (off, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A transport that always has input (`input`, then `WouldBlock`) and takes `room` bytes
    /// of output in all, then blocks.
    struct Tight {
        input: Vec<u8>,
        read: usize,
        reads: usize,
        room: usize,
        written: Vec<u8>,
    }

    impl Stream for Tight {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let left = &self.input[self.read..];
            if left.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = left.len().min(buf.len());
            buf[..n].copy_from_slice(&left[..n]);
            self.read += n;
            self.reads += 1;
            Ok(n)
        }

        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room - self.written.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn shutdown_write(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// No reading while output waits: a turn whose replies the transport took only in part
    /// stops before it reads again, so the session holds no unanswered input and gives its
    /// storage back to the worker (which, before, allocated a new 72 KiB read buffer for each
    /// connection blocked this way: 300 slow readers took the io_uring server to 67 MiB).
    #[test]
    fn a_turn_reads_nothing_more_once_output_waits() {
        let shared = Shared::new(crate::ServerConfig::default());
        let mut lend = Lend::new(&shared);
        let line = [b'a'; 99];
        let mut input = Vec::new();
        for _ in 0..10_000 {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let stream = Tight {
            input,
            read: 0,
            reads: 0,
            room: 1000,
            written: Vec::new(),
        };
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let transform = DynTransform::new(&shared.config.transform);
        let mut conn = Conn::new(stream, peer, transform, &shared);
        let read_buffer = lend.read.as_ptr();
        assert!(matches!(
            conn.turn(&mut lend, &shared, Share::Full),
            Step::Wait
        ));
        // One read (the first), its replies, and nothing more once they waited.
        assert_eq!(conn.stream.reads, 1);
        assert_eq!(conn.stream.written.len(), 1000);
        assert!(conn.out.waiting());
        assert!(
            conn.session.buffered() < 100,
            "more than a partial line held"
        );
        assert_eq!(
            lend.read.as_ptr(),
            read_buffer,
            "the read buffer was not given back"
        );
        // Taken once the transport has room again, and only then more input is read.
        let before = conn.stream.read;
        conn.stream.room = usize::MAX;
        assert!(matches!(
            conn.turn(&mut lend, &shared, Share::Full),
            Step::Yield | Step::Wait
        ));
        assert!(conn.stream.read > before);
        conn.finish(&shared);
    }

    /// The quiet before the busy (`SECURITY.md`): a new connection, and one whose last turn
    /// answered a request, want a short turn at once; one whose last turn read a stream (more
    /// than a short turn's read, or its whole share) waits for its full turn, even when it is
    /// idle between two rounds, until a turn of it reads no more than a request again.
    #[test]
    fn only_a_connection_with_no_stream_flowing_wants_a_short_turn() {
        let shared = Shared::new(crate::ServerConfig::default());
        let mut lend = Lend::new(&shared);
        let mut input = b"one request\n".to_vec();
        let stream_at = input.len();
        for _ in 0..3_000 {
            input.extend_from_slice(&[b's'; 99]);
            input.push(b'\n');
        }
        let stream_end = input.len();
        input.extend_from_slice(b"a request again\n");
        let stream = Tight {
            input,
            read: 0,
            reads: 0,
            room: usize::MAX,
            written: Vec::new(),
        };
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let transform = DynTransform::new(&shared.config.transform);
        let mut conn = Conn::new(stream, peer, transform, &shared);
        assert!(conn.wants_short_turn(), "a new connection");
        // A request: a short turn reads it, answers it, and yields after its one read.
        let whole = std::mem::take(&mut conn.stream.input);
        conn.stream.input = whole[..stream_at].to_vec();
        conn.turn(&mut lend, &shared, Share::Short);
        assert_eq!(conn.stream.written, b"ONE REQUEST\n");
        assert!(conn.wants_short_turn(), "after a request");
        // A stream of 300,000 bytes, read whole in full turns: idle after each, yet flowing.
        conn.stream.input = whole[..stream_end].to_vec();
        conn.readable = true;
        let mut turns = 0;
        while conn.stream.read < stream_end {
            turns += 1;
            assert!(turns < 100, "the stream was not read");
            conn.turn(&mut lend, &shared, Share::Full);
            assert!(!conn.wants_short_turn(), "turn {turns} of a stream");
        }
        assert!(conn.is_idle(), "every line of the stream was answered");
        // A request again (its event makes the socket readable): a turn reads it, and the
        // stream no longer flows.
        conn.stream.input = whole;
        conn.readable = true;
        assert!(matches!(
            conn.turn(&mut lend, &shared, Share::Full),
            Step::Wait
        ));
        assert!(conn.wants_short_turn(), "after the stream, a request");
        assert_eq!(conn.stream.read, conn.stream.input.len());
        conn.finish(&shared);
    }

    /// Issue 19, item 2: each refusal's 28-byte error reply was subtracted from the server-wide
    /// reply budget without ever being added, so the counter wrapped and every connection read
    /// in 4 KiB steps for the rest of the process. Now the refusal goes through the same
    /// accounting as every reply.
    #[test]
    fn refused_connections_leave_the_reply_budget_untouched() {
        let mut config = crate::ServerConfig::default();
        config.limits.reply_budget = 1; // any byte left over would read as "over budget"
        let shared = Shared::new(config);
        let mut lend = Lend::new(&shared);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for i in 0..200 {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let (stream, peer) = listener.accept().unwrap();
            stream.set_nonblocking(true).unwrap();
            let mut conn = Conn::refused(TcpStream::from_std(stream), peer, None, &shared);
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut got = Vec::new();
            let mut closed = false;
            while !closed {
                assert!(Instant::now() < deadline, "refusal {i} never closed");
                match conn.turn(&mut lend, &shared, Share::Full) {
                    Step::Close(_) => closed = true,
                    Step::Wait | Step::Yield => {
                        // The server has sent its FIN: the client reads its refusal to the end
                        // of stream, then ends its own side, which ends the server's linger.
                        if got.is_empty() {
                            client.read_to_end(&mut got).unwrap();
                            client.shutdown(std::net::Shutdown::Write).unwrap();
                        }
                        conn.readable = true;
                    }
                }
            }
            assert_eq!(got, upcase_core::ErrorReply::TooManyConnections.reply());
            conn.finish(&shared);
            assert!(!shared.over_budget(), "after {} refusals", i + 1);
        }
        assert_eq!(shared.snapshot_buffered(), 0);
    }
}
