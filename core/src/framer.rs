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
/// # Call order
///
/// Read in place (zero-copy): read into [`spare`](Self::spare), call [`commit`](Self::commit)
/// with the count, then call [`poll`](Self::poll) until it returns [`Frame::Partial`]. Lines are
/// borrowed from the storage. Any order of these calls is safe: `commit` is clamped to the spare
/// length, and `poll` only reports what was committed.
///
/// At end of input, [`finish`](Self::finish) hands out the trailing partial line, if any.
/// The framer is never fused: after an overlong line or `finish` it frames the next bytes.
///
/// # Cost
///
/// Each byte is scanned for `\n` once (with `memchr` under the `fast` feature), and moved at most
/// once when the storage is compacted.
///
/// # Example
///
/// A framer over a `static` array: [`new_array`](Self::new_array) is a `const fn`, so it is
/// built at compile time and its all-zero storage lands in `.bss` (a firmware image takes such a
/// static once; under `std`, a `Mutex` guards it). Bytes are read in place, lines borrowed:
///
/// ```
/// use std::sync::Mutex;
/// use upcase_core::{Frame, LineFramer};
///
/// // 9 bytes of storage: lines of up to 8 bytes.
/// static FRAMER: Mutex<LineFramer<[u8; 9]>> = Mutex::new(LineFramer::new_array());
///
/// let mut framer = FRAMER.lock().unwrap();
/// assert_eq!(framer.max_line(), 8);
/// let mut input = &b"one\ntwo\nmuch too long\nend"[..];
/// let mut frames = Vec::new();
/// while !input.is_empty() {
///     let spare = framer.spare(); // read(spare): never empty
///     let n = spare.len().min(input.len());
///     spare[..n].copy_from_slice(&input[..n]);
///     input = &input[n..];
///     framer.commit(n);
///     loop {
///         match framer.poll() {
///             Frame::Line(line) => frames.push(line.to_vec()),
///             Frame::Overlong => frames.push(b"(too long)".to_vec()),
///             Frame::Partial => break, // not an error: read more
///         }
///     }
/// }
/// assert_eq!(frames, [&b"one"[..], b"two", b"(too long)"]);
/// assert_eq!(framer.finish(), Some(&b"end"[..])); // at end of input
/// ```
#[derive(Debug, Clone)]
pub struct LineFramer<B> {
    buf: B,
    /// Buffered, unconsumed bytes: `buf[start..end]`.
    start: usize,
    end: usize,
    /// `buf[start..scanned]` is known to hold no `\n`.
    scanned: usize,
    /// The line limit set by [`set_max_line`](LineFramer::set_max_line), plus one; `0` means
    /// the storage's capacity. (So a fresh framer is all zeros: a `static` lands in `.bss`.)
    limit: usize,
    /// Inside an overlong line: drop bytes up to the next `\n`.
    discarding: bool,
}

