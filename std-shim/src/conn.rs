//! One TCP connection of a worker: the core's sans-IO [`Session`] driven over a non-blocking
//! socket, with the output that the socket did not take yet, and the graceful close.
//!
//! A connection is one of three states ([`State`]): idle between messages (it holds only its
//! transform), busy (it holds a session, whose storage is parked in a buffer just large enough
//! for its partial line between turns), or closing (its replies are done or given up; it sends
//! them, closes its sending side, and discards its peer's input until EOF or a deadline, so
//! that closing never resets a peer whose replies are in flight).

use crate::shared::{Counters, Shared};
use crate::transform::DynTransform;
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;
use upcase_core::{ErrorReply, Framing, LineFramer, Session};

/// Reads one connection may do in one turn before the worker serves the others.
const READS_PER_TURN: usize = 4;
/// The read size while the reply budget is spent: enough for an honest request.
const SMALL_READ: usize = 4096;

/// Buffers a worker lends to the connection it is serving, for one turn.
pub(crate) struct Lend {
    /// The read buffer: the framer's storage for the turn. Read size plus the longest line.
    pub(crate) read: Vec<u8>,
    /// Where replies are batched before each write.
    pub(crate) staging: Vec<u8>,
}

/// What the connection is doing.
enum State {
    /// Open, nothing buffered between messages: only the transform is kept.
    Idle(DynTransform),
    /// Open with input or replies in progress. Between turns, the session's storage is a
    /// buffer of exactly its partial line plus one byte.
    Busy(Session<Vec<u8>, DynTransform>),
    /// No more replies: send what is buffered, then close the sending side (FIN) and discard
    /// input until the peer's EOF or `deadline`.
    Closing {
        fin_sent: bool,
        deadline: Option<Instant>,
        why: &'static str,
    },
}

/// What the worker does with the connection after a turn.
pub(crate) enum Step {
    /// Wait for the next event.
    Wait,
    /// The turn's read budget ran out with input left: serve it again after the others.
    Yield,
    /// Close the socket now.
    Close(&'static str),
}

/// What [`Conn::check_timeouts`] found.
pub(crate) enum Timeout {
    /// Nothing is due.
    None,
    /// Close the socket now: a closing connection reached its deadline.
    Close(&'static str),
    /// The connection timed out and began its graceful close: serve it, so its FIN goes out.
    Closing,
}

/// Reply bytes the socket did not take yet: `pending[sent..]`.
#[derive(Default)]
struct Output {
    pending: Vec<u8>,
    sent: usize,
    /// Since when the pending output has made no progress.
    stalled_since: Option<Instant>,
}

/// One connection.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    state: State,
    out: Output,
    /// The socket may have bytes to read (edge-triggered: set by an event, cleared when a read
    /// would block).
    pub(crate) readable: bool,
    /// The peer's FIN (or an error) is known: read until `Ok(0)`, since no further event will
    /// announce it.
    pub(crate) read_closed: bool,
    last_read: Instant,
    /// Whether the socket is watched for writability (only while output waits).
    pub(crate) watch_writable: bool,
    /// Whether this connection holds a place under the connection cap.
    pub(crate) counted: bool,
    /// The end of a graceful shutdown, once one began.
    drain_deadline: Option<Instant>,
}

/// The state a connection is left in while another is built from its parts.
const CLOSED: State = State::Closing {
    fin_sent: true,
    deadline: None,
    why: "closed",
};

impl Conn {
    /// A served connection.
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, transform: DynTransform) -> Self {
        Self::with_state(stream, peer, State::Idle(transform), true)
    }

    /// A connection refused at the cap: it gets `error: too many connections`, then the
    /// graceful close.
    pub(crate) fn refused(stream: TcpStream, peer: SocketAddr, deadline: Option<Instant>) -> Self {
        let mut c = Self::with_state(
            stream,
            peer,
            State::Closing {
                fin_sent: false,
                deadline,
                why: "refused: connection cap",
            },
            false,
        );
        c.out
            .pending
            .extend_from_slice(ErrorReply::TooManyConnections.reply());
        c
    }

    fn with_state(stream: TcpStream, peer: SocketAddr, state: State, counted: bool) -> Self {
        Self {
            stream,
            peer,
            state,
            out: Output::default(),
            readable: true,
            read_closed: false,
            last_read: Instant::now(),
            watch_writable: false,
            counted,
            drain_deadline: None,
        }
    }

    /// Whether output waits for the socket: the worker then watches for writability.
    pub(crate) fn wants_write(&self) -> bool {
        self.out.waiting()
    }

