//! The TCP and UDP servers: sockets, threads, limits and graceful shutdown.

use crate::config::{MAX_UDP_PAYLOAD, ServerConfig};
use crate::io::{Conn, is_draining, is_timeout};
use crate::net::{self, BindError};
use socket2::SockRef;
use std::collections::HashMap;
use std::io::{self, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use upcase_core::{LineFramer, ServeError, ServerError, Session, blocking, transform_datagram};

/// Stack of a connection thread. The driver needs a few hundred bytes; its buffers are on the
/// heap. Only touched pages cost memory.
const CONN_STACK: usize = 64 * 1024;
/// How often a UDP thread looks at the stop flag while no datagram arrives.
const UDP_POLL: Duration = Duration::from_millis(200);
/// Pause after the process ran out of file descriptors, before accepting again.
const EMFILE_BACKOFF: Duration = Duration::from_millis(50);

/// Counters of a server's whole life, as [`Server::run`] returns them and logs them at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// TCP connections accepted and served.
    pub connections: u64,
    /// TCP connections refused at the connection cap.
    pub refused: u64,
    /// Lines answered.
    pub lines: u64,
    /// Lines over the limit.
    pub overlong: u64,
    /// Connections closed by the idle or write timeout.
    pub timeouts: u64,
    /// UDP requests answered.
    pub datagrams: u64,
    /// UDP requests dropped: oversized, reply too large, or over the amplification cap.
    pub dropped_datagrams: u64,
    /// Bytes received, TCP and UDP.
    pub bytes_in: u64,
    /// Bytes sent, TCP and UDP.
    pub bytes_out: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    lines: AtomicU64,
    overlong: AtomicU64,
    timeouts: AtomicU64,
    datagrams: AtomicU64,
    dropped_datagrams: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections: get(&self.connections),
            refused: get(&self.refused),
            lines: get(&self.lines),
            overlong: get(&self.overlong),
            timeouts: get(&self.timeouts),
            datagrams: get(&self.datagrams),
            dropped_datagrams: get(&self.dropped_datagrams),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// State shared by the server's threads and its [`ShutdownHandle`]s.
struct Shared {
    config: ServerConfig,
    counters: Counters,
    /// Set once: stop accepting, answer what was received, close.
    stopping: AtomicBool,
    /// Live connections, for shutdown to reach them. `TcpStream::shutdown` takes `&self`.
    live: Mutex<Live>,
    /// Signalled when `stopping` is set and when a connection ends.
    changed: Condvar,
    /// Connections counted against the cap.
    active: AtomicUsize,
}

#[derive(Default)]
struct Live {
    next_id: u64,
    conns: HashMap<u64, Arc<TcpStream>>,
    stop_requested: bool,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, Live> {
        // A panicking connection thread cannot leave `Live` inconsistent: every update is one
        // map operation. So a poisoned lock is still usable.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stops a running [`Server`] gracefully. Cheap to clone; usable from any thread or a signal
/// handler thread.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    /// Begins a graceful shutdown (`PROTOCOL.md` §2.5) and returns at once. [`Server::run`]
    /// then stops accepting, answers every complete line already received, sends
    /// `error: shutting down` in place of partial lines, and returns. Calling it again does
    /// nothing.
    pub fn shutdown(&self) {
        let mut live = self.0.live();
        live.stop_requested = true;
        self.0.changed.notify_all();
    }
}

/// A bound upcase server: listening sockets ready, no thread started yet.
pub struct Server {
    shared: Arc<Shared>,
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl Server {
    /// Resolves and binds every address of `config`, and listens on the TCP ones. When this
    /// returns, clients can connect (they queue in the backlog until [`run`](Self::run)).
    ///
    /// It also raises the soft `RLIMIT_NOFILE` to the hard limit, since every connection holds
    /// one file descriptor.
    ///
    /// # Errors
    ///
    /// The first address that cannot be resolved or bound, or a configuration that cannot work.
    pub fn bind(config: ServerConfig) -> Result<Self, BindError> {
        if config.max_line == 0 || config.staging == 0 {
            return Err(BindError::Config("max_line and staging must be at least 1"));
        }
        if config.max_datagram == 0 || config.max_datagram > MAX_UDP_PAYLOAD {
            return Err(BindError::Config("max_datagram must be within 1..=65507"));
        }
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => tracing::debug!(nofile = n, "raised the soft file descriptor limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
        }
        net::warn_if_backlog_clamped(config.backlog);
        let mut tcp = Vec::new();
        for spec in &config.tcp {
            for addr in net::resolve(spec)? {
                tcp.push(net::tcp_listener(addr, &config)?);
            }
        }
        let mut udp = Vec::new();
        for spec in &config.udp {
            for addr in net::resolve(spec)? {
                if !addr.ip().is_loopback() && !config.udp_no_amplify {
                    tracing::warn!(%addr, "UDP on a non-loopback address without the amplification cap: replies can be 3x the request (see --udp-no-amplify)");
                }
                udp.push(net::udp_socket(addr, &config)?);
            }
        }
        let shared = Arc::new(Shared {
            config,
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            live: Mutex::new(Live::default()),
            changed: Condvar::new(),
            active: AtomicUsize::new(0),
        });
        Ok(Self { shared, tcp, udp })
    }

    /// The bound TCP addresses, with the real port when port 0 was asked for.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound UDP addresses, with the real port when port 0 was asked for.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// A handle that stops [`run`](Self::run).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// Serves until a [`ShutdownHandle`] stops it, then drains and returns the counters.
    ///
    /// Threads: one per listening socket (accept), one per UDP socket, and one per TCP
    /// connection with a 64 KiB stack. A connection allocates its line buffer
    /// (`max_line + 1` bytes) and staging buffer only once its first bytes arrive, so idle
    /// connections cost a thread and a socket, and little else.
    pub fn run(self) -> Stats {
        let started = Instant::now();
        tracing::info!(
            tcp = ?self.tcp_addrs(),
            udp = ?self.udp_addrs(),
            framing = ?self.shared.config.framing,
            max_line = self.shared.config.max_line,
            max_connections = self.shared.config.max_connections,
            "upcase serving"
        );
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let mut listeners = Vec::new();
        for listener in self.tcp {
            let listener = Arc::new(listener);
            listeners.push(listener.clone());
            let shared = self.shared.clone();
            threads.push(spawn_named("upcase-accept", move || {
                accept_loop(&shared, &listener)
            }));
        }
        for socket in self.udp {
            let shared = self.shared.clone();
            threads.push(spawn_named("upcase-udp", move || {
                udp_loop(&shared, &socket)
            }));
        }

        // Wait for the stop request.
        let mut live = self.shared.live();
        while !live.stop_requested {
            live = self
                .shared
                .changed
                .wait(live)
                .unwrap_or_else(PoisonError::into_inner);
        }
        // Stop accepting. `shutdown(Read)` on a listening socket wakes a blocked accept on Linux.
        self.shared.stopping.store(true, Ordering::Release);
        for l in &listeners {
            let _ = SockRef::from(&**l).shutdown(Shutdown::Read);
        }
        // A blocked read returns EOF after `shutdown(Read)`; the connection thread sees the
        // drain flag, answers what it has, and closes.
        for conn in live.conns.values() {
            let _ = conn.shutdown(Shutdown::Read);
        }
        let deadline = Instant::now() + self.shared.config.drain_timeout;
        while !live.conns.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    open = live.conns.len(),
                    "drain timeout: closing connections"
                );
                for conn in live.conns.values() {
                    let _ = conn.shutdown(Shutdown::Both);
                }
                break;
            }
            live = self
                .shared
                .changed
                .wait_timeout(live, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(live);
        for t in threads {
            let _ = t.join();
        }
        let stats = self.shared.counters.snapshot();
        tracing::info!(
            uptime_s = started.elapsed().as_secs_f64(),
            connections = stats.connections,
            refused = stats.refused,
            lines = stats.lines,
            overlong = stats.overlong,
            timeouts = stats.timeouts,
            datagrams = stats.datagrams,
            dropped_datagrams = stats.dropped_datagrams,
            bytes_in = stats.bytes_in,
            bytes_out = stats.bytes_out,
            "upcase stopped"
        );
        stats
    }
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"))
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if net::is_fd_exhaustion(&e) => {
                tracing::warn!(error = %e, "out of file descriptors; backing off");
                thread::sleep(EMFILE_BACKOFF);
                continue;
            }
            Err(e) => {
                // ECONNABORTED and friends: that one connection is gone, the listener is fine.
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        let cfg = &shared.config;
        if shared.active.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            bump(&shared.counters.refused, 1);
            tracing::debug!(%peer, "refused: connection cap reached");
            // Best effort, never blocking the accept loop.
            let _ = stream.set_nonblocking(true);
            let _ = (&stream).write(ServerError::TooManyConnections.reply());
            continue;
        }
        if let Err(e) = net::configure_stream(&stream, cfg) {
            tracing::debug!(%peer, error = %e, "cannot configure connection");
        }
        let stream = Arc::new(stream);
        let id = {
            let mut live = shared.live();
            let id = live.next_id;
            live.next_id += 1;
            live.conns.insert(id, stream.clone());
            // `run` sets `stopping` under this lock: a connection that slipped in gets the same
            // drain as the others.
            if shared.stopping.load(Ordering::Acquire) {
                let _ = stream.shutdown(Shutdown::Read);
            }
            id
        };
        bump(&shared.counters.connections, 1);
        let worker = shared.clone();
        let spawned = thread::Builder::new()
            .name("upcase-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                serve_connection(&worker, &stream, peer);
                worker.live().conns.remove(&id);
                worker.active.fetch_sub(1, Ordering::AcqRel);
                worker.changed.notify_all();
            });
        if let Err(e) = spawned {
            tracing::warn!(%peer, error = %e, "cannot start a connection thread");
            shared.live().conns.remove(&id);
            shared.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn serve_connection(shared: &Shared, stream: &TcpStream, peer: SocketAddr) {
    let cfg = &shared.config;
    tracing::debug!(%peer, "connection opened");
    // Allocate nothing until the peer sends something (or leaves).
    if let Err(e) = stream.peek(&mut [0u8; 1]) {
        if is_timeout(&e) {
            bump(&shared.counters.timeouts, 1);
        }
        tracing::debug!(%peer, error = %e, "connection closed before any data");
        return;
    }
    let framer = LineFramer::new(vec![0u8; cfg.max_line + 1]);
    let mut session = Session::new(framer, DynTransform((cfg.transform)()), cfg.framing);
    let mut staging = vec![0u8; cfg.staging];
    let mut io = Conn {
        stream,
        draining: &shared.stopping,
    };
    let mut result = blocking::serve(&mut io, &mut session, &mut staging);
    if let Err(ServeError::Io(e)) = &result
        && is_draining(e)
    {
        session.handle_shutdown();
        result = blocking::serve(&mut io, &mut session, &mut staging);
    }
    let sum = session.summary();
    bump(&shared.counters.lines, sum.lines);
    bump(&shared.counters.overlong, sum.overlong);
    bump(&shared.counters.bytes_in, sum.bytes_in);
    bump(&shared.counters.bytes_out, sum.bytes_out);
    match result {
        Ok(_) => {
            let _ = stream.shutdown(Shutdown::Write);
            tracing::debug!(%peer, lines = sum.lines, "connection closed");
        }
        Err(ServeError::Io(e)) if is_timeout(&e) => {
            bump(&shared.counters.timeouts, 1);
            tracing::debug!(%peer, lines = sum.lines, "connection timed out");
        }
        Err(e) => tracing::debug!(%peer, error = %e, lines = sum.lines, "connection ended"),
    }
}

/// A boxed user transform, as the core's `Transform` (the core has no `alloc` to do this).
struct DynTransform(Box<dyn upcase_core::Transform + Send>);

impl upcase_core::Transform for DynTransform {
    fn process(&mut self, input: &[u8], output: &mut [u8]) -> upcase_core::Progress {
        self.0.process(input, output)
    }
    fn finish(&mut self, output: &mut [u8]) -> usize {
        self.0.finish(output)
    }
}

fn udp_loop(shared: &Shared, socket: &UdpSocket) {
    let cfg = &shared.config;
    if let Err(e) = socket.set_read_timeout(Some(UDP_POLL)) {
        tracing::error!(error = %e, "cannot set the UDP read timeout; UDP socket not served");
        return;
    }
    let mut transform = DynTransform((cfg.transform)());
    // One byte more than any UDP payload, so no datagram is ever truncated unseen.
    let mut request = vec![0u8; 65536];
    let mut reply = vec![0u8; MAX_UDP_PAYLOAD];
    while !shared.stopping.load(Ordering::Acquire) {
        let (n, peer) = match socket.recv_from(&mut request) {
            Ok(r) => r,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ICMP errors from earlier sends surface here; the socket is fine.
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        bump(&shared.counters.bytes_in, n as u64);
        if n > cfg.max_datagram {
            bump(&shared.counters.dropped_datagrams, 1);
            tracing::debug!(%peer, len = n, "UDP request over max_datagram dropped");
            continue;
        }
        let cap = if cfg.udp_no_amplify {
            n
        } else {
            MAX_UDP_PAYLOAD
        };
        match transform_datagram(&mut transform, &request[..n], &mut reply[..cap]) {
            Ok(len) => match socket.send_to(&reply[..len], peer) {
                Ok(sent) => {
                    bump(&shared.counters.datagrams, 1);
                    bump(&shared.counters.bytes_out, sent as u64);
                }
                Err(e) => {
                    bump(&shared.counters.dropped_datagrams, 1);
                    tracing::debug!(%peer, error = %e, "UDP reply not sent");
                }
            },
            Err(e) => {
                bump(&shared.counters.dropped_datagrams, 1);
                tracing::debug!(%peer, error = %e, "UDP request dropped");
            }
        }
    }
}
