//! The emulated LM3S6965 (QEMU `lm3s6965evb`): the Ethernet MAC's registers, its clock gate,
//! the interrupt table with the Ethernet handler, and embassy-time's driver on SysTick.

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
// Time: embassy-time's driver, a 1 kHz SysTick (feature `tick-hz-1_000` of
// embassy-time-driver, so one embassy tick is one millisecond).

/// QEMU's lm3s6965evb runs the core at 12.5 MHz out of reset; a real chip out of reset runs on
/// its 12 MHz ±30 % internal oscillator, and would set up its PLL first.
pub const SYSCLK_HZ: u32 = 12_500_000;

/// The time driver: a tick count, the next alarm, and embassy's timer queue.
struct SysTickDriver {
    /// Milliseconds since [`start_time`]. 64 bits: it never wraps.
    ticks: Mutex<Cell<u64>>,
    /// The tick at which the queue's next timer expires (`u64::MAX`: none).
    alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

impl SysTickDriver {
    /// One SysTick: advances the count, and wakes the timers that expired.
    fn tick(&self) {
        critical_section::with(|cs| {
            let now = self.ticks.borrow(cs).get() + 1;
            self.ticks.borrow(cs).set(now);
            if now >= self.alarm.borrow(cs).get() {
                let next = self.queue.borrow(cs).borrow_mut().next_expiration(now);
                self.alarm.borrow(cs).set(next);
            }
        });
    }
}

impl embassy_time_driver::Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            if queue.schedule_wake(at, waker) {
                // Wakes what is already due; the rest waits for its tick.
                let next = queue.next_expiration(self.ticks.borrow(cs).get());
                self.alarm.borrow(cs).set(next);
            }
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

#[exception]
fn SysTick() {
    DRIVER.tick();
}

/// Starts the 1 kHz SysTick that drives embassy-time. Before it, time stands at 0.
pub fn start_time(mut syst: cortex_m::peripheral::SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(SYSCLK_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
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
