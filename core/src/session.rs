//! One server-side connection as a sans-IO state machine: bytes in, reply bytes out, the
//! connection's timers, and its graceful close.

use crate::framer::{LineFramer, Overlong};
use crate::protocol::ErrorReply;
use crate::transform::Transform;

/// Counters of one connection.
///
/// `u32`s, so copying it is cheap on a 32-bit microcontroller; each counter wraps at
/// 2<sup>32</sup>. A long-lived server adds them up in wider counters of its own
/// ([`Session::take_counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct Counters {
    /// Bytes received and framed (input discarded while the connection closes is not counted).
    pub bytes_in: u32,
    /// Bytes of reply produced, error replies included.
    pub bytes_out: u32,
    /// Lines whose transformed reply was produced whole, a trailing partial line at EOF
    /// included (`lines` framing). Error replies are not counted here.
    pub lines: u32,
    /// Lines over the limit, each answered with `error: line too long`.
    pub overlong: u32,
    /// Error replies produced ([`ReplyKind::Error`]).
    pub errors: u32,
    /// Chunks read and answered in `raw` framing ([`ReplyKind::Chunk`]).
    pub chunks: u32,
}

impl Counters {
    const ZERO: Self = Self {
        bytes_in: 0,
        bytes_out: 0,
        lines: 0,
        overlong: 0,
        errors: 0,
        chunks: 0,
    };
}

/// What kind of reply just ended in the output ([`Session::poll_transmit_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReplyKind {
    /// The transformed reply to one line, its `\n` included (or a trailing partial line's,
    /// without one, at end of stream).
    Line,
    /// The transformed reply to one chunk in `raw` framing.
    Chunk,
    /// An error reply ([`PROTOCOL.md`](crate::spec) §2.3), its `\n` included.
    Error(ErrorReply),
}

/// Where a reply ended in the output of one [`Session::poll_transmit_with`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplyEnd {
    /// The reply's last byte is `out[at - 1]`: once the transport has taken the first `at`
    /// bytes of that output, the whole reply is handed over.
    pub at: usize,
    /// What it was.
    pub kind: ReplyKind,
}

/// The timers of a connection, in milliseconds; 0 turns a timer off. [`Timeouts::NONE`] has
/// them all off; a server sets each with the `const` setters.
///
/// The std server's defaults are 60 s idle, 30 s write stall and 5 s linger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Timeouts {
    idle_ms: u32,
    write_stall_ms: u32,
    linger_ms: u32,
}

impl Timeouts {
    /// No timers: a silent peer holds the connection until the driver closes it.
    pub const NONE: Self = Self {
        idle_ms: 0,
        write_stall_ms: 0,
        linger_ms: 0,
    };

    /// Close a connection that has sent nothing for `ms` while no reply waits for it
    /// ([`CloseReason::IdleTimeout`]).
    pub const fn idle_ms(mut self, ms: u32) -> Self {
        self.idle_ms = ms;
        self
    }

    /// Give up the replies of a connection whose transport has taken nothing for `ms`
    /// ([`CloseReason::WriteStall`]).
    pub const fn write_stall_ms(mut self, ms: u32) -> Self {
        self.write_stall_ms = ms;
        self
    }

    /// After the sending side is closed, discard the peer's input for at most `ms` before the
    /// connection is closed ([`PROTOCOL.md`](crate::spec) §2.6). With 0 the session closes
    /// as soon as its sending side is: for a transport that lingers by itself, when that linger
    /// has a bound of its own (smoltcp's has none in FIN-WAIT-2: give it a linger here).
    pub const fn linger_ms(mut self, ms: u32) -> Self {
        self.linger_ms = ms;
        self
    }
}

/// Why a connection is closing ([`Session::close_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CloseReason {
    /// The peer ended its input, and every reply was produced.
    // From 1, so that `Option<CloseReason>`'s `None` is a zero byte (see `At`).
    Eof = 1,
    /// A graceful shutdown ([`Session::handle_shutdown`]).
    Shutdown,
    /// The peer sent nothing for the idle timeout.
    IdleTimeout,
    /// The transport took no reply bytes for the write-stall timeout: the replies were given
    /// up.
    WriteStall,
    /// The server refused the connection ([`Session::refuse`]).
    Refused,
    /// The deadline of [`Session::set_deadline`] passed first: the connection was closed with
    /// whatever was still unsent.
    Deadline,
}

impl core::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Eof => "end of stream",
            Self::Shutdown => "shutdown",
            Self::IdleTimeout => "idle timeout",
            Self::WriteStall => "write timeout",
            Self::Refused => "refused: connection cap",
            Self::Deadline => "deadline",
        })
    }
}

/// What the driver does to close the connection, once the session is closing
/// ([`Session::poll_close`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Closing {
    /// Every reply is produced: send what you still hold, then close the sending side (TCP
    /// FIN) and call [`Session::handle_half_closed`].
    HalfClose,
    /// The peer reads nothing: drop what you still hold unsent, close the sending side, and
    /// call [`Session::handle_half_closed`].
    DropAndHalfClose,
    /// Read and discard the peer's input into [`Session::recv_buffer`]
    /// ([`Session::handle_recv`]) until its end of stream ([`Session::handle_eof`]) or the
    /// linger timer, so that closing does not reset a peer whose replies are in flight.
    Linger,
    /// Close the connection now; anything still held unsent is given up.
    Close,
}

/// A deadline that never comes.
const NEVER: u64 = u64::MAX;

/// A time in ms, or [`NEVER`], as the session keeps it: bit-inverted, so that `NEVER` is all
/// zero bits. A new session is then zero bytes but for its configuration, and a firmware's
/// `static` session lands in `.bss` (zeroed at reset) instead of `.data` (a copy in flash).
#[derive(Clone, Copy, PartialEq, Eq)]
struct At(u64);

impl core::fmt::Debug for At {
    /// The time as given (not its stored bits), or `never`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if *self == Self::NEVER {
            f.write_str("never")
        } else {
            write!(f, "{}", self.ms())
        }
    }
}

impl At {
    const NEVER: Self = Self(0);

    const fn new(ms: u64) -> Self {
        Self(!ms)
    }

    const fn ms(self) -> u64 {
        !self.0
    }
}

/// What the session is writing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Nothing: look for the next frame.
    Idle,
    /// Transform `storage[pos..end]`, then go to `then`.
    Input { pos: usize, end: usize, then: Then },
    /// `raw` framing, after a chunk: write what the transform holds that the input so far
    /// determines (the rest of a character that did not fit); the chunk's reply then ends.
    Drain,
    /// Flush the transform; then write `\n` if `newline`, or else end a reply of `end`.
    Flush {
        newline: bool,
        end: Option<ReplyKind>,
    },
    /// Write `\n`, which ends a line's reply.
    Newline,
    /// Write the error reply `msg`, from its byte `pos`.
    Message { msg: ErrorReply, pos: usize },
}

