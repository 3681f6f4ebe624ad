//! One server-side connection as a sans-IO state machine: bytes in, reply bytes out.

use crate::framer::{LineFramer, Overlong};
use crate::protocol::{Framing, ServerError};
use crate::transform::Transform;

/// Counters of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Summary {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes of reply produced, error replies included.
    pub bytes_out: u64,
    /// Lines answered with a transformed reply, a trailing partial line at EOF included
    /// (`lines` framing only).
    pub lines: u64,
    /// Lines over the limit, each answered with `error: line too long`.
    pub overlong: u64,
}

impl core::ops::AddAssign for Summary {
    /// Adds another session's counters, for totals over sessions or connections.
    fn add_assign(&mut self, other: Self) {
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.lines += other.lines;
        self.overlong += other.overlong;
    }
}

/// What the session is writing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Nothing: look for the next frame.
    Idle,
    /// Transform `storage[pos..end]`, then go to `then`.
    Input { pos: usize, end: usize, then: Then },
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
    Idle,
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
/// # Memory
///
/// The storage `B` (line capacity + 1 bytes in `lines` framing; the read size in `raw`
/// framing), the transform `T`, and about 80 bytes of state. Nothing grows.
#[derive(Debug)]
pub struct Session<B, T> {
    framer: LineFramer<B>,
    transform: T,
    framing: Framing,
    job: Job,
    phase: Phase,
    summary: Summary,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, T: Transform> Session<B, T> {
    /// A session that frames input with `framer` and answers with `transform`. In `raw`
    /// framing the framer's storage is the read buffer and its line limit is not used.
    pub fn new(framer: LineFramer<B>, transform: T, framing: Framing) -> Self {
        Self {
            framer,
            transform,
            framing,
            job: Job::Idle,
            phase: Phase::Open,
            summary: Summary::default(),
        }
    }

    /// The counters so far.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Whether every reply has been produced: the driver may close the connection.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the session holds nothing between messages: input open, nothing buffered, no
    /// reply pending. An event-driven driver may then give the storage back
    /// ([`into_parts`](Self::into_parts)) until the peer sends again, and build a new session
    /// from the same transform; nothing is lost.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Open && self.job == Job::Idle && self.framer.is_empty()
    }

    /// Whether the input is still open (no EOF or shutdown handled yet).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Gives back the framer and the transform, for reuse on the next connection.
    pub fn into_parts(self) -> (LineFramer<B>, T) {
        (self.framer, self.transform)
    }

    /// Where the driver reads the next bytes into. Call only after
    /// [`poll_transmit`](Self::poll_transmit) returned `0`: then this is never empty (for a
    /// storage of at least one byte). In `raw` framing it is the whole storage.
    pub fn recv_buffer(&mut self) -> &mut [u8] {
        match self.framing {
            Framing::Lines => self.framer.spare(),
            Framing::Raw => self.framer.storage_mut(),
        }
    }

    /// Records that `n` bytes were read into [`recv_buffer`](Self::recv_buffer). Ignored after
    /// EOF or shutdown.
    pub fn handle_recv(&mut self, n: usize) {
        if self.phase != Phase::Open || n == 0 {
            return;
        }
        self.summary.bytes_in += n as u64;
        match self.framing {
            Framing::Lines => self.framer.commit(n),
            Framing::Raw => {
                let end = n.min(self.framer.storage().len());
                self.job = Job::Input {
                    pos: 0,
                    end,
                    then: Then::Idle,
                };
            }
        }
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
                    let input = self.framer.storage().get(pos..end).unwrap_or_default();
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
                        (false, Then::Idle) => Job::Idle,
                        (false, Then::Flush { newline }) => Job::Flush { newline },
                    };
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
        self.summary.bytes_out += n as u64;
        n
    }

    /// Picks the next job from buffered input. Returns `false` when there is none.
    fn next_job(&mut self) -> bool {
        if self.framing == Framing::Lines {
            match self.framer.poll_range() {
                Some(Ok(line)) => {
                    self.summary.lines += 1;
                    self.job = Job::Input {
                        pos: line.start,
                        end: line.end,
                        then: Then::Flush { newline: true },
                    };
                    return true;
                }
                Some(Err(Overlong)) => {
                    self.summary.overlong += 1;
                    self.job = Job::Message {
                        msg: ServerError::LineTooLong.reply(),
                        pos: 0,
                    };
                    return true;
                }
                None => {}
            }
        }
        match self.phase {
            Phase::Open | Phase::Done => false,
            Phase::Closing => {
                self.phase = Phase::Done;
                false
            }
            Phase::Eof => {
                self.phase = Phase::Closing;
                self.job = match self.framer.finish_range() {
                    Some(tail) if self.framing == Framing::Lines => {
                        self.summary.lines += 1;
                        Job::Input {
                            pos: tail.start,
                            end: tail.end,
                            then: Then::Flush { newline: false },
                        }
                    }
                    _ => Job::Flush { newline: false },
                };
                true
            }
            Phase::Shutdown => {
                self.phase = Phase::Closing;
                self.job = match self.framer.finish_range() {
                    Some(_) if self.framing == Framing::Lines => Job::Message {
                        msg: ServerError::ShuttingDown.reply(),
                        pos: 0,
                    },
                    _ => Job::Flush { newline: false },
                };
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::tests::oracle;
    use crate::transform::{ByteMap, Progress, Uppercase};
    use proptest::prelude::*;
    use std::vec::Vec;

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
    ) -> (Vec<u8>, Summary) {
        let mut s = Session::new(LineFramer::new(std::vec![0u8; storage]), transform, framing);
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
                return (reply, s.summary());
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

    /// Expected reply stream in `lines` framing with the uppercase transform.
    fn expect_lines(input: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let tail = parts.pop().unwrap_or_default();
        for p in parts {
            if p.len() > max {
                out.extend_from_slice(ServerError::LineTooLong.reply());
            } else {
                out.extend(oracle(p));
                out.push(b'\n');
            }
        }
        if tail.len() > max {
            out.extend_from_slice(ServerError::LineTooLong.reply());
        } else {
            out.extend(oracle(tail));
        }
        out
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
        let mut s = Session::new(
            LineFramer::new(std::vec![0u8; 5]),
            Uppercase::new(),
            Framing::Lines,
        );
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
            ServerError::LineTooLong.reply().len()
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
        assert_eq!(sum.bytes_in, input.len() as u64);
        assert_eq!(sum.bytes_out, got.len() as u64);
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

    proptest! {
        #[test]
        fn lines_any_chunking_any_output_size(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), any::<u8>(), b'a'..=b'z', Just(0xC3), Just(0x9F)], 0..160),
            cuts in proptest::collection::vec(0usize..1000, 0..10),
            max in 0usize..20,
            out in 1usize..40,
        ) {
            let (got, sum) = run(Framing::Lines, max + 1, Uppercase::new(), &input, &cuts, out, false);
            prop_assert_eq!(&got, &expect_lines(&input, max));
            prop_assert_eq!(sum.bytes_in, input.len() as u64);
            prop_assert_eq!(sum.bytes_out, got.len() as u64);
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
