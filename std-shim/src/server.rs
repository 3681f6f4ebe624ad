//! The server: binds the sockets, runs the workers, and stops them gracefully.

use crate::config::{ConfigError, Io, ServerConfig};
use crate::net::{self, BindError};
use crate::shared::{ServerCounters, Shared};
use crate::worker::{Worker, WorkerHandle};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

/// The stop request, shared by the server and its [`ShutdownHandle`]s.
#[derive(Default)]
struct Stop {
    requested: Mutex<bool>,
    changed: Condvar,
}

/// Stops a running [`Server`] gracefully. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Stop>);

impl ShutdownHandle {
    /// Begins a graceful shutdown ([`PROTOCOL.md`](upcase_core::spec) §2.5) and returns at
    /// once. [`Server::run`] then stops accepting and reading, answers every complete line
    /// already read, sends `error: shutting down` in place of a partial line, closes each
    /// connection gracefully, and returns. Calling it again does nothing.
    pub fn shutdown(&self) {
        *self
            .0
            .requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.0.changed.notify_all();
    }
}

/// A moment in a running server's life, reported to the observer of
/// [`Server::run_with`], for example to tell a service manager (systemd's `READY=1` and
/// `STOPPING=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// Every socket is being served: each worker has registered its sockets and runs. Reported
    /// once, before any other event.
    Serving,
    /// A [`ShutdownHandle`] asked for the graceful shutdown and the drain begins: the workers
    /// have been told to stop accepting. Reported at most once, after [`Serving`](Self::Serving).
    Draining,
}

/// Reads a running server's counters from any thread, while it runs and after.
/// Cheap to clone. From [`Server::counters_handle`].
#[derive(Clone)]
pub struct CountersHandle(Arc<Shared>);

impl CountersHandle {
    /// The counters now. Each is read on its own (relaxed), so two counters may be a few events
    /// apart; each one only grows. A reply counts once its worker has seen the kernel take all
    /// of its bytes (on io_uring, when it reaps the send's completion), so a client may already
    /// hold a reply that a snapshot does not count yet. The totals that [`Server::run`] returns
    /// count every reply.
    pub fn snapshot(&self) -> ServerCounters {
        self.0.counters.snapshot()
    }
}

impl std::fmt::Debug for CountersHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CountersHandle").finish_non_exhaustive()
    }
}