/// What follows an [`Job::Input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// More input of the same message may follow (`raw` framing).
    Drain,
    /// The message is complete: flush, then `\n` if `newline`, or else end a reply of `end`.
    Flush {
        newline: bool,
        end: Option<ReplyKind>,
    },
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Input is read and answered.
    Open,
    /// The input ended (see `Session::end`): buffered lines are answered, then its tail.
    Ending,
    /// The tail was queued; nothing more comes after the current job.
    Tail,
    /// Every reply is produced; the driver sends, then closes its sending side.
    Done,
    /// The sending side is closed; input is discarded until EOF or the linger deadline.
    Linger,
    /// Nothing more: the driver closes the connection.
    Closed,
}

/// Where input waits: a line framer, or a plain read buffer.
#[derive(Debug)]
enum Input<B> {
    Lines(LineFramer<B>),
    /// `raw` framing: `storage[..]` is the read buffer; `Job::Input` says what is unread.
    Raw(B),
}

/// The server side of one connection, without IO: framing, replies, the timers (idle, write
/// stall, linger) and the graceful close of [`PROTOCOL.md`](crate::spec) §2.6. Its driver only
/// moves bytes and reads a clock.
///
/// # Call order
///
/// A driver repeats:
/// 1. [`handle_time`](Self::handle_time) with the time now, at the start of each turn and
///    whenever [`poll_timeout`](Self::poll_timeout) has passed (a driver with no clock and
///    [`Timeouts::NONE`] may skip it);
/// 2. [`poll_transmit`](Self::poll_transmit) into its output buffer and writes what it
///    returns, until it returns `0`; it reports what the transport took with
///    [`handle_sent`](Self::handle_sent), and [`handle_blocked`](Self::handle_blocked) while
///    the transport takes nothing (which runs the write-stall timer);
/// 3. if [`poll_close`](Self::poll_close) says so, closes as [`Closing`] says;
/// 4. otherwise reads into [`recv_buffer`](Self::recv_buffer) and calls
///    [`handle_recv`](Self::handle_recv) with the count, or [`handle_eof`](Self::handle_eof)
///    when the read returned `0`.
///
/// [`handle_shutdown`](Self::handle_shutdown) may replace `handle_eof` for a graceful shutdown.
/// Every complete line received before it is answered.
///
/// When `poll_transmit` returns `0`, every reply byte that the input so far determines has been
/// produced: in `lines` framing the reply to every complete line, in `raw` framing the
/// transform of every complete character received. Nothing is withheld waiting for more input.
///
/// # Time
///
/// Milliseconds from any fixed origin, never going back, as `u64`s the driver passes in:
/// the session reads no clock. Input is stamped with the last time given to `handle_time`.
///
/// # Memory
///
/// The storage `B` (in `lines` framing at least the longest line + 1 bytes; in `raw` framing
/// the read size), the transform `T`, and the state around them: 152 bytes in all with
/// [`Uppercase`](crate::Uppercase) and a borrowed storage on a Cortex-M3. Nothing grows. [`replace_storage`](Self::replace_storage) swaps the storage between reads.
///
/// # Panics
///
/// Never, whatever the order of calls and whatever a [`Transform`] returns: counts are clamped
/// to the buffers, and a transform that makes no progress ends its message.
///
/// # Example: the sans-IO loop
///
/// The call order by hand, with a byte slice as what the peer sends (4 bytes per read) and a
/// `Vec` as what it receives. A driver reads and writes its transport at the marked places;
/// [`blocking::serve`](crate::blocking::serve) is this loop.
///
/// ```
/// use upcase_core::{Closing, LineFramer, Session, Uppercase};
///
/// // Lines of up to 64 bytes; 16 bytes of output space per write.
/// let mut session = Session::lines(LineFramer::<[u8; 65]>::new_array(), Uppercase::new());
/// let (mut peer_sends, mut peer_receives) = (&b"hello\nworld"[..], Vec::new());
/// let mut out = [0u8; 16];
/// loop {
///     // 1. Every reply byte that the input so far determines.
///     loop {
///         let n = session.poll_transmit(&mut out);
///         if n == 0 {
///             break;
///         }
///         peer_receives.extend_from_slice(&out[..n]); // write(out[..n])
///         session.handle_sent(n);
///     }
///     // 2. Every reply is out: close the sending side, and then the connection.
///     match session.poll_close() {
///         Some(Closing::HalfClose) => {
///             session.handle_half_closed(); // shutdown(Write)
///             continue;
///         }
///         Some(_) => break, // Linger (discard until EOF) or Close: done here
///         None => {}
///     }
///     // 3. Read into the session's own storage; a read of 0 bytes is end of stream.
///     let buf = session.recv_buffer(); // read(buf)
///     let n = buf.len().min(4).min(peer_sends.len());
///     buf[..n].copy_from_slice(&peer_sends[..n]);
///     peer_sends = &peer_sends[n..];
///     match n {
///         0 => session.handle_eof(),
///         n => session.handle_recv(n),
///     }
/// }
/// // The trailing partial line is answered at end of stream, without a `\n`.
/// assert_eq!(peer_receives, b"HELLO\nWORLD");
/// assert_eq!(session.counters().lines, 2);
/// ```
///
/// # Example: timers
///
/// ```
/// use upcase_core::{CloseReason, Closing, LineFramer, Session, Timeouts, Uppercase};
///
/// let timeouts = Timeouts::NONE.idle_ms(60_000).linger_ms(5_000);
/// let mut s = Session::lines(LineFramer::<[u8; 65]>::new_array(), Uppercase::new())
///     .with_timeouts(timeouts);
/// s.handle_time(1_000); // the idle clock starts at the first time the driver gives
/// let buf = s.recv_buffer();
/// buf[..4].copy_from_slice(b"half");
/// s.handle_recv(4); // a partial line, then silence
/// assert_eq!(s.poll_timeout(), Some(61_000));
/// s.handle_time(61_000);
/// // The partial line is not a request: it gets `error: idle timeout`, then the close.
/// let mut out = [0u8; 64];
/// let n = s.poll_transmit(&mut out);
/// assert_eq!(&out[..n], b"error: idle timeout\n");
/// assert_eq!(s.close_reason(), Some(CloseReason::IdleTimeout));
/// assert_eq!(s.poll_close(), Some(Closing::HalfClose));
/// ```
///
/// # Example: static storage
///
/// [`lines`](Self::lines), [`raw`](Self::raw), [`LineFramer::new_array`] and
/// [`Uppercase::new`](crate::Uppercase::new) are `const fn`, so a session can be a `static`
/// built at compile time: no code runs to set it up, and its all-zero storage lands in `.bss`.
/// A firmware image hands such a static out once (the UART firmware's `src/hw.rs`, in
/// `examples/firmware/` of the repository); under `std`, a `Mutex` does:
///
/// ```
/// use std::sync::Mutex;
/// use upcase_core::{LineFramer, Session, Uppercase};
///
/// // 257 bytes of storage: lines of up to 256 bytes.
/// static SESSION: Mutex<Session<[u8; 257], Uppercase>> =
///     Mutex::new(Session::lines(LineFramer::new_array(), Uppercase::new()));
///
/// let mut session = SESSION.lock().unwrap();
/// let buf = session.recv_buffer();
/// buf[..3].copy_from_slice(b"hi\n");
/// session.handle_recv(3);
/// let mut out = [0u8; 8];
/// let n = session.poll_transmit(&mut out);
/// assert_eq!(&out[..n], b"HI\n");
/// ```
#[derive(Debug)]
pub struct Session<B, T> {
    input: Input<B>,
    transform: T,
    job: Job,
    phase: Phase,
    /// Why the input ended or the connection closes, once it does.
    end: Option<CloseReason>,
    counters: Counters,
    timeouts: Timeouts,
    /// The last time the driver gave; `NEVER` before the first.
    now: At,
    /// When input last arrived (the idle clock).
    last_recv: At,
    /// Since when the transport has taken nothing; `NEVER` while it takes.
    blocked_since: At,
    /// The driver's hard deadline ([`Session::set_deadline`]).
    deadline: At,
    /// The end of the linger phase.
    linger_until: At,
    /// Reply bytes produced and not yet reported taken by the transport.
    unsent: usize,
    /// Reply bytes produced in all (never reset, unlike the counters).
    produced: u64,
    /// `produced` when the input ended: whether anything was produced after.
    out_at_end: u64,
    /// The input ended with nothing pending: no linger is needed after the FIN.
    quiet_end: bool,
    /// The peer reads nothing: the driver drops what it holds.
    drop_output: bool,
}

