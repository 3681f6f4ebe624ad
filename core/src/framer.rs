//! The `lines` framing: a pure line framer over storage the caller owns.

use core::ops::Range;

/// What the framer found in its buffered input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Frame<'a> {
    /// A complete line: its content, without the `\n` (a `\r` before it is content).
    Line(&'a [u8]),
    /// The current line grew past the limit. Reported once per line; the framer then discards
    /// the line's remaining bytes up to and including its `\n`, and goes on with the next line.
    Overlong,
    /// No complete line yet: give the framer more bytes. This is not an error.
    Partial,
}

/// The result of [`LineFramer::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Feed<'a> {
    /// How many bytes of the input were consumed. The caller passes the rest to the next call.
    pub consumed: usize,
    /// What those bytes completed.
    pub frame: Frame<'a>,
}

/// Splits a byte stream into `\n`-terminated lines, with a maximum line length.
///
/// # Storage and limits
///
/// The framer owns nothing but `B`: a `[u8; N]` (for a firmware `static`), a `&mut [u8]`, or any
/// other `AsMut<[u8]>`. It never allocates or grows. With a storage of `N` bytes, the longest line
/// it accepts is `N - 1` content bytes: the last byte leaves room for the byte that decides
/// whether a full line ends there, so [`spare`](Self::spare) is never empty. A runtime limit set
/// with [`set_max_line`](Self::set_max_line) lowers that further. A line longer than the limit is
/// reported once as [`Frame::Overlong`] and its bytes are discarded, whatever its length.
///
/// # Two ways to feed it
///
/// - **Read in place** (zero-copy, for drivers): read into [`spare`](Self::spare), call
///   [`commit`](Self::commit) with the count, then call [`poll`](Self::poll) until it returns
///   [`Frame::Partial`]. Lines are borrowed from the storage.
/// - **Push** (for parsers and fuzzers): [`feed`](Self::feed) a slice; it reports how many bytes
///   it consumed and the frame they completed. A line that arrives whole in one slice while
///   nothing is buffered is borrowed from that slice without a copy.
///
/// At end of input, [`finish`](Self::finish) hands out the trailing partial line, if any.
/// The framer is never fused: after an overlong line or `finish` it frames the next bytes.
///
/// # Cost
///
/// Each byte is scanned for `\n` once, and moved at most once when the storage is compacted.
#[derive(Debug, Clone)]
pub struct LineFramer<B> {
    buf: B,
    /// Buffered, unconsumed bytes: `buf[start..end]`.
    start: usize,
    end: usize,
    /// `buf[start..scanned]` is known to hold no `\n`.
    scanned: usize,
    max_line: usize,
    /// Inside an overlong line: drop bytes up to the next `\n`.
    discarding: bool,
}

