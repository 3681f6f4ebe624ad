//! The reply function: the [`Transform`] trait and the built-in streaming [`Uppercase`].
//!
//! Pure code: bytes in, bytes out, no IO, no allocation, no recursion.

/// How far one [`Transform::process`] call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Progress {
    /// Input bytes consumed: they are now either written out or held by the transform.
    pub read: usize,
    /// Output bytes written, at the start of the output buffer.
    pub written: usize,
}

/// A streaming reply function: the server's reply to a message (`PROTOCOL.md` §1), made incremental.
///
/// A transform sees one *message* as a sequence of [`process`](Transform::process) calls and then
/// [`finish`](Transform::finish) calls until it reports that it holds nothing more. In `lines`
/// framing a message is one line (without its `\n`); in `raw` framing it is the whole stream; for
/// a datagram it is the datagram.
///
/// # Contract
///
/// - `process` must make progress whenever `input` and `output` are both non-empty: it reads at
///   least one byte or writes at least one byte. Callers in this crate stop feeding a transform
///   that breaks this rule rather than loop forever, and drop the rest of that message.
/// - `finish` writes what the transform still holds and returns the number of bytes written. It
///   returns `0` only when nothing is left; the transform is then ready for the next message.
/// - Both must work with an output buffer of one byte.
/// - Returned counts larger than the buffers are clamped by callers, so a buggy transform cannot
///   make them panic.
pub trait Transform {
    /// Transforms a prefix of `input` into a prefix of `output`.
    fn process(&mut self, input: &[u8], output: &mut [u8]) -> Progress;

    /// Flushes what the transform holds at the end of a message. Returns bytes written; `0` means
    /// the transform is empty and reset.
    fn finish(&mut self, output: &mut [u8]) -> usize;
}

impl<T: Transform + ?Sized> Transform for &mut T {
    fn process(&mut self, input: &[u8], output: &mut [u8]) -> Progress {
        (**self).process(input, output)
    }
    fn finish(&mut self, output: &mut [u8]) -> usize {
        (**self).finish(output)
    }
}

/// A byte-for-byte transform built from a function, for reply functions that map each byte on
/// its own (ROT13, `to_ascii_lowercase`, a substitution table). It holds no state between calls.
#[derive(Debug, Clone, Copy)]
pub struct ByteMap<F>(pub F);

impl<F: FnMut(u8) -> u8> Transform for ByteMap<F> {
    fn process(&mut self, input: &[u8], output: &mut [u8]) -> Progress {
        let n = input.len().min(output.len());
        for (o, &i) in output[..n].iter_mut().zip(&input[..n]) {
            *o = (self.0)(i);
        }
        Progress {
            read: n,
            written: n,
        }
    }
    fn finish(&mut self, _output: &mut [u8]) -> usize {
        0
    }
}

/// Upper bound on the bytes one input character can become: `'ΐ'` (2 bytes) becomes `"Ϊ́"`
/// (6 bytes). Checked against every `char` by a unit test.
pub const MAX_CHAR_EXPANSION: usize = 6;

/// The longest an incomplete UTF-8 sequence can be: the carry held between two reads.
pub const MAX_CARRY: usize = 3;

