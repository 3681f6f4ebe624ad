//! What the upcase firmware images share on TI's LM3S6965 as QEMU's `lm3s6965evb` models it:
//!
//! - [`Mac`]: the Stellaris Ethernet MAC at the register level (reset, receive out of the FIFO,
//!   send into it), under both network images: `firmware-net` wraps it in smoltcp's
//!   `phy::Device`, `firmware-embassy` in `embassy_net_driver::Driver`;
//! - [`Interrupt`] and [`vectors`]: the chip's interrupt lines, and the short interrupt table
//!   each image fills with its own handlers;
//! - [`enable_ethernet_clocks`], [`enable_timer0_clock`]: the run-mode clock gates;
//! - [`paint_stack`], [`stack_depth`], [`stack_high_water`]: the stack's high-water mark, on
//!   any Cortex-M (the UART image and the NUCLEO board image use them too);
//! - [`Line`]: a diagnostic line built without `core::fmt`;
//! - [`exit`]: the end of a QEMU run, over semihosting (feature `semihosting`).
//!
//! Every `unsafe` is in `hw.rs`, each block with its `// SAFETY:` comment; the rest is safe
//! code. Each image keeps its own glue: its network stack's driver trait, its interrupt
//! handlers, its time keeping, where its diagnostics go.

#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

#[allow(unsafe_code)]
mod hw;
mod line;
mod mac;

pub use hw::{
    Interrupt, SYSCLK_HZ, VECTORS, Vector, enable_ethernet_clocks, enable_timer0_clock,
    paint_stack, stack_depth, stack_high_water, vectors,
};
pub use line::Line;
pub use mac::{FIFO_FRAME, FRAME, Mac, TxBuffer, acknowledge_interrupts};

/// Ends the QEMU run with status 0 (`ok`) or 1, over semihosting (feature `semihosting`).
/// Without the feature it returns at once, and the caller stops as a board would (a reset, or
/// a sleep loop).
pub fn exit(ok: bool) {
    #[cfg(feature = "semihosting")]
    {
        use cortex_m_semihosting::debug;
        debug::exit(if ok {
            debug::EXIT_SUCCESS
        } else {
            debug::EXIT_FAILURE
        });
    }
    let _ = ok;
}
