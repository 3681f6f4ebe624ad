//! upcase on a microcontroller: the protocol core serves UART0 of an emulated LM3S6965
//! (Cortex-M3, or Cortex-M0 with the `thumbv6m-none-eabi` target) under QEMU.
//!
//! Lines framing, lines of up to 256 bytes, replies batched through a 64-byte staging buffer.
//! The UART's convention (`PROTOCOL.md` §4): a CR ends a line as CR LF does, so a terminal's
//! Enter gets its reply at once (`terminal.rs`), and a byte 0x04 (EOT, Ctrl-D) ends the session
//! as EOF would; the image then exits QEMU with status 0 through semihosting, and a panic exits
//! with status 1. In the default build the UART carries the replies and nothing else.

#![no_std]
#![no_main]
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod hw;
mod terminal;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;

#[cfg(feature = "defmt")]
use defmt_rtt as _;

#[entry]
fn main() -> ! {
    #[cfg(feature = "report")]
    lm3s6965::paint_stack();
    // Called once, so the state is always there.
    let Some(hw::State { session, staging }) = hw::take_state() else {
        exit(false)
    };
    let mut uart = terminal::Terminal::new(hw::Uart::new());
    // The UART never fails and never accepts zero bytes, so this cannot be an error.
    if serve(&mut uart, session, staging).is_err() {
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
        lm3s6965::stack_high_water()
    );
    let _ = counters;
    exit(true)
}

/// The core's blocking driver.
#[cfg(not(feature = "async"))]
fn serve(
    uart: &mut terminal::Terminal<hw::Uart>,
    session: &mut hw::UartSession,
    staging: &mut [u8],
) -> Result<(), upcase_core::ServeError<core::convert::Infallible>> {
    upcase_core::blocking::serve(uart, session, staging)
}

/// The core's async driver, polled until it is done: the UART completes every call at once,
/// so no waker is ever needed.
#[cfg(feature = "async")]
fn serve(
    uart: &mut terminal::Terminal<hw::Uart>,
    session: &mut hw::UartSession,
    staging: &mut [u8],
) -> Result<(), upcase_core::ServeError<core::convert::Infallible>> {
    let mut serving = core::pin::pin!(upcase_core::asynch::serve(uart, session, staging));
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    loop {
        if let core::task::Poll::Ready(result) = serving.as_mut().poll(&mut cx) {
            return result;
        }
    }
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

/// A panic ends the QEMU run with status 1. (Only reachable without `no-panic`.)
#[cfg(not(feature = "no-panic"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(false)
}

/// With `no-panic`, the panic handler calls a function that is declared and never defined. The
/// optimiser drops the handler when no panic can happen, so the image links; while any panic
/// path is left, the linker fails with "undefined symbol", naming that function.
#[cfg(feature = "no-panic")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    hw::panic_path_left()
}