/// The built-in streaming uppercase transform, as `PROTOCOL.md` defines it.
///
/// - Valid UTF-8 is uppercased as `char::to_uppercase` does it (full, unconditional Unicode case
///   mapping, no locale) when the `unicode` feature is on, and only ASCII `a..=z` otherwise.
///   The mapping is the core's own 2 KB table, generated from `char::to_uppercase` and tested
///   against it for every `char`, so `core`'s 14 KB of case tables are never linked.
/// - Bytes that are not valid UTF-8 are copied verbatim. Nothing is added or dropped.
/// - The output never depends on how the input was split: a character split across calls is
///   carried (at most [`MAX_CARRY`] bytes) until it completes, and an incomplete sequence is
///   written verbatim by [`finish`](Transform::finish).
///
/// # Memory
///
/// The state is 12 bytes: the carry, and up to [`MAX_CHAR_EXPANSION`] output bytes of one
/// character that did not fit in the caller's output buffer. It works with a 1-byte output.
///
/// # Panics
///
/// Never. Every index is bounded by a length checked in the same expression (or taken with
/// `get`), so the compiler removes every bounds check: the firmware example's `no-panic` build
/// links only if no panic path is left. The property tests and fuzz targets exercise it with
/// arbitrary input and buffer sizes.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Uppercase {
    /// Bytes of an incomplete UTF-8 sequence (`carry_len` of them, at most 3).
    carry: [u8; MAX_CARRY],
    carry_len: u8,
    /// Output not yet delivered: `pending[pending_pos..pending_len]`.
    pending: [u8; MAX_CHAR_EXPANSION],
    pending_pos: u8,
    pending_len: u8,
}

impl Uppercase {
    /// A transform with nothing carried.
    pub const fn new() -> Self {
        Self {
            carry: [0; MAX_CARRY],
            carry_len: 0,
            pending: [0; MAX_CHAR_EXPANSION],
            pending_pos: 0,
            pending_len: 0,
        }
    }

    /// Copies held output into `out`; returns bytes written.
    ///
    /// Out of line: it runs once per `process`/`finish` call, not per byte, and inlined into
    /// both it cost 200 B of a Cortex-M image's flash.
    #[inline(never)]
    fn drain_pending(&mut self, out: &mut [u8]) -> usize {
        if self.pending_len == 0 {
            return 0;
        }
        let held = self
            .pending
            .get(usize::from(self.pending_pos)..usize::from(self.pending_len))
            .unwrap_or_default();
        let n = held.len().min(out.len());
        out[..n].copy_from_slice(&held[..n]);
        // n <= 6, so the cast cannot truncate.
        self.pending_pos += n as u8;
        if self.pending_pos == self.pending_len {
            self.pending_pos = 0;
            self.pending_len = 0;
        }
        n
    }

    /// Writes `bytes` (at most [`MAX_CHAR_EXPANSION`]) to `out`, holding what does not fit.
    /// Only called when nothing is pending.
    fn emit(&mut self, bytes: &[u8], out: &mut [u8]) -> usize {
        if bytes.len() <= out.len() {
            out[..bytes.len()].copy_from_slice(bytes);
            return bytes.len();
        }
        let n = bytes.len().min(MAX_CHAR_EXPANSION);
        self.pending[..n].copy_from_slice(&bytes[..n]);
        self.pending_pos = 0;
        self.pending_len = n as u8;
        self.drain_pending(out)
    }

    /// Writes the uppercase of `c`, holding what does not fit in `out`.
    fn emit_char(&mut self, c: char, out: &mut [u8]) -> usize {
        if out.len() >= MAX_CHAR_EXPANSION {
            return write_upper(c, out);
        }
        let mut buf = [0u8; MAX_CHAR_EXPANSION];
        let len = write_upper(c, &mut buf);
        self.emit(buf.get(..len).unwrap_or_default(), out)
    }

    /// Tries to complete the carried sequence with bytes from `input`. Returns progress.
    fn resume_carry(&mut self, input: &[u8], out: &mut [u8]) -> Progress {
        // The sequence so far: the carry, then the bytes read here. `need` is at most 4 and
        // `have` stays below it in the loop, so every index below is in bounds by its type.
        let mut seq = [0u8; 4];
        seq[..MAX_CARRY].copy_from_slice(&self.carry);
        let mut have = usize::from(self.carry_len).min(MAX_CARRY);
        let need = utf8::width(self.carry[0]).min(seq.len());
        let mut read = 0;
        while have < need {
            let Some(&b) = input.get(read) else {
                // Still incomplete (so `have` is at most 3): keep carrying what we read.
                self.carry.copy_from_slice(&seq[..MAX_CARRY]);
                self.carry_len = have as u8;
                return Progress { read, written: 0 };
            };
            if !utf8::continues(self.carry[0], have, b) {
                // Broken sequence: the held bytes are invalid and go out verbatim; `b` is not
                // consumed and starts afresh on the next step.
                self.carry_len = 0;
                let held = seq.get(..have).unwrap_or_default(); // always: `have < need <= 4`
                let written = self.emit(held, out);
                return Progress { read, written };
            }
            if let Some(slot) = seq.get_mut(have) {
                *slot = b; // always: `have < need <= 4`
            }
            have += 1;
            read += 1;
        }
        self.carry_len = 0;
        let written = match utf8::decode(&seq[..need]) {
            Some(c) => self.emit_char(c, out),
            None => self.emit(&seq[..need], out),
        };
        Progress { read, written }
    }
}

