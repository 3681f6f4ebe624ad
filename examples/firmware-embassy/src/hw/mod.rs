//! Every `unsafe` of the image lives under this module, each block with its `// SAFETY:`
//! comment: here the executor's loop and its pender, and the stack painting; in `lm3s6965`
//! the QEMU board's registers, interrupt table and time driver; in `nucleo` the board's
//! interrupt bindings. Each item outside `hw` is safe to call.

use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use embassy_executor::{Spawner, raw};
use static_cell::StaticCell;

#[cfg(not(feature = "board-nucleo-f429zi"))]
pub mod lm3s6965;
#[cfg(feature = "board-nucleo-f429zi")]
pub mod nucleo;

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
/// pointer, so [`stack_high_water`] can tell later how deep the stack went.
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

/// The most stack ever used since [`paint_stack`], in bytes: from the top of the stack down to
/// the lowest word that no longer holds the paint. With embassy every task's state is a static
/// (its task pool), so this is the executor's own depth plus the interrupt handlers'.
pub fn stack_high_water() -> usize {
    let (bottom, top) = stack_bounds();
    let mut p = bottom;
    // SAFETY: every address in [bottom, top) is mapped, word-aligned RAM of the stack region.
    while p < top && unsafe { ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}
