//! The Stellaris (LM3S6965) Ethernet MAC, at the register level: what a network stack's driver
//! trait needs underneath. Safe code: register access is in `hw.rs`.
//!
//! The MAC has no DMA. Frames pass through a receive and a transmit FIFO behind one data
//! register, a 32-bit word at a time, little-endian:
//! - a received frame starts with a 16-bit length that counts itself, the Ethernet frame and
//!   its 4-byte FCS, so the frame's first two bytes share a word with it; MACNP counts the
//!   whole frames waiting, and reading the last word of a frame pops it;
//! - a frame to send starts with a 16-bit length of the payload after the 14-byte header; the
//!   MAC pads short frames and appends the FCS, and writing NEWTX to MACTR sends it.
//!
//! Each received frame is copied out of the FIFO once, into the driver's buffer, and handed to
//! the stack as a slice. Transmitting never waits for an interrupt (QEMU sends a frame as NEWTX
//! is written; a chip takes at most a frame's time on the wire, which [`TxBuffer::send_with`]
//! spins out before the next frame).

use crate::hw::{self, MacReg};

/// The longest Ethernet frame without its FCS: a 14-byte header and a 1500-byte payload.
pub const FRAME: usize = 1514;
/// A received frame as the FIFO delivers it: its 2-byte length, the frame, the 4-byte FCS.
pub const FIFO_FRAME: usize = 2 + FRAME + 4;
/// The Ethernet header: destination, source, EtherType.
const HEADER: usize = 14;
/// The receive FIFO's size in bytes: no frame length above it is real.
const RX_FIFO_BYTES: usize = 2048;

/// MACRCTL: receiver enable.
const RCTL_RXEN: u32 = 1 << 0;
/// MACRCTL: drop frames with a bad FCS.
const RCTL_BADCRC: u32 = 1 << 3;
/// MACRCTL: empty the receive FIFO.
const RCTL_RSTFIFO: u32 = 1 << 4;
/// MACTCTL: transmitter enable.
const TCTL_TXEN: u32 = 1 << 0;
/// MACTCTL: pad frames shorter than 60 bytes.
const TCTL_PADEN: u32 = 1 << 1;
/// MACTCTL: append the FCS.
const TCTL_CRC: u32 = 1 << 2;
/// MACTCTL: full duplex.
const TCTL_DUPLEX: u32 = 1 << 3;
/// MACRIS/MACIM: a frame was received.
const INT_RX: u32 = 1 << 0;
/// MACRIS: every interrupt cause.
const INT_ALL: u32 = 0x7F;
/// MACTR: send the frame in the transmit FIFO; reads 1 while sending.
const TR_NEWTX: u32 = 1 << 0;

/// Acknowledges every interrupt cause of the MAC, so its line drops: what an image's Ethernet
/// interrupt handler does first (the driver then reads MACNP itself).
pub fn acknowledge_interrupts() {
    hw::mac_write(MacReg::RisIack, INT_ALL);
}

/// The MAC, with one frame buffer each way.
pub struct Mac {
    rx: &'static mut [u8; FIFO_FRAME],
    tx: &'static mut [u8; FRAME],
    /// Frames dropped because their length could not be an Ethernet frame's.
    pub rx_dropped: u32,
}