/// The full uppercase mapping of `c` by the core's own table (equal to `char::to_uppercase`,
/// without linking `core`'s 14 KB of case tables), or the ASCII mapping without the `unicode`
/// feature.
#[cfg(feature = "unicode")]
fn upper(c: char) -> crate::unicode::Upper {
    crate::unicode::upper(c)
}
#[cfg(not(feature = "unicode"))]
fn upper(c: char) -> core::iter::Once<char> {
    core::iter::once(c.to_ascii_uppercase())
}

/// Writes the uppercase of `c` at the start of `out`, which holds at
/// least [`MAX_CHAR_EXPANSION`] bytes. Returns the length written.
#[inline]
fn write_upper(c: char, out: &mut [u8]) -> usize {
    if !cfg!(all(feature = "unicode", feature = "fast")) {
        return write_upper_slow(c, out);
    }
    if let (Some(u), Some(dst)) = (simple_upper(c), out.get_mut(..2)) {
        // Every simple mapping is from two bytes to two bytes.
        let u = u as u32;
        dst[0] = 0xC0 | (u >> 6) as u8;
        dst[1] = 0x80 | (u & 0x3F) as u8;
        return 2;
    }
    if let ('ß', Some(dst)) = (c, out.get_mut(..2)) {
        dst.copy_from_slice(b"SS"); // the one special casing common in running text
        return 2;
    }
    if let (true, Some(dst)) = (is_caseless(c), out.get_mut(..c.len_utf8())) {
        return c.encode_utf8(dst).len();
    }
    write_upper_slow(c, out)
}

/// [`write_upper`] by the case table alone: the smallest code, the same output.
fn write_upper_slow(c: char, out: &mut [u8]) -> usize {
    let mut n = 0;
    for u in upper(c) {
        let Some(dst) = out.get_mut(n..n + u.len_utf8()) else {
            break; // cannot happen: MAX_CHAR_EXPANSION is checked for every char by a unit test
        };
        n += u.encode_utf8(dst).len();
    }
    n
}

/// The one-to-one mappings of the busiest two-byte blocks (Latin-1, Latin Extended-A, Greek,
/// Cyrillic), by arithmetic instead of a table search; each maps two UTF-8 bytes to two. `None`
/// for every other character. A unit test checks every code point against
/// `char::to_uppercase`.
#[inline]
fn simple_upper(c: char) -> Option<char> {
    let cp = c as u32;
    let down = match cp {
        0x00E0..=0x00FE if cp != 0x00F7 => 0x20,
        0x00C0..=0x00DE if cp != 0x00D7 => 0,
        // Latin Extended-A: pairs, upper then lower.
        0x0100..=0x012F | 0x0132..=0x0137 | 0x014A..=0x0177 => cp & 1,
        // Latin Extended-A: pairs, lower after upper at odd code points.
        0x0139..=0x0148 | 0x0179..=0x017E => u32::from(cp & 1 == 0),
        0x03B1..=0x03CB if cp != 0x03C2 => 0x20,
        0x03C2 => 0x1F,
        0x03AC => 0x26,
        0x03AD..=0x03AF => 0x25,
        0x03CC => 0x40,
        0x03CD..=0x03CE => 0x3F,
        0x0391..=0x03A9 => 0,
        0x0430..=0x044F => 0x20,
        0x0450..=0x045F => 0x50,
        0x0400..=0x042F => 0,
        _ => return None,
    };
    char::from_u32(cp - down)
}

