//! The command line's grammar: the subcommands, their flags and defaults, the help texts, and
//! the value parsers. A malformed value is a usage error (exit 2) found here, before anything runs.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::time::Duration;
use upcase_std::defaults;

/// `upcase --help`'s text, with the default addresses from [`defaults`].
fn long_about() -> String {
    LONG_ABOUT
        .replace("{TCP}", defaults::TCP)
        .replace("{UDP}", defaults::UDP)
}

const LONG_ABOUT: &str = "\
The uppercase service from the sockets lecture: a client sends a line, the server sends it back
in uppercase (full Unicode: ß becomes SS). Over TCP replies come line by line; over UDP each
datagram gets one reply datagram. The protocol is specified in PROTOCOL.md.

With no subcommand, upcase runs `upcase serve` with the flags given.

Examples:
  upcase                                  serve TCP {TCP} and UDP {UDP}
  upcase serve --lecture                  serve the lecture's Python and Java clients
  upcase serve --tcp [::1]:0 --no-udp     serve TCP on IPv6 loopback, on a free port
  upcase send hello world                 prints HELLO WORLD
  upcase send --udp 'straße'              prints STRASSE, over UDP
  upcase send < lines.txt                 pipelines every line of the file

Logging goes to stderr and is filtered with RUST_LOG (default: info), e.g. RUST_LOG=debug.";

pub(crate) const SERVE_AFTER_HELP: &str = "\
Exit status: 0 after a graceful shutdown (SIGINT or SIGTERM); 1 when a socket cannot be bound or
the server cannot start; 2 for bad arguments; 128 + the signal's number when a second signal
ends a shutdown at once.";

pub(crate) const SEND_AFTER_HELP: &str = "\
stdout gets one line per reply, in order, error replies from the server included (as nc shows
them: `error: line too long`); everything else goes to stderr.

Exit status:
  0  every request got a normal reply
  1  no connection (refused, or no such host), a network error, or the server closed
     before every line was answered
  2  bad arguments
  3  at least one reply was an error line from the server (a note on stderr says how many)
  4  a connect or a reply took longer than --timeout (over UDP: the datagram or its reply
     was lost, or the server dropped it)";

/// The port of the lecture's Java TCP client and server (its Python ones use
/// [`defaults::TCP`]'s 65432, its Java UDP ones [`defaults::UDP`]'s 9876).
pub(crate) const LECTURE_JAVA_TCP: &str = "127.0.0.1:6789";
/// `send --timeout`'s default, in seconds.
const SEND_TIMEOUT: &str = "5";
/// The largest `--max-line`.
pub(crate) const MAX_LINE_LIMIT: u32 = 16 * 1024 * 1024;

#[derive(Parser)]
#[command(name = "upcase", version, about = "The uppercase service: serve it, or send it lines.", long_about = long_about())]
#[command(args_conflicts_with_subcommands = true, after_help = SERVE_AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the server (the default). Prints one `listening tcp|udp ADDR` line per socket on
    /// stdout once all are bound, then serves until SIGINT or SIGTERM.
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(ServeArgs),
    /// Send lines to a server and print the replies.
    #[command(after_help = SEND_AFTER_HELP)]
    Send(SendArgs),
    /// Print a shell completion script, e.g. `upcase completions bash > ~/.local/share/bash-completion/completions/upcase`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page upcase(1) (roff), or with --dir write every page: upcase(1),
    /// upcase-serve(1), upcase-send(1), upcase-completions(1) and upcase-manpage(1).
    Manpage {
        /// Write every page into this directory (created if missing), e.g.
        /// ~/.local/share/man/man1, and print the path of each.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FramingArg {
    /// Lines end at \n; each gets transform(line) + \n back.
    Lines,
    /// No framing: every chunk received is uppercased and sent back at once (the lecture's
    /// Python server; its client sends no newline).
    Raw,
}

