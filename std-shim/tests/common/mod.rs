//! In-process servers on loopback port 0, and clients that watch exactly what they receive and
//! when. Every wait here is bounded by [`LIMIT`] or an explicit deadline.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use upcase_std::{CountersHandle, Io, Server, ServerConfig, ServerCounters, ShutdownHandle};

/// Upper bound on anything a test waits for.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// A configuration serving TCP (`tcp`) and UDP (`udp`) on 127.0.0.1, port 0, defaults otherwise
/// (the driver as [`io`] says).
pub(crate) fn config(tcp: bool, udp: bool) -> ServerConfig {
    let loopback = |on: bool| {
        if on {
            vec!["127.0.0.1:0".to_owned()]
        } else {
            Vec::new()
        }
    };
    ServerConfig::new()
        .tcp(loopback(tcp))
        .udp(loopback(udp))
        .io(io())
}

/// The driver the suite runs against: `UPCASE_IO` (`auto`, `uring`, `epoll`; unset: `auto`),
/// so that `UPCASE_IO=uring cargo test` runs every test over io_uring and
/// `UPCASE_IO=epoll` over epoll. Any other value fails the test.
pub(crate) fn io() -> Io {
    match std::env::var("UPCASE_IO").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("auto") => Io::Auto,
        Ok("uring") => Io::Uring,
        Ok("epoll") => Io::Epoll,
        other => panic!("UPCASE_IO must be auto, uring or epoll, not {other:?}"),
    }
}

/// A server running on its own thread. Dropping it shuts it down and waits for it.
pub(crate) struct Running {
    pub(crate) tcp: Vec<SocketAddr>,
    pub(crate) udp: Vec<SocketAddr>,
    handle: ShutdownHandle,
    counters: CountersHandle,
    thread: Option<JoinHandle<(io::Result<ServerCounters>, Instant)>>,
}

impl Running {
    /// Binds `config` and runs it on a thread.
    pub(crate) fn start(config: ServerConfig) -> Self {
        let server = Server::bind(config).expect("bind");
        let (tcp, udp) = (server.tcp_addrs(), server.udp_addrs());
        let handle = server.shutdown_handle();
        let counters = server.counters_handle();
        let thread = std::thread::Builder::new()
            .name("server".into())
            .spawn(move || {
                let result = server.run();
                (result, Instant::now())
            })
            .unwrap();
        Self {
            tcp,
            udp,
            handle,
            counters,
            thread: Some(thread),
        }
    }

    /// Reads the counters while the server runs.
    pub(crate) fn counters(&self) -> &CountersHandle {
        &self.counters
    }

    /// The first TCP address.
    pub(crate) fn tcp(&self) -> SocketAddr {
        self.tcp[0]
    }

    /// The first UDP address.
    pub(crate) fn udp(&self) -> SocketAddr {
        self.udp[0]
    }

    /// Begins the graceful shutdown, without waiting.
    pub(crate) fn begin_shutdown(&self) {
        self.handle.shutdown();
    }

    /// Shuts down, waits for `run` (bounded by [`LIMIT`]), and returns its counters and the
    /// instant `run` returned.
    pub(crate) fn stop_at(mut self) -> (ServerCounters, Instant) {
        self.handle.shutdown();
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + LIMIT;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::park_timeout(Duration::from_millis(2));
        }
        let (result, at) = thread.join().expect("server thread panicked");
        (result.expect("run failed"), at)
    }

    /// Shuts down and returns the counters.
    pub(crate) fn stop(self) -> ServerCounters {
        self.stop_at().0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take()
            && !std::thread::panicking()
        {
            let _ = t.join();
        }
    }
}

/// A client connection to `addr` (`TCP_NODELAY`): the connect, and every later read and write,
/// each bounded by [`LIMIT`] (socket timeouts). Panics if the connect fails.
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until exactly `n` more bytes have arrived, all of them within [`LIMIT`] from now
/// ([`upcase_model::net::read_exactly`]). Panics on a timeout, an end of stream or an error,
/// naming how many bytes did arrive.
pub(crate) fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    upcase_model::net::read_exactly(s, n, Instant::now() + LIMIT)
}