/// Large blocks with no case mapping (Hebrew to Tibetan, CJK, kana, Hangul, Yi, emoji, …):
/// copied without a table look-up. A unit test checks every code point in them.
#[inline]
fn is_caseless(c: char) -> bool {
    matches!(
        c as u32,
        0x0588..=0x10CF
            | 0x13FE..=0x1C7F
            | 0x24EA..=0x2C2F
            | 0x2D2E..=0xA63F
            | 0xABC0..=0xFAFF
            | 0xFB18..=0xFF40
            | 0xFF5B..=0x10427
            | 0x105BD..=0x10CBF
            | 0x10D86..=0x118BF
            | 0x118E0..=0x16E5F
            | 0x16ED4..=0x1E921
            | 0x1E944..=0x10FFFF
    ) || !cfg!(feature = "unicode")
}

/// Decodes the complete, valid character at `s[i..]`, if there is one, with its length.
/// `None` for anything else (invalid bytes, or a sequence cut by the end of `s`), which the
/// careful path then handles byte by byte. The same rules as [`utf8::next`].
#[inline]
fn decode_at(s: &[u8], i: usize) -> Option<(char, usize)> {
    let b0 = *s.get(i)?;
    let len = utf8::width(b0);
    let seq = s.get(i..i + len).filter(|seq| seq.len() > 1)?;
    if !utf8::continues(b0, 1, seq[1]) {
        return None;
    }
    // Spelled out per length: this is the hot loop for non-ASCII text.
    let cont = |k: usize| {
        seq.get(k)
            .filter(|b| *b & 0xC0 == 0x80)
            .map(|b| u32::from(b & 0x3F))
    };
    let b1 = u32::from(seq[1] & 0x3F);
    let cp = match len {
        2 => (u32::from(b0 & 0x1F) << 6) | b1,
        3 => (u32::from(b0 & 0x0F) << 12) | (b1 << 6) | cont(2)?,
        _ => (u32::from(b0 & 0x07) << 18) | (b1 << 12) | (cont(2)? << 6) | cont(3)?,
    };
    char::from_u32(cp).map(|c| (c, len))
}

/// The fast loop of [`Uppercase::process`]: ASCII and complete valid characters, written
/// straight into `out` while it has room for the longest expansion. Returns (read, written);
/// `(0, 0)` when the first byte needs the careful path.
#[inline]
fn fast_run(input: &[u8], out: &mut [u8]) -> (usize, usize) {
    if !cfg!(all(feature = "unicode", feature = "fast")) {
        return (0, 0);
    }
    let (mut i, mut o) = (0, 0);
    // While input is left and `room` holds at least MAX_CHAR_EXPANSION (6) bytes: the slice
    // patterns are the loop's bounds, and every index below is within them.
    while let (Some(rest @ &[b0, ..]), Some(room @ [_, _, _, _, _, _, ..])) =
        (input.get(i..), out.get_mut(o..))
    {
        if b0 < 0x80 {
            // A lone ASCII byte inline; a run of them through the wide loop.
            if rest.get(1).is_some_and(|b| b.is_ascii()) {
                let n = ascii_upper_run(rest, room);
                i += n;
                o += n;
            } else {
                room[0] = b0.to_ascii_uppercase();
                i += 1;
                o += 1;
            }
            continue;
        }
        // Two-byte letters with a two-byte mapping (Latin, Greek, Cyrillic): no detour
        // through the general decoder.
        if let (0xC2..=0xDF, Some(&b1)) = (b0, rest.get(1))
            && b1 & 0xC0 == 0x80
        {
            let cp = (u32::from(b0 & 0x1F) << 6) | u32::from(b1 & 0x3F);
            if let Some(u) = char::from_u32(cp).and_then(simple_upper) {
                let u = u as u32;
                room[0] = 0xC0 | (u >> 6) as u8;
                room[1] = 0x80 | (u & 0x3F) as u8;
                i += 2;
                o += 2;
                continue;
            }
        }
        let Some((c, len)) = decode_at(rest, 0) else {
            break;
        };
        if len > 2 && is_caseless(c) {
            // CJK, kana, emoji and the like come back as they are.
            o += c.encode_utf8(room).len();
        } else {
            o += write_upper(c, room);
        }
        i += len;
    }
    (i, o)
}

