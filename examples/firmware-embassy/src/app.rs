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
use embassy_time::{Duration, Instant, Timer, with_timeout};
use upcase_core::{
    Counters, GuardConfig, LineFramer, LoopGuard, Refusal, ServeError, Session, Transform,
    Uppercase, asynch, transform_datagram,
};

use crate::diag::Diag;

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

/// A connection that sends nothing for this long is closed gracefully (`SECURITY.md`: the std
/// server's `--idle-timeout`).
///
/// Until the core's `Session` owns its timers (the lead is adding them), these timeouts are
/// `embassy_time::with_timeout` around each read and write of the serve, in [`Timed`]: the
/// same values, the same effect. Port: drop `Timed` and drive the session's own deadlines.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(if SHORT { 2 } else { 60 });
/// A write that makes no progress for this long gives the connection up (`SECURITY.md`: the
/// std server's `--write-timeout`): a client that writes and never reads cannot hold a task.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(if SHORT { 2 } else { 30 });
/// The test-only feature `_short-timeouts`: 2 s timeouts, so the QEMU test sees them fire.
const SHORT: bool = cfg!(feature = "_short-timeouts");
/// After the FIN, what the client still sends is read and dropped for at most this long, so
/// that its last replies are not destroyed by a reset (`PROTOCOL.md` §2.6).
const LINGER: Duration = Duration::from_secs(5);
/// Keep-alive probes on a quiet connection, and how long a peer may leave data or probes
/// unacknowledged before the stack drops it.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
const DEAD_PEER: Duration = Duration::from_secs(30);

/// Spawns the TCP pool and the UDP task on `stack`. The UDP task prints the ready line
/// (`...: serving tcp ADDR ...`) once the stack has its address and every TCP socket listens.
///
/// # Errors
///
/// The executor's [`embassy_executor::SpawnError`] if a task pool is already taken (a second
/// call).
pub fn spawn(spawner: Spawner, stack: Stack<'static>) -> Result<(), embassy_executor::SpawnError> {
    for _ in 0..POOL {
        spawner.spawn(tcp_task(stack)?);
    }
    spawner.spawn(udp_task(stack)?);
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
    /// Datagrams left without a reply, by reason ([`UdpDrop`]).
    port_zero: AtomicU32,
    low_port: AtomicU32,
    own_address: AtomicU32,
    echo: AtomicU32,
    too_large: AtomicU32,
    no_room: AtomicU32,
}

static TOTALS: Totals = Totals {
    connections: AtomicU32::new(0),
    lines: AtomicU32::new(0),
    overlong: AtomicU32::new(0),
    timeouts: AtomicU32::new(0),
    datagrams: AtomicU32::new(0),
    port_zero: AtomicU32::new(0),
    low_port: AtomicU32::new(0),
    own_address: AtomicU32::new(0),
    echo: AtomicU32::new(0),
    too_large: AtomicU32::new(0),
    no_room: AtomicU32::new(0),
};

fn add(counter: &AtomicU32, n: u32) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU32) -> u64 {
    counter.load(Ordering::Relaxed).into()
}

// ---------------------------------------------------------------------------------------------
// TCP.

/// Why a connection's read or write ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnError {
    /// The connection was reset, or the stack gave the peer up.
    Reset,
    /// Nothing arrived for [`IDLE_TIMEOUT`].
    Idle,
    /// A write made no progress for [`WRITE_STALL_TIMEOUT`].
    WriteStall,
}

impl core::fmt::Display for ConnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Reset => "connection reset",
            Self::Idle => "idle timeout",
            Self::WriteStall => "write timeout",
        })
    }
}

impl core::error::Error for ConnError {}

impl embedded_io_async::Error for ConnError {
    fn kind(&self) -> embedded_io_async::ErrorKind {
        match self {
            Self::Reset => embedded_io_async::ErrorKind::ConnectionReset,
            Self::Idle | Self::WriteStall => embedded_io_async::ErrorKind::TimedOut,
        }
    }
}

/// A TCP socket whose every read waits at most [`IDLE_TIMEOUT`] and every write or flush at
/// most [`WRITE_STALL_TIMEOUT`]. A read or write that returns early resets its clock: these are
/// "nothing moved for that long" timeouts, not limits on the connection's life.
struct Timed<'s, 'a>(&'s mut TcpSocket<'a>);

