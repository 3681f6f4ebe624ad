//! Every `unsafe` of the image lives under this module, each block with its `// SAFETY:`
//! comment: here the executor's loop and its pender; in `qemu` the QEMU board's interrupt
//! table and time driver; in `nucleo` the board's interrupt bindings. (The MAC's registers,
//! the clock gates and the stack painting are the shared `lm3s6965` crate's, whose `unsafe` is
//! confined there the same way.) Each item outside `hw` is safe to call.

use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use embassy_executor::{Spawner, raw};
use static_cell::StaticCell;

#[cfg(feature = "board-nucleo-f429zi")]
pub mod nucleo;
#[cfg(not(feature = "board-nucleo-f429zi"))]
pub mod qemu;

// ---------------------------------------------------------------------------------------------
// The executor: embassy's raw executor, polled by our own loop that sleeps with WFI.

/// Set by the pender whenever a task is woken; cleared before each poll.
static PENDED: AtomicBool = AtomicBool::new(true);

/// Called by the executor, from any context (a task, an interrupt handler), when a task was
/// woken. It only raises a flag: the loop in [`run`] polls.
#[unsafe(export_name = "__pender")]
fn pender(_context: *mut ()) {
    PENDED.store(true, Ordering::Release);
}

/// Runs the executor for ever: `init` spawns the tasks, then the loop polls every woken task
/// and sleeps with `wfi` until an interrupt when none is woken.
///
/// `wfi`, not `wfe`: QEMU treats `wfe` as a no-op, so a `wfe` loop would keep a host core busy
/// while the guest idles. The check and the sleep run with interrupts masked, so a task woken
/// by an interrupt after the check still ends the sleep (`wfi` wakes on a pending interrupt
/// even while it is masked).
pub fn run(init: impl FnOnce(Spawner)) -> ! {
    static EXECUTOR: StaticCell<raw::Executor> = StaticCell::new();
    let executor: &'static raw::Executor = EXECUTOR.init(raw::Executor::new(ptr::null_mut()));
    init(executor.spawner());
    loop {
        PENDED.store(false, Ordering::Relaxed);
        // SAFETY: `poll` must not be called reentrantly. This loop is its only caller (the
        // pender only sets a flag), and it runs in thread mode, never from an interrupt.
        unsafe { executor.poll() };
        cortex_m::interrupt::free(|_| {
            if !PENDED.load(Ordering::Acquire) {
                cortex_m::asm::wfi();
            }
        });
    }
}