impl<B, T> Session<B, T> {
    /// A session in `lines` framing ([`PROTOCOL.md`](crate::spec) §2.1): `framer` cuts the input
    /// into lines, and its storage is the read buffer; each line is answered with `transform`.
    /// No timers ([`Timeouts::NONE`]).
    pub const fn lines(framer: LineFramer<B>, transform: T) -> Self {
        Self::with(Input::Lines(framer), transform)
    }

    /// A session in `raw` framing ([`PROTOCOL.md`](crate::spec) §2.4): every chunk read into
    /// `buffer` is transformed and answered at once. The buffer's length is the read size.
    /// No timers ([`Timeouts::NONE`]).
    pub const fn raw(buffer: B, transform: T) -> Self {
        Self::with(Input::Raw(buffer), transform)
    }

    const fn with(input: Input<B>, transform: T) -> Self {
        Self {
            input,
            transform,
            job: Job::Idle,
            phase: Phase::Open,
            end: None,
            counters: Counters::ZERO,
            timeouts: Timeouts::NONE,
            now: At::NEVER,
            last_recv: At::NEVER,
            blocked_since: At::NEVER,
            deadline: At::NEVER,
            linger_until: At::NEVER,
            unsent: 0,
            produced: 0,
            out_at_end: 0,
            quiet_end: false,
            drop_output: false,
        }
    }

    /// This session with `timeouts`; `const`, for a `static` session.
    pub const fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the timers. The idle clock restarts at the next [`handle_time`](Self::handle_time).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
        self.last_recv = self.now;
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The counters so far, which are then set to zero: for a driver that adds them up in
    /// wider counters of its own.
    pub fn take_counters(&mut self) -> Counters {
        core::mem::take(&mut self.counters)
    }