impl embedded_io_async::ErrorType for Timed<'_, '_> {
    type Error = ConnError;
}

impl embedded_io_async::Read for Timed<'_, '_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConnError> {
        match with_timeout(IDLE_TIMEOUT, self.0.read(buf)).await {
            Ok(read) => read.map_err(|_| ConnError::Reset),
            Err(_) => Err(ConnError::Idle),
        }
    }
}

impl embedded_io_async::Write for Timed<'_, '_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ConnError> {
        match with_timeout(WRITE_STALL_TIMEOUT, self.0.write(buf)).await {
            Ok(written) => written.map_err(|_| ConnError::Reset),
            Err(_) => Err(ConnError::WriteStall),
        }
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        match with_timeout(WRITE_STALL_TIMEOUT, self.0.flush()).await {
            Ok(flushed) => flushed.map_err(|_| ConnError::Reset),
            Err(_) => Err(ConnError::WriteStall),
        }
    }
}

/// TCP tasks that listen on [`TCP_PORT`]; the last of the pool to listen signals [`LISTENING`].
static LISTENERS: AtomicUsize = AtomicUsize::new(0);
/// Raised once every task of the pool listens, for the ready line.
static LISTENING: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// One task of the pool: accept a client on [`TCP_PORT`], serve it until the session is done,
/// close gracefully, and accept the next. Its buffers (about 4.6 KB) live in the task's
/// static storage, so the pool costs no stack and no heap.
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
        let mut session = Session::lines(LineFramer::new(&mut line[..]), Uppercase::new());
        let end = serve_connection(&mut socket, &mut session, &mut staging).await;
        report(session.counters(), end);
    }
}

/// How a connection ended, for the diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every reply sent after the peer's end of stream, then closed gracefully.
    Done,
    /// Closed gracefully after [`IDLE_TIMEOUT`].
    Idle,
    /// Reset after [`WRITE_STALL_TIMEOUT`]: the peer reads nothing.
    WriteStall,
    /// Reset by the peer, or given up by the stack.
    Reset,
}

/// Serves one accepted connection to its end, and leaves the socket closed.
///
/// At the peer's end of stream the session answers what is left (a trailing partial line
/// without `\n`); then the socket sends its FIN after the last reply, waits until all is
/// acknowledged, and drains what the peer still sends for up to [`LINGER`] (`PROTOCOL.md`
/// §2.6). An idle peer gets the same graceful close, its partial line answered with
/// `error: shutting down` (`Session::handle_shutdown`). A peer that stops reading is reset:
/// embassy-net can neither give up queued replies nor send a FIN before them.
async fn serve_connection(
    socket: &mut TcpSocket<'_>,
    session: &mut Session<&mut [u8], Uppercase>,
    staging: &mut [u8],
) -> End {
    let mut end = match asynch::serve(&mut Timed(socket), session, staging).await {
        Ok(()) => End::Done,
        Err(ServeError::Io(ConnError::Idle)) => {
            session.handle_shutdown();
            match asynch::serve(&mut Timed(socket), session, staging).await {
                Ok(()) => End::Idle,
                Err(ServeError::Io(ConnError::WriteStall)) => End::WriteStall,
                Err(_) => End::Reset,
            }
        }
        Err(ServeError::Io(ConnError::WriteStall)) => End::WriteStall,
        Err(_) => End::Reset,
    };
    if matches!(end, End::Done | End::Idle) {
        socket.close();
        if with_timeout(WRITE_STALL_TIMEOUT, socket.flush())
            .await
            .is_err()
        {
            end = End::WriteStall;
        }
    }
    if matches!(end, End::Done | End::Idle) {
        // Our FIN is acknowledged: drop what the peer still sends until its own FIN.
        let drained = with_timeout(LINGER, async {
            while let Ok(1..) = socket.read(staging).await {}
        })
        .await;
        if drained.is_ok() {
            return end;
        }
    }
    socket.abort();
    let _ = with_timeout(Duration::from_secs(1), socket.flush()).await;
    end
}

