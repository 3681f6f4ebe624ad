//! upcase on a microcontroller's network: the protocol core serves TCP and UDP over smoltcp
//! from an emulated LM3S6965 (Cortex-M3) and its Ethernet MAC, under QEMU.
//!
//! - IPv4 10.0.2.15/24, gateway 10.0.2.2: QEMU's user network (`-nic user,model=stellaris`).
//! - TCP port 65432: [`sizes::TCP_SOCKETS`] sockets, each served by a `Session` in `lines`
//!   framing, lines of up to [`sizes::MAX_LINE`] bytes (`glue::serve_tcp`).
//! - UDP port 9876: one reply datagram per request, through the loop guard
//!   (`glue::serve_udp`), requests and replies of up to [`sizes::MAX_DATAGRAM`] bytes.
//! - Diagnostics go over semihosting: one line at start (`serving ...`) and one per finished
//!   connection, with the counters and the stack high-water mark.
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
mod sizes;

use core::net::{Ipv4Addr, SocketAddr};

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpCidr};
use upcase_core::{GuardConfig, LineFramer, LoopGuard, Refusal, Session, Uppercase};

use diag::Diag;
use glue::UdpDrop;

/// The guest's address on QEMU's user network.
const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// QEMU's user-network gateway (and the source of every forwarded connection).
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The lecture's TCP port.
const TCP_PORT: u16 = 65432;
/// The lecture's UDP port.
const UDP_PORT: u16 = 9876;
/// A connection with no byte moved for this long is reset, so idle clients cannot hold every
/// socket for ever.
const IDLE_TIMEOUT_MS: u64 = 60_000;
/// Keep-alive probes on an idle connection, and how long a silent peer may ignore them.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
const DEAD_PEER: Duration = Duration::from_secs(30);

type LineSession = Session<&'static mut [u8], Uppercase>;

/// One TCP socket and the session that serves it.
struct Slot {
    handle: SocketHandle,
    session: LineSession,
    /// When a byte last moved, in milliseconds.
    last_active: u64,
    /// Whether the current session saw a connection (so its end is worth a line).
    connected: bool,
    /// Whether the socket could listen at start.
    listening: bool,
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
    Session::lines(LineFramer::new(storage), Uppercase::new())
}

/// The SysTick's wrapping milliseconds, widened to 64 bits.
struct Clock {
    last: u32,
    ms: u64,
}

impl Clock {
    fn now(&mut self) -> u64 {
        let t = hw::ticks_ms();
        self.ms += u64::from(t.wrapping_sub(self.last));
        self.last = t;
        self.ms
    }
}

/// Totals since boot, for the diagnostics.
#[derive(Default)]
struct Totals {
    connections: u64,
    lines: u64,
    overlong: u64,
    datagrams: u64,
    /// Datagrams left without a reply, by reason (`UdpDrop` and the guard's `Refusal`).
    port_zero: u64,
    low_port: u64,
    own_address: u64,
    echo: u64,
    too_large: u64,
    no_room: u64,
}