impl Transform for Uppercase {
    fn process(&mut self, input: &[u8], output: &mut [u8]) -> Progress {
        if !cfg!(feature = "unicode") {
            // ASCII-only build: each byte on its own, non-ASCII bytes copied as they are. Nothing
            // is ever carried or held, so the code for that is not even linked.
            let n = input.len().min(output.len());
            for (o, &i) in output[..n].iter_mut().zip(&input[..n]) {
                *o = i.to_ascii_uppercase();
            }
            return Progress {
                read: n,
                written: n,
            };
        }
        let mut written = self.drain_pending(output);
        let mut read = 0;
        if self.pending_len != 0 {
            return Progress { read, written };
        }
        if self.carry_len != 0 {
            let out = output.get_mut(written..).unwrap_or_default();
            let p = self.resume_carry(input, out);
            read += p.read;
            written += p.written;
            if self.carry_len != 0 || self.pending_len != 0 {
                return Progress { read, written };
            }
        }
        // While input is left and the output has room (`get`, not an index: the compiler does
        // not always carry `read < input.len()` from a loop condition to the slice below).
        while let (Some(rest @ [_, ..]), Some(out @ [_, ..])) =
            (input.get(read..), output.get_mut(written..))
        {
            // The fast loop takes every complete, valid character while the output has room
            // for any of them; it stops at the first thing it leaves to the careful steps
            // below (invalid bytes, a sequence cut by the end of the input, a full output).
            let (r, w) = fast_run(rest, out);
            if r > 0 {
                read += r;
                written += w;
                continue;
            }
            // ASCII fast path: a run of ASCII bytes, as long as both sides allow.
            let n = ascii_upper_run(rest, out);
            if n > 0 {
                read += n;
                written += n;
                continue;
            }
            match utf8::next(rest) {
                utf8::Step::Char(c, len) => {
                    written += self.emit_char(c, out);
                    read += len;
                }
                utf8::Step::Invalid(len) => {
                    // `next` reports at most the bytes it looked at: `len <= rest.len()`.
                    let len = len.min(rest.len());
                    written += self.emit(&rest[..len], out);
                    read += len;
                }
                utf8::Step::Incomplete => {
                    // A valid prefix at the end of the input: at most 3 bytes, carried.
                    let len = rest.len().min(MAX_CARRY);
                    self.carry[..len].copy_from_slice(&rest[..len]);
                    self.carry_len = len as u8;
                    read += len;
                }
            }
            if self.pending_len != 0 {
                break;
            }
        }
        Progress { read, written }
    }

    fn finish(&mut self, output: &mut [u8]) -> usize {
        if !cfg!(feature = "unicode") {
            return 0; // nothing is ever held without Unicode
        }
        let mut written = self.drain_pending(output);
        if self.pending_len == 0 && self.carry_len != 0 {
            let held = usize::from(self.carry_len).min(MAX_CARRY);
            self.carry_len = 0;
            let carry = self.carry;
            let out = output.get_mut(written..).unwrap_or_default();
            written += self.emit(&carry[..held], out);
        }
        written
    }
}