    /// Records what a poller event says about the socket.
    pub(crate) fn note_event(&mut self, ev: &mio::event::Event) {
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.readable = true;
        }
        if ev.is_read_closed() || ev.is_error() {
            self.read_closed = true;
        }
    }

    /// Whether the connection is between messages with nothing to send: a turn for it costs
    /// only what its new input asks for.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle(_)) && !self.out.waiting()
    }

    /// Moves bytes until the connection has to wait for its socket, or has had its share: at
    /// most [`READS_PER_TURN`] reads, or with `short` one read of at most [`SMALL_READ`] bytes
    /// (enough for a request; a bulk sender then yields after little work).
    pub(crate) fn turn(
        &mut self,
        lend: &mut Lend,
        shared: &Shared,
        draining: bool,
        short: bool,
    ) -> Step {
        // Lend the read buffer to a busy session for this turn; its parking buffer is kept for
        // the end of the turn. (It cannot refuse: a session is parked only once it has nothing
        // to transmit.)
        let mut park = Vec::new();
        if let State::Busy(session) = &mut self.state
            && let Ok(parked) = session.replace_storage(std::mem::take(&mut lend.read))
        {
            park = parked;
        }
        let step = self.run(lend, shared, draining, short);
        match &mut self.state {
            // Nothing in flight: the session goes, its transform stays.
            State::Busy(session) if session.is_idle() => self.end_session(lend, shared),
            // A partial line: parked in a buffer of its size, and the read buffer comes back.
            State::Busy(session) => {
                park.clear();
                park.resize(session.buffered() + 1, 0);
                if let Ok(read) = session.replace_storage(park) {
                    lend.read = read;
                }
                self.account(shared);
            }
            _ => {}
        }
        if lend.read.is_empty() {
            let limits = &shared.config.limits;
            lend.read = read_buffer(limits.framing, limits.max_line);
        }
        step
    }

    /// Ends the busy session, if there is one: its counters go to the server's, its storage
    /// back to `lend` if it was the lent read buffer, and its transform stays for the next
    /// message (a closing connection drops it).
    fn end_session(&mut self, lend: &mut Lend, shared: &Shared) {
        self.account(shared);
        if let State::Busy(_) = self.state
            && let State::Busy(session) = std::mem::replace(&mut self.state, CLOSED)
        {
            let (storage, transform) = session.into_parts();
            if lend.read.is_empty() {
                lend.read = storage;
            }
            self.state = State::Idle(transform);
        }
    }

    fn run(&mut self, lend: &mut Lend, shared: &Shared, draining: bool, short: bool) -> Step {
        let cfg = &shared.config;
        let mut reads = 0;
        let max_reads = if short { 1 } else { READS_PER_TURN };
        loop {
            // 1. Output the socket did not take yet goes first: no reading while it waits.
            match self.out.flush(&mut self.stream, shared) {
                Ok(true) => {}
                Ok(false) => return Step::Wait,
                Err(why) => return Step::Close(why),
            }
            // 2. Replies to what is buffered, all of them: a turn ends with the session
            //    holding only a partial line, so its storage can be parked.
            if let State::Busy(session) = &mut self.state {
                loop {
                    let n = session.poll_transmit(&mut lend.staging);
                    if n == 0 {
                        break;
                    }
                    self.out.send(&mut self.stream, &lend.staging[..n], shared);
                    // Counted as soon as they are handed over: should the user's transform panic
                    // in the next batch, the counters not yet taken are that lost batch's only
                    // (see `abandon`).
                    add_counters(shared, session.take_counters());
                }
                if session.is_done() {
                    self.end_session(lend, shared);
                    self.begin_close(self.linger(shared, draining), "done");
                    continue;
                }
                if self.wants_write() {
                    continue;
                }
            }
            // 3. Closing: FIN once the output is out, then discard input until EOF.
            if let State::Closing { fin_sent, .. } = &mut self.state {
                if !*fin_sent {
                    *fin_sent = true;
                    if self.stream.shutdown(Shutdown::Write).is_err() {
                        return Step::Close("peer gone");
                    }
                }
                return self.discard(&mut lend.staging);
            }
            // 4. More input, unless the socket said it has none.
            if !self.readable {
                return Step::Wait;
            }
            if reads == max_reads {
                return Step::Yield;
            }
            if let State::Idle(_) = self.state
                && let State::Idle(t) = std::mem::replace(&mut self.state, CLOSED)
            {
                let storage = std::mem::take(&mut lend.read);
                self.state = State::Busy(new_session(storage, t, cfg));
            }
            let State::Busy(session) = &mut self.state else {
                return Step::Close("closed");
            };
            let buf = session.recv_buffer();
            let room = if short || shared.over_budget() {
                buf.len().min(SMALL_READ)
            } else {
                buf.len()
            };
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    if session.buffered() > 0 && cfg.limits.framing == Framing::Lines {
                        hint_unterminated(self.peer, "the peer closed");
                    }
                    if draining {
                        session.handle_shutdown();
                    } else {
                        session.handle_eof();
                    }
                }
                Ok(n) => {
                    session.handle_recv(n);
                    self.last_read = Instant::now();
                    reads += 1;
                    // A short read emptied the socket: epoll reports the next bytes as a new
                    // event. Not so an end of stream that already arrived: it must be read.
                    self.readable = n == room || self.read_closed;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close("peer gone"),
            }
        }
    }

    /// Reads and drops input until it would block (`Wait`) or ends (`Close`).
    fn discard(&mut self, scratch: &mut [u8]) -> Step {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Step::Close("closed"),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Step::Wait;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close("peer gone"),
            }
        }
    }

    /// Ends serving: what is buffered is still sent, then the graceful close, which ends by
    /// `deadline` at the latest.
    fn begin_close(&mut self, deadline: Option<Instant>, why: &'static str) {
        self.state = State::Closing {
            fin_sent: false,
            deadline,
            why,
        };
    }

    /// The deadline of a graceful close that starts now: the linger timeout, or the drain
    /// deadline during a shutdown.
    fn linger(&self, shared: &Shared, draining: bool) -> Option<Instant> {
        match self.state {
            State::Closing { deadline, .. } if draining => deadline,
            _ if draining => self.drain_deadline,
            _ => Instant::now().checked_add(shared.config.runtime.linger_timeout),
        }
    }

    /// Graceful shutdown (`PROTOCOL.md` §2.5): no more input is a request. A busy session
    /// answers what it has read and refuses a partial line; then the connection closes by
    /// `deadline`.
    pub(crate) fn begin_drain(&mut self, deadline: Option<Instant>) {
        self.drain_deadline = deadline;
        match &mut self.state {
            State::Busy(session) => session.handle_shutdown(),
            State::Idle(_) => {
                self.state = State::Closing {
                    fin_sent: false,
                    deadline,
                    why: "shutdown",
                }
            }
            State::Closing { deadline: d, .. } => {
                *d = match (*d, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
        self.readable = true;
    }

    /// Checks the timeouts at `now`: an idle or stalled connection begins its graceful close;
    /// a closing one past its deadline is closed.
    pub(crate) fn check_timeouts(&mut self, now: Instant, shared: &Shared) -> Timeout {
        let rt = &shared.config.runtime;
        if let State::Closing { deadline, why, .. } = self.state {
            return match deadline {
                Some(d) if now >= d => Timeout::Close(why),
                _ => Timeout::None,
            };
        }
        let stalled = self
            .out
            .stalled_since
            .zip(rt.write_timeout)
            .is_some_and(|(t, lim)| now.saturating_duration_since(t) >= lim);
        let idle = self.out.stalled_since.is_none()
            && rt
                .idle_timeout
                .is_some_and(|lim| now.saturating_duration_since(self.last_read) >= lim);
        if !(stalled || idle) {
            return Timeout::None;
        }
        Counters::add(&shared.counters.timeouts, 1);
        if let State::Busy(session) = &self.state
            && session.buffered() > 0
            && shared.config.limits.framing == Framing::Lines
        {
            hint_unterminated(self.peer, "idle timeout");
        }
        if stalled {
            // The peer does not read: its replies are given up, and the FIN goes out behind
            // what the kernel already holds.
            self.out.drop_pending(shared);
        }
        self.account(shared);
        self.begin_close(
            now.checked_add(rt.linger_timeout),
            if stalled {
                "write timeout"
            } else {
                "idle timeout"
            },
        );
        Timeout::Closing
    }

    /// Moves the session's counters into the server's.
    fn account(&mut self, shared: &Shared) {
        if let State::Busy(session) = &mut self.state {
            add_counters(shared, session.take_counters());
        }
    }

    /// After the user's transform panicked in this connection's turn: the replies of the batch
    /// it was producing never left, so the lines it counted are dropped (the bytes it read
    /// still count). The worker then closes the connection.
    pub(crate) fn abandon(&mut self, shared: &Shared) {
        if let State::Busy(session) = &mut self.state {
            let lost = session.take_counters();
            Counters::add(&shared.counters.bytes_in, lost.bytes_in.into());
        }
    }

    /// Closes the socket: called by the worker, which deregisters it first. Output still
    /// unsent is given up and its replies uncounted.
    pub(crate) fn finish(mut self, shared: &Shared) {
        self.account(shared);
        self.out.drop_pending(shared);
    }
}

impl Output {
    fn waiting(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// Writes `bytes` now, or keeps what the socket does not take (a failed write is found
    /// again by the next `flush`).
    fn send(&mut self, stream: &mut TcpStream, bytes: &[u8], shared: &Shared) {
        let mut off = 0;
        if !self.waiting() {
            off = write_now(stream, bytes).unwrap_or(0);
            Counters::add(&shared.counters.bytes_out, off as u64);
            if off == bytes.len() {
                return;
            }
            self.pending.clear();
            self.sent = 0;
            self.stalled_since = Some(Instant::now());
        }
        self.pending.extend_from_slice(&bytes[off..]);
        shared.buffer_change(bytes.len() - off, 0);
    }

    /// Writes pending output. `Ok(true)` when none is left.
    fn flush(&mut self, stream: &mut TcpStream, shared: &Shared) -> Result<bool, &'static str> {
        if !self.waiting() {
            return Ok(true);
        }
        let n = write_now(stream, &self.pending[self.sent..])?;
        self.sent += n;
        Counters::add(&shared.counters.bytes_out, n as u64);
        shared.buffer_change(0, n);
        if n > 0 {
            self.stalled_since = None;
        }
        if self.waiting() {
            self.stalled_since.get_or_insert_with(Instant::now);
            return Ok(false);
        }
        // Give the memory back: a connection that waited for a slow reader keeps nothing.
        self.pending = Vec::new();
        self.sent = 0;
        Ok(true)
    }

    /// Drops unsent output, and uncounts the replies in it.
    fn drop_pending(&mut self, shared: &Shared) {
        let rest = &self.pending[self.sent..];
        let lost = undelivered_lines(rest, shared.config.limits.framing);
        shared
            .counters
            .lines
            .fetch_sub(lost, std::sync::atomic::Ordering::Relaxed);
        shared.buffer_change(0, rest.len());
        self.pending = Vec::new();
        self.sent = 0;
        self.stalled_since = None;
    }
}

/// Adds a session's counters to the server's.
fn add_counters(shared: &Shared, c: upcase_core::Counters) {
    let counters = &shared.counters;
    Counters::add(&counters.bytes_in, c.bytes_in.into());
    Counters::add(&counters.lines, c.lines.into());
    Counters::add(&counters.overlong, c.overlong.into());
}

/// A session of the configured framing over `storage`.
fn new_session(
    storage: Vec<u8>,
    transform: DynTransform,
    cfg: &crate::ServerConfig,
) -> Session<Vec<u8>, DynTransform> {
    match cfg.limits.framing {
        Framing::Lines => {
            let mut framer = LineFramer::new(storage);
            framer.set_max_line(cfg.limits.max_line);
            Session::lines(framer, transform)
        }
        Framing::Raw => Session::raw(storage, transform),
    }
}

/// A worker's read buffer: 64 KiB of reading room beyond the longest partial line.
pub(crate) fn read_buffer(framing: Framing, max_line: usize) -> Vec<u8> {
    const READ_SIZE: usize = 64 * 1024;
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

/// Writes as much of `buf` as the socket takes now. `Err` names why the connection must close.
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

/// How many transformed replies end in `rest`, the unsent tail of a connection's output: each
/// `\n` that does not end an error reply, and a final reply without `\n` (a partial line
/// answered at EOF). In `raw` framing there are no lines. Exact for the built-in transform,
/// whose output never ends a line in a lowercase letter as every error reply does.
fn undelivered_lines(rest: &[u8], framing: Framing) -> u64 {
    if framing == Framing::Raw || rest.is_empty() {
        return 0;
    }
    let mut pieces = rest.split(|&b| b == b'\n');
    let tail = pieces.next_back().unwrap_or_default();
    let replies = pieces
        .filter(|line| !line.last().is_some_and(u8::is_ascii_lowercase))
        .count();
    replies as u64 + u64::from(!tail.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undelivered_lines_skip_error_replies() {
        let out = b"LONG LINE TAIL\nerror: line too long\n\nOK\nerror: shutting down\n";
        assert_eq!(undelivered_lines(out, Framing::Lines), 3);
        assert_eq!(undelivered_lines(b"ooo long\nAB", Framing::Lines), 1);
        assert_eq!(undelivered_lines(b"AB\nCD", Framing::Lines), 2);
        assert_eq!(undelivered_lines(b"AB\nCD", Framing::Raw), 0);
        assert_eq!(undelivered_lines(b"", Framing::Lines), 0);
    }
}
