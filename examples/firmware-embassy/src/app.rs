//! The application, the same on every board: a pool of [`POOL`] TCP tasks and one UDP task on
//! an embassy-net [`Stack`], every size, every timeout, and every call into `upcase-core`. A
//! board module (`qemu.rs`, `nucleo.rs`) brings up its network driver and its stack, runs
//! the stack's runner in a task of its own, and calls [`spawn`].

use core::net::{Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, Timer, with_deadline, with_timeout};
use upcase_core::{
    CloseReason, Closing, Counters, DropReason, GuardConfig, LineFramer, LoopGuard, Responder,
    Session, Timeouts, Uppercase, asynch,
};

use crate::diag::{Diag, Line as _};

/// The lecture's TCP port.
pub const TCP_PORT: u16 = 65432;
/// The lecture's UDP port.
pub const UDP_PORT: u16 = 9876;

/// TCP tasks, so clients served at once. A task whose client has closed listens again once
/// the connection is over; meanwhile a new client finds one socket fewer listening.
pub const POOL: usize = 4;
/// Each TCP socket's receive ring: the window the image advertises.
pub const TCP_RX: usize = 2048;
/// Each TCP socket's transmit ring.
pub const TCP_TX: usize = 2048;
/// The longest line, in bytes, `\n` excluded (`PROTOCOL.md` §2.2).
pub const MAX_LINE: usize = 256;
/// A session's line storage: the longest line plus one byte.
const LINE_STORAGE: usize = MAX_LINE + 1;
/// Replies are batched here before each write into the socket.
const STAGING: usize = 256;

/// The largest UDP payload in one unfragmented IPv4 packet on a 1500-byte MTU
/// (1500 - 20 - 8). A longer request never arrives whole (embassy-net reassembles no
/// fragments); a longer reply is dropped, never truncated (`PROTOCOL.md` §3).
pub const MAX_DATAGRAM: usize = 1472;
/// The UDP socket's receive payload ring.
const UDP_RX: usize = 4096;
/// The UDP socket's transmit payload ring: at least two whole replies.
const UDP_TX: usize = 4096;
/// Datagrams each UDP ring holds, whatever their size.
const UDP_PACKETS: usize = 8;
/// Peers the UDP loop guard remembers (about 56 bytes each).
const GUARD_PEERS: usize = 16;

/// The sockets the stack holds: the TCP pool, the UDP socket and, with DHCP, its socket.
pub const STACK_SOCKETS: usize = POOL + 1 + cfg!(feature = "dhcp") as usize;

/// The core's timers for each connection (`Session::with_timeouts`), the std server's
/// defaults (`SECURITY.md`): a connection that sends nothing for 60 s is closed gracefully, its
/// partial line answered with `error: idle timeout`; one whose replies make no progress for
/// 30 s (a client that writes and never reads) is given up; after the FIN, what the client
/// still sends is read and dropped for up to 5 s, so that a reset does not destroy its last
/// replies (`PROTOCOL.md` §2.6). The test-only feature `_short-timeouts` makes the first two
/// 2 s, so the QEMU test sees them fire.
pub const TIMEOUTS: Timeouts = Timeouts::NONE
    .idle_ms(if SHORT { 2_000 } else { 60_000 })
    .write_stall_ms(if SHORT { 2_000 } else { 30_000 })
    .linger_ms(5_000);
/// Whether the test-only feature `_short-timeouts` is on.
const SHORT: bool = cfg!(feature = "_short-timeouts");
/// How long flushing our FIN may wait for the peer's acknowledgement: the write-stall timeout.
const FIN_WAIT: Duration = Duration::from_secs(if SHORT { 2 } else { 30 });
/// Keep-alive probes on a quiet connection, and how long a peer may leave data or probes
/// unacknowledged before the stack drops it.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
const DEAD_PEER: Duration = Duration::from_secs(30);