impl Mac {
    /// Clocks the MAC, empties its receive FIFO, enables the receiver (dropping bad-FCS
    /// frames) and the transmitter (padding, FCS, full duplex), and unmasks only the receive
    /// interrupt in the MAC. The NVIC line ([`Interrupt::Ethernet`]) is the image's to unmask.
    ///
    /// [`Interrupt::Ethernet`]: crate::Interrupt::Ethernet
    pub fn new(rx: &'static mut [u8; FIFO_FRAME], tx: &'static mut [u8; FRAME]) -> Self {
        hw::enable_ethernet_clocks();
        hw::mac_write(MacReg::Im, 0);
        hw::mac_write(MacReg::Rctl, RCTL_RSTFIFO);
        hw::mac_write(MacReg::Rctl, RCTL_RXEN | RCTL_BADCRC);
        hw::mac_write(
            MacReg::Tctl,
            TCTL_TXEN | TCTL_PADEN | TCTL_CRC | TCTL_DUPLEX,
        );
        acknowledge_interrupts();
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

    /// The next received Ethernet frame (without its FCS), out of the FIFO, with the transmit
    /// buffer for a reply; `None` once no frame waits. Frames whose length could not be an
    /// Ethernet frame's are dropped on the way (counted in [`rx_dropped`](Self::rx_dropped)).
    pub fn receive(&mut self) -> Option<(&mut [u8], TxBuffer<'_>)> {
        while self.rx_pending() {
            if let Some(len) = self.pop_frame() {
                return Some((&mut self.rx[2..2 + len], TxBuffer(&mut *self.tx)));
            }
        }
        None
    }

    /// The transmit buffer: always there, since sending only waits for the previous frame.
    pub fn transmit(&mut self) -> TxBuffer<'_> {
        TxBuffer(&mut *self.tx)
    }

    /// Pops the next frame out of the receive FIFO into `self.rx`. Returns the Ethernet
    /// frame's length (it starts at `self.rx[2]`), or `None` if the frame was dropped.
    fn pop_frame(&mut self) -> Option<usize> {
        let first = hw::mac_read(MacReg::Data);
        let fifo_len = (first & 0xFFFF) as usize;
        if fifo_len > RX_FIFO_BYTES {
            // No frame is that long: the FIFO is out of step. Empty it and start again.
            hw::mac_write(MacReg::Rctl, RCTL_RSTFIFO);
            hw::mac_write(MacReg::Rctl, RCTL_RXEN | RCTL_BADCRC);
            self.rx_dropped = self.rx_dropped.wrapping_add(1);
            return None;
        }
        // Every word of the frame is read, kept or not, so the FIFO stays in step.
        let keep = (2 + HEADER + 4..=FIFO_FRAME).contains(&fifo_len);
        self.rx[..4].copy_from_slice(&first.to_le_bytes());
        for at in (4..fifo_len).step_by(4) {
            let word = hw::mac_read(MacReg::Data).to_le_bytes();
            if keep {
                let end = (at + 4).min(FIFO_FRAME);
                self.rx[at..end].copy_from_slice(&word[..end - at]);
            }
        }
        if keep {
            Some(fifo_len - 2 - 4)
        } else {
            self.rx_dropped = self.rx_dropped.wrapping_add(1);
            None
        }
    }
}

/// Room for one frame to send: what a stack's transmit token holds.
pub struct TxBuffer<'a>(&'a mut [u8; FRAME]);

impl TxBuffer<'_> {
    /// Lends the first `len` bytes (at most [`FRAME`]) to `fill`, then sends them as a frame
    /// (header and payload, no FCS): a transmit token's `consume`.
    pub fn send_with<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let frame = &mut self.0[..len.min(FRAME)];
        let r = fill(frame);
        send(frame);
        r
    }
}

/// Sends `frame` (header and payload, no FCS) through the transmit FIFO. A frame shorter than
/// a header is not sent.
fn send(frame: &[u8]) {
    let (Some(&[d0, d1]), Some(rest)) = (frame.first_chunk::<2>(), frame.get(2..)) else {
        return;
    };
    if !(HEADER..=FRAME).contains(&frame.len()) {
        return;
    }
    // The FIFO holds one frame: let the previous one go out first.
    while hw::mac_read(MacReg::Tr) & TR_NEWTX != 0 {}
    let payload = (frame.len() - HEADER) as u32;
    hw::mac_write(
        MacReg::Data,
        payload | u32::from(d0) << 16 | u32::from(d1) << 24,
    );
    for chunk in rest.chunks(4) {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        hw::mac_write(MacReg::Data, u32::from_le_bytes(word));
    }
    hw::mac_write(MacReg::Tr, TR_NEWTX);
}
