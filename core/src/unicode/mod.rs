//! The core's own uppercase mapping: `char::to_uppercase` in about 2 KB of tables instead of
//! `core`'s 14 KB, generated from `char::to_uppercase` of the pinned toolchain.
//!
//! [`table`] is generated and checked in; `generate.rs` writes it, and its test fails when the
//! checked-in file differs from what this toolchain's Unicode data gives (a toolchain update with
//! new Unicode data shows up as a failing test, not as a silent difference). Rewrite it with
//! `UPCASE_BLESS=1 cargo test -p upcase-core --lib unicode`.
//!
//! A test compares [`upper`] with `char::to_uppercase` for every code point.

#![cfg(feature = "unicode")]

#[cfg(test)]
mod generate;
mod table;

use table::{DELTAS, EXPANSIONS, RUNS};

/// Bits 0..21 of a [`RUNS`] entry: the run's first code point.
const START_MASK: u32 = 0x1F_FFFF;
/// Bits 21..28 of a [`RUNS`] entry: the run's length minus one.
const LEN_SHIFT: u32 = 21;
/// Seven bits of length: runs of at most 128 code points.
const LEN_MASK: u32 = 0x7F;
/// Bit 28 of a [`RUNS`] entry: the run maps every other code point (stride 2), not each one.
const STRIDE_2: u32 = 1 << 28;

/// The uppercase of one character: one to three characters, like `core::char::ToUppercase`.
#[derive(Debug, Clone)]
pub(crate) struct Upper {
    chars: [char; 3],
    len: u8,
    pos: u8,
}

impl Iterator for Upper {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        if self.pos >= self.len {
            return None;
        }
        let c = *self.chars.get(usize::from(self.pos))?;
        self.pos += 1;
        Some(c)
    }
}

/// The full, unconditional uppercase mapping of `c`, equal to `c.to_uppercase()` for every
/// `char` (tested for all of them).
pub(crate) fn upper(c: char) -> Upper {
    let one = |u| Upper {
        chars: [u, '\0', '\0'],
        len: 1,
        pos: 0,
    };
    let cp = c as u32;
    // The last run that starts at or before `cp`: runs are sorted and do not overlap.
    let i = RUNS.partition_point(|&r| r & START_MASK <= cp);
    if let (Some(&run), Some(&delta)) = (RUNS.get(i.wrapping_sub(1)), DELTAS.get(i.wrapping_sub(1)))
    {
        let offset = cp - (run & START_MASK);
        let stride_2 = run & STRIDE_2 != 0;
        let last = ((run >> LEN_SHIFT) & LEN_MASK) << u32::from(stride_2);
        if offset <= last && (!stride_2 || offset & 1 == 0) {
            // The delta applies to the low 16 bits: every mapping stays in its plane.
            let low = (cp as u16).wrapping_add(delta);
            if let Some(u) = char::from_u32((cp & !0xFFFF) | u32::from(low)) {
                return one(u);
            }
        }
    }
    let found = EXPANSIONS.binary_search_by_key(&cp, |e| u32::from(e[0]));
    if let Some(&[_, a, b, z]) = found.ok().and_then(|i| EXPANSIONS.get(i)) {
        // Two or three characters, all in the BMP and none a surrogate (the generator checks).
        let ch = |u: u16| char::from_u32(u32::from(u)).unwrap_or('\0');
        return Upper {
            chars: [ch(a), ch(b), ch(z)],
            len: if z == 0 { 2 } else { 3 },
            pos: 0,
        };
    }
    one(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn upper_equals_char_to_uppercase_for_every_char() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            assert!(upper(c).eq(c.to_uppercase()), "{c:?}");
        }
    }

    #[test]
    fn the_expansions_the_protocol_names() {
        for (c, want) in [
            ('ß', "SS"),
            ('ﬁ', "FI"),
            ('ΐ', "\u{399}\u{308}\u{301}"),
            ('ŉ', "\u{2BC}N"),
            ('ᾀ', "\u{1F08}\u{399}"),
        ] {
            assert_eq!(
                upper(c).collect::<Vec<_>>(),
                want.chars().collect::<Vec<_>>()
            );
        }
        assert_eq!(
            upper('ǅ').collect::<Vec<_>>(),
            ['Ǆ'],
            "title case maps to upper case"
        );
        assert_eq!(
            upper('𐐨').collect::<Vec<_>>(),
            ['𐐀'],
            "Deseret, outside the BMP"
        );
    }
}
