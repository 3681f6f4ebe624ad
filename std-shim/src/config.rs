//! Server configuration, grouped as an operator thinks of it: where to listen, how the sockets
//! are set up, what the protocol allows, and how the server runs.

use std::sync::Arc;
use std::time::Duration;
use upcase_core::{Framing, GuardConfig, Transform, Uppercase};

/// The defaults of [`ServerConfig`], public so that a command line can show them without
/// restating them.
pub mod defaults {
    use std::time::Duration;

    /// TCP address: loopback, the port of the protocol's examples.
    pub const TCP: &str = "127.0.0.1:65432";
    /// UDP address: loopback, the port of the protocol's examples.
    pub const UDP: &str = "127.0.0.1:9876";
    /// `listen(2)` backlog.
    pub const BACKLOG: u32 = 4096;
    /// Longest line, in content bytes.
    pub const MAX_LINE: usize = 8192;
    /// Most TCP connections at once.
    pub const MAX_CONNECTIONS: usize = 16384;
    /// Reply bytes buffered across all connections before reading slows down.
    pub const REPLY_BUDGET: usize = 16 * 1024 * 1024;
    /// Close a connection that sends nothing for this long.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Close a connection whose replies make no progress for this long.
    pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long a graceful shutdown waits for replies to be delivered.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long a closing connection discards its peer's input before it is closed.
    pub const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
    /// Largest UDP request accepted: [`MAX_UDP_PAYLOAD`](crate::MAX_UDP_PAYLOAD), the most
    /// a datagram can carry.
    pub const MAX_DATAGRAM: usize = crate::MAX_UDP_PAYLOAD;
}

/// The largest UDP payload over IPv4: 65535 − 8 (UDP header) − 20 (IPv4 header).
pub const MAX_UDP_PAYLOAD: usize = 65507;

/// Makes one transform per TCP connection or UDP socket.
pub type TransformFactory = Arc<dyn Fn() -> Box<dyn Transform + Send> + Send + Sync>;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Addresses {
    /// TCP addresses to listen on, as `host:port`. An empty host (`":65432"`) means all IPv4
    /// interfaces; `[::]:port` means all IPv6 ones. Host names are resolved, and every address
    /// a name resolves to is bound. Port 0 picks a free port. Default: [`defaults::TCP`].
    pub tcp: Vec<String>,
    /// UDP addresses, as for `tcp`. Default: [`defaults::UDP`].
    pub udp: Vec<String>,
}

/// TCP keepalive probes on accepted connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub time: Duration,
    /// Time between probes (`TCP_KEEPINTVL`).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`).
    pub retries: u32,
}

/// Socket options, each set through `socket2` with the option it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// `listen(2)`'s backlog. Default [`defaults::BACKLOG`]; the kernel clamps it to
    /// `net.core.somaxconn`.
    pub backlog: u32,
    /// `SO_REUSEADDR` on TCP listening sockets, so a restart can bind while old connections
    /// linger in `TIME_WAIT`. Default on. Never set on UDP sockets: there it would let a second
    /// server take over the port silently.
    pub reuse_address: bool,
    /// `SO_REUSEPORT` on every socket: several processes may bind the same address, and the
    /// kernel spreads connections and datagrams between them. Default off.
    pub reuse_port: bool,
    /// `IPV6_V6ONLY` on IPv6 sockets: `Some(true)` serves IPv6 only, `Some(false)` also accepts
    /// IPv4-mapped peers, `None` keeps the system default.
    pub only_v6: Option<bool>,
    /// `TCP_NODELAY` on accepted connections. Default on.
    pub nodelay: bool,
    /// `SO_KEEPALIVE` with these parameters on accepted connections. Default off.
    pub keepalive: Option<Keepalive>,
    /// `SO_RCVBUF` on every socket, in bytes. Default: the system's.
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF` on every socket, in bytes. Default: the system's.
    pub send_buffer_size: Option<usize>,
}

/// What the protocol allows a peer ([`PROTOCOL.md`](upcase_core::spec),
/// [`SECURITY.md`](crate::security)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// `lines` (default) or `raw` framing on TCP.
    pub framing: Framing,
    /// Longest line, in content bytes (the `\n` excluded), in `lines` framing. Default
    /// [`defaults::MAX_LINE`]; at least 1. Not used in `raw` framing.
    pub max_line: usize,
    /// Most TCP connections at once; further ones get `error: too many connections`. Default
    /// [`defaults::MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Reply bytes the server buffers across all connections for peers that read slowly.
    /// Over it, a connection with replies waiting reads nothing until they drain, and the
    /// others read in small steps. Default [`defaults::REPLY_BUDGET`].
    pub reply_budget: usize,
    /// Largest UDP request accepted, in bytes; larger ones are dropped. Default
    /// [`defaults::MAX_DATAGRAM`], which is also the maximum, [`MAX_UDP_PAYLOAD`].
    pub max_datagram: usize,
    /// Drop UDP requests whose reply would be longer than the request, so the server cannot
    /// amplify traffic towards a spoofed source. Default off
    /// ([`PROTOCOL.md`](upcase_core::spec) §3).
    pub udp_no_amplify: bool,
    /// Reflection-loop protection on UDP ([`PROTOCOL.md`](upcase_core::spec) §3.1): low source
    /// ports and the echo budget. Default [`GuardConfig::DEFAULT`].
    pub udp_guard: GuardConfig,
}

