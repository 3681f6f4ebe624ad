//! Every `unsafe` of the image lives here: the UART0 registers, the static session, the
//! image's own `memcpy`, the interrupt table, and (with `no-panic`) the undefined function the
//! panic handler calls. (With `report`, the stack painting is the shared `lm3s6965` crate's,
//! whose `unsafe` is confined there the same way.)

use core::convert::Infallible;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use upcase_core::{LineFramer, Session, Uppercase};

/// UART0 of the LM3S6965.
const UART0: usize = 0x4000_C000;
/// Data register: a read pops the receive FIFO (bits 8..12 are error flags), a write pushes the
/// transmit FIFO.
const DR: usize = UART0;
/// Flag register.
const FR: usize = UART0 + 0x018;
/// FR: receive FIFO empty.
const RXFE: u32 = 1 << 4;
/// FR: transmit FIFO full.
const TXFF: u32 = 1 << 5;

/// End of transmission (Ctrl-D): this UART's end of stream, by convention. It is not part of
/// the upcase protocol (PROTOCOL.md §4); it is how a host ends a session and how the tests stop
/// the image.
pub const EOT: u8 = 0x04;

fn flags() -> u32 {
    // SAFETY: FR is a read-only, always-mapped 32-bit register of UART0 on this board; a
    // volatile read has no side effect.
    unsafe { ptr::read_volatile(FR as *const u32) }
}

/// UART0 as a byte stream, with EOT as its end of stream.
pub struct Uart {
    eof: bool,
}

impl Uart {
    /// The UART as QEMU and the boot ROM leave it: 8N1, enabled. Create one only: two handles
    /// would interleave their bytes.
    pub fn new() -> Self {
        Self { eof: false }
    }

    fn pop(&mut self) -> u8 {
        // SAFETY: reading DR pops one byte from the receive FIFO, which the caller has checked
        // is not empty; DR is always mapped, and only this `Uart` touches it.
        (unsafe { ptr::read_volatile(DR as *const u32) }) as u8
    }

    fn push(&mut self, b: u8) {
        // SAFETY: writing DR pushes one byte onto the transmit FIFO, which the caller has
        // checked is not full; DR is always mapped, and only this `Uart` touches it.
        unsafe { ptr::write_volatile(DR as *mut u32, u32::from(b)) }
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::Read for Uart {
    /// Blocks until at least one byte has arrived, then takes what the FIFO holds. Returns
    /// `Ok(0)` (end of stream) once EOT has been received, and from then on.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() || self.eof {
            return Ok(0);
        }
        while flags() & RXFE != 0 {}
        let mut n = 0;
        while n < buf.len() && flags() & RXFE == 0 {
            let b = self.pop();
            if b == EOT {
                self.eof = true;
                break;
            }
            buf[n] = b;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.eof || flags() & RXFE == 0)
    }
}

