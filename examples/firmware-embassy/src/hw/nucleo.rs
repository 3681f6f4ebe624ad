//! The NUCLEO-F429ZI's interrupt bindings. `bind_interrupts!` defines the interrupt handlers
//! and implements embassy-stm32's (unsafe) `Binding` trait for them, so it lives under `hw`
//! with the image's other `unsafe`; the board's code (`nucleo.rs`) is safe.

use embassy_stm32::peripherals::RNG;
use embassy_stm32::{bind_interrupts, eth, rng};

bind_interrupts!(
    /// The Ethernet MAC's and the RNG's interrupts, handled by embassy-stm32's drivers.
    pub struct Irqs {
        ETH => eth::InterruptHandler;
        HASH_RNG => rng::InterruptHandler<RNG>;
    }
);
