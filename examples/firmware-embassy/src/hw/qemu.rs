//! The emulated LM3S6965 (QEMU `lm3s6965evb`): the interrupt table with the Ethernet and timer
//! handlers, and embassy-time's driver on SysTick and general-purpose timer 0. The MAC's
//! registers, the clock gates and the interrupt numbers are the shared `lm3s6965` crate's
//! (`examples/lm3s6965`).

use core::cell::{Cell, RefCell};
use core::ptr;
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_sync::waitqueue::AtomicWaker;
use embassy_time_queue_utils::Queue;
use lm3s6965::{Interrupt, Vector};

// ---------------------------------------------------------------------------------------------
// The Ethernet interrupt (the MAC's registers, the clock gates and the interrupt numbers are
// the shared `lm3s6965` crate's).

/// Woken by the Ethernet interrupt: the driver's `receive` registers its waker here before it
/// looks at MACNP, so a frame that arrives after the look still wakes it.
pub static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// The Ethernet interrupt: acknowledges every cause, so the line drops, and wakes the driver.
/// The driver then reads MACNP itself.
unsafe extern "C" fn ethernet_irq() {
    lm3s6965::acknowledge_interrupts();
    RX_WAKER.wake();
}

/// Any other interrupt line: none is unmasked, so one firing is a fault. Stop.
unsafe extern "C" fn unexpected_irq() {
    halt(false)
}

/// The interrupt vectors after the 16 exception vectors: up to the Ethernet line (42), rather
/// than cortex-m-rt's default of 240.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
#[used]
pub static __INTERRUPTS: [Vector; lm3s6965::VECTORS] = lm3s6965::vectors(
    unexpected_irq,
    &[
        (Interrupt::Timer0A, timer0a_irq),
        (Interrupt::Ethernet, ethernet_irq),
    ],
);

/// Unmasks the Ethernet interrupt. Call once, after the MAC is set up.
pub fn unmask_ethernet_irq() {
    // SAFETY: unmasking can break a critical section that relies on the line being masked;
    // there is none: the handler only acknowledges the MAC and wakes a waker, both of which
    // are safe at any time.
    unsafe { cortex_m::peripheral::NVIC::unmask(Interrupt::Ethernet) };
}

// ---------------------------------------------------------------------------------------------
// Time: embassy-time's driver, tickless. SysTick runs free and counts the cycles (now); the
// general-purpose timer 0A fires once at the next alarm. So an idle guest wakes when a timer is
// due, and otherwise only when SysTick wraps (every 2^24 cycles, 1.34 s): not every tick.

/// The core clock (`lm3s6965::SYSCLK_HZ`: QEMU's 12.5 MHz out of reset).
const SYSCLK_HZ: u64 = lm3s6965::SYSCLK_HZ as u64;

/// Cycles per SysTick wrap: it counts down from 2^24 - 1 to 0, and then wraps.
const WRAP: u64 = 1 << 24;

const fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}
/// embassy ticks (`embassy_time_driver::TICK_HZ`, 1 MHz by feature `tick-hz-1_000_000`) per
/// [`CYCLES`] core cycles: the ratio in lowest terms (2 / 25), so the products never overflow
/// in any realistic uptime (2^63 cycles are 23,000 years).
const TICKS: u64 = embassy_time_driver::TICK_HZ / gcd(embassy_time_driver::TICK_HZ, SYSCLK_HZ);
/// See [`TICKS`].
const CYCLES: u64 = SYSCLK_HZ / gcd(embassy_time_driver::TICK_HZ, SYSCLK_HZ);

/// Base address of general-purpose timer 0.
const GPTM0: usize = 0x4003_0000;

/// The timer 0 registers the driver uses, by offset from [`GPTM0`].
#[derive(Clone, Copy)]
#[repr(usize)]
enum TimerReg {
    /// GPTMCFG: 0 = one 32-bit timer.
    Cfg = 0x00,
    /// GPTMTAMR: timer A mode, 1 = one-shot.
    Tamr = 0x04,
    /// GPTMCTL: bit 0 (TAEN) runs timer A; clearing it stops the countdown.
    Ctl = 0x0C,
    /// GPTMIMR: bit 0 (TATOIM) raises the interrupt when timer A times out.
    Imr = 0x18,
    /// GPTMICR: writing bit 0 clears timer A's time-out.
    Icr = 0x24,
    /// GPTMTAILR: timer A's start value, in cycles; loaded when TAEN goes to 1.
    Tailr = 0x28,
}

/// Timer A's time-out bit in GPTMCTL, GPTMIMR and GPTMICR alike.
const TIMER_A: u32 = 1;

fn timer_write(reg: TimerReg, value: u32) {
    // SAFETY: GPTM0 + reg is one of timer 0's 32-bit registers, mapped on this chip (clocked
    // by `start_time` before any other write); no Rust object aliases it. The driver writes
    // them only inside critical sections or from the timer's own handler, which runs with the
    // same single owner: the driver.
    unsafe { ptr::write_volatile((GPTM0 + reg as usize) as *mut u32, value) }
}

