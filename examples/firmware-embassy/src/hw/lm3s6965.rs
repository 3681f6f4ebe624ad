//! The emulated LM3S6965 (QEMU `lm3s6965evb`): the Ethernet MAC's registers, its clock gate,
//! the interrupt table with the Ethernet and timer handlers, and embassy-time's driver on
//! SysTick and general-purpose timer 0.

use core::cell::{Cell, RefCell};
use core::ptr;
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_sync::waitqueue::AtomicWaker;
use embassy_time_queue_utils::Queue;

// ---------------------------------------------------------------------------------------------
// The Ethernet MAC (datasheet chapter "Ethernet Controller"; QEMU's model is
// hw/net/stellaris_enet.c).

/// Base address of the MAC's register block.
const MAC_BASE: usize = 0x4004_8000;

/// The MAC registers the driver uses, by offset from [`MAC_BASE`].
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub enum MacReg {
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
pub fn mac_read(reg: MacReg) -> u32 {
    // SAFETY: MAC_BASE + reg is one of the MAC's 32-bit registers, mapped on this chip (QEMU
    // maps it unconditionally; a chip needs the clock gate of `enable_ethernet_clocks`). A read
    // of MACDATA pops the FIFO: a device effect, not a memory one, and the driver reads it only
    // while MACNP says a frame is there.
    unsafe { ptr::read_volatile((MAC_BASE + reg as usize) as *const u32) }
}

/// Writes a MAC register.
pub fn mac_write(reg: MacReg, value: u32) {
    // SAFETY: as in `mac_read`: a mapped 32-bit device register that no Rust object aliases.
    unsafe { ptr::write_volatile((MAC_BASE + reg as usize) as *mut u32, value) }
}

/// RCGC2: run-mode clock gating control 2, in the system control block.
const RCGC2: usize = 0x400F_E108;
/// RCGC2 bits of the Ethernet MAC (EMAC0, bit 28) and its PHY (EPHY0, bit 30).
const RCGC2_ETHERNET: u32 = (1 << 28) | (1 << 30);

/// Powers the Ethernet MAC and PHY (QEMU does not gate clocks; a chip does). Call once, at
/// boot, before the MAC is touched.
pub fn enable_ethernet_clocks() {
    // SAFETY: RCGC2 is a mapped 32-bit system-control register; setting two gate bits only
    // clocks the Ethernet blocks. It runs once at boot, before any interrupt is unmasked, so
    // nothing else reads or writes RCGC2 meanwhile.
    unsafe {
        let gates = ptr::read_volatile(RCGC2 as *const u32);
        ptr::write_volatile(RCGC2 as *mut u32, gates | RCGC2_ETHERNET);
    }
}

/// Woken by the Ethernet interrupt: the driver's `receive` registers its waker here before it
/// looks at MACNP, so a frame that arrives after the look still wakes it.
pub static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// The Ethernet controller's interrupt line on the LM3S6965.
const ETHERNET_IRQ: u16 = 42;

#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: the number is an external interrupt line of this chip, within the 43 entries of
// `__INTERRUPTS`, which is all `InterruptNumber` asks.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

/// The Ethernet interrupt: acknowledges every cause, so the line drops, and wakes the driver.
/// The driver then reads MACNP itself.
unsafe extern "C" fn ethernet_irq() {
    mac_write(MacReg::RisIack, 0x7F);
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
pub static __INTERRUPTS: [unsafe extern "C" fn(); ETHERNET_IRQ as usize + 1] = {
    let mut table = [unexpected_irq as unsafe extern "C" fn(); ETHERNET_IRQ as usize + 1];
    table[TIMER0A_IRQ as usize] = timer0a_irq;
    table[ETHERNET_IRQ as usize] = ethernet_irq;
    table
};

/// Unmasks the Ethernet interrupt. Call once, after the MAC is set up.
pub fn unmask_ethernet_irq() {
    // SAFETY: unmasking can break a critical section that relies on the line being masked;
    // there is none: the handler only acknowledges the MAC and wakes a waker, both of which
    // are safe at any time.
    unsafe { cortex_m::peripheral::NVIC::unmask(Irq(ETHERNET_IRQ)) };
}

// ---------------------------------------------------------------------------------------------
// Time: embassy-time's driver, tickless. SysTick runs free and counts the cycles (now); the
// general-purpose timer 0A fires once at the next alarm. So an idle guest wakes when a timer is
// due, and otherwise only when SysTick wraps (every 2^24 cycles, 1.34 s): not every tick.

/// QEMU's lm3s6965evb runs the core at 12.5 MHz out of reset; a real chip out of reset runs on
/// its 12 MHz ±30 % internal oscillator, and would set up its PLL first.
pub const SYSCLK_HZ: u64 = 12_500_000;

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

/// RCGC1: run-mode clock gating control 1; bit 16 clocks timer 0.
const RCGC1: usize = 0x400F_E104;
const RCGC1_TIMER0: u32 = 1 << 16;
/// Timer 0A's interrupt line on the LM3S6965.
const TIMER0A_IRQ: u16 = 19;

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
    // SAFETY: RCGC1 is a mapped 32-bit system-control register; setting one gate bit only
    // clocks timer 0. It runs once at boot, before any interrupt is unmasked, so nothing else
    // reads or writes RCGC1 meanwhile.
    unsafe {
        let gates = ptr::read_volatile(RCGC1 as *const u32);
        ptr::write_volatile(RCGC1 as *mut u32, gates | RCGC1_TIMER0);
    }
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
    unsafe { cortex_m::peripheral::NVIC::unmask(Irq(TIMER0A_IRQ)) };
}

// ---------------------------------------------------------------------------------------------
// Ending the run.

/// Ends the QEMU run with status 0 (`ok`) or 1 over semihosting (feature `semihosting`), else
/// stops the core in a sleep loop, which is what happens on a board without a debugger.
pub fn halt(ok: bool) -> ! {
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
    loop {
        cortex_m::asm::wfi();
    }
}