impl<const N: usize> LineFramer<[u8; N]> {
    /// A framer that owns an `N`-byte array, for `static`s and stack buffers. Lines may be up
    /// to `N - 1` bytes long.
    pub const fn new_array() -> Self {
        Self::from_parts([0; N], N.saturating_sub(1))
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> LineFramer<B> {
    /// A framer over `storage`. Lines may be up to `storage.len() - 1` bytes long.
    pub fn new(storage: B) -> Self {
        let cap = storage.as_ref().len().saturating_sub(1);
        Self::from_parts(storage, cap)
    }
}

impl<B> LineFramer<B> {
    const fn from_parts(buf: B, max_line: usize) -> Self {
        Self {
            buf,
            start: 0,
            end: 0,
            scanned: 0,
            max_line,
            discarding: false,
        }
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> LineFramer<B> {
    /// The longest line the storage can hold: its length minus one.
    pub fn capacity(&self) -> usize {
        self.buf.as_ref().len().saturating_sub(1)
    }

    /// The current maximum line length, in content bytes (the `\n` is not counted).
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Sets the maximum line length, clamped to [`capacity`](Self::capacity). Takes effect from
    /// the next call on.
    pub fn set_max_line(&mut self, max: usize) {
        self.max_line = max.min(self.capacity());
    }

    /// Bytes buffered and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether a partial line is buffered (bytes that no `\n` has ended yet).
    pub fn has_partial(&self) -> bool {
        !self.discarding && self.end > self.start
    }

    /// Whether the framer holds nothing: no buffered byte, and not inside an overlong line.
    /// Its storage can then be taken back ([`into_storage`](Self::into_storage)) and a new
    /// framer made later without changing what it will frame.
    pub fn is_empty(&self) -> bool {
        self.start == self.end && !self.discarding
    }

    /// Gives the storage back.
    pub fn into_storage(self) -> B {
        self.buf
    }

    /// Drops all buffered input and any overlong state.
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
        self.discarding = false;
    }

    /// The free tail of the storage, for a driver to read into. Moves buffered bytes to the
    /// front first when the storage is full at its end, or when that costs a single copy.
    /// Never empty for a storage of at least one byte: a partial line is at most
    /// `capacity()` bytes, one less than the storage.
    pub fn spare(&mut self) -> &mut [u8] {
        let len = self.buf.as_ref().len();
        let pending = self.end - self.start;
        // Compact when it is free (nothing buffered), cheap (one non-overlapping copy), or
        // needed (no room left at the end).
        if self.start > 0 && (pending <= self.start || self.end == len) {
            self.compact();
        }
        let end = self.end;
        &mut self.buf.as_mut()[end..]
    }

    /// Moves the buffered bytes to the front of the storage, in non-overlapping pieces: each is
    /// a `memcpy`. (`copy_within` would link `memmove`, 1.5 KiB of flash on a Cortex-M.)
    fn compact(&mut self) {
        let shift = self.start;
        let buf = self.buf.as_mut();
        let mut src = self.start;
        while src < self.end {
            let n = (self.end - src).min(shift);
            let (head, tail) = buf.split_at_mut(src);
            head[src - shift..src - shift + n].copy_from_slice(&tail[..n]);
            src += n;
        }
        self.end -= shift;
        self.scanned -= shift;
        self.start = 0;
    }

    /// Marks `n` bytes of [`spare`](Self::spare) as filled. `n` is clamped to the spare length.
    pub fn commit(&mut self, n: usize) {
        self.end += n.min(self.buf.as_ref().len() - self.end);
    }

    /// Hands out the next frame from the buffered bytes. A line is borrowed from the storage
    /// until the next mutating call.
    pub fn poll(&mut self) -> Frame<'_> {
        match self.poll_range() {
            Some(Ok(r)) => Frame::Line(&self.buf.as_ref()[r]),
            Some(Err(Overlong)) => Frame::Overlong,
            None => Frame::Partial,
        }
    }

    /// Like [`poll`](Self::poll), with the line as a range of [`storage`](Self::storage).
    pub(crate) fn poll_range(&mut self) -> Option<Result<Range<usize>, Overlong>> {
        loop {
            let window = &self.buf.as_ref()[self.scanned..self.end];
            let newline = window.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.discarding = false;
                        self.start = self.scanned + i + 1;
                        self.scanned = self.start;
                        continue;
                    }
                    None => {
                        self.start = self.end;
                        self.scanned = self.end;
                        return None;
                    }
                }
            }
            let line_end = match newline {
                Some(i) => self.scanned + i,
                None => self.end,
            };
            if line_end - self.start > self.max_line {
                // Drop the line's bytes now, so the storage is free for what follows.
                match newline {
                    Some(_) => self.start = line_end + 1,
                    None => {
                        self.start = self.end;
                        self.discarding = true;
                    }
                }
                self.scanned = self.start;
                return Some(Err(Overlong));
            }
            return match newline {
                Some(_) => {
                    let line = self.start..line_end;
                    self.start = line_end + 1;
                    self.scanned = self.start;
                    Some(Ok(line))
                }
                None => {
                    self.scanned = self.end;
                    None
                }
            };
        }
    }

    /// Pushes bytes from `input`: consumes them up to and including the first `\n`, or all of
    /// them when none ends a line. Buffered bytes from [`commit`](Self::commit) come first.
    ///
    /// `consumed` is exact: bytes before it are framed (buffered, handed out, or discarded as
    /// part of an overlong line); bytes after it are untouched.
    pub fn feed<'a>(&'a mut self, input: &'a [u8]) -> Feed<'a> {
        // A line already buffered is handed out first.
        if let Some(r) = self.poll_range() {
            return Feed {
                consumed: 0,
                frame: match r {
                    Ok(r) => Frame::Line(&self.buf.as_ref()[r]),
                    Err(Overlong) => Frame::Overlong,
                },
            };
        }
        let newline = input.iter().position(|&b| b == b'\n');
        let (take, ends) = match newline {
            Some(i) => (i, true),
            None => (input.len(), false),
        };
        let consumed = take + usize::from(ends);
        if self.discarding {
            self.discarding = !ends;
            return Feed {
                consumed,
                frame: Frame::Partial,
            };
        }
        let pending = self.end - self.start;
        if pending + take > self.max_line {
            self.start = self.end;
            self.scanned = self.end;
            self.discarding = !ends;
            return Feed {
                consumed,
                frame: Frame::Overlong,
            };
        }
        if ends && pending == 0 {
            return Feed {
                consumed,
                frame: Frame::Line(&input[..take]),
            };
        }
        // Copy into the storage; pending + take <= max_line < storage length, so it fits after
        // compaction.
        let spare = self.spare();
        spare[..take].copy_from_slice(&input[..take]);
        self.end += take;
        self.scanned = self.end;
        if !ends {
            return Feed {
                consumed,
                frame: Frame::Partial,
            };
        }
        let line = self.start..self.end;
        self.start = self.end;
        self.scanned = self.end;
        Feed {
            consumed,
            frame: Frame::Line(&self.buf.as_ref()[line]),
        }
    }

    /// Ends the input: returns the trailing partial line (bytes after the last `\n`), if there is
    /// one and it is not part of an overlong line, then resets. Call [`poll`](Self::poll) until
    /// [`Frame::Partial`] first, or complete lines still buffered are dropped.
    pub fn finish(&mut self) -> Option<&[u8]> {
        self.finish_range().map(|r| &self.buf.as_ref()[r])
    }

    pub(crate) fn finish_range(&mut self) -> Option<Range<usize>> {
        let partial = self.has_partial().then_some(self.start..self.end);
        self.discarding = false;
        self.start = self.end;
        self.scanned = self.end;
        partial
    }

    /// The whole storage, for reading a range handed out by [`poll_range`](Self::poll_range).
    pub(crate) fn storage(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The whole storage, writable, for `raw` framing, which uses it as a plain read buffer.
    pub(crate) fn storage_mut(&mut self) -> &mut [u8] {
        self.reset();
        self.buf.as_mut()
    }
}

