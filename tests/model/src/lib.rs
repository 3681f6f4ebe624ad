//! The reference model of the upcase protocol, written plainly from `PROTOCOL.md` with `std`
//! (`str::to_uppercase`, `split`), never with the code under test.
//!
//! One model for the whole house: the core's unit tests, the fuzz targets, the end-to-end tests
//! and the load generator all check against these functions. `publish = false`.
//!
//! [`net`] holds the socket checks that the in-process and the end-to-end tests share: what the
//! client has received, and when.

pub mod net;

/// `PROTOCOL.md` §1: valid UTF-8 runs uppercased by `str::to_uppercase`, every other byte
/// verbatim (the maximal-subpart split of `Utf8Chunks`).
pub fn upper(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_uppercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// `PROTOCOL.md` §1 in an ASCII-only build: `a`–`z` mapped, every other byte verbatim.
pub fn upper_ascii(bytes: &[u8]) -> Vec<u8> {
    bytes.to_ascii_uppercase()
}

/// One event of the `lines` framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete line's content, without its `\n`.
    Line(Vec<u8>),
    /// A line over the limit (complete, or a tail already over it).
    Overlong,
    /// The partial line left at end of input (within the limit, not empty).
    Tail(Vec<u8>),
}

/// `PROTOCOL.md` §2.1–2.2: split on `\n`; a line over `max` content bytes is one `Overlong`.
pub fn frame(input: &[u8], max: usize) -> Vec<Event> {
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    let mut out: Vec<Event> = parts
        .into_iter()
        .map(|p| {
            if p.len() > max {
                Event::Overlong
            } else {
                Event::Line(p.to_vec())
            }
        })
        .collect();
    if tail.len() > max {
        out.push(Event::Overlong);
    } else if !tail.is_empty() {
        out.push(Event::Tail(tail.to_vec()));
    }
    out
}

/// The error reply for a line over the limit (`PROTOCOL.md` §2.3).
pub const LINE_TOO_LONG: &[u8] = b"error: line too long\n";
/// The error reply in place of a partial line at a graceful shutdown (`PROTOCOL.md` §2.5).
pub const SHUTTING_DOWN: &[u8] = b"error: shutting down\n";

/// How the input of [`replies_with`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Still open: only what the input so far determines (`PROTOCOL.md` §2.1, §2.4).
    Open,
    /// The peer closed its sending side (§2.1).
    Eof,
    /// A graceful shutdown of the server (§2.5).
    Shutdown,
}

/// The reply stream of `lines` framing with limit `max` for `input`, then EOF, with the
/// transform `f`.
pub fn replies_with(input: &[u8], max: usize, end: End, f: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in frame(input, max) {
        match e {
            Event::Line(l) => {
                out.extend(f(&l));
                out.push(b'\n');
            }
            Event::Overlong => out.extend_from_slice(LINE_TOO_LONG),
            Event::Tail(t) => match end {
                End::Open => {}
                End::Eof => out.extend(f(&t)),
                End::Shutdown => out.extend_from_slice(SHUTTING_DOWN),
            },
        }
    }
    out
}

/// The reply stream a server sends for `input` followed by EOF, with limit `max`.
pub fn replies(input: &[u8], max: usize) -> Vec<u8> {
    replies_with(input, max, End::Eof, upper)
}

/// The reply bytes of `lines` framing that `input` determines while the connection is still
/// open: every complete line's reply, and `error: line too long` for a partial line already
/// over the limit. A server must have sent exactly these before it waits for more input.
pub fn determined_lines(input: &[u8], max: usize) -> Vec<u8> {
    replies_with(input, max, End::Open, upper)
}

/// The reply bytes of `raw` framing that `input` determines while the connection is still open:
/// the transform of everything but a trailing sequence that is valid UTF-8 so far and
/// incomplete (at most 3 bytes, which the next bytes may still complete).
pub fn determined_raw(input: &[u8]) -> Vec<u8> {
    upper(&input[..input.len() - open_tail(input)])
}

