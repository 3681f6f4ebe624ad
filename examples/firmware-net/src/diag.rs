//! Diagnostics over semihosting: one line per event on QEMU's stdout, which the runner sends
//! to stderr. Written without `core::fmt`, which would cost flash for a few numbers.

use cortex_m_semihosting::hio::{self, HostStream};

/// A line writer to the host, or nothing on a board without a debugger.
pub struct Diag {
    out: Option<HostStream>,
    line: [u8; 320],
    len: usize,
}

impl Diag {
    /// Opens the host's stdout once.
    pub fn new() -> Self {
        Self {
            out: hio::hstdout().ok(),
            line: [0; 320],
            len: 0,
        }
    }

    /// Appends text to the current line (cut at the line's capacity).
    pub fn text(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            if self.len < self.line.len() - 1 {
                self.line[self.len] = b;
                self.len += 1;
            }
        }
        self
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
        // Digits are ASCII, so this is always valid UTF-8.
        self.text(core::str::from_utf8(&digits[i..]).unwrap_or("?"))
    }

    /// Appends `name=value`, with a leading space.
    pub fn field(&mut self, name: &str, value: u64) -> &mut Self {
        self.text(" ").text(name).text("=").num(value)
    }

    /// Ends the line and sends it.
    pub fn end(&mut self) {
        self.line[self.len] = b'\n';
        if let Some(out) = &mut self.out {
            let _ = out.write_all(&self.line[..=self.len]);
        }
        self.len = 0;
    }
}
