//! Every `unsafe` of the image lives here: the interrupt table and its Ethernet handler, the
//! tickless SysTick clock, and the static buffers. The MAC's registers, the clock gates and the
//! stack painting are the shared `lm3s6965` crate's (`examples/lm3s6965`), whose `unsafe` is
//! confined there the same way. Each item outside this file is safe to call.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::Ordering;

use cortex_m::interrupt::{CriticalSection, Mutex};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use cortex_m_rt::exception;

use lm3s6965::{Interrupt, Vector};

use crate::sizes;

// ---------------------------------------------------------------------------------------------
// The interrupt table (the MAC's registers, the clock gates and the interrupt numbers are the
// shared `lm3s6965` crate's).

/// Ethernet interrupt: acknowledges every cause, so the line drops. Its only job is to end a
/// `wfi`; the main loop then looks at MACNP itself.
unsafe extern "C" fn ethernet_irq() {
    lm3s6965::acknowledge_interrupts();
}

/// Any other interrupt: none is enabled, so one arriving is a fault. End the run.
unsafe extern "C" fn default_irq() {
    crate::diag::exit(false)
}

/// The interrupt vectors after the 16 exception vectors: up to the Ethernet line (42), not
/// cortex-m-rt's default 240 entries.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
#[used]
pub static __INTERRUPTS: [Vector; lm3s6965::VECTORS] =
    lm3s6965::vectors(default_irq, &[(Interrupt::Ethernet, ethernet_irq)]);

// ---------------------------------------------------------------------------------------------
// Time: SysTick as a tickless clock. The counter runs down from its reload value; each time it
// wraps, the SysTick exception adds the period to `ELAPSED`. The time now is `ELAPSED` plus
// the part of the current period already counted. To sleep, the period is set to the time left
// until the wake-up (at most 2^24 cycles, 1.34 s), so the core wakes once per deadline, not
// every millisecond.

/// Core cycles per millisecond.
const CYCLES_PER_MS: u64 = lm3s6965::SYSCLK_HZ as u64 / 1000;
/// The longest SysTick period: its reload register has 24 bits.
const MAX_PERIOD: u32 = 1 << 24;
/// The shortest sleep: one millisecond. A deadline closer than that is waited for awake.
const MIN_SLEEP: u64 = CYCLES_PER_MS;

/// Cycles counted in the SysTick periods that have ended.
static ELAPSED: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));
/// The current SysTick period, in cycles (the reload value plus one).
static PERIOD: Mutex<Cell<u32>> = Mutex::new(Cell::new(MAX_PERIOD));
/// Whether the current period's wrap is still to be counted by the exception. A period starts
/// disarmed and is armed once a read finds its counter past half-way: QEMU's model pends the
/// SysTick more than once for one wrap (when the counter reaches 0, when it reloads one clock
/// later, and when it is restarted), so an exception counts a wrap only for an armed period,
/// and disarms it. The main loop reads the clock many times a 1.34 s period; a sleep counts its
/// own wrap (`Timer::sleep_until`).
static ARMED: Mutex<Cell<bool>> = Mutex::new(Cell::new(false));

#[exception]
fn SysTick() {
    cortex_m::interrupt::free(|cs| {
        if ARMED.borrow(cs).replace(false) {
            let elapsed = ELAPSED.borrow(cs);
            elapsed.set(elapsed.get() + u64::from(PERIOD.borrow(cs).get()));
        }
    });
}

/// Cycles since [`start`], inside a critical section (so the SysTick handler cannot run).
///
/// A period of `P` cycles shows the counter values `P - 1`, ..., `1`, `0`, one per cycle, and
/// the exception pends as the counter reaches `0`: the cycles counted in the period are
/// `P - value`, and all `P` at its end. For an armed period (see [`ARMED`]), a pending exception
/// or a `0` is that end (QEMU's model reads `0` from the moment the period ends until its timer
/// callback has run and pended the exception), counted here as the handler will count it. For a
/// disarmed one, whose wrap was counted (or which has just started), a `0` is its start. Time
/// never goes back, whichever side of the wrap the reads fall.
fn cycles(cs: &CriticalSection) -> u64 {
    let period = u64::from(PERIOD.borrow(cs).get());
    let base = ELAPSED.borrow(cs).get();
    let armed = ARMED.borrow(cs);
    let before = SCB::is_pendst_pending();
    let mut value = u64::from(SYST::get_current()).min(period);
    let pending = SCB::is_pendst_pending();
    if pending && !before {
        // It wrapped while it was read: read it after the wrap.
        value = u64::from(SYST::get_current()).min(period);
    }
    match (armed.get(), pending || value == 0, value) {
        (true, true, 0) => base + period, // ended, not reloaded yet
        (true, true, v) => base + period + period - v, // ended and reloaded
        (true, false, v) => base + period - v,
        (false, _, 0) => base, // counted, or just started: not loaded yet
        (false, _, v) => {
            if period - v >= period / 2 {
                armed.set(true); // past half-way: the next wrap is this period's
            }
            base + period - v
        }
    }
}

