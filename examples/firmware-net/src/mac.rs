//! The Stellaris (LM3S6965) Ethernet MAC as smoltcp's [`phy::Device`]: glue over the shared
//! register-level driver, `lm3s6965::Mac` (`examples/lm3s6965`), which copies each received
//! frame out of the FIFO once and sends a frame through the other. Safe code.

use lm3s6965::{FIFO_FRAME, FRAME, TxBuffer};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// The MAC, with one frame buffer each way.
pub struct Mac(lm3s6965::Mac);

impl Mac {
    /// Sets the MAC up (`lm3s6965::Mac::new`): receiver, transmitter, the receive interrupt.
    pub fn new(rx: &'static mut [u8; FIFO_FRAME], tx: &'static mut [u8; FRAME]) -> Self {
        Self(lm3s6965::Mac::new(rx, tx))
    }

    /// The MAC address the board (or QEMU's `-nic ...,mac=`) programmed into MACIA0/1.
    pub fn address(&self) -> [u8; 6] {
        self.0.address()
    }

    /// Whether a whole frame waits in the receive FIFO.
    pub fn rx_pending(&self) -> bool {
        self.0.rx_pending()
    }
}

/// A received frame, already out of the FIFO.
pub struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// Room for one frame to send; it goes out when the closure returns.
pub struct TxToken<'a>(TxBuffer<'a>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.send_with(len, f)
    }
}

impl phy::Device for Mac {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let (frame, tx) = self.0.receive()?;
        Some((RxToken(frame), TxToken(tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(self.0.transmit()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME;
        caps
    }
}
