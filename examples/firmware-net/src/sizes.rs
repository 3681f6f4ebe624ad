//! Every buffer size of the image, in one place. The buffers themselves are statics in
//! `hw.rs`; nothing is allocated at run time.

/// TCP sockets listening on [`crate::TCP_PORT`]: the clients served at once. A socket whose
/// client has just closed serves again as soon as its connection is fully closed.
pub const TCP_SOCKETS: usize = 4;
/// Each TCP socket's receive ring: the window the server advertises.
pub const TCP_RX: usize = 2048;
/// Each TCP socket's transmit ring: replies are written into it in place.
pub const TCP_TX: usize = 2048;
/// The longest line, in bytes, `\n` excluded (`PROTOCOL.md` §2.2).
pub const MAX_LINE: usize = 256;
/// A session's line storage: the longest line plus one byte.
pub const LINE_STORAGE: usize = MAX_LINE + 1;

/// The largest UDP payload in one unfragmented IPv4 packet on a 1500-byte MTU
/// (1500 - 20 - 8). Longer requests are dropped by the stack (no IP reassembly), and a reply
/// longer than this is dropped too, never truncated (`PROTOCOL.md` §3).
pub const MAX_DATAGRAM: usize = 1472;
/// The UDP socket's receive payload ring.
pub const UDP_RX: usize = 4096;
/// The UDP socket's transmit payload ring: at least two full replies, so one always fits.
pub const UDP_TX: usize = 4096;
/// Datagrams each UDP ring can hold, whatever their size.
pub const UDP_PACKETS: usize = 8;
/// Peers the UDP loop guard remembers (about 56 bytes each).
pub const GUARD_PEERS: usize = 16;

/// The longest Ethernet frame sent or received, without its FCS: 14 bytes of header and a
/// 1500-byte payload.
pub const FRAME: usize = 1514;
/// A received frame as the RX FIFO delivers it: a 2-byte length, the frame, the 4-byte FCS.
pub const RX_FIFO_FRAME: usize = 2 + FRAME + 4;