/// A bound upcase server: sockets ready, no thread started yet.
pub struct Server {
    shared: Arc<Shared>,
    stop: Arc<Stop>,
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl Server {
    /// Resolves and binds every address of `config`, and listens on the TCP ones. When this
    /// returns, clients can connect (they queue in the backlog until [`run`](Self::run)).
    ///
    /// It changes nothing else in the process: raising the file descriptor limit (every
    /// connection holds one) is the program's decision.
    ///
    /// # Errors
    ///
    /// A [`BindError::Config`] for a configuration that cannot work, or the first address that
    /// cannot be resolved or bound (a UDP address in use is an error, unless `reuse_port`).
    pub fn bind(config: ServerConfig) -> Result<Self, BindError> {
        config.validate()?;
        Self::from_listeners(config, Vec::new(), Vec::new())
    }

    /// Serves sockets the program already has, for example those a service manager passed
    /// (systemd's socket activation), as well as every address of `config.addresses`; clear
    /// those ([`ServerConfig::no_tcp`], [`ServerConfig::no_udp`]) to serve only `tcp` and
    /// `udp`.
    ///
    /// Each listener in `tcp` must be a listening TCP socket (any [`TcpListener`] from std is)
    /// and each of `udp` a bound UDP socket, over IPv4 or IPv6. Their options are left as they
    /// are: [`SocketOptions`](crate::SocketOptions)' listening options (backlog,
    /// `SO_REUSEADDR`, buffer sizes, `IPV6_V6ONLY`) apply only to sockets bound here, while its
    /// per-connection options (`TCP_NODELAY`, keepalive) apply to every accepted connection.
    /// The sockets are made non-blocking when [`run`](Self::run) starts.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind); [`ConfigError::NothingToServe`](crate::ConfigError) only when
    /// `tcp`, `udp` and both address lists are all empty.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use upcase_std::{Server, ServerConfig, TcpClient};
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let config = ServerConfig::new().no_tcp().no_udp();
    /// let server = Server::from_listeners(config, vec![listener], vec![])?;
    /// let (addr, stop) = (server.tcp_addrs()[0], server.shutdown_handle());
    /// assert!(server.udp_addrs().is_empty());
    /// let running = std::thread::spawn(move || server.run());
    ///
    /// let mut client = TcpClient::connect(addr, Duration::from_secs(5))?;
    /// assert_eq!(client.request(b"inherited")?, b"INHERITED");
    /// drop(client);
    /// stop.shutdown();
    /// running.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_listeners(
        config: ServerConfig,
        mut tcp: Vec<TcpListener>,
        mut udp: Vec<UdpSocket>,
    ) -> Result<Self, BindError> {
        match config.validate() {
            Err(ConfigError::NothingToServe) if !tcp.is_empty() || !udp.is_empty() => {
                config.validate_limits()?;
            }
            checked => checked?,
        }
        for socket in &udp {
            if let Ok(addr) = socket.local_addr() {
                warn_if_amplifying(addr, &config);
            }
        }
        for spec in &config.addresses.tcp {
            for addr in net::resolve(spec)? {
                tcp.push(net::tcp_listener(addr, &config.socket)?);
            }
        }
        for spec in &config.addresses.udp {
            for addr in net::resolve(spec)? {
                warn_if_amplifying(addr, &config);
                udp.push(net::udp_socket(addr, &config.socket)?);
            }
        }
        Ok(Self {
            shared: Arc::new(Shared::new(config)),
            stop: Arc::default(),
            tcp,
            udp,
        })
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

    /// A handle that reads the counters while the server runs, for a status line.
    pub fn counters_handle(&self) -> CountersHandle {
        CountersHandle(self.shared.clone())
    }

    /// A handle that stops [`run`](Self::run).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Serves until a [`ShutdownHandle`] stops it, then drains and returns the counters. Blocks
    /// the calling thread throughout.
    ///
    /// Threads: `workers` event loops (default: one per core), each serving every TCP listener,
    /// its connections, and its share of the UDP sockets. Memory: see the crate documentation
    /// and [`SECURITY.md`](crate::security).
    ///
    /// # Errors
    ///
    /// When a worker's poller or thread cannot be created at start. Nothing is served then.
    pub fn run(self) -> io::Result<ServerCounters> {
        self.run_with(|_| {})
    }

    /// [`run`](Self::run), telling `observe` when every socket is served and when the drain
    /// begins ([`ServerEvent`]). `observe` is called on the calling thread, at most once per
    /// event and in that order; the server waits for it to return, so it should be quick
    /// (a datagram to a service manager, a log line).
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run). `Serving` is not reported then.
    pub fn run_with(self, mut observe: impl FnMut(ServerEvent)) -> io::Result<ServerCounters> {
        let started = Instant::now();
        let cfg = &self.shared.config;
        let driver = Driver::select(cfg.runtime.io)?;
        let n = cfg
            .runtime
            .workers
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, usize::from))
            .max(1);
        tracing::info!(
            tcp = ?self.tcp_addrs(),
            udp = ?self.udp_addrs(),
            framing = %framing_name(cfg.limits.framing),
            max_line = %match cfg.limits.framing {
                upcase_core::Framing::Lines => cfg.limits.max_line.to_string(),
                upcase_core::Framing::Raw => "unused (raw framing reads 64 KiB at a time)".into(),
            },
            max_connections = cfg.limits.max_connections,
            workers = n,
            io = driver.name(),
            "upcase serving"
        );
        let mut udp: Vec<Vec<UdpSocket>> = (0..n).map(|_| Vec::new()).collect();
        for (i, s) in self.udp.into_iter().enumerate() {
            udp[i % n].push(s);
        }
        let shared = &*self.shared;
        let mut handles: Vec<Handle> = Vec::new();
        let served = thread::scope(|scope| -> io::Result<()> {
            let mut started_workers = Vec::new();
            for share in udp {
                let listeners = self
                    .tcp
                    .iter()
                    .map(TcpListener::try_clone)
                    .collect::<io::Result<Vec<_>>>()?;
                match driver {
                    Driver::Epoll => {
                        let (worker, handle) = Worker::new(shared, listeners, share)?;
                        handles.push(Handle::Epoll(handle));
                        started_workers.push(AnyWorker::Epoll(worker));
                    }
                    #[cfg(target_os = "linux")]
                    Driver::Uring => {
                        let (worker, handle) = crate::uring::Worker::new(shared, listeners, share)?;
                        handles.push(Handle::Uring(handle));
                        started_workers.push(AnyWorker::Uring(worker));
                    }
                }
            }
            // Every worker holds duplicates of the listening sockets from here.
            drop(self.tcp);
            for worker in started_workers {
                let spawned = thread::Builder::new()
                    .name("upcase-worker".into())
                    .spawn_scoped(scope, move || worker.run());
                if let Err(e) = spawned {
                    // The workers already running stop, so the scope can end.
                    shared.stopping.store(true, Ordering::Release);
                    handles.iter().for_each(Handle::wake);
                    return Err(e);
                }
            }
            observe(ServerEvent::Serving);
            let mut stop = self
                .stop
                .requested
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while !*stop {
                stop = self
                    .stop
                    .changed
                    .wait(stop)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            drop(stop);
            shared.stopping.store(true, Ordering::Release);
            handles.iter().for_each(Handle::wake);
            observe(ServerEvent::Draining);
            Ok(())
        });
        served?;
        let totals = shared.counters.snapshot();
        tracing::info!(
            uptime_s = started.elapsed().as_secs_f64(),
            connections = totals.connections,
            refused = totals.refused,
            lines = totals.lines,
            chunks = totals.chunks,
            overlong = totals.overlong,
            timeouts = totals.timeouts,
            panics = totals.panics,
            datagrams = totals.datagrams,
            dropped_datagrams = totals.udp_dropped.total(),
            bytes_in = totals.bytes_in,
            bytes_out = totals.bytes_out,
            "upcase stopped {}",
            totals.udp_dropped
        );
        Ok(totals)
    }
}