/// The time driver: SysTick's wraps, and embassy's timer queue.
struct TicklessDriver {
    /// SysTick wraps since [`start_time`].
    wraps: Mutex<Cell<u64>>,
    /// Whether SysTick runs: before, time stands at 0.
    started: Mutex<Cell<bool>>,
    queue: Mutex<RefCell<Queue>>,
}

impl TicklessDriver {
    /// Core cycles since [`start_time`]. A wrap that has happened but whose interrupt is still
    /// pending (we run with interrupts masked) is counted here already.
    fn cycles(&self, cs: critical_section::CriticalSection<'_>) -> u64 {
        if !self.started.borrow(cs).get() {
            return 0;
        }
        let wraps = self.wraps.borrow(cs).get();
        let before = cortex_m::peripheral::SYST::get_current();
        let wrapped = cortex_m::peripheral::SCB::is_pendst_pending();
        let after = cortex_m::peripheral::SYST::get_current();
        // Pending: the wrap came before the check, so `after` is in the next period. Not
        // pending: no wrap came before the check, so `before` is in this one.
        let (wraps, current) = if wrapped {
            (wraps + 1, after)
        } else {
            (wraps, before)
        };
        wraps * WRAP + (WRAP - 1 - u64::from(current))
    }

    fn ticks(&self, cs: critical_section::CriticalSection<'_>) -> u64 {
        self.cycles(cs) * TICKS / CYCLES
    }

    /// Arms timer 0A to fire at tick `at`, or stops it for `u64::MAX` (no timer pending).
    /// Returns `false` when `at` has already passed: the caller then wakes what is due and
    /// asks again.
    fn set_alarm(&self, cs: critical_section::CriticalSection<'_>, at: u64) -> bool {
        timer_write(TimerReg::Ctl, 0);
        if at == u64::MAX {
            return true;
        }
        let now = self.cycles(cs);
        if at <= now * TICKS / CYCLES {
            return false;
        }
        // The first cycle at or after tick `at`; more than 2^32 - 1 cycles (5.7 minutes)
        // away, the timer fires early and `on_alarm` arms it again.
        let due = (at * CYCLES).div_ceil(TICKS);
        let wait = u32::try_from(due.saturating_sub(now))
            .unwrap_or(u32::MAX)
            .max(1);
        timer_write(TimerReg::Icr, TIMER_A);
        timer_write(TimerReg::Tailr, wait);
        timer_write(TimerReg::Ctl, TIMER_A);
        true
    }

    /// Wakes every timer that is due, and arms the alarm for the next one.
    fn rearm(&self, cs: critical_section::CriticalSection<'_>) {
        let mut queue = self.queue.borrow(cs).borrow_mut();
        loop {
            let next = queue.next_expiration(self.ticks(cs));
            if self.set_alarm(cs, next) {
                break;
            }
        }
    }
}

impl embassy_time_driver::Driver for TicklessDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks(cs))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let changed = self.queue.borrow(cs).borrow_mut().schedule_wake(at, waker);
            if changed {
                self.rearm(cs);
            }
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: TicklessDriver = TicklessDriver {
    wraps: Mutex::new(Cell::new(0)),
    started: Mutex::new(Cell::new(false)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let wraps = DRIVER.wraps.borrow(cs);
        wraps.set(wraps.get() + 1);
    });
}

/// Timer 0A timed out: the next alarm is due.
unsafe extern "C" fn timer0a_irq() {
    timer_write(TimerReg::Icr, TIMER_A);
    critical_section::with(|cs| DRIVER.rearm(cs));
}

/// Starts embassy-time: SysTick free-running over 2^24 cycles, and timer 0A as a one-shot
/// 32-bit alarm with its interrupt. Before it, time stands at 0. Call once, at boot.
pub fn start_time(mut syst: cortex_m::peripheral::SYST) {
    lm3s6965::enable_timer0_clock();
    timer_write(TimerReg::Ctl, 0);
    timer_write(TimerReg::Cfg, 0);
    timer_write(TimerReg::Tamr, 1);
    timer_write(TimerReg::Icr, TIMER_A);
    timer_write(TimerReg::Imr, TIMER_A);
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload((WRAP - 1) as u32);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    // The counter reads 0 until its first clock reloads it: wait for that, so time starts at
    // 0 and never goes back.
    while cortex_m::peripheral::SYST::get_current() == 0 {}
    critical_section::with(|cs| DRIVER.started.borrow(cs).set(true));
    // SAFETY: unmasking can break a critical section that relies on this line being masked;
    // there is none: the handler takes its own critical section.
    unsafe { cortex_m::peripheral::NVIC::unmask(Interrupt::Timer0A) };
}

// ---------------------------------------------------------------------------------------------
// Ending the run.

/// Ends the QEMU run with status 0 (`ok`) or 1 over semihosting (feature `semihosting`), else
/// stops the core in a sleep loop, which is what happens on a board without a debugger.
pub fn halt(ok: bool) -> ! {
    lm3s6965::exit(ok);
    loop {
        cortex_m::asm::wfi();
    }
}