impl embedded_io::Write for Uart {
    /// Blocks while the transmit FIFO is full, then writes as many bytes as it takes.
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let mut n = 0;
        for &b in buf {
            if n > 0 && flags() & TXFF != 0 {
                break;
            }
            while flags() & TXFF != 0 {}
            self.push(b);
            n += 1;
        }
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Line storage: the longest line plus one byte (see `LineFramer`).
pub const LINE_STORAGE: usize = 257;
/// Staging buffer for replies.
pub const STAGING: usize = 64;

/// The UART's session: lines framing over an owned 257-byte array, and the uppercase transform.
pub type UartSession = Session<[u8; LINE_STORAGE], Uppercase>;

/// What the image serves with, in `.bss` (all zeros, cleared by the reset handler: no copy from
/// flash and no initialisation code).
pub struct State {
    pub session: &'static mut UartSession,
    pub staging: &'static mut [u8; STAGING],
}

/// Hands out the session and the staging buffer. Returns `None` after the first call, so no
/// two `&mut` alias.
pub fn take_state() -> Option<State> {
    static mut SESSION: UartSession = Session::lines(LineFramer::new_array(), Uppercase::new());
    static mut STAGE: [u8; STAGING] = [0; STAGING];
    static TAKEN: AtomicBool = AtomicBool::new(false);
    // Single core, no interrupt handler touches TAKEN: a load and a store suffice (no CAS, so
    // this also runs on a Cortex-M0).
    if TAKEN.load(Ordering::Relaxed) {
        return None;
    }
    TAKEN.store(true, Ordering::Relaxed);
    // SAFETY: TAKEN makes this block run at most once, so these are the only references to
    // the two statics for the life of the program.
    unsafe {
        Some(State {
            session: &mut *ptr::addr_of_mut!(SESSION),
            staging: &mut *ptr::addr_of_mut!(STAGE),
        })
    }
}

/// The image's own `memcpy`, under the name the ARM EABI gives it (the compiler lowers every
/// `copy_from_slice` to a call of `__aeabi_memcpy`). It replaces `compiler_builtins`' (weak)
/// version: that one is tuned for speed, and costs 1 KiB of flash with `__aeabi_memclr4`. The
/// copies here are a few bytes to a few dozen, into a UART: a byte loop is fast enough.
///
/// # Safety
///
/// The caller (compiler-generated code) passes `n` readable bytes at `src`, `n` writable bytes
/// at `dest`, not overlapping: `memcpy`'s contract.
#[unsafe(no_mangle)]
pub unsafe extern "aapcs" fn __aeabi_memcpy(dest: *mut u8, src: *const u8, n: usize) {
    for i in 0..n {
        // SAFETY: i < n, and the caller passes n readable bytes at src and n writable bytes at
        // dest. Volatile, so the compiler cannot turn this loop back into a call of memcpy.
        unsafe { ptr::write_volatile(dest.add(i), ptr::read_volatile(src.add(i))) };
    }
}

/// [`__aeabi_memcpy`] for word-aligned pointers: the same byte loop.
///
/// # Safety
///
/// As [`__aeabi_memcpy`]; the alignment is not needed.
#[unsafe(no_mangle)]
pub unsafe extern "aapcs" fn __aeabi_memcpy4(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract is `__aeabi_memcpy`'s, and more.
    unsafe { __aeabi_memcpy(dest, src, n) }
}

/// [`__aeabi_memcpy`] for 8-byte-aligned pointers: the same byte loop.
///
/// # Safety
///
/// As [`__aeabi_memcpy`]; the alignment is not needed.
#[unsafe(no_mangle)]
pub unsafe extern "aapcs" fn __aeabi_memcpy8(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract is `__aeabi_memcpy`'s, and more.
    unsafe { __aeabi_memcpy(dest, src, n) }
}

/// The `no-panic` feature's panic handler: a call of a function that no object file defines, so
/// an image that can still panic fails to link with `undefined symbol:
/// upcase_firmware_no_panic_proof_failed_a_panic_path_is_left`. The optimiser removes the
/// handler when nothing calls it, so a panic-free image links, and then this never runs.
#[cfg(feature = "no-panic")]
pub fn panic_path_left() -> ! {
    unsafe extern "C" {
        /// Declared here, defined nowhere, on purpose: see [`panic_path_left`].
        fn upcase_firmware_no_panic_proof_failed_a_panic_path_is_left() -> !;
    }
    // SAFETY: this call is never executed: an image that contains it does not link, so no
    // image that runs has it.
    unsafe { upcase_firmware_no_panic_proof_failed_a_panic_path_is_left() }
}

/// The interrupt vectors after the 16 exception vectors. The image enables no interrupt, and
/// cortex-m-rt's default table would hold 240 unused entries (960 bytes of flash). 32 entries
/// is the most a Cortex-M0 allows, and the same image layout serves both cores; the
/// LM3S6965's lines 32..38 stay disabled.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
#[used]
pub static __INTERRUPTS: [unsafe extern "C" fn(); 32] = [default_irq; 32];

/// No interrupt is ever enabled, so one arriving is a fault: end the run with a failure.
unsafe extern "C" fn default_irq() {
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
