//! The Stellaris (LM3S6965) Ethernet MAC as an [`embassy_net_driver::Driver`]: glue over the
//! shared register-level driver, `lm3s6965::Mac` (`examples/lm3s6965`), which copies each
//! received frame out of the FIFO once and sends a frame through the other. Safe code.
//!
//! The Ethernet interrupt wakes the driver when a frame arrives (`hw::qemu::RX_WAKER`);
//! transmitting never waits for an interrupt.

use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use lm3s6965::{FIFO_FRAME, FRAME, Mac, TxBuffer};

use crate::hw::qemu::RX_WAKER;

/// The MAC, with one frame buffer each way.
pub struct StellarisMac(Mac);

impl StellarisMac {
    /// Sets the MAC up (`lm3s6965::Mac::new`): receiver, transmitter, the receive interrupt in
    /// the MAC. The NVIC line is unmasked by `hw::qemu::unmask_ethernet_irq`.
    pub fn new(rx: &'static mut [u8; FIFO_FRAME], tx: &'static mut [u8; FRAME]) -> Self {
        Self(Mac::new(rx, tx))
    }

    /// The MAC address the board (or QEMU's `-nic ...,mac=`) programmed into MACIA0/1.
    pub fn address(&self) -> [u8; 6] {
        self.0.address()
    }
}

/// A received frame, already out of the FIFO.
pub struct RxToken<'a>(&'a mut [u8]);

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// Room for one frame; it is sent when the closure returns.
pub struct TxToken<'a>(TxBuffer<'a>);

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.send_with(len, f)
    }
}

impl embassy_net_driver::Driver for StellarisMac {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // Register first, look second: a frame arriving in between still wakes us.
        RX_WAKER.register(cx.waker());
        let (frame, tx) = self.0.receive()?;
        Some((RxToken(frame), TxToken(tx)))
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<TxToken<'_>> {
        Some(TxToken(self.0.transmit()))
    }

    /// Always up: QEMU's model has no PHY link to lose. (A chip's PHY reports its link in
    /// MR1 over MII management, which this driver does not read.)
    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = FRAME;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.0.address())
    }
}