/// Uppercases the leading ASCII run of `input` into `out`, as far as both allow; returns its
/// length. With the `fast` feature, a run that starts with 8 ASCII bytes goes 64 bytes per
/// step while they are all ASCII (`is_ascii` checks a word at a time, and the compiler turns
/// the mapping into vector instructions); a shorter run (a word between accented letters) and
/// the end of a long one go byte by byte.
#[inline]
fn ascii_upper_run(input: &[u8], out: &mut [u8]) -> usize {
    const WIDE: usize = 64;
    let n = input.len().min(out.len());
    let (input, out) = (&input[..n], &mut out[..n]);
    let mut i = 0;
    if cfg!(feature = "fast") && input.get(..8).is_some_and(<[u8]>::is_ascii) {
        for (src, dst) in input.chunks_exact(WIDE).zip(out.chunks_exact_mut(WIDE)) {
            if !src.is_ascii() {
                break;
            }
            for (d, &b) in dst.iter_mut().zip(src) {
                *d = b.to_ascii_uppercase();
            }
            i += WIDE;
        }
    }
    while i < n && input[i].is_ascii() {
        out[i] = input[i].to_ascii_uppercase();
        i += 1;
    }
    i
}

/// A minimal UTF-8 decoder that follows the maximal-subpart rule of `core::str::Utf8Chunks`:
/// bytes are valid only as part of a complete, well-formed sequence.
mod utf8 {
    /// The result of decoding at the start of a non-empty slice that starts with a non-ASCII byte.
    pub(super) enum Step {
        /// A valid character and its encoded length.
        Char(char, usize),
        /// This many bytes can never start a valid character: copy them verbatim.
        Invalid(usize),
        /// The slice ends inside a sequence that is valid so far.
        Incomplete,
    }

    /// Sequence length announced by a lead byte; 1 for bytes that cannot lead a sequence.
    pub(super) fn width(lead: u8) -> usize {
        match lead {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        }
    }

    /// Whether `b` may follow a valid, incomplete prefix of `have` bytes that starts with
    /// `lead`. (Only the lead byte and the length matter, so no slice is needed.)
    pub(super) fn continues(lead: u8, have: usize, b: u8) -> bool {
        let range = match (have, lead) {
            (1, 0xE0) => 0xA0..=0xBF,
            (1, 0xED) => 0x80..=0x9F,
            (1, 0xF0) => 0x90..=0xBF,
            (1, 0xF4) => 0x80..=0x8F,
            _ => 0x80..=0xBF,
        };
        range.contains(&b)
    }

    /// Decodes a complete sequence that [`next`] or [`continues`] validated (no overlong form,
    /// no surrogate, nothing above U+10FFFF), so `from_u32` always succeeds on it.
    pub(super) fn decode(seq: &[u8]) -> Option<char> {
        let (&lead, rest) = seq.split_first()?;
        let lead_bits = match seq.len() {
            1 => return char::from_u32(u32::from(lead)),
            2 => lead & 0x1F,
            3 => lead & 0x0F,
            _ => lead & 0x07,
        };
        let cp = rest.iter().fold(u32::from(lead_bits), |cp, &b| {
            (cp << 6) | u32::from(b & 0x3F)
        });
        char::from_u32(cp)
    }

