//! Every `unsafe` of the crate, each block with its `// SAFETY:` comment: the MAC's registers,
//! the clock gates, the interrupt numbers, and the stack painting. Each item outside this file
//! is safe to call.

use core::ptr;

// ---------------------------------------------------------------------------------------------
// The Ethernet MAC (datasheet chapter "Ethernet Controller"; QEMU's model is
// hw/net/stellaris_enet.c).

/// Base address of the MAC's register block.
const MAC_BASE: usize = 0x4004_8000;

/// The MAC registers the driver uses, by offset from [`MAC_BASE`].
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub(crate) enum MacReg {
    /// MACRIS when read (raw interrupt status), MACIACK when written (acknowledge those bits).
    RisIack = 0x00,
    /// MACIM: interrupt mask, 1 = enabled.
    Im = 0x04,
    /// MACRCTL: receive control.
    Rctl = 0x08,
    /// MACTCTL: transmit control.
    Tctl = 0x0C,
    /// MACDATA: each read pops a word of the receive FIFO, each write pushes one onto the
    /// transmit FIFO.
    Data = 0x10,
    /// MACIA0: bytes 0 to 3 of the MAC address, little-endian.
    Ia0 = 0x14,
    /// MACIA1: bytes 4 and 5 of the MAC address.
    Ia1 = 0x18,
    /// MACNP: how many whole frames wait in the receive FIFO.
    Np = 0x34,
    /// MACTR: writing bit 0 (NEWTX) sends the frame in the transmit FIFO; it reads 1 until the
    /// frame has gone.
    Tr = 0x38,
}

/// Reads a MAC register.
pub(crate) fn mac_read(reg: MacReg) -> u32 {
    // SAFETY: MAC_BASE + reg is one of the MAC's 32-bit registers, mapped on this chip (QEMU
    // maps it unconditionally; a chip needs the clock gate of `enable_ethernet_clocks`). A read
    // of MACDATA pops the FIFO: a device effect, not a memory one, and the driver reads it only
    // while MACNP says a frame is there.
    unsafe { ptr::read_volatile((MAC_BASE + reg as usize) as *const u32) }
}

/// Writes a MAC register.
pub(crate) fn mac_write(reg: MacReg, value: u32) {
    // SAFETY: as in `mac_read`: a mapped 32-bit device register that no Rust object aliases.
    unsafe { ptr::write_volatile((MAC_BASE + reg as usize) as *mut u32, value) }
}

// ---------------------------------------------------------------------------------------------
// Clocks.

/// QEMU's lm3s6965evb runs the core at 12.5 MHz out of reset (200 MHz / (SYSDIV + 1), with the
/// reset value of RCC); a real chip out of reset runs on its 12 MHz ±30 % internal oscillator,
/// and would set up its PLL first.
pub const SYSCLK_HZ: u32 = 12_500_000;

/// RCGC1: run-mode clock gating control 1, in the system control block; bit 16 clocks timer 0.
const RCGC1: usize = 0x400F_E104;
const RCGC1_TIMER0: u32 = 1 << 16;
/// RCGC2: run-mode clock gating control 2; the Ethernet MAC (EMAC0, bit 28) and its PHY
/// (EPHY0, bit 30).
const RCGC2: usize = 0x400F_E108;
const RCGC2_ETHERNET: u32 = (1 << 28) | (1 << 30);

/// Sets `bits` in the clock-gating register at `register`.
fn gate_on(register: usize, bits: u32) {
    // SAFETY: `register` is RCGC1 or RCGC2 (the only callers are below), a mapped 32-bit
    // system-control register; setting gate bits only clocks a peripheral block. Each caller
    // runs once at boot, before any interrupt is unmasked, so nothing else reads or writes the
    // register meanwhile.
    unsafe {
        let gates = ptr::read_volatile(register as *const u32);
        ptr::write_volatile(register as *mut u32, gates | bits);
    }
}

/// Powers the Ethernet MAC and PHY (QEMU does not gate clocks; a chip does). [`Mac::new`]
/// calls it; call it once, at boot, before any interrupt is unmasked.
///
/// [`Mac::new`]: crate::Mac::new
pub fn enable_ethernet_clocks() {
    gate_on(RCGC2, RCGC2_ETHERNET);
}

/// Powers general-purpose timer 0. Call once, at boot, before any interrupt is unmasked.
pub fn enable_timer0_clock() {
    gate_on(RCGC1, RCGC1_TIMER0);
}

// ---------------------------------------------------------------------------------------------
// Interrupts.

/// The LM3S6965's interrupt lines the images use, for `cortex_m::peripheral::NVIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Interrupt {
    /// General-purpose timer 0A.
    Timer0A = 19,
    /// The Ethernet controller.
    Ethernet = 42,
}

// SAFETY: each number is an external interrupt line of this chip, within the [`VECTORS`]
// entries of the tables `vectors` builds, which is all `InterruptNumber` asks.
unsafe impl cortex_m::interrupt::InterruptNumber for Interrupt {
    fn number(self) -> u16 {
        self as u16
    }
}

/// An interrupt handler, as the vector table holds it.
pub type Vector = unsafe extern "C" fn();

/// Entries of an image's interrupt table: up to the Ethernet line (42), not cortex-m-rt's
/// default of 240.
pub const VECTORS: usize = Interrupt::Ethernet as usize + 1;

/// An interrupt table: `handlers` on their lines, `default` on every other. An image puts it
/// in its `__INTERRUPTS` static (section `.vector_table.interrupts`, with cortex-m-rt's
/// `device` feature).
pub const fn vectors(default: Vector, handlers: &[(Interrupt, Vector)]) -> [Vector; VECTORS] {
    let mut table = [default; VECTORS];
    let mut i = 0;
    while i < handlers.len() {
        table[handlers[i].0 as usize] = handlers[i].1;
        i += 1;
    }
    table
}

// ---------------------------------------------------------------------------------------------
// Stack high-water mark.

/// The word painted over the free stack at boot.
const PAINT: u32 = 0xDEAD_BEEF;

unsafe extern "C" {
    /// Lowest address of the stack region (cortex-m-rt's `link.x`).
    static _stack_end: u32;
    /// Initial stack pointer: the top of the stack region.
    static _stack_start: u32;
}

fn stack_bounds() -> (usize, usize) {
    (
        ptr::addr_of!(_stack_end) as usize,
        ptr::addr_of!(_stack_start) as usize,
    )
}

/// Paints the unused stack, from its lowest address up to 64 bytes below the current stack
/// pointer, so [`stack_high_water`] can tell later how deep the stack went. Call it first
/// thing in `main`.
#[inline(never)]
pub fn paint_stack() {
    let (bottom, _) = stack_bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = bottom;
    while p + 4 <= sp.saturating_sub(64) {
        // SAFETY: [bottom, sp - 64) is stack memory below every live frame, so nothing uses it
        // yet; cortex-m-rt aligns `_stack_end` to 4 bytes.
        unsafe { ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// The stack in use now, in bytes: from the top of the stack to the stack pointer.
pub fn stack_depth() -> usize {
    stack_bounds().1 - cortex_m::register::msp::read() as usize
}

/// The most stack ever used since [`paint_stack`], in bytes: from the top of the stack down to
/// the lowest word that no longer holds the paint.
pub fn stack_high_water() -> usize {
    let (bottom, top) = stack_bounds();
    let mut p = bottom;
    // SAFETY: every address in [bottom, top) is mapped, word-aligned RAM of the stack region.
    while p < top && unsafe { ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}
