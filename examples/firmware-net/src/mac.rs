//! A driver for the Stellaris (LM3S6965) Ethernet MAC as smoltcp's [`phy::Device`].
//!
//! The MAC has no DMA: frames go through two FIFOs behind one data register, one 32-bit word at
//! a time. A received frame comes as a 16-bit length (the whole FIFO frame: this length field,
//! the Ethernet frame and its 4-byte FCS), then the frame, little-endian, so the frame's first
//! two bytes share a word with the length. A frame to send goes the same way, except that its
//! 16-bit length counts only the payload after the 14-byte header, and the MAC appends the FCS.
//! Register access is in `hw.rs`; this file is safe code.

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::hw::{self, MacReg};
use crate::sizes::{FRAME, RX_FIFO_FRAME};

/// MACRCTL: receiver enable.
const RCTL_RXEN: u32 = 0x01;
/// MACRCTL: reject frames with a bad FCS.
const RCTL_BADCRC: u32 = 0x08;
/// MACRCTL: clear the receive FIFO.
const RCTL_RSTFIFO: u32 = 0x10;
/// MACTCTL: transmitter enable.
const TCTL_TXEN: u32 = 0x01;
/// MACTCTL: pad short frames to 60 bytes.
const TCTL_PADEN: u32 = 0x02;
/// MACTCTL: append the FCS.
const TCTL_CRC: u32 = 0x04;
/// MACTCTL: full duplex.
const TCTL_DUPLEX: u32 = 0x08;
/// MACRIS/MACIM: a frame was received.
const INT_RX: u32 = 0x01;
/// Ethernet header: destination, source, EtherType.
const HEADER: usize = 14;
/// The receive FIFO's size in bytes.
const RX_FIFO_SIZE: usize = 2048;

/// The MAC, with one frame buffer each way.
pub struct Mac {
    rx: &'static mut [u8; RX_FIFO_FRAME],
    tx: &'static mut [u8; FRAME],
    /// Frames dropped because they were too short or too long to be Ethernet frames.
    pub rx_dropped: u32,
}

impl Mac {
    /// Resets the receive FIFO, enables the receiver and transmitter, and unmasks only the
    /// receive interrupt.
    pub fn new(rx: &'static mut [u8; RX_FIFO_FRAME], tx: &'static mut [u8; FRAME]) -> Self {
        hw::enable_ethernet_clocks();
        hw::mac_write(MacReg::Im, 0);
        hw::mac_write(MacReg::Rctl, RCTL_RSTFIFO);
        hw::mac_write(MacReg::Rctl, RCTL_RXEN | RCTL_BADCRC);
        hw::mac_write(
            MacReg::Tctl,
            TCTL_TXEN | TCTL_PADEN | TCTL_CRC | TCTL_DUPLEX,
        );
        hw::mac_write(MacReg::RisIack, 0x7F);
        hw::mac_write(MacReg::Im, INT_RX);
        Self {
            rx,
            tx,
            rx_dropped: 0,
        }
    }

    /// The MAC address the board (or QEMU's `-nic ...,mac=`) programmed into MACIA0/1.
    pub fn address(&self) -> [u8; 6] {
        let [a, b, c, d] = hw::mac_read(MacReg::Ia0).to_le_bytes();
        let [e, f, _, _] = hw::mac_read(MacReg::Ia1).to_le_bytes();
        [a, b, c, d, e, f]
    }

    /// Whether a whole frame waits in the receive FIFO.
    pub fn rx_pending(&self) -> bool {
        hw::mac_read(MacReg::Np) != 0
    }

    /// Pops the next frame from the RX FIFO into `self.rx`; returns the Ethernet frame's range
    /// there, or `None` (frame dropped) if it is not a plausible Ethernet frame.
    fn pop_frame(&mut self) -> Option<core::ops::Range<usize>> {
        let first = hw::mac_read(MacReg::Data);
        let len = (first & 0xFFFF) as usize; // length field + frame + FCS
        if len > RX_FIFO_SIZE {
            // Not a length this FIFO can hold: the FIFO is out of step. Start it afresh.
            hw::mac_write(MacReg::Rctl, RCTL_RSTFIFO);
            hw::mac_write(MacReg::Rctl, RCTL_RXEN | RCTL_BADCRC);
            self.rx_dropped = self.rx_dropped.wrapping_add(1);
            return None;
        }
        let words = len.div_ceil(4);
        let fits = (2 + HEADER + 4..=RX_FIFO_FRAME).contains(&len);
        self.rx[..4].copy_from_slice(&first.to_le_bytes());
        for i in 1..words.max(1) {
            let word = hw::mac_read(MacReg::Data).to_le_bytes();
            if fits {
                let at = 4 * i;
                let n = (self.rx.len() - at).min(4);
                self.rx[at..at + n].copy_from_slice(&word[..n]);
            }
        }
        if fits {
            Some(2..len - 4)
        } else {
            self.rx_dropped = self.rx_dropped.wrapping_add(1);
            None
        }
    }
}

/// Sends `frame` (header and payload, no FCS) through the TX FIFO.
fn send(frame: &[u8]) {
    if !(HEADER..=FRAME).contains(&frame.len()) {
        return;
    }
    // The FIFO holds one frame: wait until the previous one has gone out.
    while hw::mac_read(MacReg::Tr) & 1 != 0 {}
    let payload_len = (frame.len() - HEADER) as u32;
    hw::mac_write(
        MacReg::Data,
        payload_len | u32::from(frame[0]) << 16 | u32::from(frame[1]) << 24,
    );
    for chunk in frame[2..].chunks(4) {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        hw::mac_write(MacReg::Data, u32::from_le_bytes(word));
    }
    hw::mac_write(MacReg::Tr, 1);
}

/// A received frame, already out of the FIFO.
pub struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// Room for one frame to send; it goes out when the closure returns.
pub struct TxToken<'a>(&'a mut [u8; FRAME]);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let frame = &mut self.0[..len.min(FRAME)];
        let r = f(frame);
        send(frame);
        r
    }
}

impl phy::Device for Mac {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        while self.rx_pending() {
            if let Some(range) = self.pop_frame() {
                return Some((RxToken(&self.rx[range]), TxToken(&mut *self.tx)));
            }
        }
        None
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut *self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME;
        caps
    }
}
