//! One server-side connection as a sans-IO state machine: bytes in, reply bytes out.

use crate::framer::{LineFramer, Overlong};
use crate::protocol::ErrorReply;
use crate::transform::Transform;

/// Counters of one connection.
///
/// Four `u32`s, so copying it is cheap on a 32-bit microcontroller; each counter wraps at
/// 2<sup>32</sup>. A long-lived server adds them up in wider counters of its own
/// ([`Session::take_counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Counters {
    /// Bytes received.
    pub bytes_in: u32,
    /// Bytes of reply produced, error replies included.
    pub bytes_out: u32,
    /// Lines answered with a transformed reply, a trailing partial line at EOF included
    /// (`lines` framing only). Error replies are not counted here.
    pub lines: u32,
    /// Lines over the limit, each answered with `error: line too long`.
    pub overlong: u32,
}

impl Counters {
    const ZERO: Self = Self {
        bytes_in: 0,
        bytes_out: 0,
        lines: 0,
        overlong: 0,
    };
}

/// What the session is writing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Nothing: look for the next frame.
    Idle,
    /// Transform `storage[pos..end]`, then go to `then`.
    Input { pos: usize, end: usize, then: Then },
    /// `raw` framing, after a chunk: write what the transform holds that the input so far
    /// determines (the rest of a character that did not fit), without ending the message.
    Drain,
    /// Flush the transform, then write `\n` if `newline`.
    Flush { newline: bool },
    /// Write `\n`.
    Newline,
    /// Write `msg[pos..]`.
    Message { msg: &'static [u8], pos: usize },
}

/// What follows an [`Job::Input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// More input of the same message may follow (`raw` framing).
    Drain,
    /// The message is complete: flush, then `\n` if `newline`.
    Flush { newline: bool },
}

/// How the input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The peer closed its side: a trailing partial line is transformed without `\n`.
    Eof,
    /// Graceful shutdown: a trailing partial line is answered with `error: shutting down`.
    Shutdown,
    /// The trailing part was queued; nothing more comes after the current job.
    Closing,
    /// Every reply has been produced.
    Done,
}

/// Where input waits: a line framer, or a plain read buffer.
#[derive(Debug)]
enum Input<B> {
    Lines(LineFramer<B>),
    /// `raw` framing: `storage[..]` is the read buffer; `Job::Input` says what is unread.
    Raw(B),
}

/// The server side of one connection, without IO.
///
/// # Call order
///
/// A driver repeats:
/// 1. [`poll_transmit`](Self::poll_transmit) into its output buffer and writes what it returns,
///    until it returns `0`;
/// 2. if [`is_done`](Self::is_done), closes the connection;
/// 3. otherwise reads into [`recv_buffer`](Self::recv_buffer) and calls
///    [`handle_recv`](Self::handle_recv) with the count, or [`handle_eof`](Self::handle_eof) when
///    the read returned `0`.
///
/// [`handle_shutdown`](Self::handle_shutdown) may replace `handle_eof` for a graceful shutdown.
/// Every complete line received before it is answered.
///
/// When `poll_transmit` returns `0`, every reply byte that the input so far determines has been
/// produced: in `lines` framing the reply to every complete line, in `raw` framing the
/// transform of every complete character received. Nothing is withheld waiting for more input.
///
/// # Memory
///
/// The storage `B` (in `lines` framing at least the longest line + 1 bytes; in `raw` framing
/// the read size), the transform `T`, and about 48 bytes of state on a 32-bit target. Nothing
/// grows. [`replace_storage`](Self::replace_storage) swaps the storage between reads.
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
/// use upcase_core::{LineFramer, Session, Uppercase};
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
///     }
///     // 2. Every reply is out: close the connection.
///     if session.is_done() {
///         break;
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
    counters: Counters,
}

impl<B, T> Session<B, T> {
    /// A session in `lines` framing ([`PROTOCOL.md`](crate::spec) §2.1): `framer` cuts the input
    /// into lines, and its storage is the read buffer; each line is answered with `transform`.
    pub const fn lines(framer: LineFramer<B>, transform: T) -> Self {
        Self::with(Input::Lines(framer), transform)
    }

    /// A session in `raw` framing ([`PROTOCOL.md`](crate::spec) §2.4): every chunk read into
    /// `buffer` is transformed and answered at once. The buffer's length is the read size.
    pub const fn raw(buffer: B, transform: T) -> Self {
        Self::with(Input::Raw(buffer), transform)
    }

    const fn with(input: Input<B>, transform: T) -> Self {
        Self {
            input,
            transform,
            job: Job::Idle,
            phase: Phase::Open,
            counters: Counters::ZERO,
        }
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

    /// Whether every reply has been produced: the driver may close the connection.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the input is still open (no EOF or shutdown handled yet).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Gives back the storage and the transform.
    pub fn into_parts(self) -> (B, T) {
        let storage = match self.input {
            Input::Lines(framer) => framer.into_storage(),
            Input::Raw(buffer) => buffer,
        };
        (storage, self.transform)
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
    /// reply pending. A driver may then drop it and later build a new one from the same
    /// transform, without changing any reply.
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
    /// each hold a large buffer.
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
            // Nothing is buffered between chunks; an empty read buffer would read nothing.
            Input::Raw(_) if storage.as_ref().is_empty() => Err(storage),
            Input::Raw(buffer) => Ok(core::mem::replace(buffer, storage)),
        }
    }