/// Marker for an overlong line in [`LineFramer::poll_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overlong;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// What a framer reports, owned, for comparison.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Line(Vec<u8>),
        Overlong,
        Tail(Vec<u8>),
    }

    /// Reference model: split on `\n`, lines over `max` become one `Overlong`.
    fn model(input: &[u8], max: usize) -> Vec<Ev> {
        let mut out = Vec::new();
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let tail = parts.pop().unwrap_or(&[]);
        for p in parts {
            out.push(if p.len() > max {
                Ev::Overlong
            } else {
                Ev::Line(p.to_vec())
            });
        }
        if tail.len() > max {
            out.push(Ev::Overlong);
        } else if !tail.is_empty() {
            out.push(Ev::Tail(tail.to_vec()));
        }
        out
    }

    fn cut(input: &[u8], cuts: &[usize]) -> Vec<Range<usize>> {
        let mut b: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        b.push(0);
        b.push(input.len());
        b.sort_unstable();
        b.windows(2).map(|w| w[0]..w[1]).collect()
    }

    /// Drives the read-in-place API: each chunk is copied into `spare` (as much as fits).
    fn run_spare(storage: usize, max: usize, input: &[u8], cuts: &[usize]) -> Vec<Ev> {
        let mut f = LineFramer::new(std::vec![0u8; storage]);
        f.set_max_line(max);
        let mut out = Vec::new();
        for r in cut(input, cuts) {
            let mut chunk = &input[r];
            while !chunk.is_empty() {
                let spare = f.spare();
                assert!(!spare.is_empty());
                let n = spare.len().min(chunk.len());
                spare[..n].copy_from_slice(&chunk[..n]);
                f.commit(n);
                chunk = &chunk[n..];
                loop {
                    match f.poll() {
                        Frame::Line(l) => out.push(Ev::Line(l.to_vec())),
                        Frame::Overlong => out.push(Ev::Overlong),
                        Frame::Partial => break,
                    }
                }
                assert!(f.buffered() <= f.capacity());
            }
        }
        if let Some(t) = f.finish() {
            out.push(Ev::Tail(t.to_vec()));
        }
        out
    }

    /// Drives the push API and checks `consumed` against the position of each `\n`.
    fn run_feed(storage: usize, max: usize, input: &[u8], cuts: &[usize]) -> Vec<Ev> {
        let mut f = LineFramer::new(std::vec![0u8; storage]);
        f.set_max_line(max);
        let mut out = Vec::new();
        for r in cut(input, cuts) {
            let mut chunk = &input[r];
            while !chunk.is_empty() {
                let fed = f.feed(chunk);
                let expect = chunk
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(chunk.len(), |i| i + 1);
                assert_eq!(fed.consumed, expect);
                match fed.frame {
                    Frame::Line(l) => out.push(Ev::Line(l.to_vec())),
                    Frame::Overlong => out.push(Ev::Overlong),
                    Frame::Partial => {}
                }
                chunk = &chunk[fed.consumed..];
            }
        }
        if let Some(t) = f.finish() {
            out.push(Ev::Tail(t.to_vec()));
        }
        out
    }

    fn line(s: &str) -> Ev {
        Ev::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn table() {
        // (name, max line, input, cut points, expected)
        type Case<'a> = (&'a str, usize, &'a str, &'a [usize], Vec<Ev>);
        let cases: &[Case] = &[
            (
                "overlong then good",
                4,
                "abcdefgh\nok\n",
                &[3, 9],
                std::vec![Ev::Overlong, line("ok")],
            ),
            (
                "burst",
                8,
                "a\nbb\nccc\n",
                &[],
                std::vec![line("a"), line("bb"), line("ccc")],
            ),
            (
                "newline split",
                8,
                "ab\ncd\n",
                &[2, 3],
                std::vec![line("ab"), line("cd")],
            ),
            ("lone cr", 8, "a\rb\n", &[], std::vec![line("a\rb")]),
            (
                "crlf",
                8,
                "hi\r\nyo\r\n",
                &[3],
                std::vec![line("hi\r"), line("yo\r")],
            ),
            (
                "partial at eof",
                8,
                "a\nbc",
                &[1],
                std::vec![line("a"), Ev::Tail(b"bc".to_vec())],
            ),
            (
                "empty line",
                8,
                "\n\nx\n",
                &[],
                std::vec![line(""), line(""), line("x")],
            ),
            (
                "limit of one",
                1,
                "a\nbb\nc\n",
                &[1, 2, 4],
                std::vec![line("a"), Ev::Overlong, line("c")],
            ),
            (
                "exactly at limit",
                3,
                "abc\nabcd\n",
                &[1],
                std::vec![line("abc"), Ev::Overlong],
            ),
            (
                "overlong at eof",
                2,
                "ok\nabc",
                &[],
                std::vec![line("ok"), Ev::Overlong],
            ),
            (
                "limit zero",
                0,
                "\na\n\n",
                &[],
                std::vec![line(""), Ev::Overlong, line("")],
            ),
        ];
        for (name, max, input, cuts, expect) in cases {
            let input = input.as_bytes();
            assert_eq!(&model(input, *max), expect, "model: {name}");
            assert_eq!(
                &run_spare(max + 1, *max, input, cuts),
                expect,
                "spare: {name}"
            );
            assert_eq!(
                &run_feed(max + 1, *max, input, cuts),
                expect,
                "feed: {name}"
            );
        }
    }

    #[test]
    fn overlong_is_reported_once_whatever_its_length() {
        let mut input = std::vec![b'x'; 10_000];
        input.extend_from_slice(b"\nok\n");
        let cuts: Vec<usize> = (0..10_000).step_by(7).collect();
        let expect = std::vec![Ev::Overlong, line("ok")];
        assert_eq!(run_spare(16, 15, &input, &cuts), expect);
        assert_eq!(run_feed(16, 15, &input, &cuts), expect);
    }

    #[test]
    fn feed_borrows_a_whole_line_from_the_input() {
        let mut f = LineFramer::<[u8; 8]>::new_array();
        let input = b"hello\nrest";
        let fed = f.feed(input);
        let Frame::Line(l) = fed.frame else {
            panic!("{fed:?}")
        };
        assert_eq!(l.as_ptr(), input.as_ptr());
        assert_eq!(fed.consumed, 6);
    }

    #[test]
    fn array_and_slice_storage_agree() {
        let mut backing = [0u8; 6];
        let mut a = LineFramer::new(&mut backing[..]);
        let mut b = LineFramer::<[u8; 6]>::new_array();
        assert_eq!(a.capacity(), 5);
        assert_eq!(b.capacity(), 5);
        assert_eq!(a.feed(b"12345\n").frame, b.feed(b"12345\n").frame);
        assert_eq!(a.feed(b"123456\n").frame, Frame::Overlong);
    }

    #[test]
    fn set_max_line_is_clamped_to_capacity() {
        let mut f = LineFramer::<[u8; 4]>::new_array();
        f.set_max_line(100);
        assert_eq!(f.max_line(), 3);
    }

    proptest! {
        #[test]
        fn any_chunking_matches_one_shot_split(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>(), b'a'..=b'e'], 0..200),
            cuts in proptest::collection::vec(0usize..1000, 0..12),
            max in 0usize..24,
            slack in 1usize..8,
        ) {
            let expect = model(&input, max);
            prop_assert_eq!(&run_spare(max + slack, max, &input, &cuts), &expect);
            prop_assert_eq!(&run_feed(max + slack, max, &input, &cuts), &expect);
        }
    }
}