/// Which kernel interface the workers serve their sockets through ([`Runtime::io`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Io {
    /// io_uring where it can run (Linux: probed when [`Server::run`](crate::Server::run)
    /// starts, the ring set up and every operation the driver uses checked), the readiness
    /// loop otherwise. One log line says which runs and why.
    #[default]
    Auto,
    /// io_uring (Linux 5.11 or later): completion-based, every receive and send of a loop turn
    /// in one system call. [`Server::run`](crate::Server::run) fails where it cannot run
    /// (another system, an old kernel, `kernel.io_uring_disabled`, a seccomp filter).
    Uring,
    /// The readiness loop through `mio`: epoll on Linux, kqueue on macOS and the BSDs.
    Epoll,
}

impl Io {
    /// The name the command line uses: `auto`, `uring` or `epoll`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Uring => "uring",
            Self::Epoll => "epoll",
        }
    }
}

impl std::fmt::Display for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Runtime {
    /// Worker threads, each an event loop serving TCP and UDP. Default (`None`): one per core.
    pub workers: Option<usize>,
    /// A connection that sends nothing for this long is closed. Default
    /// [`defaults::IDLE_TIMEOUT`]; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// A connection whose replies make no progress for this long is closed. Default
    /// [`defaults::WRITE_TIMEOUT`]; `None`: never.
    pub write_timeout: Option<Duration>,
    /// How long a graceful shutdown waits for replies to be delivered. Default
    /// [`defaults::DRAIN_TIMEOUT`]; a duration too long to add to the clock means no deadline.
    pub drain_timeout: Duration,
    /// How long a connection the server closes keeps discarding its peer's input before the
    /// socket is closed, so that replies in flight are not destroyed by a reset. Default
    /// [`defaults::LINGER_TIMEOUT`].
    pub linger_timeout: Duration,
    /// The kernel interface of the workers. Default [`Io::Auto`].
    pub io: Io,
}

