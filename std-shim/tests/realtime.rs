//! Nothing withheld (issue 10, item 1): after every write, the reply bytes that the input so far
//! determines arrive before the client writes more or closes, exactly those and no more, in both
//! framings. The oracle is `upcase_model::determined_lines` / `determined_raw`.

mod common;

use common::{Rng, Running, config, connect, read_exactly, read_to_eof};
use std::io::Write;
use std::net::Shutdown;
use upcase_model::net::assert_nothing_more;
use upcase_std::Framing;

/// Mixed input: Unicode runs (the growing characters included), newlines, invalid and
/// incomplete UTF-8, and in `lines` framing some lines over `max_line`.
fn input(rng: &mut Rng, framing: Framing, max_line: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < 60_000 {
        match rng.below(12) {
            0..=5 => {
                let n = rng.below(40) as usize;
                out.extend_from_slice(upcase_model::unicode_text(rng.next_u64(), n).as_bytes());
            }
            6 | 7 => out.push(b'\n'),
            8 => out.extend_from_slice(
                [
                    &b"\xff"[..],
                    b"\xe2\x82",
                    b"\xed\xa0\x80",
                    b"\xf0\x9f\x98",
                    b"\xc3",
                ][rng.below(5) as usize],
            ),
            9 if framing == Framing::Lines => {
                // A line over the limit, sometimes much longer than one read.
                let longest = if rng.below(4) == 0 { 70_000 } else { 200 };
                let n = max_line + 1 + rng.below(longest) as usize;
                out.extend(std::iter::repeat_n(b'x', n));
            }
            _ => out.extend_from_slice("ΐ".repeat(rng.below(50) as usize).as_bytes()),
        }
    }
    out
}

/// Writes `input` in random chunks (from single bytes that split characters to tens of KiB);
/// after each, reads until every determined reply byte has arrived and checks that nothing more
/// has. Then half-closes and checks the rest against the full reply.
fn check_realtime(framing: Framing, seed: u64) {
    const MAX_LINE: usize = 100;
    let mut c = config(true, false);
    c.limits.framing = framing;
    c.limits.max_line = MAX_LINE;
    let server = Running::start(c);
    let mut rng = Rng::new(seed);
    let input = input(&mut rng, framing, MAX_LINE);
    let determined = |sent: &[u8]| match framing {
        Framing::Lines => upcase_model::determined_lines(sent, MAX_LINE),
        Framing::Raw => upcase_model::determined_raw(sent),
    };
    let mut s = connect(server.tcp());
    let (mut sent, mut received) = (0usize, Vec::new());
    let mut steps = 0;
    while sent < input.len() {
        let n = match rng.below(50) {
            0..=24 => 1 + rng.below(7),
            25..=48 => 1 + rng.below(600),
            _ => 1 + rng.below(30_000),
        } as usize;
        let end = (sent + n).min(input.len());
        s.write_all(&input[sent..end]).unwrap();
        sent = end;
        steps += 1;
        let expect = determined(&input[..sent]);
        assert!(expect.starts_with(&received));
        let more = read_exactly(&mut s, expect.len() - received.len());
        received.extend_from_slice(&more);
        assert_eq!(
            received, expect,
            "{framing:?}, step {steps}, {sent} bytes sent"
        );
        assert_nothing_more(
            &mut s,
            &format!("{framing:?}, step {steps}, {sent} bytes sent"),
        );
    }
    s.shutdown(Shutdown::Write).unwrap();
    received.extend(read_to_eof(&mut s));
    let full = match framing {
        Framing::Lines => upcase_model::replies(&input, MAX_LINE),
        Framing::Raw => upcase_model::upper(&input),
    };
    assert_eq!(received, full, "{framing:?}: the reply at EOF");
    assert!(steps > 50);
}

#[test]
fn lines_framing_answers_every_determined_byte_before_more_input() {
    for seed in 1..=3 {
        check_realtime(Framing::Lines, seed);
    }
}

#[test]
fn raw_framing_answers_every_determined_byte_before_more_input() {
    for seed in 1..=3 {
        check_realtime(Framing::Raw, seed);
    }
}

#[test]
fn raw_framing_sends_all_65538_bytes_of_10923_iota_before_the_close() {
    let mut c = config(true, false);
    c.limits.framing = Framing::Raw;
    let server = Running::start(c);
    let input = "\u{390}".repeat(10_923);
    let expect = upcase_model::upper(input.as_bytes());
    assert_eq!(expect.len(), 65_538);
    for _ in 0..3 {
        let mut s = connect(server.tcp());
        s.write_all(input.as_bytes()).unwrap();
        // The whole reply arrives while the connection is still open both ways.
        let got = read_exactly(&mut s, expect.len());
        assert!(got == expect, "the reply differs");
        assert_nothing_more(&mut s, "after 10,923 × ΐ");
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut s), b"");
    }
}