    /// Where the driver reads the next bytes into. After
    /// [`poll_transmit`](Self::poll_transmit) returned `0` this is never empty (for a storage of
    /// at least one byte); in `raw` framing it is then the whole storage. While a reply is in
    /// progress it is empty: the storage still holds the input being answered.
    pub fn recv_buffer(&mut self) -> &mut [u8] {
        if self.job != Job::Idle {
            return &mut [];
        }
        match &mut self.input {
            Input::Lines(framer) => framer.spare(),
            Input::Raw(buffer) => buffer.as_mut(),
        }
    }

    /// Records that `n` bytes were read into [`recv_buffer`](Self::recv_buffer). `n` is clamped
    /// to what it offered. Ignored after EOF or shutdown, and while a reply is in progress.
    pub fn handle_recv(&mut self, n: usize) {
        if self.phase != Phase::Open || n == 0 || self.job != Job::Idle {
            return;
        }
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
    /// trailing partial line (transformed, with no `\n`), then the session is done.
    pub fn handle_eof(&mut self) {
        if self.phase == Phase::Open {
            self.phase = Phase::Eof;
        }
    }

    /// Graceful shutdown: like [`handle_eof`](Self::handle_eof), except that a trailing partial
    /// line is not a request: it is dropped and answered with `error: shutting down`.
    pub fn handle_shutdown(&mut self) {
        if self.phase == Phase::Open {
            self.phase = Phase::Shutdown;
        }
    }

    /// Writes reply bytes into `out`; returns how many. `0` means nothing more until more input
    /// arrives (or, when [`is_done`](Self::is_done), ever). Fills `out` as far as the buffered
    /// input allows, so one write can carry many replies.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let dst = &mut out[n..];
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
                        (false, Then::Flush { newline }) => Job::Flush { newline },
                    };
                }
                Job::Drain => {
                    let written = self.transform.process(&[], dst).written.min(dst.len());
                    n += written;
                    if written == 0 {
                        self.job = Job::Idle;
                    }
                }
                Job::Flush { newline } => {
                    let written = self.transform.finish(dst).min(dst.len());
                    n += written;
                    if written == 0 {
                        self.job = if newline { Job::Newline } else { Job::Idle };
                    }
                }
                Job::Newline => {
                    dst[0] = b'\n';
                    n += 1;
                    self.job = Job::Idle;
                }
                Job::Message { msg, pos } => {
                    let rest = msg.get(pos..).unwrap_or_default();
                    let k = rest.len().min(dst.len());
                    dst[..k].copy_from_slice(&rest[..k]);
                    n += k;
                    self.job = if k == rest.len() {
                        Job::Idle
                    } else {
                        Job::Message { msg, pos: pos + k }
                    };
                }
            }
        }
        self.counters.bytes_out = self.counters.bytes_out.wrapping_add(n as u32);
        n
    }

    /// Picks the next job from buffered input. Returns `false` when there is none.
    fn next_job(&mut self) -> bool {
        let framer = match &mut self.input {
            Input::Lines(framer) => Some(framer),
            Input::Raw(_) => None,
        };
        if let Some(framer) = framer {
            match framer.poll_range() {
                Some(Ok(line)) => {
                    self.counters.lines = self.counters.lines.wrapping_add(1);
                    self.job = Job::Input {
                        pos: line.start,
                        end: line.end,
                        then: Then::Flush { newline: true },
                    };
                    return true;
                }
                Some(Err(Overlong)) => {
                    self.counters.overlong = self.counters.overlong.wrapping_add(1);
                    self.job = Job::Message {
                        msg: ErrorReply::LineTooLong.reply(),
                        pos: 0,
                    };
                    return true;
                }
                None => {}
            }
        }
        let tail = match (&mut self.input, self.phase) {
            (Input::Lines(framer), Phase::Eof | Phase::Shutdown) => framer.finish_range(),
            _ => None,
        };
        match self.phase {
            Phase::Open | Phase::Done => return false,
            Phase::Closing => {
                self.phase = Phase::Done;
                return false;
            }
            Phase::Eof => {
                self.job = match tail {
                    Some(tail) => {
                        self.counters.lines = self.counters.lines.wrapping_add(1);
                        Job::Input {
                            pos: tail.start,
                            end: tail.end,
                            then: Then::Flush { newline: false },
                        }
                    }
                    None => Job::Flush { newline: false },
                };
            }
            Phase::Shutdown => {
                self.job = match tail {
                    Some(_) => Job::Message {
                        msg: ErrorReply::ShuttingDown.reply(),
                        pos: 0,
                    },
                    None => Job::Flush { newline: false },
                };
            }
        }
        self.phase = Phase::Closing;
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
