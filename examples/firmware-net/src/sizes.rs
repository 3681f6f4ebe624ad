//! Every buffer size of the image, in one place, and the rule each follows. The buffers
//! themselves are statics in `hw.rs` (`.bss`); nothing is allocated at run time.
//!
//! # Sizing for a line limit and a number of clients
//!
//! Static RAM for `C` TCP clients at once with lines of up to `L` bytes, and UDP datagrams of
//! up to `D` bytes (each rule is on its constant below; the figures are with this image's
//! defaults, `C` = 4, `L` = 256, `D` = 1472):
//!
//! | what | bytes | default |
//! | --- | --- | --- |
//! | per TCP client: line storage | `L + 1` | 257 |
//! | per TCP client: receive ring | at least `L + 1`; 1 KiB | 1024 |
//! | per TCP client: transmit ring | `MSS + L + 1` | 1717 |
//! | UDP receive ring | `2 × D` | 2944 |
//! | UDP transmit ring | `2 × D` | 2944 |
//! | UDP reply buffer | `D` | 1472 |
//! | Ethernet frames, one each way | `1520 + 1514` | 3034 |
//!
//! So `C × (2 (L + 1) + 1024 + MSS)` + `5 D` + 3034 bytes of `.bss` (22,386 B here; the image
//! has 22,404 B with its few other statics), plus the stack: `main`'s frame holds
//! smoltcp's socket set and one session per client (about 4.9 KB for 4 clients; see the
//! image's `main_stack_frame` line) and the deepest call adds about 360 B. Going from 4 to 8
//! clients adds about 12 KB of `.bss`.

/// TCP sockets listening on [`crate::TCP_PORT`]: the clients served at once. A socket whose
/// client has just closed serves again as soon as its connection is fully closed.
pub const TCP_SOCKETS: usize = 4;
/// The longest line, in bytes, `\n` excluded (`PROTOCOL.md` §2.2).
pub const MAX_LINE: usize = 256;
/// A session's line storage: the longest line plus one byte (`PROTOCOL.md` §2.2), exactly.
pub const LINE_STORAGE: usize = MAX_LINE + 1;
/// The TCP maximum segment size smoltcp announces on a 1500-byte MTU (1500 - 20 - 20).
pub const MSS: usize = 1460;
/// Each TCP socket's receive ring: the window the server advertises. The session reads into
/// its line storage in pieces of any size, so any ring of at least a line works; the size is
/// throughput only. Measured through QEMU (the 20,000-line pipelined burst of the test):
/// 512 B, 1 KiB and 2 KiB all give 45,000 to 70,000 lines/s; 1 KiB it is.
pub const TCP_RX: usize = 1024;
/// Each TCP socket's transmit ring: replies are written into it in place. At least one full
/// segment plus a reply: with 1 KiB, the burst measured as low as 7,300 lines/s (one segment
/// in flight waits on the peer's delayed ACK), with 1536 B and more, 45,000 to 70,000.
pub const TCP_TX: usize = MSS + LINE_STORAGE;

/// The largest UDP payload in one unfragmented IPv4 packet on a 1500-byte MTU
/// (1500 - 20 - 8). Longer requests are dropped by the stack (no IP reassembly), and a reply
/// longer than this is dropped too, never truncated (`PROTOCOL.md` §3).
pub const MAX_DATAGRAM: usize = 1472;
/// The UDP socket's receive payload ring: a request of the largest size always fits once the
/// ring is empty (smoltcp then starts it at the front), and a second one waits while the first
/// is answered.
pub const UDP_RX: usize = 2 * MAX_DATAGRAM;
/// The UDP socket's transmit payload ring: `glue::serve_udp` takes a request only while two
/// whole replies fit, which is what guarantees room for one wherever the ring has wrapped.
pub const UDP_TX: usize = 2 * MAX_DATAGRAM;
/// Datagrams each UDP ring can hold, whatever their size.
pub const UDP_PACKETS: usize = 8;
/// Peers the UDP loop guard remembers (24 bytes each, in `main`'s frame).
pub const GUARD_PEERS: usize = 16;

/// The longest Ethernet frame sent or received, without its FCS: 14 bytes of header and a
/// 1500-byte payload (the MAC driver's, `lm3s6965::FRAME`).
pub const FRAME: usize = lm3s6965::FRAME;
/// A received frame as the RX FIFO delivers it: a 2-byte length, the frame, the 4-byte FCS
/// (`lm3s6965::FIFO_FRAME`).
pub const RX_FIFO_FRAME: usize = lm3s6965::FIFO_FRAME;
