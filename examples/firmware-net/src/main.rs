//! upcase on a microcontroller's network: the protocol core serves TCP and UDP over smoltcp
//! from an emulated LM3S6965 (Cortex-M3) and its Ethernet MAC, under QEMU.
//!
//! - IPv4 10.0.2.15/24, gateway 10.0.2.2: QEMU's user network (`-nic user,model=stellaris`);
//!   with the feature `dhcp`, the address and gateway of a DHCP lease instead.
//! - TCP port 65432: [`sizes::TCP_SOCKETS`] sockets, each served by a `Session` in `lines`
//!   framing, lines of up to [`sizes::MAX_LINE`] bytes, with the session's timers
//!   (`glue::serve_tcp`).
//! - UDP port 9876: one reply datagram per request through the core's `Responder`
//!   (`glue::serve_udp`), requests and replies of up to [`sizes::MAX_DATAGRAM`] bytes.
//! - Diagnostics (`diag.rs`): one event at start (`serving ...`) and one per finished
//!   connection, with the counters and the stack high-water mark.
//! - Between events the core sleeps until the next frame or the earliest timer of smoltcp and
//!   the sessions (`hw::Timer::sleep_until`).
//!
//! No heap: every buffer is a static in `hw.rs`, sized in `sizes.rs`.

#![no_std]
#![no_main]
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod diag;
mod glue;
#[allow(unsafe_code)]
mod hw;
mod mac;
mod net;
mod sizes;

use core::net::SocketAddr;

use cortex_m_rt::entry;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::EthernetAddress;
use upcase_core::{GuardConfig, LineFramer, LoopGuard, Responder, Session, Timeouts, Uppercase};

use diag::{Diag, Serving, Totals};

/// The lecture's TCP port.
const TCP_PORT: u16 = 65432;
/// The lecture's UDP port.
const UDP_PORT: u16 = 9876;
/// The session's timers, as the std server's: a peer that sends nothing for 60 s while no
/// reply waits is closed; one that takes no reply for 30 s loses them and is reset; after the
/// FIN, a peer has 30 s to take the rest and close its side before it is reset (smoltcp itself
/// would wait for ever, `glue::serve_tcp`).
#[cfg(not(feature = "_test-timers"))]
const TIMEOUTS: Timeouts = Timeouts::NONE
    .idle_ms(60_000)
    .write_stall_ms(30_000)
    .linger_ms(30_000);
/// The same, each 2 s, for the test of the timers (feature `_test-timers`).
#[cfg(feature = "_test-timers")]
const TIMEOUTS: Timeouts = Timeouts::NONE
    .idle_ms(2_000)
    .write_stall_ms(2_000)
    .linger_ms(2_000);
/// Keep-alive probes on an idle connection, and how long a silent peer may ignore them (and
/// any retransmission): smoltcp's own bound on a peer that is gone.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
const DEAD_PEER: Duration = Duration::from_secs(30);
/// Mixed with the MAC address into the loop guard's key. An integrator replaces it with a
/// secret of their own: a guard whose key is known lets an attacker pick peers that share its
/// records (`PROTOCOL.md` §3.1).
const IMAGE_SECRET: u128 = 0x6f1d_2c4b_9a83_5e07_d4c2_18b6_7f90_3a5d;

type LineSession = Session<&'static mut [u8], Uppercase>;

/// One TCP socket and the session that serves it.
struct Slot {
    handle: SocketHandle,
    session: LineSession,
    /// Whether the current session saw a connection (so its end is worth an event).
    connected: bool,
}

impl Slot {
    /// Replaces the session with a fresh one on the same line storage.
    fn renew(&mut self) {
        let old = core::mem::replace(&mut self.session, session(&mut []));
        self.session = session(old.into_parts().0);
        self.connected = false;
    }
}

fn session(storage: &'static mut [u8]) -> LineSession {
    Session::lines(LineFramer::new(storage), Uppercase::new()).with_timeouts(TIMEOUTS)
}

/// SplitMix64's finaliser: spreads every bit of `x` over the result.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A per-device 128-bit value from the MAC address and [`IMAGE_SECRET`]: the loop guard's key,
/// and (its low half) smoltcp's random seed. No entropy source on this board; the MAC address
/// at least differs between boards.
fn device_key(mac: [u8; 6]) -> u128 {
    let m = mac.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let lo = mix(m ^ IMAGE_SECRET as u64);
    let hi = mix(lo ^ (IMAGE_SECRET >> 64) as u64);
    (u128::from(hi) << 64) | u128::from(lo)
}

