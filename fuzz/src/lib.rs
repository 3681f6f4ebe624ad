//! Reference models and helpers shared by the fuzz targets. The models are written plainly from
//! PROTOCOL.md, using `std` (`str::to_uppercase`, `split`), never the code under test.

/// PROTOCOL.md §1: valid UTF-8 runs uppercased, every other byte verbatim.
pub fn upper(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_uppercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// One event of the lines framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Line(Vec<u8>),
    Overlong,
    /// The partial line left at end of input.
    Tail(Vec<u8>),
}

/// PROTOCOL.md §2.1–2.2: split on `\n`; a line over `max` content bytes is one `Overlong`.
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

/// The reply stream a server sends for `input` followed by EOF, with limit `max`.
pub fn replies(input: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for e in frame(input, max) {
        match e {
            Event::Line(l) => {
                out.extend(upper(&l));
                out.push(b'\n');
            }
            Event::Overlong => out.extend_from_slice(b"error: line too long\n"),
            Event::Tail(t) => out.extend(upper(&t)),
        }
    }
    out
}

/// Cuts `0..len` at `cuts` (taken modulo `len + 1`), in order.
pub fn pieces(len: usize, cuts: &[u16]) -> Vec<std::ops::Range<usize>> {
    let mut b: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (len + 1)).collect();
    b.push(0);
    b.push(len);
    b.sort_unstable();
    b.windows(2).map(|w| w[0]..w[1]).collect()
}
