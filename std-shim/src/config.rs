//! Server configuration, mapped onto socket options through `socket2`.

use std::sync::Arc;
use std::time::Duration;
use upcase_core::{Framing, Transform, Uppercase};

/// TCP keepalive probes on accepted connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub time: Duration,
    /// Time between probes (`TCP_KEEPINTVL`).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`).
    pub retries: u32,
}

/// Makes one transform per TCP connection or UDP socket.
pub type TransformFactory = Arc<dyn Fn() -> Box<dyn Transform + Send> + Send + Sync>;

/// Everything a [`Server`](crate::Server) needs. [`ServerConfig::default`] is what `upcase serve`
/// uses with no flags.
#[derive(Clone)]
pub struct ServerConfig {
    /// TCP addresses to listen on, as `host:port`. An empty host (`":65432"`) means all IPv4
    /// interfaces, as in the lecture; `[::]:port` means all IPv6 ones. Host names are resolved,
    /// and every address a name resolves to is bound. Port 0 picks a free port.
    /// Default: `127.0.0.1:65432`.
    pub tcp: Vec<String>,
    /// UDP addresses, as for `tcp`. Default: `127.0.0.1:9876`.
    pub udp: Vec<String>,
    /// Length of the queue of connections not yet accepted (`listen(2)`'s backlog). Default
    /// 4096. The kernel clamps it to `net.core.somaxconn`; the server logs a warning when it does.
    pub backlog: u32,
    /// `SO_REUSEADDR` on listening sockets, so a restart can bind while old connections linger
    /// in `TIME_WAIT`. Default on.
    pub reuse_address: bool,
    /// `SO_REUSEPORT`: several processes may bind the same address, and the kernel spreads
    /// connections and datagrams between them. Default off.
    pub reuse_port: bool,
    /// `IPV6_V6ONLY` on IPv6 sockets: `Some(true)` serves IPv6 only, `Some(false)` also accepts
    /// IPv4-mapped peers, `None` keeps the system default.
    pub only_v6: Option<bool>,
    /// `TCP_NODELAY` on accepted connections, so small replies are not held back by Nagle's
    /// algorithm. Default on.
    pub nodelay: bool,
    /// `SO_KEEPALIVE` with these parameters on accepted connections. Default off.
    pub keepalive: Option<Keepalive>,
    /// `SO_RCVBUF` on every socket, in bytes. Default: the system's.
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF` on every socket, in bytes. Default: the system's.
    pub send_buffer_size: Option<usize>,
    /// A connection that sends nothing for this long is closed. Default 60 s. Checked by the
    /// workers every quarter of the shortest timeout (50 ms to 1 s), so a connection may live
    /// up to that much longer.
    pub idle_timeout: Option<Duration>,
    /// A connection whose replies make no progress for this long is closed: a peer that sends
    /// but never reads cannot hold memory forever. Default 30 s.
    pub write_timeout: Option<Duration>,
    /// Most connections served at once. Further ones get `error: too many connections` and are
    /// closed. Default 16384.
    pub max_connections: usize,
    /// `lines` (default) or `raw` framing on TCP.
    pub framing: Framing,
    /// Longest line, in content bytes (the `\n` excluded). Default 8192.
    pub max_line: usize,
    /// Replies are batched in a buffer of this many bytes (one per worker) before each write.
    /// Default 64 KiB; at least 1. A connection whose peer does not read keeps at most this
    /// much unsent.
    pub staging: usize,
    /// Event-driven TCP worker threads. Default (`None`): one per core.
    pub workers: Option<usize>,
    /// How long a graceful shutdown waits for connections to finish their replies. Default 5 s.
    pub drain_timeout: Duration,
    /// Largest UDP request accepted, in bytes; larger ones are dropped. Default and maximum
    /// 65507, the IPv4 UDP payload limit.
    pub max_datagram: usize,
    /// Drop UDP requests whose reply would be longer than the request, so the server cannot
    /// amplify traffic towards a spoofed source. Default off (see `PROTOCOL.md` §3).
    pub udp_no_amplify: bool,
    /// Makes the reply function. Default: [`Uppercase`].
    pub transform: TransformFactory,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tcp: vec!["127.0.0.1:65432".into()],
            udp: vec!["127.0.0.1:9876".into()],
            backlog: 4096,
            reuse_address: true,
            reuse_port: false,
            only_v6: None,
            nodelay: true,
            keepalive: None,
            recv_buffer_size: None,
            send_buffer_size: None,
            idle_timeout: Some(Duration::from_secs(60)),
            write_timeout: Some(Duration::from_secs(30)),
            max_connections: 16384,
            framing: Framing::Lines,
            max_line: 8192,
            staging: 64 * 1024,
            workers: None,
            drain_timeout: Duration::from_secs(5),
            max_datagram: MAX_UDP_PAYLOAD,
            udp_no_amplify: false,
            transform: Arc::new(|| Box::new(Uppercase::new())),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("tcp", &self.tcp)
            .field("udp", &self.udp)
            .field("backlog", &self.backlog)
            .field("framing", &self.framing)
            .field("max_line", &self.max_line)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// The largest UDP payload over IPv4: 65535 − 8 (UDP header) − 20 (IPv4 header).
pub const MAX_UDP_PAYLOAD: usize = 65507;