/// Spawns the TCP pool and the UDP task on `stack`. The UDP task prints the ready line
/// (`...: serving tcp ADDR ...`) once the stack has its address and every TCP socket listens.
/// `guard_key` keys the UDP loop guard's peer table: it must be unpredictable to a peer (the
/// board's RNG), or a peer could pick addresses that share a record (`PROTOCOL.md` §3.1).
///
/// # Errors
///
/// The executor's [`embassy_executor::SpawnError`] if a task pool is already taken (a second
/// call).
pub fn spawn(
    spawner: Spawner,
    stack: Stack<'static>,
    guard_key: u128,
) -> Result<(), embassy_executor::SpawnError> {
    for _ in 0..POOL {
        spawner.spawn(tcp_task(stack)?);
    }
    spawner.spawn(udp_task(stack, guard_key)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Totals since boot, for the diagnostics. Every task adds to them; one core, so relaxed
// atomics suffice.

/// The counters the `closed:` lines report.
struct Totals {
    connections: AtomicU32,
    lines: AtomicU32,
    overlong: AtomicU32,
    timeouts: AtomicU32,
    datagrams: AtomicU32,
    /// Datagrams left without a reply, one counter per [`DropReason`], at its `index()`.
    dropped: [AtomicU32; DropReason::COUNT],
}

static TOTALS: Totals = Totals {
    connections: AtomicU32::new(0),
    lines: AtomicU32::new(0),
    overlong: AtomicU32::new(0),
    timeouts: AtomicU32::new(0),
    datagrams: AtomicU32::new(0),
    dropped: [const { AtomicU32::new(0) }; DropReason::COUNT],
};

fn add(counter: &AtomicU32, n: u32) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU32) -> u64 {
    counter.load(Ordering::Relaxed).into()
}

// ---------------------------------------------------------------------------------------------
// TCP.

/// The session's clock: embassy-time's, in milliseconds.
struct EmbassyClock;

impl asynch::Clock for EmbassyClock {
    fn now_ms(&self) -> u64 {
        Instant::now().as_millis()
    }

    async fn sleep_until(&self, at_ms: u64) {
        Timer::at(Instant::from_millis(at_ms)).await
    }
}

/// TCP tasks that listen on [`TCP_PORT`]; the last of the pool to listen signals [`LISTENING`].
static LISTENERS: AtomicUsize = AtomicUsize::new(0);
/// Raised once every task of the pool listens, for the ready line.
static LISTENING: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// One task of the pool: accept a client on [`TCP_PORT`], serve it until the session closes,
/// close as it asks, and accept the next. Its buffers and state (about 5.1 KB) live in the
/// task's static storage, so the pool costs no stack and no heap.
#[embassy_executor::task(pool_size = crate::app::POOL)]
async fn tcp_task(stack: Stack<'static>) -> ! {
    let (mut rx, mut tx) = ([0u8; TCP_RX], [0u8; TCP_TX]);
    let mut line = [0u8; LINE_STORAGE];
    let mut staging = [0u8; STAGING];
    let mut first = true;
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
        socket.set_nagle_enabled(false); // each batch of replies goes out at once
        socket.set_keep_alive(Some(KEEP_ALIVE));
        socket.set_timeout(Some(DEAD_PEER));
        if first {
            first = false;
            // `accept` listens in its first poll, before this task yields: by the time the
            // ready line's task runs, this socket listens.
            if LISTENERS.fetch_add(1, Ordering::Relaxed) + 1 == POOL {
                LISTENING.signal(());
            }
        }
        if socket.accept(TCP_PORT).await.is_err() {
            // A fresh socket cannot be in the wrong state; back off rather than spin if it is.
            Timer::after_millis(100).await;
            continue;
        }
        let mut session = Session::lines(LineFramer::new(&mut line[..]), Uppercase::new())
            .with_timeouts(TIMEOUTS);
        let end = serve_connection(&mut socket, &mut session, &mut staging).await;
        report(session.counters(), end);
    }
}

/// How a connection ended, for the diagnostics: the session's [`CloseReason`], or `None` when
/// the transport failed first (a reset by the peer, or the stack giving the peer up).
type End = Option<CloseReason>;

/// Serves one accepted connection to its end, and leaves the socket closed.
///
/// `asynch::serve_timed` runs the session with its timers until it asks to close; then this
/// does what [`Session::poll_close`] asks, until it says `Close`:
/// - `HalfClose` (every reply produced): `close()`, so the FIN follows the last reply, and
///   `flush()` until all is acknowledged (at most [`FIN_WAIT`]);
/// - `Linger`: read and drop what the peer still sends, until its FIN or the linger timer;
/// - `DropAndHalfClose` (the peer reads nothing): reset, as embassy-net can neither drop queued
///   replies nor send a FIN before them.
///
/// A connection whose peer has not closed by then is reset, so the socket can be dropped.
async fn serve_connection(
    socket: &mut TcpSocket<'_>,
    session: &mut Session<&mut [u8], Uppercase>,
    staging: &mut [u8],
) -> End {
    let clock = EmbassyClock;
    if asynch::serve_timed(socket, session, staging, &clock)
        .await
        .is_err()
    {
        reset(socket).await;
        return None;
    }
    loop {
        session.handle_time(Instant::now().as_millis());
        match session.poll_close() {
            Some(Closing::HalfClose) => {
                socket.close();
                if with_timeout(FIN_WAIT, socket.flush()).await.is_err() {
                    break; // the FIN is not acknowledged: reset below
                }
                session.handle_half_closed();
            }
            Some(Closing::Linger) => {
                let until = session
                    .poll_timeout()
                    .map_or(Instant::MAX, Instant::from_millis);
                match with_deadline(until, socket.read(session.recv_buffer())).await {
                    Ok(Ok(0)) => session.handle_eof(),
                    Ok(Ok(n)) => session.handle_recv(n),
                    Ok(Err(_)) => break,
                    Err(_) => {} // the linger timer: `handle_time` closes
                }
            }
            Some(Closing::DropAndHalfClose) | Some(Closing::Close) | None => break,
        }
    }
    let closed = matches!(
        socket.state(),
        embassy_net::tcp::State::Closed | embassy_net::tcp::State::TimeWait
    );
    if !closed {
        reset(socket).await;
    }
    session.close_reason()
}