/// The length of the trailing incomplete-but-valid-so-far UTF-8 sequence of `input` (0 to 3).
pub fn open_tail(input: &[u8]) -> usize {
    (1..=3.min(input.len()))
        .rev()
        .find(|&t| can_complete(&input[input.len() - t..]))
        .unwrap_or(0)
}

/// Whether `seq` is a proper prefix of some well-formed UTF-8 character.
fn can_complete(seq: &[u8]) -> bool {
    let width = match seq[0] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return false,
    };
    if seq.len() >= width {
        return false;
    }
    // Only the second byte of a sequence has a range narrower than 80..=BF.
    (0x80..=0xBFu8).any(|b| {
        let mut full = seq.to_vec();
        full.push(b);
        full.resize(width, 0x80);
        std::str::from_utf8(&full).is_ok()
    })
}

/// The bytes of `input` cut at `cuts` (each taken modulo `input.len() + 1`, then sorted): the
/// chunks a transport might deliver. Empty chunks are kept, so a cut list can exercise
/// zero-length reads. Their concatenation is always `input`.
pub fn chunks<'a, C: Copy + Into<u64>>(input: &'a [u8], cuts: &[C]) -> Vec<&'a [u8]> {
    pieces(input.len(), cuts)
        .into_iter()
        .map(|r| &input[r])
        .collect()
}

/// Cuts `0..len` at `cuts` (each taken modulo `len + 1`, then sorted), in order.
pub fn pieces<C: Copy + Into<u64>>(len: usize, cuts: &[C]) -> Vec<std::ops::Range<usize>> {
    let modulus = len as u64 + 1;
    let mut b: Vec<usize> = cuts
        .iter()
        .map(|&c| (c.into() % modulus) as usize)
        .collect();
    b.push(0);
    b.push(len);
    b.sort_unstable();
    b.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Deterministic mixed-script text for loads and tests: Latin, Greek, Cyrillic, CJK, emoji, and
/// the characters that grow (`ß`, `ﬁ`, `ΐ`), `n` characters from `seed`. Never contains `\n`.
pub fn unicode_text(seed: u64, n: usize) -> String {
    const ALPHABET: &[char] = &[
        'a', 'z', 'Q', ' ', '0', 'é', 'ß', 'ﬁ', 'ΐ', 'ω', 'я', 'ж', '中', '文', 'ア', '😀', 'ǅ',
        'ŉ', '\r', '\t',
    ];
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            // xorshift64: small, deterministic, good enough to pick characters.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_tail_finds_only_completable_suffixes() {
        assert_eq!(open_tail(b"ab"), 0);
        assert_eq!(open_tail(b"a\xC3"), 1);
        assert_eq!(open_tail(b"a\xE2\x82"), 2);
        assert_eq!(open_tail(b"\xF0\x9F\x98"), 3);
        assert_eq!(open_tail(b"\xED\xA0"), 0, "a surrogate can never complete");
        assert_eq!(
            open_tail(b"\xE0\x80"),
            0,
            "an overlong form can never complete"
        );
        assert_eq!(open_tail(b"\xC3\xA9"), 0, "complete");
        assert_eq!(open_tail(b"\xFF"), 0);
    }

    #[test]
    fn determined_is_a_prefix_of_the_final_reply() {
        let input = "ab\nstraße\nΐ€x".as_bytes();
        for k in 0..=input.len() {
            let full = replies(input, 100);
            assert!(full.starts_with(&determined_lines(&input[..k], 100)));
            assert!(
                upper(input).starts_with(&determined_raw(&input[..k])),
                "{k}"
            );
        }
        assert_eq!(determined_lines(b"toolong", 3), LINE_TOO_LONG);
    }

    #[test]
    fn chunks_concatenate_to_the_input() {
        let input = b"hello world";
        let c = chunks(input, &[3u16, 100, 7, 7]);
        assert_eq!(c.concat(), input);
        assert!(c.len() >= 4);
    }
}
