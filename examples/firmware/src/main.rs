//! upcase on a microcontroller: the protocol core serves UART0 of an emulated LM3S6965
//! (Cortex-M3, or Cortex-M0 with the `thumbv6m-none-eabi` target) under QEMU.
//!
//! Lines framing, lines of up to 256 bytes, replies batched through a 64-byte staging buffer.
//! A byte 0x04 (EOT, Ctrl-D) ends the session as EOF would, and the image exits QEMU with
//! status 0 through semihosting; a panic exits with status 1. In the default build the UART
//! carries the replies and nothing else.

#![no_std]
#![no_main]
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod hw;
mod terminal;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use upcase_core::blocking;

#[cfg(feature = "defmt")]
use defmt_rtt as _;

#[entry]
fn main() -> ! {
    #[cfg(feature = "report")]
    hw::paint_stack();
    // Called once, so the state is always there.
    let Some(hw::State { session, staging }) = hw::take_state() else {
        exit(false)
    };
    let mut uart = terminal::Terminal::new(hw::Uart::new());
    // The UART never fails and never accepts zero bytes, so this cannot be an error.
    if blocking::serve(&mut uart, session, staging).is_err() {
        exit(false)
    }
    let counters = session.counters();
    #[cfg(feature = "defmt")]
    defmt::info!("session {}", counters);
    #[cfg(feature = "report")]
    cortex_m_semihosting::hprintln!(
        "\nsession: bytes_in={} bytes_out={} lines={} overlong={} stack_high_water={}B",
        counters.bytes_in,
        counters.bytes_out,
        counters.lines,
        counters.overlong,
        hw::stack_high_water()
    );
    let _ = counters;
    exit(true)
}

/// Ends the QEMU run with status 0 (`ok`) or 1.
fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a semihosting host (real hardware): stop here.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(false)
}