#[entry]
fn main() -> ! {
    hw::paint_stack();
    let (Some(buf), Some(core)) = (hw::take_buffers(), cortex_m::Peripherals::take()) else {
        exit(false)
    };
    let mut diag = Diag::new();
    let mut clock = Clock { last: 0, ms: 0 };

    let mut mac = mac::Mac::new(buf.frame_rx, buf.frame_tx);
    let address = mac.address();
    let mut config = Config::new(EthernetAddress(address).into());
    // No entropy source on this board: the MAC address at least differs between boards.
    config.random_seed = address.iter().fold(0x5DEE_CE66_D1CE_4E5B, |h: u64, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    let mut iface = Interface::new(config, &mut mac, Instant::from_millis(0));
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(ADDRESS.into(), 24));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(GATEWAY);

    let mut storage = [SocketStorage::EMPTY; sizes::TCP_SOCKETS + 1];
    let mut sockets = SocketSet::new(&mut storage[..]);
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
        let listening = socket.listen(TCP_PORT).is_ok();
        Slot {
            handle: sockets.add(socket),
            session: session(&mut line[..]),
            last_active: 0,
            connected: false,
            listening,
        }
    });
    if slots.iter().any(|slot| !slot.listening) {
        exit(false)
    }

    let mut udp_rx_meta = [udp::PacketMetadata::EMPTY; sizes::UDP_PACKETS];
    let mut udp_tx_meta = [udp::PacketMetadata::EMPTY; sizes::UDP_PACKETS];
    let mut udp_socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut udp_rx_meta[..], &mut buf.udp_rx[..]),
        udp::PacketBuffer::new(&mut udp_tx_meta[..], &mut buf.udp_tx[..]),
    );
    if udp_socket.bind(UDP_PORT).is_err() {
        exit(false)
    }
    let udp_handle = sockets.add(udp_socket);
    let udp_local = SocketAddr::new(ADDRESS.into(), UDP_PORT);
    let mut guard = LoopGuard::<{ sizes::GUARD_PEERS }>::new(GuardConfig::DEFAULT);
    let mut udp_transform = Uppercase::new();
    let mut totals = Totals::default();

    hw::start_interrupts(core.SYST);
    diag.text("upcase-firmware-net: serving tcp 10.0.2.15:")
        .num(TCP_PORT.into())
        .field("sockets", sizes::TCP_SOCKETS as u64)
        .field("max_line", sizes::MAX_LINE as u64)
        .text(" udp 10.0.2.15:")
        .num(UDP_PORT.into())
        .field("max_datagram", sizes::MAX_DATAGRAM as u64)
        .field("main_stack_frame", hw::stack_depth() as u64)
        .end();

    loop {
        let now = clock.now();
        let mut busy = iface.poll(Instant::from_millis(now as i64), &mut mac, &mut sockets)
            != smoltcp::iface::PollResult::None;

        for slot in &mut slots {
            let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
            if !socket.is_open() {
                // The last connection is over: a fresh session, and listen again.
                if slot.connected {
                    report(&mut diag, &mut totals, slot.session.counters(), now);
                }
                slot.renew();
                slot.last_active = now;
                busy |= socket.listen(TCP_PORT).is_ok();
            }
            if socket.is_active() {
                slot.connected = true;
            } else {
                // The idle clock runs only inside a connection.
                slot.last_active = now;
            }
            if glue::serve_tcp(socket, &mut slot.session) {
                slot.last_active = now;
                busy = true;
            } else if socket.is_active() && now - slot.last_active > IDLE_TIMEOUT_MS {
                socket.abort();
                busy = true;
            }
        }

        let udp_socket = sockets.get_mut::<udp::Socket>(udp_handle);
        let handled = glue::serve_udp(
            udp_socket,
            &mut udp_transform,
            &mut guard,
            udp_local,
            &mut buf.udp_reply[..],
            now,
            |why| {
                *match why {
                    UdpDrop::Refused(Refusal::SourcePortZero) => &mut totals.port_zero,
                    UdpDrop::Refused(Refusal::LowSourcePort) => &mut totals.low_port,
                    UdpDrop::Refused(Refusal::OwnAddress) => &mut totals.own_address,
                    UdpDrop::Refused(Refusal::Echo) => &mut totals.echo,
                    UdpDrop::TooLarge => &mut totals.too_large,
                    UdpDrop::NoRoom => &mut totals.no_room,
                } += 1;
            },
        );
        totals.datagrams += handled as u64;
        busy |= handled > 0;

        if !busy {
            // Nothing moved: sleep until a frame arrives or the next millisecond tick.
            hw::sleep_unless(|| mac.rx_pending());
        }
    }
}

/// One line per finished connection, with the totals and the stack high-water mark.
fn report(diag: &mut Diag, totals: &mut Totals, c: upcase_core::Counters, now: u64) {
    totals.connections += 1;
    totals.lines += u64::from(c.lines);
    totals.overlong += u64::from(c.overlong);
    diag.text("closed:")
        .field("uptime_ms", now)
        .field("lines", c.lines.into())
        .field("overlong", c.overlong.into())
        .field("bytes_in", c.bytes_in.into())
        .field("bytes_out", c.bytes_out.into())
        .text(" totals:")
        .field("connections", totals.connections)
        .field("lines", totals.lines)
        .field("overlong", totals.overlong)
        .field("datagrams", totals.datagrams)
        .text(" dropped:")
        .field("port_zero", totals.port_zero)
        .field("low_port", totals.low_port)
        .field("own_address", totals.own_address)
        .field("echo", totals.echo)
        .field("too_large", totals.too_large)
        .field("no_room", totals.no_room)
        .field("stack_high_water", hw::stack_high_water() as u64)
        .end();
}

/// Ends the QEMU run with status 0 (`ok`) or 1.
fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a semihosting host (real hardware): stop here.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(false)
}
