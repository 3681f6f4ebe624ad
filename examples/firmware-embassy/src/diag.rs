//! Diagnostics: one line per event, built without `core::fmt` (which would cost flash for a
//! few numbers), then sent to the one sink the build has:
//! - the QEMU image with feature `semihosting` (its default): the host's stdout, which the
//!   runner sends to stderr;
//! - the board image: defmt over RTT (`probe-rs run` prints it);
//! - otherwise nowhere (a QEMU image built without `semihosting`, safe on a chip with no
//!   debugger attached).

pub use lm3s6965::Line;

/// A line being built with `lm3s6965::Line`'s methods; [`Diag::end`] sends it. Longer lines are
/// cut at 320 bytes.
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

    /// Sends the line to the build's sink.
    pub fn end(&mut self) {
        sink(&self.line[..self.len]);
        self.len = 0;
    }
}

impl Line for Diag {
    /// Appends a byte, or drops it once the line is full.
    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.line.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
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