#[entry]
fn main() -> ! {
    lm3s6965::paint_stack();
    let (Some(buf), Some(core)) = (hw::take_buffers(), cortex_m::Peripherals::take()) else {
        diag::exit(false)
    };
    let mut diag = Diag::new();

    let mut mac = mac::Mac::new(buf.frame_rx, buf.frame_tx);
    let address = mac.address();
    let key = device_key(address);
    let mut config = Config::new(EthernetAddress(address).into());
    config.random_seed = key as u64;
    let mut iface = Interface::new(config, &mut mac, Instant::from_millis(0));

    let mut storage = [SocketStorage::EMPTY; sizes::TCP_SOCKETS + 2];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut listening = true;
    let mut slots = buf.tcp.each_mut().map(|b| {
        let hw::TcpBuffers { rx, tx, line } = b;
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(&mut rx[..]),
            tcp::SocketBuffer::new(&mut tx[..]),
        );
        // Each reply is queued whole by the session: send it at once.
        socket.set_nagle_enabled(false);
        socket.set_keep_alive(Some(KEEP_ALIVE));
        socket.set_timeout(Some(DEAD_PEER));
        // Listening before the ready line, so no client that saw it is refused.
        listening &= socket.listen(TCP_PORT).is_ok();
        Slot {
            handle: sockets.add(socket),
            session: session(&mut line[..]),
            connected: false,
        }
    });
    if !listening {
        diag::exit(false)
    }

    let mut udp_rx_meta = [udp::PacketMetadata::EMPTY; sizes::UDP_PACKETS];
    let mut udp_tx_meta = [udp::PacketMetadata::EMPTY; sizes::UDP_PACKETS];
    let mut udp_socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut udp_rx_meta[..], &mut buf.udp_rx[..]),
        udp::PacketBuffer::new(&mut udp_tx_meta[..], &mut buf.udp_tx[..]),
    );
    if udp_socket.bind(UDP_PORT).is_err() {
        diag::exit(false)
    }
    let udp_handle = sockets.add(udp_socket);
    let guard = LoopGuard::<{ sizes::GUARD_PEERS }>::new(GuardConfig::DEFAULT, key);
    let mut responder =
        Responder::new(Uppercase::new(), guard).with_max_request(sizes::MAX_DATAGRAM);
    let mut totals = Totals::default();

    let mut net = net::Net::new(&mut iface, &mut sockets);
    let mut timer = hw::start(core.SYST);

    loop {
        let now = timer.now_ms();
        let mut busy = iface.poll(Instant::from_millis(now as i64), &mut mac, &mut sockets)
            != smoltcp::iface::PollResult::None;
        if let Some(via) = net.update(&mut iface, &mut sockets) {
            match via {
                Some(via) => diag.serving(&Serving {
                    address: net.address,
                    via,
                    tcp_port: TCP_PORT,
                    sockets: sizes::TCP_SOCKETS,
                    max_line: sizes::MAX_LINE,
                    udp_port: UDP_PORT,
                    max_datagram: sizes::MAX_DATAGRAM,
                    stack_frame: lm3s6965::stack_depth(),
                }),
                None => diag.deconfigured(),
            }
        }

        let mut wake = None::<u64>;
        for slot in &mut slots {
            let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
            if !socket.is_open() {
                // The last connection is over: a fresh session, and listen again.
                if slot.connected {
                    let c = slot.session.counters();
                    totals.connections += 1;
                    totals.lines += u64::from(c.lines);
                    totals.overlong += u64::from(c.overlong);
                    totals.clock_steps_back = timer.steps_back();
                    let reason = slot.session.close_reason();
                    diag.closed(now, reason, &c, &totals, lm3s6965::stack_high_water());
                }
                slot.renew();
                busy |= socket.listen(TCP_PORT).is_ok();
            }
            slot.connected |= socket.is_active();
            busy |= glue::serve_tcp(socket, &mut slot.session, now);
            if socket.is_active() {
                wake = earliest(wake, slot.session.poll_timeout());
            }
        }

        let udp_socket = sockets.get_mut::<udp::Socket>(udp_handle);
        let local = SocketAddr::new(net.address.into(), UDP_PORT);
        let handled = glue::serve_udp(
            udp_socket,
            &mut responder,
            local,
            &mut buf.udp_reply[..],
            now,
            |why| totals.dropped[why.index()] += 1,
        );
        totals.datagrams += handled as u64;
        busy |= handled > 0;

        if !busy {
            // Nothing moved: sleep until a frame arrives or the first timer is due.
            let stack = iface
                .poll_at(Instant::from_millis(now as i64), &sockets)
                .map(|at| at.total_millis().max(0) as u64);
            timer.sleep_until(earliest(wake, stack), || mac.rx_pending());
        }
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    diag::exit(false)
}