/// The clock and the sleep of the main loop; owns SysTick.
pub struct Timer {
    syst: SYST,
    /// The latest time read.
    last_ms: u64,
    /// Reads that would have gone back in time (and returned `last_ms`): none, unless the
    /// counter misbehaves. The diagnostics report it, and the tests check it is 0.
    steps_back: u64,
}

impl Timer {
    /// Milliseconds since [`start`]: 64 bits, so it never wraps, and never going back.
    pub fn now_ms(&mut self) -> u64 {
        let now = cortex_m::interrupt::free(cycles) / CYCLES_PER_MS;
        if now < self.last_ms {
            self.steps_back += 1;
        }
        self.last_ms = self.last_ms.max(now);
        self.last_ms
    }

    /// How many reads of [`now_ms`](Self::now_ms) would have gone back in time.
    pub fn steps_back(&self) -> u64 {
        self.steps_back
    }

    /// Sleeps until `at_ms` (at most 1.34 s ahead; `None`: that long) or the next interrupt (a
    /// frame), unless `busy()` says there is work. `busy` runs with interrupts masked, so an
    /// interrupt arriving after it looked still ends the sleep: `wfi` wakes on a pending
    /// interrupt even while it is masked. Each sleep loses the few cycles it takes to
    /// reprogram the counter.
    pub fn sleep_until(&mut self, at_ms: Option<u64>, busy: impl FnOnce() -> bool) {
        cortex_m::interrupt::free(|cs| {
            if busy() {
                return;
            }
            let now = cycles(cs);
            let at = at_ms.map_or(u64::MAX, |ms| ms.saturating_mul(CYCLES_PER_MS));
            let left = at.saturating_sub(now);
            if left < MIN_SLEEP {
                return;
            }
            let period = left.min(u64::from(MAX_PERIOD)) as u32;
            self.restart(cs, now, period);
            // One period only: with a reload value of 0, the counter stops at 0 when the period
            // ends. So after the sleep, 0 means the period ended, and anything else is what is
            // left of it: no exception or flag (QEMU's model pends and flags more than once
            // per wrap, and late) is needed to tell.
            self.syst.set_reload(0);
            cortex_m::asm::wfi();
            let value = u64::from(SYST::get_current()).min(u64::from(period));
            let counted = match value {
                0 => u64::from(period),
                v => u64::from(period) - v,
            };
            self.restart(cs, now + counted, MAX_PERIOD);
        });
    }

    /// Starts a new SysTick period of `period` cycles at `now`: what the old one counted is
    /// folded into `ELAPSED`, and a wrap it left pending is part of `now` already.
    fn restart(&mut self, cs: &CriticalSection, now: u64, period: u32) {
        self.syst.disable_counter();
        ELAPSED.borrow(cs).set(now);
        PERIOD.borrow(cs).set(period);
        self.syst.set_reload(period - 1);
        self.syst.clear_current();
        self.syst.enable_counter();
        // The counter reads 0 until it loads the new period (on the next clock on a chip; when
        // QEMU's timer callback runs, under QEMU), and `cycles` reads 0 as a period's end: wait
        // for the load. Enabled at 0, QEMU's model also pends a SysTick at once (a chip does
        // not): no period has ended, so it is cleared.
        for _ in 0..50_000_000 {
            if SYST::get_current() != 0 {
                break;
            }
        }
        // Those pends also set COUNTFLAG, which `sleep_until` reads as the period's end: read
        // (and so clear) it too.
        SCB::clear_pendst();
        let _ = self.syst.has_wrapped();
        ARMED.borrow(cs).set(false);
    }
}