/// The workers' kernel interface, as chosen when the server starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// mio's readiness loop (`worker.rs`).
    Epoll,
    /// The io_uring workers (`uring/`).
    #[cfg(target_os = "linux")]
    Uring,
}

impl Driver {
    /// The driver for `io`: `Auto` probes io_uring and falls back to the readiness loop, with
    /// one log line saying which runs and why. `Uring` where it cannot run is an error
    /// (`Unsupported`) that says why.
    fn select(io: Io) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        match (io, crate::uring::probe()) {
            (Io::Epoll, _) => {
                tracing::info!("io driver: epoll (as configured)");
                Ok(Self::Epoll)
            }
            (Io::Auto | Io::Uring, Ok(())) => {
                tracing::info!(configured = %io, "io driver: io_uring (the kernel supports every operation it uses)");
                Ok(Self::Uring)
            }
            (Io::Auto, Err(why)) => {
                tracing::info!(%why, "io driver: epoll (io_uring cannot run here)");
                Ok(Self::Epoll)
            }
            (Io::Uring, Err(why)) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring was asked for (--io uring) but cannot run here: {why}"),
            )),
        }
        #[cfg(not(target_os = "linux"))]
        match io {
            Io::Uring => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring was asked for (--io uring) but exists on Linux only",
            )),
            Io::Auto | Io::Epoll => Ok(Self::Epoll),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Epoll => "epoll",
            #[cfg(target_os = "linux")]
            Self::Uring => "uring",
        }
    }
}

/// A worker of either driver (one per thread, so their sizes may differ).
#[allow(clippy::large_enum_variant)]
enum AnyWorker<'s> {
    Epoll(Worker<'s>),
    #[cfg(target_os = "linux")]
    Uring(crate::uring::Worker<'s>),
}

impl AnyWorker<'_> {
    fn run(self) {
        match self {
            Self::Epoll(w) => w.run(),
            #[cfg(target_os = "linux")]
            Self::Uring(w) => w.run(),
        }
    }
}

/// What wakes a worker of either driver.
enum Handle {
    Epoll(WorkerHandle),
    #[cfg(target_os = "linux")]
    Uring(crate::uring::Handle),
}

impl Handle {
    fn wake(&self) {
        match self {
            Self::Epoll(h) => h.wake(),
            #[cfg(target_os = "linux")]
            Self::Uring(h) => h.wake(),
        }
    }
}

/// UDP replies can be 3x the request; off loopback that amplifies traffic towards a spoofed
/// source unless the cap is on.
fn warn_if_amplifying(addr: SocketAddr, config: &ServerConfig) {
    if !addr.ip().is_loopback() && !config.limits.udp_no_amplify {
        tracing::warn!(%addr, "UDP on a non-loopback address without the amplification cap: replies can be 3x the request (see --udp-no-amplify)");
    }
}

/// The framing as the command line spells it.
fn framing_name(f: upcase_core::Framing) -> &'static str {
    match f {
        upcase_core::Framing::Lines => "lines",
        upcase_core::Framing::Raw => "raw",
    }
}