/// Resets the connection and gives the reset a moment to leave before the socket is dropped.
async fn reset(socket: &mut TcpSocket<'_>) {
    socket.abort();
    let _ = with_timeout(Duration::from_secs(1), socket.flush()).await;
}

/// Adds a finished connection to the totals and logs one `closed:` line: its counters, the
/// totals (UDP drops included) and the stack's high-water mark.
fn report(c: Counters, end: End) {
    let t = &TOTALS;
    add(&t.connections, 1);
    add(&t.lines, c.lines);
    add(&t.overlong, c.overlong);
    if matches!(
        end,
        Some(CloseReason::IdleTimeout | CloseReason::WriteStall)
    ) {
        add(&t.timeouts, 1);
    }
    let mut line = Diag::new();
    line.text("closed: end=").text(match end {
        Some(CloseReason::Eof) => "eof",
        Some(CloseReason::IdleTimeout) => "idle",
        Some(CloseReason::WriteStall) => "write_stall",
        Some(CloseReason::Shutdown) => "shutdown",
        Some(CloseReason::Refused) => "refused",
        Some(CloseReason::Deadline) => "deadline",
        None => "reset",
    });
    line.field("uptime_ms", Instant::now().as_millis())
        .field("lines", c.lines.into())
        .field("overlong", c.overlong.into())
        .field("bytes_in", c.bytes_in.into())
        .field("bytes_out", c.bytes_out.into())
        .text(" totals:")
        .field("connections", get(&t.connections))
        .field("lines", get(&t.lines))
        .field("overlong", get(&t.overlong))
        .field("timeouts", get(&t.timeouts))
        .field("datagrams", get(&t.datagrams))
        .text(" dropped:");
    for reason in DropReason::ALL {
        line.field(reason.name(), get(&t.dropped[reason.index()]));
    }
    line.field("stack_high_water", lm3s6965::stack_high_water() as u64)
        .end();
}

// ---------------------------------------------------------------------------------------------
// UDP.

/// The UDP task: binds [`UDP_PORT`], prints the ready line, then answers each datagram with
/// one reply datagram. The turn is the core's [`Responder::respond`] (size, source, the whole
/// reply, the loop guard keyed by `guard_key`); the task only receives and sends. Its rings,
/// reply buffer and guard (about 10 KB) live in the task's static storage.
#[embassy_executor::task]
async fn udp_task(stack: Stack<'static>, guard_key: u128) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; UDP_PACKETS];
    let mut tx_meta = [PacketMetadata::EMPTY; UDP_PACKETS];
    let (mut rx, mut tx) = ([0u8; UDP_RX], [0u8; UDP_TX]);
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    if socket.bind(UDP_PORT).is_err() {
        Diag::new().text("udp: cannot bind port 9876").end();
        core::future::pending::<()>().await;
    }
    let address = announce(stack).await;
    let guard = LoopGuard::<GUARD_PEERS>::new(GuardConfig::DEFAULT, guard_key);
    let mut udp = Responder::new(Uppercase::new(), guard).with_max_request(MAX_DATAGRAM);
    let mut reply = [0u8; MAX_DATAGRAM];
    loop {
        let local = SocketAddr::new(
            stack
                .config_v4()
                .map_or(address, |c| c.address.address())
                .into(),
            UDP_PORT,
        );
        let now_ms = Instant::now().as_millis();
        let (turn, meta) = socket
            .recv_from_with(|request, meta| {
                let peer = SocketAddr::from(meta.endpoint);
                (udp.respond(peer, local, request, now_ms, &mut reply), meta)
            })
            .await;
        add(&TOTALS.datagrams, 1);
        let sent = match turn {
            Ok(n) => socket
                .send_to(reply.get(..n).unwrap_or_default(), meta)
                .await
                .map_err(|_| DropReason::NotSent),
            Err(why) => Err(why),
        };
        if let Err(why) = sent {
            add(&TOTALS.dropped[why.index()], 1);
        }
    }
}

/// Waits until the stack has its IPv4 address (at once when static, after the lease with
/// DHCP) and every TCP task listens, then prints the ready line. Returns the address.
async fn announce(stack: Stack<'static>) -> Ipv4Addr {
    stack.wait_config_up().await;
    LISTENING.wait().await;
    let config = stack.config_v4();
    let address = config
        .as_ref()
        .map_or(Ipv4Addr::UNSPECIFIED, |c| c.address.address());
    let prefix = config.as_ref().map_or(0, |c| c.address.prefix_len());
    Diag::new()
        .text(crate::NAME)
        .text(": serving tcp ")
        .ipv4(address)
        .text(":")
        .num(TCP_PORT.into())
        .field("sockets", POOL as u64)
        .field("max_line", MAX_LINE as u64)
        .text(" udp ")
        .ipv4(address)
        .text(":")
        .num(UDP_PORT.into())
        .field("max_datagram", MAX_DATAGRAM as u64)
        .text(" address=")
        .ipv4(address)
        .text("/")
        .num(prefix.into())
        .text(if cfg!(feature = "dhcp") {
            " by=dhcp"
        } else {
            " by=static"
        })
        .end();
    address
}