/// `--io`: the kernel interface of the workers.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum IoArg {
    /// io_uring where the kernel allows it, epoll otherwise; the log says which and why.
    Auto,
    /// io_uring (Linux 5.11 or later); the server exits 1 with the reason where it cannot run.
    Uring,
    /// epoll (kqueue on macOS and the BSDs).
    Epoll,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    // The help texts name the defaults from `upcase_std::defaults`, so they are built at run time.
    #[arg(long, value_name = "ADDR", value_parser = listen_addr, help = format!(
        "TCP address to listen on, as `HOST:PORT`, `[::1]:PORT` or `:PORT`; repeatable. An empty \
         host (\":PORT\") means all IPv4 interfaces; port 0 picks a free port. [default: {}]",
        defaults::TCP
    ))]
    pub(crate) tcp: Vec<String>,
    #[arg(long, value_name = "ADDR", value_parser = listen_addr, help = format!(
        "UDP address to listen on, in the same forms; repeatable. [default: {}]",
        defaults::UDP
    ))]
    pub(crate) udp: Vec<String>,
    #[arg(long, conflicts_with_all = ["tcp", "udp", "no_tcp", "no_udp", "framing"], help = format!(
        "Serve the lecture's three clients at once: the same as `--framing raw --tcp {} --tcp {} \
         --udp {}`. Raw framing answers the Python client, which sends no newline, and the Java \
         TCP client's lines alike.",
        defaults::TCP, LECTURE_JAVA_TCP, defaults::UDP
    ))]
    pub(crate) lecture: bool,
    /// Serve no TCP. With --no-udp too there would be nothing to serve: a usage error.
    #[arg(long, conflicts_with_all = ["tcp", "no_udp"])]
    pub(crate) no_tcp: bool,
    /// Serve no UDP.
    #[arg(long, conflicts_with = "udp")]
    pub(crate) no_udp: bool,
    /// TCP framing.
    #[arg(long, value_enum, default_value = "lines")]
    pub(crate) framing: FramingArg,
    /// Longest line in bytes, \n excluded. Longer lines get `error: line too long`. Not used
    /// with --framing raw, which reads 64 KiB at a time.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::MAX_LINE as u32, value_parser = clap::value_parser!(u32).range(1..=MAX_LINE_LIMIT as i64))]
    pub(crate) max_line: u32,
    /// Listen backlog (clamped by the kernel to net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = defaults::BACKLOG)]
    pub(crate) backlog: u32,
    /// Set SO_REUSEPORT, so several servers can share the address.
    #[arg(long)]
    pub(crate) reuse_port: bool,
    /// Set IPV6_V6ONLY on IPv6 sockets: do not accept IPv4-mapped peers.
    #[arg(long)]
    pub(crate) ipv6_only: bool,
    /// Most TCP connections at once; more get `error: too many connections`.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_conns: u32,
    /// Reply bytes buffered across all connections for clients that read slowly; past it,
    /// reading slows down until they drain.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::REPLY_BUDGET)]
    pub(crate) reply_budget: usize,
    /// How the workers wait for their sockets: io_uring (completions, one system call per loop
    /// turn for all connections) or epoll (readiness).
    #[arg(long, value_enum, default_value = "auto", env = "UPCASE_IO")]
    pub(crate) io: IoArg,
    /// Worker threads, each an event loop serving TCP and UDP. [default: one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) workers: Option<u32>,
    /// Close a connection that sends nothing for this many seconds (0: never).
    #[arg(long, value_name = "SECS", default_value_t = defaults::IDLE_TIMEOUT.as_secs())]
    pub(crate) idle_timeout: u64,
    /// Close a connection whose reply cannot be written for this many seconds (0: never).
    #[arg(long, value_name = "SECS", default_value_t = defaults::WRITE_TIMEOUT.as_secs())]
    pub(crate) write_timeout: u64,
    /// On SIGINT/SIGTERM, wait at most this long for replies to be delivered (any value up to
    /// 18446744073709551615; a huge one means no deadline). A second signal exits at once.
    #[arg(long, value_name = "SECS", default_value_t = defaults::DRAIN_TIMEOUT.as_secs())]
    pub(crate) drain_timeout: u64,
    /// When the server closes a connection, keep discarding the client's input for at most
    /// this long, so replies in flight are not destroyed by a reset.
    #[arg(long, value_name = "SECS", default_value_t = defaults::LINGER_TIMEOUT.as_secs())]
    pub(crate) linger_timeout: u64,
    /// Drop UDP requests whose reply would be longer than the request (no amplification).
    #[arg(long)]
    pub(crate) udp_no_amplify: bool,
    /// Answer UDP requests from source ports below 1024 (echo, DNS, NTP live there; off by
    /// default against reflection loops).
    #[arg(long)]
    pub(crate) udp_allow_low_ports: bool,
    /// Enable TCP keepalive: first probe after this many idle seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) keepalive: Option<u64>,
    /// SO_RCVBUF for every socket, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub(crate) recv_buffer: Option<usize>,
    /// SO_SNDBUF for every socket, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub(crate) send_buffer: Option<usize>,
}

#[derive(Args)]
pub(crate) struct SendArgs {
    #[arg(long, value_name = "HOST:PORT", value_parser = send_addr, help = format!(
        "Server address, as `HOST:PORT`, `[::1]:PORT` or `:PORT` (127.0.0.1:PORT). \
         [default: {}, or {} with --udp]",
        defaults::TCP, defaults::UDP
    ))]
    pub(crate) addr: Option<String>,
    /// Use UDP: one datagram per line.
    #[arg(long)]
    pub(crate) udp: bool,
    /// Give up on a connect, or on a reply overdue by this many seconds.
    #[arg(long, value_name = "SECS", default_value = SEND_TIMEOUT, value_parser = positive_secs)]
    pub(crate) timeout: Duration,
    /// Words to send, joined by spaces into one line; any bytes but \n (they need not be
    /// UTF-8). Without them, every line of stdin is sent (pipelined over TCP) and every reply
    /// printed, in order.
    #[arg(value_parser = clap::value_parser!(OsString))]
    pub(crate) text: Vec<OsString>,
}

/// The address forms the command line takes, for error messages.
const ADDR_FORMS: &str = "expected HOST:PORT, [IPV6]:PORT or :PORT \
                          (e.g. 127.0.0.1:65432, localhost:65432, [::1]:65432, :65432)";

/// Checks the form of a `--tcp`/`--udp` address: `HOST:PORT`, `[IPV6]:PORT` or `:PORT`, where
/// `HOST` is an IPv4 address or a name (resolved when the server binds) and `PORT` a number up
/// to 65535. A malformed value is a usage error (exit 2), not a bind failure.
fn listen_addr(s: &str) -> std::result::Result<String, String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("no port; {ADDR_FORMS}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("{port:?} is not a port (0 to 65535); {ADDR_FORMS}"));
    }
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None if host.contains(':') => {
            return Err(format!("an IPv6 address goes in brackets; {ADDR_FORMS}"));
        }
        None => host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
    };
    if !host_ok {
        return Err(format!(
            "{host:?} is not a host name or address; {ADDR_FORMS}"
        ));
    }
    Ok(s.to_owned())
}

/// `send --addr`: the forms of [`listen_addr`], where `:PORT` means `127.0.0.1:PORT`.
fn send_addr(s: &str) -> std::result::Result<String, String> {
    let s = listen_addr(s)?;
    Ok(match s.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => s,
    })
}

/// `--timeout`: a positive number of seconds, fractions allowed.
fn positive_secs(s: &str) -> std::result::Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a positive number of seconds, e.g. 5 or 0.5".to_owned())
}