/// Adds a finished connection to the totals and logs one `closed:` line: its counters, the
/// totals (UDP drops included) and the stack's high-water mark.
fn report(c: Counters, end: End) {
    let t = &TOTALS;
    add(&t.connections, 1);
    add(&t.lines, c.lines);
    add(&t.overlong, c.overlong);
    if matches!(end, End::Idle | End::WriteStall) {
        add(&t.timeouts, 1);
    }
    Diag::new()
        .text("closed: end=")
        .text(match end {
            End::Done => "eof",
            End::Idle => "idle",
            End::WriteStall => "write_stall",
            End::Reset => "reset",
        })
        .field("uptime_ms", Instant::now().as_millis())
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
        .text(" dropped:")
        .field("port_zero", get(&t.port_zero))
        .field("low_port", get(&t.low_port))
        .field("own_address", get(&t.own_address))
        .field("echo", get(&t.echo))
        .field("too_large", get(&t.too_large))
        .field("no_room", get(&t.no_room))
        .field("stack_high_water", crate::hw::stack_high_water() as u64)
        .end();
}

// ---------------------------------------------------------------------------------------------
// UDP.

/// Why a datagram got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpDrop {
    /// The loop guard refused it (`PROTOCOL.md` §3.1).
    Refused(Refusal),
    /// The whole reply does not fit [`MAX_DATAGRAM`], and a reply is never truncated.
    TooLarge,
    /// The stack could not queue the reply (no route to the peer, or no room at all).
    NoRoom,
}

impl core::fmt::Display for UdpDrop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::TooLarge => f.write_str("reply too large"),
            Self::NoRoom => f.write_str("reply not queued"),
        }
    }
}

impl core::error::Error for UdpDrop {}

/// One datagram's turn, without IO: the source check, the whole reply into `reply`, the reply
/// check, in that order (the order of `LoopGuard`'s docs). Returns the reply's length, or why
/// there is none. `local` is the socket's own address, `now_ms` any millisecond clock.
///
/// # Errors
///
/// [`UdpDrop::Refused`] from the guard, [`UdpDrop::TooLarge`] if the reply does not fit.
pub fn udp_turn<T: Transform, const N: usize>(
    guard: &mut LoopGuard<N>,
    transform: &mut T,
    (local, peer): (SocketAddr, SocketAddr),
    request: &[u8],
    reply: &mut [u8],
    now_ms: u64,
) -> Result<usize, UdpDrop> {
    guard.check_source(peer, local).map_err(UdpDrop::Refused)?;
    let n = transform_datagram(transform, request, reply).map_err(|_| UdpDrop::TooLarge)?;
    let sent = reply.get(..n).unwrap_or_default();
    guard
        .check_reply(peer, request, sent, now_ms)
        .map_err(UdpDrop::Refused)?;
    Ok(n)
}

/// The UDP task: binds [`UDP_PORT`], prints the ready line, then answers each datagram with
/// one reply datagram through [`udp_turn`]. Its rings and reply buffer (about 10 KB) live in
/// the task's static storage.
#[embassy_executor::task]
async fn udp_task(stack: Stack<'static>) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; UDP_PACKETS];
    let mut tx_meta = [PacketMetadata::EMPTY; UDP_PACKETS];
    let (mut rx, mut tx) = ([0u8; UDP_RX], [0u8; UDP_TX]);
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    if socket.bind(UDP_PORT).is_err() {
        Diag::new().text("udp: cannot bind port 9876").end();
        core::future::pending::<()>().await;
    }
    let address = announce(stack).await;
    let mut guard = LoopGuard::<GUARD_PEERS>::new(GuardConfig::DEFAULT);
    let mut transform = Uppercase::new();
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
                let turn = udp_turn(
                    &mut guard,
                    &mut transform,
                    (local, peer),
                    request,
                    &mut reply,
                    now_ms,
                );
                (turn, meta)
            })
            .await;
        add(&TOTALS.datagrams, 1);
        let sent = match turn {
            Ok(n) => socket
                .send_to(reply.get(..n).unwrap_or_default(), meta)
                .await
                .map_err(|_| UdpDrop::NoRoom),
            Err(why) => Err(why),
        };
        if let Err(why) = sent {
            add(
                match why {
                    UdpDrop::Refused(Refusal::SourcePortZero) => &TOTALS.port_zero,
                    UdpDrop::Refused(Refusal::LowSourcePort) => &TOTALS.low_port,
                    UdpDrop::Refused(Refusal::OwnAddress) => &TOTALS.own_address,
                    UdpDrop::Refused(Refusal::Echo) => &TOTALS.echo,
                    UdpDrop::TooLarge => &TOTALS.too_large,
                    UdpDrop::NoRoom => &TOTALS.no_room,
                },
                1,
            );
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
