//! Diagnostics: one line per event, built without `core::fmt` (which would cost flash for a
//! few numbers), then sent to the one sink the build has:
//! - the QEMU image with feature `semihosting` (its default): the host's stdout, which the
//!   runner sends to stderr;
//! - the board image: defmt over RTT (`probe-rs run` prints it);
//! - otherwise nowhere (a QEMU image built without `semihosting`, safe on a chip with no
//!   debugger attached).

/// A line being built; [`Diag::end`] sends it. Longer lines are cut at 320 bytes.
pub struct Diag {
    line: [u8; 320],
    len: usize,
}

impl Diag {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            line: [0; 320],
            len: 0,
        }
    }

    /// Appends text (cut at the line's capacity).
    pub fn text(&mut self, s: &str) -> &mut Self {
        s.bytes().for_each(|b| self.byte(b));
        self
    }

    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.line.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    /// Appends a number in decimal.
    pub fn num(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        digits[i..].iter().for_each(|&d| self.byte(d));
        self
    }

    /// Appends `name=value`, with a leading space.
    pub fn field(&mut self, name: &str, value: u64) -> &mut Self {
        self.text(" ").text(name).text("=").num(value)
    }

    /// Appends an IPv4 address in dotted decimal.
    pub fn ipv4(&mut self, address: core::net::Ipv4Addr) -> &mut Self {
        let [a, b, c, d] = address.octets();
        self.num(a.into())
            .text(".")
            .num(b.into())
            .text(".")
            .num(c.into())
            .text(".")
            .num(d.into())
    }

    /// Sends the line to the build's sink.
    pub fn end(&mut self) {
        sink(&self.line[..self.len]);
        self.len = 0;
    }
}

#[cfg(all(feature = "semihosting", not(feature = "board-nucleo-f429zi")))]
fn sink(line: &[u8]) {
    use core::cell::RefCell;
    use cortex_m_semihosting::hio::{self, HostStream};
    use critical_section::Mutex;

    /// The host's stdout, opened on the first line.
    static OUT: Mutex<RefCell<Option<HostStream>>> = Mutex::new(RefCell::new(None));
    critical_section::with(|cs| {
        let mut out = OUT.borrow(cs).borrow_mut();
        if out.is_none() {
            *out = hio::hstdout().ok();
        }
        if let Some(out) = out.as_mut() {
            let _ = out.write_all(line);
            let _ = out.write_all(b"\n");
        }
    });
}

#[cfg(feature = "board-nucleo-f429zi")]
fn sink(line: &[u8]) {
    defmt::info!("{=[u8]:a}", line);
}

#[cfg(not(any(feature = "semihosting", feature = "board-nucleo-f429zi")))]
fn sink(_line: &[u8]) {}