/// Everything a [`Server`](crate::Server) needs. [`ServerConfig::default`] is what `upcase serve`
/// uses with no flags.
///
/// The struct is `#[non_exhaustive]`, so fields can be added without breaking you: start from
/// [`ServerConfig::new`] (the defaults), then chain the setters or assign fields
/// (`config.limits.max_line = 100`). No setter checks its value; [`validate`](Self::validate)
/// and [`Server::bind`](crate::Server::bind) do, and each setter names the bound they check.
///
/// A struct literal does not compile outside this crate, not even with `..Default::default()`:
///
/// ```compile_fail
/// let limits = upcase_std::Limits { max_line: 100, ..Default::default() };
/// ```
///
/// # Example
///
/// A server of your own reply function, in `raw` framing, on a free TCP port only:
///
/// ```
/// use std::io::{Read, Write};
/// use upcase_std::{ByteMap, Framing, Server, ServerConfig};
///
/// let config = ServerConfig::new()
///     .tcp(["127.0.0.1:0"])
///     .no_udp() // no UDP
///     // One transform per connection; here ROT13, which needs no state.
///     .transform(|| {
///         Box::new(ByteMap(|b: u8| match b {
///             b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
///             b'A'..=b'Z' => (b - b'A' + 13) % 26 + b'A',
///             _ => b,
///         }))
///     })
///     .framing(Framing::Raw) // answer every chunk, newline or not
///     .workers(1);
/// config.validate()?;
/// let server = Server::bind(config)?;
/// let (addr, stop) = (server.tcp_addrs()[0], server.shutdown_handle());
/// let running = std::thread::spawn(move || server.run());
///
/// let mut stream = std::net::TcpStream::connect(addr)?;
/// stream.write_all(b"hello")?;
/// let mut reply = [0u8; 5];
/// stream.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"uryyb");
///
/// drop(stream);
/// stop.shutdown();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen.
    pub addresses: Addresses,
    /// How the sockets are set up.
    pub socket: SocketOptions,
    /// What the protocol allows.
    pub limits: Limits,
    /// Threads and timeouts.
    pub runtime: Runtime,
    /// Makes the reply function. Default: [`Uppercase`].
    pub transform: TransformFactory,
}

impl Default for Addresses {
    fn default() -> Self {
        Self {
            tcp: vec![defaults::TCP.into()],
            udp: vec![defaults::UDP.into()],
        }
    }
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            backlog: defaults::BACKLOG,
            reuse_address: true,
            reuse_port: false,
            only_v6: None,
            nodelay: true,
            keepalive: None,
            recv_buffer_size: None,
            send_buffer_size: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            framing: Framing::Lines,
            max_line: defaults::MAX_LINE,
            max_connections: defaults::MAX_CONNECTIONS,
            reply_budget: defaults::REPLY_BUDGET,
            max_datagram: defaults::MAX_DATAGRAM,
            udp_no_amplify: false,
            udp_guard: GuardConfig::DEFAULT,
        }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            workers: None,
            idle_timeout: Some(defaults::IDLE_TIMEOUT),
            write_timeout: Some(defaults::WRITE_TIMEOUT),
            drain_timeout: defaults::DRAIN_TIMEOUT,
            linger_timeout: defaults::LINGER_TIMEOUT,
            io: Io::Auto,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addresses: Addresses::default(),
            socket: SocketOptions::default(),
            limits: Limits::default(),
            runtime: Runtime::default(),
            transform: Arc::new(|| Box::new(Uppercase::new())),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addresses", &self.addresses)
            .field("socket", &self.socket)
            .field("limits", &self.limits)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No TCP and no UDP address: nothing to serve.
    NothingToServe,
    /// `max_line` is 0.
    MaxLineZero,
    /// `workers` is `Some(0)`.
    WorkersZero,
    /// `max_connections` is 0.
    MaxConnectionsZero,
    /// `max_datagram` is outside `1..=65507`.
    MaxDatagram,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NothingToServe => "no tcp and no udp address: nothing to serve",
            Self::MaxLineZero => "max_line must be at least 1",
            Self::WorkersZero => "workers must be at least 1",
            Self::MaxConnectionsZero => "max_connections must be at least 1",
            Self::MaxDatagram => {
                return write!(f, "max_datagram must be within 1..={MAX_UDP_PAYLOAD}");
            }
        })
    }
}

impl std::error::Error for ConfigError {}

impl Addresses {
    /// Listen on exactly these TCP and UDP addresses (in the forms of [`Addresses::tcp`]).
    /// Either list may be empty, not both ([`ConfigError::NothingToServe`]).
    pub fn new<T, U>(tcp: T, udp: U) -> Self
    where
        T: IntoIterator,
        T::Item: Into<String>,
        U: IntoIterator,
        U::Item: Into<String>,
    {
        Self {
            tcp: tcp.into_iter().map(Into::into).collect(),
            udp: udp.into_iter().map(Into::into).collect(),
        }
    }
}

impl Keepalive {
    /// Probes after `time` idle, every `interval`, dropping the connection after `retries`
    /// unanswered ones. The system rounds each duration down to whole seconds and rejects 0 s
    /// and counts it does not support when the option is set on an accepted connection.
    pub fn new(time: Duration, interval: Duration, retries: u32) -> Self {
        Self {
            time,
            interval,
            retries,
        }
    }
}