/// Starts the clock (SysTick on the core clock, its longest period) and unmasks the Ethernet
/// interrupt. Call once, with the MAC set up.
pub fn start(mut syst: SYST) -> Timer {
    syst.set_clock_source(SystClkSource::Core);
    syst.enable_interrupt();
    let mut timer = Timer {
        syst,
        last_ms: 0,
        steps_back: 0,
    };
    cortex_m::interrupt::free(|cs| timer.restart(cs, 0, MAX_PERIOD));
    // SAFETY: unmasking can break a critical section that relies on this line being masked;
    // there is none: the handler only acknowledges the MAC's interrupt causes.
    unsafe { cortex_m::peripheral::NVIC::unmask(Interrupt::Ethernet) };
    timer
}

// ---------------------------------------------------------------------------------------------
// Static buffers: every byte the network uses, sized in `sizes.rs`, in `.bss`.

/// One TCP socket's buffers.
pub struct TcpBuffers {
    /// The socket's receive ring.
    pub rx: [u8; sizes::TCP_RX],
    /// The socket's transmit ring, where replies are written in place.
    pub tx: [u8; sizes::TCP_TX],
    /// The session's line storage.
    pub line: [u8; sizes::LINE_STORAGE],
}

/// All of the image's buffers. Each is made of plain byte arrays, so the whole block is
/// zero-initialised `.bss`: no flash copy, no runtime construction.
pub struct Buffers {
    /// Per TCP socket.
    pub tcp: &'static mut [TcpBuffers; sizes::TCP_SOCKETS],
    /// The UDP socket's receive payload ring.
    pub udp_rx: &'static mut [u8; sizes::UDP_RX],
    /// The UDP socket's transmit payload ring.
    pub udp_tx: &'static mut [u8; sizes::UDP_TX],
    /// Where one UDP reply is built before it is queued.
    pub udp_reply: &'static mut [u8; sizes::MAX_DATAGRAM],
    /// One received frame as the RX FIFO delivers it (length, frame, FCS).
    pub frame_rx: &'static mut [u8; sizes::RX_FIFO_FRAME],
    /// One frame to transmit.
    pub frame_tx: &'static mut [u8; sizes::FRAME],
}

/// Hands out the buffers. Returns `None` after the first call, so no two `&mut` alias.
pub fn take_buffers() -> Option<Buffers> {
    const TCP: TcpBuffers = TcpBuffers {
        rx: [0; sizes::TCP_RX],
        tx: [0; sizes::TCP_TX],
        line: [0; sizes::LINE_STORAGE],
    };
    static mut TCP_BUFFERS: [TcpBuffers; sizes::TCP_SOCKETS] = [TCP; sizes::TCP_SOCKETS];
    static mut UDP_RX: [u8; sizes::UDP_RX] = [0; sizes::UDP_RX];
    static mut UDP_TX: [u8; sizes::UDP_TX] = [0; sizes::UDP_TX];
    static mut UDP_REPLY: [u8; sizes::MAX_DATAGRAM] = [0; sizes::MAX_DATAGRAM];
    static mut FRAME_RX: [u8; sizes::RX_FIFO_FRAME] = [0; sizes::RX_FIFO_FRAME];
    static mut FRAME_TX: [u8; sizes::FRAME] = [0; sizes::FRAME];
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    // Single core, and no interrupt handler touches TAKEN: a load and a store suffice.
    if TAKEN.load(Ordering::Relaxed) {
        return None;
    }
    TAKEN.store(true, Ordering::Relaxed);
    // SAFETY: TAKEN makes this block run at most once, so these are the only references to
    // these statics for the life of the program.
    unsafe {
        Some(Buffers {
            tcp: &mut *ptr::addr_of_mut!(TCP_BUFFERS),
            udp_rx: &mut *ptr::addr_of_mut!(UDP_RX),
            udp_tx: &mut *ptr::addr_of_mut!(UDP_TX),
            udp_reply: &mut *ptr::addr_of_mut!(UDP_REPLY),
            frame_rx: &mut *ptr::addr_of_mut!(FRAME_RX),
            frame_tx: &mut *ptr::addr_of_mut!(FRAME_TX),
        })
    }
}