impl<const N: usize> LineFramer<[u8; N]> {
    /// A framer that owns an `N`-byte array, for `static`s and stack buffers. Lines may be up
    /// to `N - 1` bytes long.
    pub const fn new_array() -> Self {
        Self::from_storage([0; N])
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> LineFramer<B> {
    /// A framer over `storage`. Lines may be up to `storage.len() - 1` bytes long.
    pub const fn new(storage: B) -> Self {
        Self::from_storage(storage)
    }
}

impl<B> LineFramer<B> {
    /// Gives the storage back.
    pub fn into_storage(self) -> B {
        self.buf
    }

    const fn from_storage(buf: B) -> Self {
        Self {
            buf,
            start: 0,
            end: 0,
            scanned: 0,
            limit: 0,
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
        match self.limit {
            0 => self.capacity(),
            l => (l - 1).min(self.capacity()),
        }
    }

    /// Sets the maximum line length; the storage's [`capacity`](Self::capacity) still bounds
    /// it. Takes effect from the next call on.
    pub fn set_max_line(&mut self, max: usize) {
        self.limit = max.saturating_add(1);
    }

    /// Bytes buffered and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether the framer holds nothing: no buffered byte, and not inside an overlong line.
    /// Its storage can then be taken back ([`into_storage`](Self::into_storage)) and a new
    /// framer made later without changing what it will frame.
    pub fn is_empty(&self) -> bool {
        self.start == self.end && !self.discarding
    }

    /// Moves the buffered bytes to the front of `storage` and makes it the framer's storage;
    /// returns the old one. The framing state (a partial line, an overlong line being
    /// discarded, the line limit) is unchanged, so what the framer hands out later is the same.
    ///
    /// A driver uses this to frame in a large read buffer it lends for one turn, and to park a
    /// partial line in a small one in between.
    ///
    /// # Errors
    ///
    /// `storage` back, untouched, when it is not longer than the buffered bytes (a framer
    /// always keeps one spare byte). With nothing buffered, an empty storage is taken: a
    /// framer that holds nothing can park without memory, and reads nothing until it gets a
    /// storage again.
    pub fn replace_storage(&mut self, mut storage: B) -> Result<B, B> {
        let held = self.buffered_bytes();
        if !held.is_empty() && held.len() >= storage.as_ref().len() {
            return Err(storage);
        }
        let held_len = held.len();
        storage.as_mut()[..held_len].copy_from_slice(held);
        self.scanned -= self.start;
        self.start = 0;
        self.end = held_len;
        Ok(core::mem::replace(&mut self.buf, storage))
    }

    /// The buffered bytes, `buf[start..end]`. (The positions always lie within the storage;
    /// `get` lets the compiler see that no index can fail.)
    fn buffered_bytes(&self) -> &[u8] {
        self.buf
            .as_ref()
            .get(self.start..self.end)
            .unwrap_or_default()
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
        self.buf.as_mut().get_mut(end..).unwrap_or_default()
    }

    /// Moves the buffered bytes to the front of the storage, in non-overlapping pieces: each is
    /// a `memcpy`. (`copy_within` would link `memmove`, 1.5 KiB of flash on a Cortex-M.)
    /// Each piece is bounded by the slices it copies between (`min`, `get_mut`), so no index
    /// can fail, and a piece of zero bytes ends the loop.
    fn compact(&mut self) {
        let shift = self.start;
        if shift == 0 {
            return;
        }
        let buf = self.buf.as_mut();
        let end = self.end.min(buf.len());
        let mut src = shift;
        while src < end {
            let (head, tail) = buf.split_at_mut(src);
            let n = (end - src).min(shift);
            let Some(dst) = head.get_mut(src - shift..) else {
                break;
            };
            let n = n.min(dst.len()).min(tail.len());
            if n == 0 {
                break;
            }
            dst[..n].copy_from_slice(&tail[..n]);
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
            Some(Ok(r)) => Frame::Line(self.buf.as_ref().get(r).unwrap_or_default()),
            Some(Err(Overlong)) => Frame::Overlong,
            None => Frame::Partial,
        }
    }

    /// Like [`poll`](Self::poll), with the line as a range of [`storage`](Self::storage).
    pub(crate) fn poll_range(&mut self) -> Option<Result<Range<usize>, Overlong>> {
        let max_line = self.max_line();
        loop {
            let unscanned = self.buf.as_ref().get(self.scanned..self.end);
            let newline = find_newline(unscanned.unwrap_or_default());
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
            if line_end - self.start > max_line {
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

    /// Ends the input: returns the trailing partial line (bytes after the last `\n`), if there is
    /// one and it is not part of an overlong line, then resets. Call [`poll`](Self::poll) until
    /// [`Frame::Partial`] first, or complete lines still buffered are dropped.
    pub fn finish(&mut self) -> Option<&[u8]> {
        self.finish_range()
            .map(|r| self.buf.as_ref().get(r).unwrap_or_default())
    }

    pub(crate) fn finish_range(&mut self) -> Option<Range<usize>> {
        let partial = (!self.discarding && self.end > self.start).then_some(self.start..self.end);
        self.discarding = false;
        self.start = self.end;
        self.scanned = self.end;
        partial
    }

    /// The whole storage, for reading a range handed out by [`poll_range`](Self::poll_range).
    pub(crate) fn storage(&self) -> &[u8] {
        self.buf.as_ref()
    }
}

/// The index of the first `\n` in `bytes`.
#[cfg(feature = "fast")]
fn find_newline(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

/// The index of the first `\n` in `bytes`: the smallest code, for firmware.
#[cfg(not(feature = "fast"))]
fn find_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Marker for an overlong line in [`LineFramer::poll_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overlong;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;
    use upcase_model::{Event as Ev, frame as model, pieces};

    /// Drives the read-in-place API: each chunk is copied into `spare` (as much as fits). With
    /// `park`, the storage is swapped for an exactly sized one after every chunk and back
    /// before the next, as the std server does between turns.
    fn run(storage: usize, max: usize, input: &[u8], cuts: &[usize], park: bool) -> Vec<Ev> {
        let mut f = LineFramer::new(std::vec![0u8; storage]);
        f.set_max_line(max);
        let mut out = Vec::new();
        for r in pieces(
            input.len(),
            &cuts.iter().map(|&c| c as u64).collect::<Vec<_>>(),
        ) {
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
                if park {
                    let small = std::vec![0u8; f.buffered() + 1];
                    if f.buffered() > 0 {
                        assert!(f.replace_storage(std::vec![0u8; f.buffered()]).is_err());
                    }
                    let big = f.replace_storage(small).unwrap();
                    assert_eq!(big.len(), storage);
                    f.replace_storage(big).unwrap();
                }
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
            for park in [false, true] {
                assert_eq!(
                    &run(max + 1, *max, input, cuts, park),
                    expect,
                    "{name} park={park}"
                );
            }
        }
    }

    #[test]
    fn overlong_is_reported_once_whatever_its_length() {
        let mut input = std::vec![b'x'; 10_000];
        input.extend_from_slice(b"\nok\n");
        let cuts: Vec<usize> = (0..10_000).step_by(7).collect();
        let expect = std::vec![Ev::Overlong, line("ok")];
        assert_eq!(run(16, 15, &input, &cuts, false), expect);
        assert_eq!(run(16, 15, &input, &cuts, true), expect);
    }

    #[test]
    fn array_and_slice_storage_agree() {
        let mut backing = [0u8; 6];
        let mut a = LineFramer::new(&mut backing[..]);
        let mut b = LineFramer::<[u8; 6]>::new_array();
        assert_eq!(a.capacity(), 5);
        assert_eq!(b.capacity(), 5);
        let feed = |spare: &mut [u8], bytes: &[u8]| {
            spare[..bytes.len()].copy_from_slice(bytes);
            bytes.len()
        };
        let n = feed(a.spare(), b"12345\n");
        a.commit(n);
        let n = feed(b.spare(), b"12345\n");
        b.commit(n);
        assert_eq!(a.poll(), Frame::Line(b"12345"));
        assert_eq!(b.poll(), Frame::Line(b"12345"));
    }

    #[test]
    fn a_fresh_array_framer_is_all_zeros() {
        // What puts a `static` framer in `.bss` rather than `.data`.
        let f = LineFramer::<[u8; 4]>::new_array();
        assert_eq!(
            (f.start, f.end, f.scanned, f.limit, f.discarding),
            (0, 0, 0, 0, false)
        );
        assert_eq!(f.max_line(), 3);
    }

    #[test]
    fn set_max_line_is_clamped_to_capacity() {
        let mut f = LineFramer::<[u8; 4]>::new_array();
        f.set_max_line(100);
        assert_eq!(f.max_line(), 3);
        f.set_max_line(usize::MAX);
        assert_eq!(f.max_line(), 3);
        f.set_max_line(1);
        assert_eq!(f.max_line(), 1);
    }

    #[test]
    fn commit_poll_and_spare_in_any_order_never_panic() {
        // The sequence that made the removed push API panic: commit, poll twice, then more.
        let mut f = LineFramer::new(std::vec![0u8; 10]);
        let s = f.spare();
        s[..8].copy_from_slice(b"ab\ncdefg");
        f.commit(8);
        assert_eq!(f.poll(), Frame::Line(b"ab"));
        assert_eq!(f.poll(), Frame::Partial);
        f.commit(usize::MAX);
        assert_eq!(f.buffered(), 7, "a commit is clamped to the storage");
        assert_eq!(f.poll(), Frame::Partial);
        assert_eq!(f.finish().map(<[u8]>::len), Some(7));
        assert_eq!(f.poll(), Frame::Partial);
        assert!(!f.spare().is_empty());
    }

    proptest! {
        #[test]
        fn any_chunking_matches_one_shot_split(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>(), b'a'..=b'e'], 0..200),
            cuts in proptest::collection::vec(0usize..1000, 0..12),
            max in 0usize..24,
            slack in 1usize..8,
            park: bool,
        ) {
            let expect = model(&input, max);
            prop_assert_eq!(&run(max + slack, max, &input, &cuts, park), &expect);
        }
    }
}