impl SocketOptions {
    /// The defaults (see each field). Change fields by assignment.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Limits {
    /// The defaults (see each field). Change fields by assignment.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Runtime {
    /// The defaults (see each field). Change fields by assignment.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ServerConfig {
    /// The defaults: [`ServerConfig::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Listen for TCP on these addresses ([`Addresses::tcp`]), replacing the default. An empty
    /// list serves no TCP; with no UDP either, [`validate`](Self::validate) fails.
    #[must_use]
    pub fn tcp<I>(mut self, addrs: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.addresses.tcp = addrs.into_iter().map(Into::into).collect();
        self
    }

    /// Listen for UDP on these addresses ([`Addresses::udp`]), replacing the default. An empty
    /// list serves no UDP.
    #[must_use]
    pub fn udp<I>(mut self, addrs: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.addresses.udp = addrs.into_iter().map(Into::into).collect();
        self
    }

    /// Serve no TCP (`--no-tcp`): the same as `.tcp([] as [&str; 0])`.
    #[must_use]
    pub fn no_tcp(mut self) -> Self {
        self.addresses.tcp.clear();
        self
    }

    /// Serve no UDP (`--no-udp`).
    #[must_use]
    pub fn no_udp(mut self) -> Self {
        self.addresses.udp.clear();
        self
    }

    /// TCP framing ([`Limits::framing`]).
    #[must_use]
    pub fn framing(mut self, framing: Framing) -> Self {
        self.limits.framing = framing;
        self
    }

    /// Longest line in content bytes ([`Limits::max_line`]): at least 1
    /// ([`ConfigError::MaxLineZero`]). The server holds up to this many bytes per connection.
    #[must_use]
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.limits.max_line = bytes;
        self
    }

    /// Most TCP connections at once ([`Limits::max_connections`]): at least 1
    /// ([`ConfigError::MaxConnectionsZero`]). Each holds a file descriptor.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n;
        self
    }

    /// Worker threads ([`Runtime::workers`]): at least 1 ([`ConfigError::WorkersZero`]).
    #[must_use]
    pub fn workers(mut self, n: usize) -> Self {
        self.runtime.workers = Some(n);
        self
    }

    /// The workers' kernel interface ([`Runtime::io`]); not checked before
    /// [`Server::run`](crate::Server::run), which fails if [`Io::Uring`] cannot run.
    #[must_use]
    pub fn io(mut self, io: Io) -> Self {
        self.runtime.io = io;
        self
    }

    /// Idle timeout ([`Runtime::idle_timeout`]); `None`: never.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.runtime.idle_timeout = timeout;
        self
    }

    /// Drain timeout ([`Runtime::drain_timeout`]); any duration, a huge one meaning none.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.runtime.drain_timeout = timeout;
        self
    }

    /// The reply function: `make` is called once per TCP connection and once per UDP socket,
    /// so a transform with state never sees two peers' bytes.
    #[must_use]
    pub fn transform<F>(mut self, make: F) -> Self
    where
        F: Fn() -> Box<dyn Transform + Send> + Send + Sync + 'static,
    {
        self.transform = Arc::new(make);
        self
    }

    /// Checks the values that no socket option can fix.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.addresses.tcp.is_empty() && self.addresses.udp.is_empty() {
            return Err(ConfigError::NothingToServe);
        }
        self.validate_limits()
    }

    /// [`validate`](Self::validate) but for the addresses, for sockets given by the program.
    pub(crate) fn validate_limits(&self) -> Result<(), ConfigError> {
        let (limits, runtime) = (&self.limits, &self.runtime);
        if limits.max_line == 0 {
            return Err(ConfigError::MaxLineZero);
        }
        if limits.max_connections == 0 {
            return Err(ConfigError::MaxConnectionsZero);
        }
        if runtime.workers == Some(0) {
            return Err(ConfigError::WorkersZero);
        }
        if !(1..=MAX_UDP_PAYLOAD).contains(&limits.max_datagram) {
            return Err(ConfigError::MaxDatagram);
        }
        Ok(())
    }
}