    pub(super) fn next(s: &[u8]) -> Step {
        let Some(&lead) = s.first() else {
            return Step::Incomplete;
        };
        let need = width(lead);
        if need == 1 {
            return Step::Invalid(1);
        }
        let mut have = 1;
        while have < need {
            match s.get(have) {
                None => return Step::Incomplete,
                Some(&b) if continues(lead, have, b) => have += 1,
                Some(_) => return Step::Invalid(have),
            }
        }
        // The loop read `s[need - 1]`, so `get` always succeeds.
        match s.get(..need).and_then(decode) {
            Some(c) => Step::Char(c, need),
            None => Step::Invalid(need),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec;

    /// Runs `t` over `input` cut at `cuts` (as `upcase_model::chunks` cuts it), with output
    /// buffers of `out_size` bytes, then finishes the message. Fails on a call without progress.
    fn run_chunked<T: Transform>(
        t: &mut T,
        input: &[u8],
        cuts: &[u32],
        out_size: usize,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = std::vec![0u8; out_size];
        for mut chunk in upcase_model::chunks(input, cuts) {
            while !chunk.is_empty() {
                let p = t.process(chunk, &mut buf);
                assert!(p.read > 0 || p.written > 0, "no progress");
                out.extend_from_slice(&buf[..p.written]);
                chunk = &chunk[p.read..];
            }
        }
        loop {
            let n = t.finish(&mut buf);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// The model of this build (`upcase_model`): full Unicode, or ASCII only without the
    /// `unicode` feature: every test module of the crate checks against it.
    pub(crate) fn oracle(input: &[u8]) -> Vec<u8> {
        if cfg!(feature = "unicode") {
            upcase_model::upper(input)
        } else {
            upcase_model::upper_ascii(input)
        }
    }

    #[test]
    #[cfg(feature = "unicode")]
    fn protocol_examples() {
        for (input, expect) in [
            ("straße", "STRASSE"),
            ("ΐ", "\u{399}\u{308}\u{301}"),
            ("ﬁ", "FI"),
            ("hello, world\r", "HELLO, WORLD\r"),
        ] {
            let got = run_chunked(&mut Uppercase::new(), input.as_bytes(), &[], 64);
            assert_eq!(got, expect.as_bytes(), "{input:?}");
            assert_eq!(got, oracle(input.as_bytes()));
        }
    }

    /// Every feature set: `write_upper` (the table, or with `fast` the arithmetic mappings and
    /// caseless blocks in front of it) against std for every code point.
    #[test]
    fn write_upper_equals_std_for_every_char() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let s: String = if cfg!(feature = "unicode") {
                c.to_uppercase().collect()
            } else {
                String::from(c.to_ascii_uppercase())
            };
            assert!(s.len() <= MAX_CHAR_EXPANSION, "{c:?}");
            let mut out = [0u8; MAX_CHAR_EXPANSION];
            let n = write_upper(c, &mut out);
            assert_eq!(&out[..n], s.as_bytes(), "{c:?} through write_upper");
            let mut out = [0u8; MAX_CHAR_EXPANSION];
            let n = write_upper_slow(c, &mut out);
            assert_eq!(&out[..n], s.as_bytes(), "{c:?} through write_upper_slow");
            if cfg!(feature = "unicode") && is_caseless(c) {
                assert_eq!(s, String::from(c), "{c:?} is in a caseless block");
            }
            if let Some(u) = simple_upper(c).filter(|_| cfg!(feature = "unicode")) {
                assert_eq!(s, String::from(u), "{c:?} in the fast two-byte mapping");
                assert_eq!((c.len_utf8(), u.len_utf8()), (2, 2), "{c:?}");
            }
        }
    }

    /// Every feature set: a whole stream of every code point, split everywhere, against the
    /// model.
    #[test]
    fn every_char_through_process_equals_the_model() {
        let all: String = (0..=0x10FFFFu32).filter_map(char::from_u32).collect();
        let cuts: Vec<u32> = (0..all.len() as u32).step_by(997).collect();
        let got = run_chunked(&mut Uppercase::new(), all.as_bytes(), &cuts, 61);
        assert!(got == oracle(all.as_bytes()));
    }

    #[test]
    fn decoder_agrees_with_core_on_every_char() {
        for c in (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| !c.is_ascii())
        {
            let mut buf = [0u8; 4];
            let s = c.encode_utf8(&mut buf);
            assert!(
                matches!(utf8::next(s.as_bytes()), utf8::Step::Char(d, n) if d == c && n == s.len()),
                "{c:?}"
            );
            assert_eq!(decode_at(s.as_bytes(), 0), Some((c, s.len())), "{c:?}");
        }
    }

    #[test]
    fn ascii_word_path_maps_every_ascii_byte_in_every_lane() {
        let all: Vec<u8> = (0u8..128).collect();
        for shift in 0..8 {
            let input: Vec<u8> = all.iter().cycle().skip(shift).take(136).copied().collect();
            let mut out = std::vec![0u8; input.len()];
            assert_eq!(ascii_upper_run(&input, &mut out), input.len());
            assert_eq!(out, input.to_ascii_uppercase());
        }
        // A non-ASCII byte ends the run in any lane.
        for at in 0..16 {
            let mut input = std::vec![b'a'; 16];
            input[at] = 0xC3;
            assert_eq!(ascii_upper_run(&input, &mut [0u8; 16]), at);
        }
    }

    #[test]
    fn carry_of_split_char_survives_one_byte_reads() {
        let input = "aé€😀z".as_bytes();
        let one_at_a_time: Vec<u32> = (0..input.len() as u32).collect();
        let got = run_chunked(&mut Uppercase::new(), input, &one_at_a_time, 1);
        assert_eq!(got, oracle(input));
    }

    #[test]
    fn incomplete_sequence_at_end_is_flushed_verbatim() {
        for tail in [&[0xE2u8][..], &[0xE2, 0x82], &[0xF0, 0x9F, 0x98]] {
            let mut input = b"ab".to_vec();
            input.extend_from_slice(tail);
            let got = run_chunked(&mut Uppercase::new(), &input, &[3], 2);
            let mut expect = b"AB".to_vec();
            expect.extend_from_slice(tail);
            assert_eq!(got, expect);
        }
    }

    #[test]
    fn invalid_bytes_are_verbatim() {
        let cases: [&[u8]; 6] = [
            b"\xff\xfeabc",
            b"\xc0\xafx",
            b"\xed\xa0\x80y", // surrogate
            b"\xe0\x80z",     // overlong
            b"\xf4\x90\x80\x80",
            b"a\xe2\x82b\xe2\x82\xac",
        ];
        for input in cases {
            for size in 1..8 {
                let got = run_chunked(&mut Uppercase::new(), input, &[1, 2, 3], size);
                assert_eq!(got, oracle(input), "{input:?} out={size}");
            }
        }
    }

    #[test]
    fn byte_map_maps_each_byte() {
        let mut rot13 = ByteMap(|b: u8| match b {
            b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
            _ => b,
        });
        assert_eq!(run_chunked(&mut rot13, b"uryyb!", &[2], 3), b"hello!");
    }

    proptest! {
        #[test]
        fn valid_utf8_any_split_equals_to_uppercase(
            s in "\\PC{0,64}",
            cuts in proptest::collection::vec(0u32..1000, 0..8),
            out_size in 1usize..16,
        ) {
            let got = run_chunked(&mut Uppercase::new(), s.as_bytes(), &cuts, out_size);
            prop_assert_eq!(got, oracle(s.as_bytes()));
        }

        #[test]
        fn any_bytes_any_split_equals_one_shot_and_oracle(
            input in proptest::collection::vec(any::<u8>(), 0..96),
            cuts in proptest::collection::vec(0u32..1000, 0..8),
            out_size in 1usize..16,
        ) {
            let one_shot = run_chunked(&mut Uppercase::new(), &input, &[], 1024);
            let chunked = run_chunked(&mut Uppercase::new(), &input, &cuts, out_size);
            prop_assert_eq!(&chunked, &one_shot);
            prop_assert_eq!(one_shot, oracle(&input));
        }

        #[test]
        fn mixed_valid_and_invalid_utf8(
            parts in proptest::collection::vec(
                prop_oneof!["\\PC{0,8}".prop_map(String::into_bytes),
                            proptest::collection::vec(0x80u8..=0xff, 1..4)], 0..10),
            cuts in proptest::collection::vec(0u32..1000, 0..8),
        ) {
            let input: Vec<u8> = parts.concat();
            prop_assert_eq!(run_chunked(&mut Uppercase::new(), &input, &cuts, 3), oracle(&input));
        }
    }
}