/// Reads until the server closes its side, all of it within [`LIMIT`] from now
/// ([`upcase_model::net::read_to_eof`]; the stream's read timeout is left as it was). Asserts a
/// clean end of stream: the server must close gracefully, so a reset, another error or the deadline fails
/// the test, naming how many bytes came.
pub(crate) fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    upcase_model::net::read_to_eof(s, Instant::now() + LIMIT)
}

/// A UDP socket on 127.0.0.1, port 0, connected to `server` (IPv4), with a read timeout of
/// [`LIMIT`]: every receive is bounded.
pub(crate) fn udp_client(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

/// Connects ([`connect`]), sends `input`, half-closes, and returns everything until the server
/// closed ([`read_to_eof`]: within [`LIMIT`], and a reset fails the test).
pub(crate) fn exchange(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(input).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    read_to_eof(&mut s)
}

/// A small deterministic generator (xorshift64).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Sends one UDP datagram with a forged source, `from`, to `to` (both IPv4), built whole on a
/// raw socket: the reflection attacks of issue 10, item 3. Needs root (`CAP_NET_RAW`), as the
/// tests have.
pub(crate) fn spoof(from: SocketAddr, to: SocketAddr, payload: &[u8]) {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (from, to) else {
        panic!("spoof: IPv4 only");
    };
    let udp_len = 8 + payload.len();
    let mut packet = Vec::with_capacity(20 + udp_len);
    // IPv4 header: the kernel fills in the identification and the header checksum.
    packet.extend_from_slice(&[0x45, 0]);
    packet.extend_from_slice(&u16::try_from(20 + udp_len).unwrap().to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&src.ip().octets());
    packet.extend_from_slice(&dst.ip().octets());
    // UDP header and payload, with the checksum over the pseudo-header.
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&u16::try_from(udp_len).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&u16::try_from(udp_len).unwrap().to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let sum = match !internet_checksum(&pseudo) {
        0 => 0xFFFF,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(&udp);
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .expect("a raw socket (the UDP loop tests run as root)");
    raw.set_header_included_v4(true).unwrap();
    let dest = SockAddr::from(SocketAddr::new(to.ip(), 0));
    assert_eq!(raw.send_to(&packet, &dest).unwrap(), packet.len());
}

/// The one's complement sum of 16-bit words (RFC 1071), not yet complemented.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// Watches every UDP datagram delivered on this host (a raw socket sees a copy of each), so a
/// test can see a reflection loop as it happens.
///
/// The socket is non-blocking and [`Sniffer::next`] polls it every millisecond until its
/// deadline: under Wine (the Windows runs in CI) a blocking read of a raw socket with a read
/// timeout sometimes never returned once the traffic stopped (4 runs of 20 of
/// `one_spoofed_datagram_between_two_servers_dies_out` hung), and a wait must not outlive its
/// deadline anywhere.
pub(crate) struct Sniffer(socket2::Socket);

impl Sniffer {
    pub(crate) fn new() -> Self {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
            .expect("a raw socket (the UDP loop tests run as root)");
        s.set_recv_buffer_size(4 << 20).unwrap();
        s.set_nonblocking(true).unwrap();
        Self(s)
    }

    /// The next datagram by `deadline`: its source, destination, and when it was seen (the
    /// socket is polled every millisecond). `None` once the deadline has passed.
    pub(crate) fn next(&mut self, deadline: Instant) -> Option<(SocketAddr, SocketAddr, Instant)> {
        let mut buf = [0u8; 65536];
        loop {
            if Instant::now() >= deadline {
                return None;
            }
            let n = match (&self.0).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("sniffer: {e}"),
            };
            let ihl = usize::from(buf[0] & 0x0F) * 4;
            if n < ihl + 8 {
                continue;
            }
            let ip =
                |at: usize| std::net::Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3]);
            let port = |at: usize| u16::from_be_bytes([buf[at], buf[at + 1]]);
            let src = SocketAddr::new(ip(12).into(), port(ihl));
            let dst = SocketAddr::new(ip(16).into(), port(ihl + 2));
            return Some((src, dst, Instant::now()));
        }
    }
}