    /// Whether every reply has been produced: what remains is to send them and close.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Linger | Phase::Closed)
    }

    /// Whether the connection is over: the driver closes it ([`Closing::Close`]).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the input is still open (no EOF, shutdown, timeout or refusal yet).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Why the connection is closing, once it is; [`CloseReason::Deadline`] if the driver's
    /// deadline cut the close short.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.end
    }

    /// What the driver must do to close, once the session is closing; `None` while it serves.
    pub fn poll_close(&self) -> Option<Closing> {
        match self.phase {
            Phase::Open | Phase::Ending | Phase::Tail => None,
            Phase::Done if self.drop_output => Some(Closing::DropAndHalfClose),
            Phase::Done => Some(Closing::HalfClose),
            Phase::Linger => Some(Closing::Linger),
            Phase::Closed => Some(Closing::Close),
        }
    }

    /// The driver closed its sending side ([`Closing::HalfClose`]). The session lingers,
    /// discarding input until the peer's EOF or the linger timer, unless linger is off: then it
    /// is closed. A connection that was idle when a shutdown began lingers only until its input
    /// is empty ([`handle_no_input`](Self::handle_no_input)): no reply of it can be in flight.
    pub fn handle_half_closed(&mut self) {
        if self.phase != Phase::Done {
            return;
        }
        self.unsent = 0;
        // Nothing was pending when the input ended, and nothing came of its tail: no reply can
        // be in flight, so no linger is needed.
        self.quiet_end &= self.produced == self.out_at_end;
        if self.timeouts.linger_ms == 0 {
            self.phase = Phase::Closed;
        } else {
            self.phase = Phase::Linger;
            self.linger_until = At::new(
                self.now
                    .ms()
                    .saturating_add(u64::from(self.timeouts.linger_ms))
                    .min(self.deadline.ms()),
            );
        }
    }

    /// When [`handle_time`](Self::handle_time) must be called next, at the latest; `None`
    /// when no timer runs.
    pub fn poll_timeout(&self) -> Option<u64> {
        let at = match self.phase {
            Phase::Closed => return None,
            Phase::Linger => self.linger_until.ms(),
            _ => self.stall_deadline().min(self.idle_deadline()),
        };
        let at = at.min(self.deadline.ms());
        (at != NEVER).then_some(at)
    }

    /// Closes the connection by `at_ms` at the latest, whatever is still unsent ([`Closing`]
    /// becomes `Close`): a graceful shutdown's drain deadline. `None` removes it.
    pub fn set_deadline(&mut self, at_ms: Option<u64>) {
        self.deadline = At::new(at_ms.unwrap_or(NEVER));
        self.linger_until = At::new(self.linger_until.ms().min(self.deadline.ms()));
    }

    /// The transport took `n` more bytes of the output: progress, which stops the write-stall
    /// timer.
    pub fn handle_sent(&mut self, n: usize) {
        self.unsent = self.unsent.saturating_sub(n);
        if n > 0 {
            self.blocked_since = At::NEVER;
        }
    }

    /// The transport takes nothing now while output waits: starts the write-stall timer, if
    /// it does not already run. Any [`handle_sent`](Self::handle_sent) of a byte stops it.
    pub fn handle_blocked(&mut self) {
        if self.blocked_since == At::NEVER && self.now != At::NEVER {
            self.blocked_since = self.now;
        }
    }

    /// Gives back the storage and the transform.
    pub fn into_parts(self) -> (B, T) {
        let storage = match self.input {
            Input::Lines(framer) => framer.into_storage(),
            Input::Raw(buffer) => buffer,
        };
        (storage, self.transform)
    }

    fn stall_deadline(&self) -> u64 {
        let on = self.timeouts.write_stall_ms != 0
            && self.blocked_since != At::NEVER
            && matches!(
                self.phase,
                Phase::Open | Phase::Ending | Phase::Tail | Phase::Done
            );
        if on && !self.drop_output {
            self.blocked_since
                .ms()
                .saturating_add(u64::from(self.timeouts.write_stall_ms))
        } else {
            NEVER
        }
    }

    fn idle_deadline(&self) -> u64 {
        let on = self.timeouts.idle_ms != 0
            && self.phase == Phase::Open
            && self.blocked_since == At::NEVER
            && self.last_recv != At::NEVER;
        if on {
            self.last_recv
                .ms()
                .saturating_add(u64::from(self.timeouts.idle_ms))
        } else {
            NEVER
        }
    }

    /// The input ends for `why`: buffered lines are still answered, then the tail as `why`
    /// says.
    fn end_input(&mut self, why: CloseReason) {
        if self.phase == Phase::Open {
            self.phase = Phase::Ending;
            self.end = Some(why);
            self.out_at_end = self.produced;
        }
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, T> Session<B, T> {
    /// A read found no input waiting (it would block). While the session lingers after a
    /// shutdown that found the connection idle, that ends the linger: closing now resets
    /// nothing, since no input is unread and no reply is in flight. Otherwise ignored.
    pub fn handle_no_input(&mut self) {
        if self.phase == Phase::Linger && self.quiet_end {
            self.phase = Phase::Closed;
        }
    }

    /// Tells the session the time and fires any timer that is due: idle (the input ends as
    /// [`CloseReason::IdleTimeout`]), write stall (the replies are given up), linger (closed),
    /// and the [`deadline`](Self::set_deadline) (closed). Call it at the start of each turn and
    /// when [`poll_timeout`](Self::poll_timeout) has passed; time never goes back.
    pub fn handle_time(&mut self, now_ms: u64) {
        self.now = At::new(now_ms);
        if self.last_recv == At::NEVER {
            self.last_recv = At::new(now_ms); // the idle clock starts with the first time given
        }
        if self.phase == Phase::Closed {
            return;
        }
        if now_ms >= self.deadline.ms() {
            self.close_now(CloseReason::Deadline);
            return;
        }
        if now_ms >= self.stall_deadline() {
            // The peer reads nothing: its replies are given up, and the FIN goes out behind
            // what the transport already holds.
            self.end = Some(CloseReason::WriteStall);
            self.job = Job::Idle;
            self.phase = Phase::Done;
            self.drop_output = true;
            self.blocked_since = At::NEVER;
            self.clear_input();
            return;
        }
        if now_ms >= self.idle_deadline() {
            self.end_input(CloseReason::IdleTimeout);
        }
        if self.phase == Phase::Linger && now_ms >= self.linger_until.ms() {
            self.phase = Phase::Closed;
        }
    }

    fn close_now(&mut self, why: CloseReason) {
        self.phase = Phase::Closed;
        self.job = Job::Idle;
        self.end = Some(why);
        self.clear_input();
    }
    /// Forgets buffered input: nothing more of it will be answered.
    fn clear_input(&mut self) {
        if let Input::Lines(framer) = &mut self.input {
            framer.reset();
        }
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, T: Transform> Session<B, T> {
    /// Input bytes held: in `lines` framing a partial line (or lines not yet answered); in
    /// `raw` framing the part of the last chunk not yet transformed.
    pub fn buffered(&self) -> usize {
        match (&self.input, self.job) {
            (Input::Lines(f), _) => f.buffered(),
            (Input::Raw(_), Job::Input { pos, end, .. }) => end - pos,
            (Input::Raw(_), _) => 0,
        }
    }

    /// Whether the session holds nothing between messages: input open, no input buffered, no
    /// reply pending. (A `raw` session's transform may still hold an incomplete character.)
    pub fn is_idle(&self) -> bool {
        let empty = match &self.input {
            Input::Lines(f) => f.is_empty(),
            Input::Raw(_) => true,
        };
        self.phase == Phase::Open && self.job == Job::Idle && empty
    }

    /// Swaps the storage for `storage` and returns the old one, moving the buffered input (see
    /// [`buffered`](Self::buffered)) to its front. Nothing a peer sees changes. Call it only
    /// after [`poll_transmit`](Self::poll_transmit) returned `0`.
    ///
    /// An event-driven server reads into a large buffer it lends for one turn, and parks a
    /// partial line in a small one between turns, so thousands of waiting connections do not
    /// each hold a large buffer. A session that holds no input takes an empty storage.
    ///
    /// # Errors
    ///
    /// `storage` back, untouched, when a reply is in progress (`poll_transmit` has not returned
    /// `0`) or when `storage` cannot hold the buffered input plus one byte.
    pub fn replace_storage(&mut self, storage: B) -> Result<B, B> {
        if self.job != Job::Idle {
            return Err(storage);
        }
        match &mut self.input {
            Input::Lines(f) => f.replace_storage(storage),
            Input::Raw(buffer) => Ok(core::mem::replace(buffer, storage)),
        }
    }

    /// Where the driver reads the next bytes into. After
    /// [`poll_transmit`](Self::poll_transmit) returned `0` this is never empty (for a storage of
    /// at least one byte); in `raw` framing it is then the whole storage. While a reply is in
    /// progress, and once the input ended, it is empty: the storage still holds the input being
    /// answered. While the session lingers it is the whole storage, as scratch for input that
    /// is discarded.
    pub fn recv_buffer(&mut self) -> &mut [u8] {
        match (self.phase, &mut self.input) {
            (Phase::Linger, Input::Lines(framer)) => {
                framer.reset();
                framer.spare()
            }
            (Phase::Linger, Input::Raw(buffer)) => buffer.as_mut(),
            (Phase::Open, _) if self.job != Job::Idle => &mut [],
            (Phase::Open, Input::Lines(framer)) => framer.spare(),
            (Phase::Open, Input::Raw(buffer)) => buffer.as_mut(),
            _ => &mut [],
        }
    }

    /// Records that `n` bytes were read into [`recv_buffer`](Self::recv_buffer). `n` is clamped
    /// to what it offered. Ignored once the input ended and while a reply is in progress; while
    /// the session lingers, the bytes are discarded.
    pub fn handle_recv(&mut self, n: usize) {
        if self.phase != Phase::Open || n == 0 || self.job != Job::Idle {
            return;
        }
        self.last_recv = self.now;
        let taken = match &mut self.input {
            Input::Lines(framer) => {
                let before = framer.buffered();
                framer.commit(n);
                framer.buffered() - before
            }
            Input::Raw(buffer) => {
                let end = n.min(buffer.as_ref().len());
                self.job = Job::Input {
                    pos: 0,
                    end,
                    then: Then::Drain,
                };
                end
            }
        };
        self.counters.bytes_in = self.counters.bytes_in.wrapping_add(taken as u32);
    }

    /// The peer closed its sending side. Buffered complete lines are still answered, then the
    /// trailing partial line (transformed, with no `\n`), then the session is done. While the
    /// session lingers, the peer's EOF ends it: the connection is closed.
    pub fn handle_eof(&mut self) {
        match self.phase {
            Phase::Open => self.end_input(CloseReason::Eof),
            Phase::Linger => self.phase = Phase::Closed,
            _ => {}
        }
    }

    /// Graceful shutdown ([`PROTOCOL.md`](crate::spec) §2.5): like
    /// [`handle_eof`](Self::handle_eof), except that a trailing partial line is not a request:
    /// it is dropped and answered with `error: shutting down`. A `raw` session flushes its
    /// carry. A session with nothing pending needs no linger after its FIN: it closes at once.
    pub fn handle_shutdown(&mut self) {
        let quiet = self.is_idle() && self.unsent == 0;
        if self.phase == Phase::Open {
            self.end_input(CloseReason::Shutdown);
            self.quiet_end = quiet;
        }
    }

    /// Refuses the connection: the peer gets `error: too many connections`, then the graceful
    /// close. Nothing it sends is read as a request. Only on a session that has read nothing.
    pub fn refuse(&mut self) {
        if self.phase == Phase::Open && self.job == Job::Idle {
            self.end = Some(CloseReason::Refused);
            self.job = Job::Message {
                msg: ErrorReply::TooManyConnections,
                pos: 0,
            };
            self.phase = Phase::Tail;
        }
    }

    /// Writes reply bytes into `out`; returns how many. `0` means nothing more until more input
    /// arrives (or, when [`is_done`](Self::is_done), ever). Fills `out` as far as the buffered
    /// input allows, so one write can carry many replies.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> usize {
        self.poll_transmit_with(out, |_| {})
    }

    /// [`poll_transmit`](Self::poll_transmit), calling `on_end` for each reply that ends in
    /// this output, in order, with where it ends and what it was. A driver that keeps output
    /// the transport has not taken yet uses it to count exactly the replies it handed over,
    /// and to uncount those it gives up: no code needs to parse output bytes, whatever the
    /// transform produces.
    pub fn poll_transmit_with(
        &mut self,
        out: &mut [u8],
        mut on_end: impl FnMut(ReplyEnd),
    ) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some(dst) = out.get_mut(n..) else { break };
            match self.job {
                Job::Idle => {
                    if !self.next_job() {
                        break;
                    }
                }
                Job::Input { pos, end, then } => {
                    let storage = match &self.input {
                        Input::Lines(f) => f.storage(),
                        Input::Raw(b) => b.as_ref(),
                    };
                    let input = storage.get(pos..end).unwrap_or_default();
                    let p = self.transform.process(input, dst);
                    let (read, written) = (p.read.min(input.len()), p.written.min(dst.len()));
                    n += written;
                    // A transform that breaks its contract (no progress) loses the rest of
                    // this input rather than hang the connection.
                    let pos = if read == 0 && written == 0 {
                        end
                    } else {
                        pos + read
                    };
                    self.job = match (pos < end, then) {
                        (true, _) => Job::Input { pos, end, then },
                        (false, Then::Drain) => Job::Drain,
                        (false, Then::Flush { newline, end }) => Job::Flush { newline, end },
                    };
                }
                Job::Drain => {
                    let written = self.transform.process(&[], dst).written.min(dst.len());
                    n += written;
                    if written == 0 {
                        self.job = Job::Idle;
                        self.end_reply(ReplyKind::Chunk, n, &mut on_end);
                    }
                }
                Job::Flush { newline, end } => {
                    let written = self.transform.finish(dst).min(dst.len());
                    n += written;
                    if written == 0 {
                        self.job = if newline { Job::Newline } else { Job::Idle };
                        if let (false, Some(kind)) = (newline, end) {
                            self.end_reply(kind, n, &mut on_end);
                        }
                    }
                }
                Job::Newline => {
                    if let Some(b) = dst.first_mut() {
                        *b = b'\n';
                    }
                    n += 1;
                    self.job = Job::Idle;
                    self.end_reply(ReplyKind::Line, n, &mut on_end);
                }
                Job::Message { msg, pos } => {
                    let rest = msg.reply().get(pos..).unwrap_or_default();
                    let k = rest.len().min(dst.len());
                    for (d, s) in dst.iter_mut().zip(rest) {
                        *d = *s;
                    }
                    n += k;
                    if k == rest.len() {
                        self.job = Job::Idle;
                        self.end_reply(ReplyKind::Error(msg), n, &mut on_end);
                    } else {
                        self.job = Job::Message { msg, pos: pos + k };
                    }
                }
            }
        }
        self.counters.bytes_out = self.counters.bytes_out.wrapping_add(n as u32);
        self.produced = self.produced.wrapping_add(n as u64);
        self.unsent = self.unsent.saturating_add(n);
        n
    }

    /// Counts a reply that ended at `at` and reports it.
    fn end_reply(&mut self, kind: ReplyKind, at: usize, on_end: &mut impl FnMut(ReplyEnd)) {
        let c = &mut self.counters;
        match kind {
            ReplyKind::Line => c.lines = c.lines.wrapping_add(1),
            ReplyKind::Chunk => c.chunks = c.chunks.wrapping_add(1),
            ReplyKind::Error(_) => c.errors = c.errors.wrapping_add(1),
        }
        on_end(ReplyEnd { at, kind });
    }

    /// Picks the next job from buffered input. Returns `false` when there is none.
    fn next_job(&mut self) -> bool {
        if matches!(self.phase, Phase::Open | Phase::Ending)
            && let Input::Lines(framer) = &mut self.input
        {
            match framer.poll_range() {
                Some(Ok(line)) => {
                    self.job = Job::Input {
                        pos: line.start,
                        end: line.end,
                        then: Then::Flush {
                            newline: true,
                            end: None,
                        },
                    };
                    return true;
                }
                Some(Err(Overlong)) => {
                    self.counters.overlong = self.counters.overlong.wrapping_add(1);
                    self.job = Job::Message {
                        msg: ErrorReply::LineTooLong,
                        pos: 0,
                    };
                    return true;
                }
                None => {}
            }
        }
        match self.phase {
            Phase::Ending => {}
            Phase::Tail => {
                self.phase = Phase::Done;
                self.clear_input();
                return false;
            }
            _ => return false,
        }
        let tail = match &mut self.input {
            Input::Lines(framer) => framer.finish_range(),
            Input::Raw(_) => None,
        };
        let flush = Job::Flush {
            newline: false,
            end: None,
        };
        self.job = match (self.end, tail) {
            (Some(CloseReason::Eof), Some(tail)) => Job::Input {
                pos: tail.start,
                end: tail.end,
                then: Then::Flush {
                    newline: false,
                    end: Some(ReplyKind::Line),
                },
            },
            (Some(CloseReason::Shutdown), Some(_)) => Job::Message {
                msg: ErrorReply::ShuttingDown,
                pos: 0,
            },
            (Some(CloseReason::IdleTimeout), Some(_)) => Job::Message {
                msg: ErrorReply::IdleTimeout,
                pos: 0,
            },
            // No tail: the transform flushes what it holds (a `raw` carry, verbatim).
            _ => flush,
        };
        self.phase = Phase::Tail;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Framing;
    use crate::transform::tests::oracle;
    use crate::transform::{ByteMap, Progress, Uppercase};
    use proptest::prelude::*;
    use std::vec::Vec;
    use upcase_model::{determined_lines, determined_raw};

    fn session<T>(framing: Framing, storage: usize, transform: T) -> Session<Vec<u8>, T> {
        match framing {
            Framing::Lines => Session::lines(LineFramer::new(std::vec![0u8; storage]), transform),
            Framing::Raw => Session::raw(std::vec![0u8; storage], transform),
        }
    }

    /// Feeds `input` in chunks cut at `cuts`, with an `out`-byte output buffer; ends with EOF or,
    /// if `shutdown`, a graceful shutdown.
    pub(crate) fn run<T: Transform>(
        framing: Framing,
        storage: usize,
        transform: T,
        input: &[u8],
        cuts: &[usize],
        out: usize,
        shutdown: bool,
    ) -> (Vec<u8>, Counters) {
        let mut s = session(framing, storage, transform);
        let mut buf = std::vec![0u8; out];
        let mut reply = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.extend([0, input.len()]);
        bounds.sort_unstable();
        let mut chunks = bounds.windows(2).map(|w| &input[w[0]..w[1]]);
        let mut pending: &[u8] = &[];
        for _ in 0..100_000 {
            loop {
                let n = s.poll_transmit(&mut buf);
                if n == 0 {
                    break;
                }
                reply.extend_from_slice(&buf[..n]);
            }
            if s.is_done() {
                return (reply, s.counters());
            }
            while pending.is_empty() {
                match chunks.next() {
                    Some(c) => pending = c,
                    None => break,
                }
            }
            if pending.is_empty() {
                if shutdown {
                    s.handle_shutdown();
                } else {
                    s.handle_eof();
                }
                continue;
            }
            let rb = s.recv_buffer();
            assert!(!rb.is_empty());
            let k = rb.len().min(pending.len());
            rb[..k].copy_from_slice(&pending[..k]);
            s.handle_recv(k);
            pending = &pending[k..];
        }
        panic!("session did not finish");
    }

    #[test]
    fn lines_table() {
        let long = "x".repeat(40);
        let cases: &[(&str, &str)] = &[
            ("hello\n", "HELLO\n"),
            ("a\r\nb\r\n", "A\r\nB\r\n"),
            ("one\ntwo", "ONE\nTWO"),
            ("", ""),
            ("\n", "\n"),
            ("stra\u{df}e\n", "STRASSE\n"),
        ];
        for (input, expect) in cases {
            for out in [1, 3, 64] {
                let (got, _) = run(
                    Framing::Lines,
                    17,
                    Uppercase::new(),
                    input.as_bytes(),
                    &[2],
                    out,
                    false,
                );
                if cfg!(feature = "unicode") || input.is_ascii() {
                    assert_eq!(got, expect.as_bytes(), "{input:?} out={out}");
                }
            }
        }
        let input = std::format!("{long}\nok\n");
        let (got, sum) = run(
            Framing::Lines,
            17,
            Uppercase::new(),
            input.as_bytes(),
            &[5, 20],
            4,
            false,
        );
        assert_eq!(got, b"error: line too long\nOK\n");
        assert_eq!((sum.lines, sum.overlong), (1, 1));
    }

    #[test]
    fn shutdown_answers_complete_lines_and_refuses_the_partial_one() {
        let (got, sum) = run(
            Framing::Lines,
            64,
            Uppercase::new(),
            b"a\nb\npart",
            &[3],
            8,
            true,
        );
        assert_eq!(got, b"A\nB\nerror: shutting down\n");
        assert_eq!(sum.lines, 2);
        let (got, _) = run(Framing::Lines, 64, Uppercase::new(), b"a\n", &[], 8, true);
        assert_eq!(got, b"A\n");
    }

    #[test]
    fn idle_only_between_messages() {
        let mut s = session(Framing::Lines, 5, Uppercase::new());
        let mut out = [0u8; 64];
        assert!(s.is_idle());
        let feed = |s: &mut Session<Vec<u8>, Uppercase>, bytes: &[u8]| {
            let b = s.recv_buffer();
            b[..bytes.len()].copy_from_slice(bytes);
            s.handle_recv(bytes.len());
        };
        feed(&mut s, b"ab");
        assert!(!s.is_idle(), "a partial line is buffered");
        feed(&mut s, b"\n");
        assert!(!s.is_idle(), "a reply is pending");
        assert_eq!(s.poll_transmit(&mut out), 3);
        assert_eq!(s.poll_transmit(&mut out), 0);
        assert!(s.is_idle());
        feed(&mut s, b"toolo");
        assert_eq!(
            s.poll_transmit(&mut out),
            ErrorReply::LineTooLong.reply().len()
        );
        assert!(
            !s.is_idle(),
            "inside an overlong line: the rest must still be discarded"
        );
        feed(&mut s, b"ng\n");
        assert_eq!(s.poll_transmit(&mut out), 0);
        assert!(s.is_idle());
        s.handle_eof();
        assert!(!s.is_idle());
    }

    #[test]
    fn raw_framing_carries_split_characters() {
        let input = "ab\u{e9}c\u{20ac}\n".as_bytes();
        let cuts: Vec<usize> = (0..input.len()).collect();
        let (got, sum) = run(Framing::Raw, 4, Uppercase::new(), input, &cuts, 1, false);
        assert_eq!(got, oracle(input));
        assert_eq!(sum.bytes_in, input.len() as u32);
        assert_eq!(sum.bytes_out, got.len() as u32);
        assert_eq!(sum.lines, 0);
    }

    /// A transform that breaks the progress contract must not hang the session.
    struct Stuck;
    impl Transform for Stuck {
        fn process(&mut self, _: &[u8], _: &mut [u8]) -> Progress {
            Progress {
                read: 0,
                written: 0,
            }
        }
        fn finish(&mut self, _: &mut [u8]) -> usize {
            0
        }
    }

    /// A transform that claims more than the buffers hold must not make the session panic.
    struct Liar;
    impl Transform for Liar {
        fn process(&mut self, _: &[u8], _: &mut [u8]) -> Progress {
            Progress {
                read: usize::MAX,
                written: usize::MAX,
            }
        }
        fn finish(&mut self, _: &mut [u8]) -> usize {
            0
        }
    }

    #[test]
    fn misbehaving_transforms_cannot_hang_or_panic() {
        let (got, _) = run(Framing::Lines, 16, Stuck, b"abc\ndef\n", &[], 8, false);
        assert_eq!(got, b"\n\n");
        let (got, _) = run(Framing::Lines, 16, Liar, b"abc\ndef\n", &[], 8, false);
        // Claims are clamped to the buffers: each line ends with its newline, nothing overflows.
        assert_eq!(got.iter().filter(|&&b| b == b'\n').count(), 2);
        assert!(got.len() <= 2 * 9);
    }

    #[test]
    fn custom_transform_is_plugged_in() {
        let lower = ByteMap(|b: u8| b.to_ascii_lowercase());
        let (got, _) = run(Framing::Lines, 16, lower, b"HeLLo\n", &[], 8, false);
        assert_eq!(got, b"hello\n");
    }

    /// Feeds `input` chunk by chunk; after each chunk, polls until `0` and checks that the
    /// client has exactly the bytes the input so far determines, before any EOF. With `park`,
    /// the storage is swapped for a small one between chunks and back, as the std server does.
    fn realtime(
        framing: Framing,
        storage: usize,
        input: &[u8],
        cuts: &[u16],
        out: usize,
        park: bool,
    ) {
        let mut s = session(framing, storage, Uppercase::new());
        let max = storage - 1;
        let mut buf = std::vec![0u8; out];
        let mut got = Vec::new();
        let mut fed = 0;
        for chunk in upcase_model::chunks(input, cuts) {
            let mut chunk = chunk;
            while !chunk.is_empty() {
                let rb = s.recv_buffer();
                let k = rb.len().min(chunk.len());
                rb[..k].copy_from_slice(&chunk[..k]);
                s.handle_recv(k);
                chunk = &chunk[k..];
                fed += k;
                loop {
                    let n = s.poll_transmit(&mut buf);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let so_far = &input[..fed];
                let want = match framing {
                    Framing::Lines => determined_lines(so_far, max),
                    Framing::Raw => determined_raw(so_far),
                };
                assert_eq!(got, want, "after {fed} bytes, out={out}");
                if park {
                    let small = std::vec![0u8; s.buffered() + 1];
                    let big = s.replace_storage(small).unwrap();
                    assert_eq!(s.replace_storage(big).unwrap().len(), s.buffered() + 1);
                }
            }
        }
    }

    #[cfg(feature = "unicode")]
    #[test]
    fn raw_framing_withholds_nothing_the_input_determines() {
        // One `ΐ` grows from 2 to 6 bytes; with a 4-byte output buffer the last 2 bytes of its
        // reply must still come out before more input arrives.
        for out in 1..=7 {
            realtime(Framing::Raw, 4, "\u{390}".as_bytes(), &[], out, false);
            realtime(
                Framing::Raw,
                64,
                "\u{390}".repeat(11).as_bytes(),
                &[3, 9],
                out,
                true,
            );
        }
    }

    #[test]
    fn replace_storage_refuses_what_cannot_hold_the_input() {
        let mut s = session(Framing::Lines, 16, Uppercase::new());
        let rb = s.recv_buffer();
        rb[..5].copy_from_slice(b"a\nbcd");
        s.handle_recv(5);
        let mut out = [0u8; 8];
        assert_eq!(s.poll_transmit(&mut out[..1]), 1);
        // A reply is in progress: no swap.
        let small = s.replace_storage(std::vec![0u8; 64]).unwrap_err();
        assert_eq!(small.len(), 64);
        assert_eq!(s.poll_transmit(&mut out), 1);
        assert_eq!(s.poll_transmit(&mut out), 0);
        assert_eq!(s.buffered(), 3);
        assert!(
            s.replace_storage(std::vec![0u8; 3]).is_err(),
            "needs a spare byte"
        );
        let big = s.replace_storage(std::vec![0u8; 4]).unwrap();
        assert_eq!(big.len(), 16);
        s.replace_storage(big).unwrap();
        s.handle_eof();
        assert_eq!(s.poll_transmit(&mut out), 3);
        assert_eq!(&out[..3], b"BCD");
    }

    fn feed<T: Transform>(s: &mut Session<Vec<u8>, T>, bytes: &[u8]) {
        let b = s.recv_buffer();
        b[..bytes.len()].copy_from_slice(bytes);
        s.handle_recv(bytes.len());
    }

    /// Polls until `0`, with the reply ends each call reported.
    fn drain<T: Transform>(
        s: &mut Session<Vec<u8>, T>,
        out: usize,
    ) -> (Vec<u8>, Vec<(usize, ReplyKind)>) {
        let mut buf = std::vec![0u8; out];
        let (mut got, mut ends) = (Vec::new(), Vec::new());
        loop {
            let base = got.len();
            let n = s.poll_transmit_with(&mut buf, |e| ends.push((base + e.at, e.kind)));
            if n == 0 {
                return (got, ends);
            }
            got.extend_from_slice(&buf[..n]);
            s.handle_sent(n);
        }
    }

    const TIMERS: Timeouts = Timeouts::NONE.idle_ms(100).write_stall_ms(50).linger_ms(20);

    #[test]
    fn reply_ends_mark_each_reply_whatever_the_transform_outputs() {
        // A transform that outputs newlines and what looks like error replies: the ends come
        // from the session's own bookkeeping, not from the bytes.
        let evil = ByteMap(|b: u8| if b == b'x' { b'\n' } else { b });
        let mut s = session(Framing::Lines, 24, evil);
        let (mut got, mut ends) = (Vec::new(), Vec::new());
        for piece in [
            &b"axb\n"[..],
            b"0123456789abcdefghijklmnop",
            b"qrst\nerror: idle timeout\n",
            b"tail",
        ] {
            for chunk in piece.chunks(8) {
                feed(&mut s, chunk);
                let (g, e) = drain(&mut s, 3);
                ends.extend(e.into_iter().map(|(at, k)| (at + got.len(), k)));
                got.extend(g);
            }
        }
        s.handle_eof();
        let (g, e) = drain(&mut s, 3);
        ends.extend(e.into_iter().map(|(at, k)| (at + got.len(), k)));
        got.extend(g);
        assert_eq!(
            got,
            b"a\nb\nerror: line too long\nerror: idle timeout\ntail"
        );
        assert_eq!(
            ends,
            [
                (4, ReplyKind::Line),
                (25, ReplyKind::Error(ErrorReply::LineTooLong)),
                (45, ReplyKind::Line),
                (49, ReplyKind::Line),
            ]
        );
        let c = s.counters();
        assert_eq!((c.lines, c.errors, c.overlong), (3, 1, 1));
    }

    #[test]
    fn idle_timeout_answers_lines_refuses_the_partial_one_and_lingers() {
        let mut s = session(Framing::Lines, 32, Uppercase::new()).with_timeouts(TIMERS);
        s.handle_time(0);
        feed(&mut s, b"a\npart");
        assert_eq!(drain(&mut s, 8).0, b"A\n");
        s.handle_time(50);
        feed(&mut s, b"ial"); // input restarts the idle clock
        assert_eq!(s.poll_timeout(), Some(150));
        s.handle_time(149);
        assert!(s.is_open());
        s.handle_time(150);
        assert_eq!(drain(&mut s, 8).0, b"error: idle timeout\n");
        assert_eq!(s.close_reason(), Some(CloseReason::IdleTimeout));
        assert_eq!(s.poll_close(), Some(Closing::HalfClose));
        s.handle_half_closed();
        assert_eq!(s.poll_close(), Some(Closing::Linger));
        // Input while lingering is discarded, not answered.
        feed(&mut s, b"more\n");
        assert_eq!(drain(&mut s, 8).0, b"");
        assert_eq!(s.poll_timeout(), Some(170));
        s.handle_time(170);
        assert_eq!(s.poll_close(), Some(Closing::Close));
    }

    #[cfg(feature = "unicode")]
    #[test]
    fn raw_carry_goes_out_verbatim_at_idle_timeout_and_at_shutdown() {
        for shutdown in [false, true] {
            let mut s = session(Framing::Raw, 16, Uppercase::new()).with_timeouts(TIMERS);
            s.handle_time(0);
            feed(&mut s, b"a\xe2\x82");
            assert_eq!(drain(&mut s, 8).0, b"A");
            if shutdown {
                s.handle_shutdown();
            } else {
                s.handle_time(100);
            }
            assert_eq!(drain(&mut s, 8).0, b"\xe2\x82", "shutdown {shutdown}");
            assert_eq!(s.poll_close(), Some(Closing::HalfClose));
            // Bytes went out after the input ended: they may be in flight, so it lingers.
            s.handle_half_closed();
            assert_eq!(s.poll_close(), Some(Closing::Linger));
        }
    }

    #[test]
    fn shutdown_closes_an_idle_connection_at_once_and_a_busy_one_after_linger() {
        let mut s = session(Framing::Lines, 32, Uppercase::new()).with_timeouts(TIMERS);
        s.handle_time(0);
        feed(&mut s, b"a\n");
        drain(&mut s, 8);
        s.handle_shutdown();
        assert_eq!(drain(&mut s, 8).0, b"");
        assert_eq!(s.poll_close(), Some(Closing::HalfClose));
        s.handle_half_closed();
        assert_eq!(
            s.poll_close(),
            Some(Closing::Linger),
            "until the input is known empty"
        );
        s.handle_no_input();
        assert_eq!(
            s.poll_close(),
            Some(Closing::Close),
            "nothing can be in flight"
        );
        // Mid-line: the error reply, then the linger.
        let mut s = session(Framing::Lines, 32, Uppercase::new()).with_timeouts(TIMERS);
        s.handle_time(0);
        feed(&mut s, b"mid");
        s.handle_shutdown();
        assert_eq!(drain(&mut s, 8).0, b"error: shutting down\n");
        s.handle_half_closed();
        s.handle_no_input();
        assert_eq!(
            s.poll_close(),
            Some(Closing::Linger),
            "a reply may be in flight"
        );
        // Output the transport had not taken yet is in flight too.
        let mut s = session(Framing::Lines, 32, Uppercase::new()).with_timeouts(TIMERS);
        feed(&mut s, b"a\n");
        let mut out = [0u8; 8];
        assert_eq!(s.poll_transmit(&mut out), 2);
        s.handle_shutdown();
        drain(&mut s, 8);
        s.handle_half_closed();
        assert_eq!(s.poll_close(), Some(Closing::Linger));
    }

    #[test]
    fn a_stalled_transport_gives_up_the_replies_and_a_deadline_closes() {
        let mut s = session(Framing::Lines, 32, Uppercase::new()).with_timeouts(TIMERS);
        s.handle_time(0);
        feed(&mut s, b"a\nb\n");
        let mut out = [0u8; 2];
        assert_eq!(s.poll_transmit(&mut out), 2);
        s.handle_blocked();
        assert_eq!(
            s.poll_timeout(),
            Some(50),
            "the stall timer, not the idle one"
        );
        s.handle_time(50);
        assert_eq!(s.close_reason(), Some(CloseReason::WriteStall));
        assert_eq!(s.poll_close(), Some(Closing::DropAndHalfClose));
        assert_eq!(s.poll_transmit(&mut out), 0, "nothing more is produced");
        s.handle_half_closed();
        assert_eq!(s.poll_close(), Some(Closing::Linger));
        // A drain deadline ends the linger early, and any phase.
        s.set_deadline(Some(55));
        assert_eq!(s.poll_timeout(), Some(55));
        s.handle_time(55);
        assert_eq!(s.poll_close(), Some(Closing::Close));
        assert_eq!(s.close_reason(), Some(CloseReason::Deadline));
        assert_eq!(
            s.poll_timeout(),
            None,
            "a closed session runs no timer (found by fuzzing)"
        );
    }

    #[test]
    fn a_refused_connection_gets_its_error_and_reads_nothing() {
        let mut s = session(Framing::Lines, 32, Uppercase::new());
        s.refuse();
        assert!(s.recv_buffer().is_empty());
        let (got, ends) = drain(&mut s, 5);
        assert_eq!(got, ErrorReply::TooManyConnections.reply());
        assert_eq!(
            ends,
            [(got.len(), ReplyKind::Error(ErrorReply::TooManyConnections))]
        );
        assert_eq!(s.close_reason(), Some(CloseReason::Refused));
        assert_eq!(s.poll_close(), Some(Closing::HalfClose));
    }

    #[test]
    fn an_idle_session_parks_in_no_memory() {
        let mut s = session(Framing::Lines, 32, Uppercase::new());
        feed(&mut s, b"a\n");
        drain(&mut s, 8);
        let big = s.replace_storage(Vec::new()).unwrap();
        assert_eq!(big.len(), 32);
        assert!(s.recv_buffer().is_empty());
        s.replace_storage(big).unwrap();
        feed(&mut s, b"b\n");
        assert_eq!(drain(&mut s, 8).0, b"B\n");
    }

    proptest! {
        #[test]
        fn replies_arrive_before_eof_in_both_framings(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), any::<u8>(), b'a'..=b'z', Just(0xCE), Just(0x90), Just(0xC3), Just(0x9F)], 0..120),
            cuts in proptest::collection::vec(any::<u16>(), 0..10),
            storage in 2usize..24,
            out in 1usize..8,
            park: bool,
        ) {
            if cfg!(feature = "unicode") {
                realtime(Framing::Lines, storage, &input, &cuts, out, park);
                realtime(Framing::Raw, storage, &input, &cuts, out, park);
            }
        }

        #[test]
        fn lines_any_chunking_any_output_size(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), any::<u8>(), b'a'..=b'z', Just(0xC3), Just(0x9F)], 0..160),
            cuts in proptest::collection::vec(0usize..1000, 0..10),
            max in 0usize..20,
            out in 1usize..40,
        ) {
            let (got, sum) = run(Framing::Lines, max + 1, Uppercase::new(), &input, &cuts, out, false);
            prop_assert_eq!(&got, &upcase_model::replies_with(&input, max, upcase_model::End::Eof, oracle));
            prop_assert_eq!(sum.bytes_in, input.len() as u32);
            prop_assert_eq!(sum.bytes_out, got.len() as u32);
        }

        #[test]
        fn raw_any_chunking_equals_one_shot(
            input in proptest::collection::vec(any::<u8>(), 0..160),
            cuts in proptest::collection::vec(0usize..1000, 0..10),
            storage in 1usize..16,
            out in 1usize..16,
        ) {
            let (got, _) = run(Framing::Raw, storage, Uppercase::new(), &input, &cuts, out, false);
            prop_assert_eq!(got, oracle(&input));
        }
    }
}
