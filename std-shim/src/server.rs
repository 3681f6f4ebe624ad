//! The TCP and UDP servers: sockets, threads, limits and graceful shutdown.

use crate::config::{MAX_UDP_PAYLOAD, ServerConfig};
use crate::net::{self, BindError};
use crate::reactor::{self, DynTransform};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use upcase_core::transform_datagram;
/// How often a UDP thread looks at the stop flag while no datagram arrives.
const UDP_POLL: Duration = Duration::from_millis(200);

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
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) lines: AtomicU64,
    pub(crate) overlong: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) datagrams: AtomicU64,
    pub(crate) dropped_datagrams: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

impl Counters {
    /// Adds a finished connection's counters.
    pub(crate) fn add_session(&self, s: &upcase_core::Counters) {
        bump(&self.lines, s.lines.into());
        bump(&self.overlong, s.overlong.into());
        bump(&self.bytes_in, s.bytes_in.into());
        bump(&self.bytes_out, s.bytes_out.into());
    }

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

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// State shared by the server's threads and its [`ShutdownHandle`]s.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) counters: Counters,
    /// Set once: stop accepting, answer what was received, close.
    pub(crate) stopping: AtomicBool,
    /// Set by a [`ShutdownHandle`]; `run` waits for it.
    stop_requested: Mutex<bool>,
    changed: Condvar,
    /// Connections counted against the cap.
    active: AtomicUsize,
}

impl Shared {
    /// Counts a new connection against the cap; `false` (and nothing counted) at the cap.
    pub(crate) fn take_slot(&self) -> bool {
        let max = self.config.max_connections;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A connection ended: its place under the cap is free.
    pub(crate) fn release_slot(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
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
        *self
            .0
            .stop_requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
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
        if config.max_line == 0 || config.staging == 0 || config.workers == Some(0) {
            return Err(BindError::Config(
                "max_line, staging and workers must be at least 1",
            ));
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
            stop_requested: Mutex::new(false),
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
    /// Threads: one per listening socket (accept), one per UDP socket, and `workers` event-driven
    /// TCP workers (default: one per core). A connection costs its socket and about 200 bytes
    /// while idle; it holds a line buffer (`max_line + 1` bytes) only while bytes are in flight,
    /// and each worker has one staging buffer.
    ///
    /// # Panics
    ///
    /// If the operating system refuses to start a thread or an event poller at startup.
    pub fn run(self) -> Stats {
        let started = Instant::now();
        let cfg = &self.shared.config;
        let workers = cfg
            .workers
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, usize::from));
        tracing::info!(
            tcp = ?self.tcp_addrs(),
            udp = ?self.udp_addrs(),
            framing = ?cfg.framing,
            max_line = cfg.max_line,
            max_connections = cfg.max_connections,
            workers,
            "upcase serving"
        );
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let mut handles = Vec::new();
        if !self.tcp.is_empty() {
            for _ in 0..workers {
                let (poll, handle) = reactor::new_worker()
                    .unwrap_or_else(|e| panic!("cannot create an event poller: {e}"));
                // Every worker gets its own handle of every listening socket.
                let listeners: Vec<TcpListener> = self
                    .tcp
                    .iter()
                    .map(|l| {
                        l.try_clone()
                            .and_then(|c| c.set_nonblocking(true).map(|()| c))
                    })
                    .collect::<io::Result<_>>()
                    .unwrap_or_else(|e| panic!("cannot share a listening socket: {e}"));
                handles.push(handle);
                let shared = self.shared.clone();
                threads.push(spawn_named("upcase-worker", move || {
                    reactor::run_worker(&shared, poll, listeners);
                }));
            }
        }
        // The workers hold the listening sockets from here; when the last handle closes, the
        // kernel stops completing handshakes for us.
        drop(self.tcp);
        for socket in self.udp {
            let shared = self.shared.clone();
            threads.push(spawn_named("upcase-udp", move || {
                udp_loop(&shared, &socket)
            }));
        }

        // Wait for the stop request.
        let mut stop = self
            .shared
            .stop_requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while !*stop {
            stop = self
                .shared
                .changed
                .wait(stop)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(stop);
        // Every worker stops accepting, answers what it received, and closes.
        self.shared.stopping.store(true, Ordering::Release);
        for h in &handles {
            h.wake();
        }
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
            Err(e) if net::is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
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
