//! `upcase`: the uppercase service's command line. `upcase serve` runs the server (the default
//! when no subcommand is given); `upcase send` is a client.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use upcase_std::{
    ClientError, ErrorReply, Framing, RequestError, Server, ServerConfig, TcpClient, UdpClient,
    defaults,
};

const LONG_ABOUT: &str = "\
The uppercase service from the sockets lecture: a client sends a line, the server sends it back
in uppercase (full Unicode: ß becomes SS). Over TCP replies come line by line; over UDP each
datagram gets one reply datagram. The protocol is specified in PROTOCOL.md.

With no subcommand, upcase runs `upcase serve` with the flags given.

Examples:
  upcase                                  serve TCP 127.0.0.1:65432 and UDP 127.0.0.1:9876
  upcase serve --lecture                  serve the lecture's Python and Java clients
  upcase serve --tcp [::1]:0 --no-udp     serve TCP on IPv6 loopback, on a free port
  upcase send hello world                 prints HELLO WORLD
  upcase send --udp 'straße'              prints STRASSE, over UDP
  upcase send < lines.txt                 pipelines every line of the file

Logging goes to stderr and is filtered with RUST_LOG (default: info), e.g. RUST_LOG=debug.";

const SERVE_AFTER_HELP: &str = "\
Exit status: 0 after a graceful shutdown (SIGINT or SIGTERM); 1 when a socket cannot be bound or
the server cannot start; 2 for bad arguments; 128 + the signal's number when a second signal
ends a shutdown at once.";

const SEND_AFTER_HELP: &str = "\
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

/// `upcase send`'s exit status when a reply was an error line from the server.
const EXIT_ERROR_REPLY: u8 = 3;
/// `upcase send`'s exit status when a connect or a reply timed out.
const EXIT_TIMEOUT: u8 = 4;
/// The port of the lecture's Java TCP client and server (its Python ones use
/// [`defaults::TCP`]'s 65432, its Java UDP ones [`defaults::UDP`]'s 9876).
const LECTURE_JAVA_TCP: &str = "127.0.0.1:6789";
/// The longest reply `send` accepts: a line of the longest `--max-line` a server can be given,
/// tripled. Allocated as zeroed memory, so only what replies use is ever touched.
const MAX_REPLY: usize = 3 * MAX_LINE_LIMIT as usize;
/// `--keepalive SECS`: the probe interval is SECS too, at most this many seconds.
const KEEPALIVE_MAX_INTERVAL: u64 = 75;
/// `--keepalive SECS`: unanswered probes before the connection is dropped.
const KEEPALIVE_RETRIES: u32 = 5;
/// The largest `--max-line`.
const MAX_LINE_LIMIT: u32 = 16 * 1024 * 1024;

#[derive(Parser)]
#[command(name = "upcase", version, about = "The uppercase service: serve it, or send it lines.", long_about = LONG_ABOUT)]
#[command(args_conflicts_with_subcommands = true, after_help = SERVE_AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
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
    /// Print the man page (roff), e.g. `upcase manpage > ~/.local/share/man/man1/upcase.1`.
    Manpage,
}

#[derive(Clone, Copy, ValueEnum)]
enum FramingArg {
    /// Lines end at \n; each gets transform(line) + \n back.
    Lines,
    /// No framing: every chunk received is uppercased and sent back at once (the lecture's
    /// Python server; its client sends no newline).
    Raw,
}

#[derive(Args)]
struct ServeArgs {
    /// TCP address to listen on, as `HOST:PORT`, `[::1]:PORT` or `:PORT`; repeatable. An empty
    /// host (":65432") means all IPv4 interfaces; port 0 picks a free port.
    /// [default: 127.0.0.1:65432]
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    tcp: Vec<String>,
    /// UDP address to listen on, in the same forms; repeatable. [default: 127.0.0.1:9876]
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    udp: Vec<String>,
    /// Serve the lecture's three clients at once: the same as `--framing raw --tcp
    /// 127.0.0.1:65432 --tcp 127.0.0.1:6789 --udp 127.0.0.1:9876`. Raw framing answers the
    /// Python client, which sends no newline, and the Java TCP client's lines alike.
    #[arg(long, conflicts_with_all = ["tcp", "udp", "no_tcp", "no_udp", "framing"])]
    lecture: bool,
    /// Serve no TCP.
    #[arg(long, conflicts_with = "tcp")]
    no_tcp: bool,
    /// Serve no UDP.
    #[arg(long, conflicts_with = "udp")]
    no_udp: bool,
    /// TCP framing.
    #[arg(long, value_enum, default_value = "lines")]
    framing: FramingArg,
    /// Longest line in bytes, \n excluded. Longer lines get `error: line too long`. Not used
    /// with --framing raw, which reads 64 KiB at a time.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::MAX_LINE as u32, value_parser = clap::value_parser!(u32).range(1..=MAX_LINE_LIMIT as i64))]
    max_line: u32,
    /// Listen backlog (clamped by the kernel to net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = defaults::BACKLOG)]
    backlog: u32,
    /// Set SO_REUSEPORT, so several servers can share the address.
    #[arg(long)]
    reuse_port: bool,
    /// Set IPV6_V6ONLY on IPv6 sockets: do not accept IPv4-mapped peers.
    #[arg(long)]
    ipv6_only: bool,
    /// Most TCP connections at once; more get `error: too many connections`.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_conns: u32,
    /// Reply bytes buffered across all connections for clients that read slowly; past it,
    /// reading slows down until they drain.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::REPLY_BUDGET)]
    reply_budget: usize,
    /// Worker threads, each an event loop serving TCP and UDP. [default: one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: Option<u32>,
    /// Close a connection that sends nothing for this many seconds (0: never).
    #[arg(long, value_name = "SECS", default_value_t = defaults::IDLE_TIMEOUT.as_secs())]
    idle_timeout: u64,
    /// Close a connection whose reply cannot be written for this many seconds (0: never).
    #[arg(long, value_name = "SECS", default_value_t = defaults::WRITE_TIMEOUT.as_secs())]
    write_timeout: u64,
    /// On SIGINT/SIGTERM, wait at most this long for replies to be delivered (any value up to
    /// 18446744073709551615; a huge one means no deadline). A second signal exits at once.
    #[arg(long, value_name = "SECS", default_value_t = defaults::DRAIN_TIMEOUT.as_secs())]
    drain_timeout: u64,
    /// When the server closes a connection, keep discarding the client's input for at most
    /// this long, so replies in flight are not destroyed by a reset.
    #[arg(long, value_name = "SECS", default_value_t = defaults::LINGER_TIMEOUT.as_secs())]
    linger_timeout: u64,
    /// Drop UDP requests whose reply would be longer than the request (no amplification).
    #[arg(long)]
    udp_no_amplify: bool,
    /// Answer UDP requests from source ports below 1024 (echo, DNS, NTP live there; off by
    /// default against reflection loops).
    #[arg(long)]
    udp_allow_low_ports: bool,
    /// Enable TCP keepalive: first probe after this many idle seconds.
    #[arg(long, value_name = "SECS")]
    keepalive: Option<u64>,
    /// SO_RCVBUF for every socket, in bytes.
    #[arg(long, value_name = "BYTES")]
    recv_buffer: Option<usize>,
    /// SO_SNDBUF for every socket, in bytes.
    #[arg(long, value_name = "BYTES")]
    send_buffer: Option<usize>,
}

#[derive(Args)]
struct SendArgs {
    /// Server address, as `HOST:PORT`, `[::1]:PORT` or `:PORT` (127.0.0.1:PORT).
    /// [default: 127.0.0.1:65432, or 127.0.0.1:9876 with --udp]
    #[arg(long, value_name = "HOST:PORT", value_parser = send_addr)]
    addr: Option<String>,
    /// Use UDP: one datagram per line.
    #[arg(long)]
    udp: bool,
    /// Give up on a connect, or on a reply overdue by this many seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = positive_secs)]
    timeout: Duration,
    /// Words to send, joined by spaces into one line; any bytes but \n (they need not be
    /// UTF-8). Without them, every line of stdin is sent (pipelined over TCP) and every reply
    /// printed, in order.
    #[arg(value_parser = clap::value_parser!(OsString))]
    text: Vec<OsString>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Completions { shell }) => completions(shell),
        Some(Command::Manpage) => manpage(),
        Some(Command::Send(args)) => {
            init_logging();
            return send(args);
        }
        Some(Command::Serve(args)) => {
            init_logging();
            serve(args)
        }
        None => {
            init_logging();
            serve(cli.serve)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("upcase: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Logs to stderr, filtered by RUST_LOG (default `info`). A log line that cannot be written
/// (stderr closed, or a pipe nobody reads) is dropped: logging never stops the server.
fn init_logging() {
    struct Stderr;
    impl Write for Stderr {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = std::io::stderr().write_all(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (filter, bad) = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(f) => (f, None),
        Err(e) => (
            tracing_subscriber::EnvFilter::new("info"),
            std::env::var_os("RUST_LOG").map(|_| e),
        ),
    };
    tracing_subscriber::fmt()
        .with_writer(|| Stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    if let Some(e) = bad {
        tracing::warn!(error = %e, "RUST_LOG is not a valid filter; logging at info");
    }
}

/// Process policy, which the library leaves to the program: every connection holds a file
/// descriptor, so the soft limit is raised to the hard one; and a backlog over
/// `net.core.somaxconn` is clamped by the kernel, which is worth a warning.
fn prepare_process(backlog: u32) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "raised the soft file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn");
    if let Some(max) = somaxconn.ok().and_then(|t| t.trim().parse::<u32>().ok())
        && backlog > max
    {
        tracing::warn!(
            backlog,
            somaxconn = max,
            "the kernel clamps the listen backlog to net.core.somaxconn"
        );
    }
}

/// SIGINT and SIGTERM, installed before the sockets are bound so that no signal in between
/// kills the process unannounced. The first begins a graceful shutdown; a second ends the
/// process at once, with status 128 + the signal's number.
fn install_signals(handle: std::sync::mpsc::Receiver<upcase_std::ShutdownHandle>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        let mut signals = signals.forever();
        let Some(first) = signals.next() else { return };
        tracing::info!(
            signal = first,
            "shutting down gracefully; a second signal exits at once"
        );
        match handle.recv() {
            Ok(h) => h.shutdown(),
            Err(_) => std::process::exit(128 + first),
        }
        if let Some(second) = signals.next() {
            tracing::warn!(
                signal = second,
                "second signal: exiting now, without draining"
            );
            std::process::exit(128 + second);
        }
    });
    Ok(())
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let (give_handle, handle) = std::sync::mpsc::channel();
    install_signals(handle)?;
    let mut config = ServerConfig::new();
    let pick = |given: Vec<String>, off: bool, default: Vec<String>| match (off, given.is_empty()) {
        (true, _) => Vec::new(),
        (false, true) => default,
        (false, false) => given,
    };
    let addresses = &mut config.addresses;
    if args.lecture {
        addresses.tcp = vec![defaults::TCP.to_owned(), LECTURE_JAVA_TCP.to_owned()];
        addresses.udp = vec![defaults::UDP.to_owned()];
    } else {
        addresses.tcp = pick(args.tcp, args.no_tcp, std::mem::take(&mut addresses.tcp));
        addresses.udp = pick(args.udp, args.no_udp, std::mem::take(&mut addresses.udp));
    }
    let socket = &mut config.socket;
    socket.backlog = args.backlog;
    socket.reuse_port = args.reuse_port;
    socket.only_v6 = args.ipv6_only.then_some(true);
    socket.keepalive = args.keepalive.map(|s| {
        upcase_std::Keepalive::new(
            Duration::from_secs(s.max(1)),
            Duration::from_secs(s.clamp(1, KEEPALIVE_MAX_INTERVAL)),
            KEEPALIVE_RETRIES,
        )
    });
    socket.recv_buffer_size = args.recv_buffer;
    socket.send_buffer_size = args.send_buffer;
    let limits = &mut config.limits;
    limits.framing = match (args.lecture, args.framing) {
        (false, FramingArg::Lines) => Framing::Lines,
        (true, _) | (_, FramingArg::Raw) => Framing::Raw,
    };
    limits.max_line = args.max_line as usize;
    limits.max_connections = args.max_conns as usize;
    limits.reply_budget = args.reply_budget;
    limits.udp_no_amplify = args.udp_no_amplify;
    limits.udp_guard.low_ports = args.udp_allow_low_ports;
    let runtime = &mut config.runtime;
    runtime.workers = args.workers.map(|w| w as usize);
    runtime.idle_timeout = secs(args.idle_timeout);
    runtime.write_timeout = secs(args.write_timeout);
    runtime.drain_timeout = Duration::from_secs(args.drain_timeout);
    runtime.linger_timeout = Duration::from_secs(args.linger_timeout);
    prepare_process(config.socket.backlog);
    let server = Server::bind(config)?;
    let _ = give_handle.send(server.shutdown_handle());
    // The ready signal: one line per socket, and nothing else ever goes to stdout.
    let mut out = std::io::stdout().lock();
    for a in server.tcp_addrs() {
        writeln!(out, "listening tcp {a}")?;
    }
    for a in server.udp_addrs() {
        writeln!(out, "listening udp {a}")?;
    }
    out.flush()?;
    drop(out);
    server.run()?;
    Ok(ExitCode::SUCCESS)
}

fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    clap_complete::generate(shell, &mut Cli::command(), "upcase", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

fn manpage() -> Result<ExitCode> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(ExitCode::SUCCESS)
}

/// `--timeout`: a positive number of seconds, fractions allowed.
fn positive_secs(s: &str) -> std::result::Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a positive number of seconds, e.g. 5 or 0.5".to_owned())
}

/// Why `upcase send` stopped before every line was answered: its exit status and its words.
struct Stop {
    code: u8,
    message: String,
}

impl Stop {
    fn failure(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

/// Where `send` prints the replies: stdout, one line per reply, error replies included.
struct Replies<'a> {
    out: std::io::StdoutLock<'a>,
    interactive: bool,
    /// Replies printed, error replies included.
    count: usize,
    /// Of those, error replies.
    errors: usize,
    first_error: Option<ErrorReply>,
}

impl Replies<'_> {
    fn print(&mut self, line: &[u8]) -> std::result::Result<(), Stop> {
        let mut write = || -> std::io::Result<()> {
            self.out.write_all(line)?;
            self.out.write_all(b"\n")?;
            if self.interactive {
                self.out.flush()?;
            }
            Ok(())
        };
        write().map_err(|e| Stop::failure(format!("writing stdout: {e}")))?;
        self.count += 1;
        Ok(())
    }

    /// An error reply goes to stdout as the server sent it, in its place among the replies.
    fn print_error(&mut self, e: ErrorReply) -> std::result::Result<(), Stop> {
        self.print(e.reply().strip_suffix(b"\n").unwrap_or_default())?;
        self.errors += 1;
        self.first_error.get_or_insert(e);
        Ok(())
    }
}

/// `upcase send`: the exit status is 0, 1, 3 or 4 as `SEND_AFTER_HELP` says (clap exits 2).
fn send(args: SendArgs) -> ExitCode {
    let mut replies = Replies {
        out: std::io::stdout().lock(),
        interactive: std::io::stdout().is_terminal(),
        count: 0,
        errors: 0,
        first_error: None,
    };
    let stop = send_all(&args, &mut replies)
        .and_then(|()| {
            replies
                .out
                .flush()
                .map_err(|e| Stop::failure(format!("writing stdout: {e}")))
        })
        .err();
    if let Some(first) = replies.first_error {
        let first = String::from_utf8_lossy(first.reply());
        let first = first.trim_end();
        match (replies.errors, replies.count) {
            (_, 1) => eprintln!("upcase: the server's reply was an error line ({first})"),
            (1, of) => eprintln!("upcase: 1 of {of} replies was an error line ({first})"),
            (n, of) => {
                eprintln!("upcase: {n} of {of} replies were error lines (the first: {first})")
            }
        }
    }
    match stop {
        Some(stop) => {
            eprintln!("upcase: {}", stop.message);
            ExitCode::from(stop.code)
        }
        None if replies.errors > 0 => ExitCode::from(EXIT_ERROR_REPLY),
        None => ExitCode::SUCCESS,
    }
}

/// The exit status and the words for a client error talking to `addr`.
fn client_stop(addr: &str, udp: bool, timeout: Duration, e: &ClientError) -> Stop {
    use std::io::ErrorKind::{ConnectionRefused, TimedOut};
    let io_kind = match e {
        ClientError::Connect(io) | ClientError::Request(RequestError::Io(io)) => Some(io.kind()),
        _ => None,
    };
    let timed_out = matches!(e, ClientError::TimedOut) || io_kind == Some(TimedOut);
    let hint = match (io_kind, udp) {
        (Some(ConnectionRefused), false) => {
            "; nothing listens on TCP there (for a UDP server, add --udp)".to_owned()
        }
        (Some(ConnectionRefused), true) => "; nothing listens on UDP there".to_owned(),
        _ if timed_out && udp => format!(
            " ({} s; the datagram or its reply was lost, or the server dropped it)",
            timeout.as_secs_f64()
        ),
        _ if timed_out => format!(" ({} s)", timeout.as_secs_f64()),
        _ => String::new(),
    };
    Stop {
        code: if timed_out { EXIT_TIMEOUT } else { 1 },
        message: format!("{addr}: {e}{hint}"),
    }
}

fn send_all(args: &SendArgs, replies: &mut Replies<'_>) -> std::result::Result<(), Stop> {
    use std::os::unix::ffi::OsStrExt;
    let timeout = args.timeout;
    let addr = match (&args.addr, args.udp) {
        (Some(addr), _) => addr.clone(),
        (None, false) => defaults::TCP.to_owned(),
        (None, true) => defaults::UDP.to_owned(),
    };
    let target: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| Stop::failure(format!("cannot resolve {addr}: {e}")))?
        .collect();
    let fail = |e: ClientError| client_stop(&addr, args.udp, timeout, &e);

    if !args.text.is_empty() {
        let line = args.text.join(std::ffi::OsStr::new(" "));
        let line = line.as_bytes();
        if args.udp {
            let mut client = UdpClient::connect(&target[..], timeout).map_err(fail)?;
            let reply = client.request(line).map_err(fail)?;
            return replies.print(reply);
        }
        if line.contains(&b'\n') {
            return Err(Stop {
                code: 2,
                message: "over TCP the words make one line, so they cannot contain a newline \
                          (send several lines on stdin)"
                    .to_owned(),
            });
        }
        let mut client = TcpClient::connect(&target[..], timeout)
            .map_err(fail)?
            .with_max_reply(MAX_REPLY);
        return match client.request(line) {
            Ok(reply) => replies.print(reply),
            Err(ClientError::Request(RequestError::Rejected(e))) => replies.print_error(e),
            Err(e) => Err(fail(e)),
        };
    }

    if args.udp {
        let mut client = UdpClient::connect(&target[..], timeout).map_err(fail)?;
        for line in std::io::stdin().lock().split(b'\n') {
            let line = line.map_err(|e| Stop::failure(format!("reading stdin: {e}")))?;
            replies.print(client.request(&line).map_err(fail)?)?;
        }
        return Ok(());
    }

    // TCP, pipelined: a thread sends stdin as fast as it comes while replies are read here. It
    // is not joined when the server closes first: it may be waiting for stdin (a terminal), and
    // the process ends without it. So the client lives as long as the process.
    let client = TcpClient::connect(&target[..], timeout)
        .map_err(fail)?
        .with_max_reply(MAX_REPLY);
    let client: &'static mut TcpClient = Box::leak(Box::new(client));
    let (mut tx, mut rx) = client.split();
    let sent = Arc::new(AtomicUsize::new(0));
    // Set just before the half-close: the server closes after it unless it closes first.
    let finishing = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (sent, finishing, addr) = (sent.clone(), finishing.clone(), addr.clone());
        move || -> std::result::Result<(), Stop> {
            for line in std::io::stdin().lock().split(b'\n') {
                let line = line.map_err(|e| Stop::failure(format!("reading stdin: {e}")))?;
                tx.send_line(&line)
                    .map_err(|e| client_stop(&addr, false, timeout, &e))?;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            finishing.store(true, Ordering::SeqCst);
            tx.finish()
                .map_err(|e| Stop::failure(format!("{addr}: network error: {e}")))
        }
    });
    // The reply count when a read last timed out with a line outstanding: a second timeout with
    // no reply in between means that line is overdue by at least `timeout`.
    let mut overdue_at = None;
    loop {
        match rx.recv_line() {
            Ok(reply) => replies.print(reply)?,
            Err(ClientError::Request(RequestError::Rejected(e))) => replies.print_error(e)?,
            Err(ClientError::Request(RequestError::UnexpectedEof)) => break,
            Err(ClientError::TimedOut) => {
                if sent.load(Ordering::SeqCst) <= replies.count {
                    overdue_at = None; // every line is answered: waiting for stdin, not the server
                } else if overdue_at == Some(replies.count) {
                    return Err(fail(ClientError::TimedOut));
                } else {
                    overdue_at = Some(replies.count);
                }
                continue;
            }
            Err(e) => return Err(fail(e)),
        }
        overdue_at = None;
    }
    let early = if finishing.load(Ordering::SeqCst) {
        writer
            .join()
            .map_err(|_| Stop::failure("the stdin thread panicked"))??;
        let sent = sent.load(Ordering::SeqCst);
        (replies.count < sent).then(|| format!("after {} of {sent} replies", replies.count))
    } else {
        Some(format!(
            "after {} {}, before all of stdin was sent",
            replies.count,
            if replies.count == 1 {
                "reply"
            } else {
                "replies"
            }
        ))
    };
    match early {
        // A refusal or a shutdown said why in an error reply.
        Some(when) => Err(Stop {
            code: if replies.errors > 0 {
                EXIT_ERROR_REPLY
            } else {
                1
            },
            message: format!("{addr}: the server closed the connection {when}"),
        }),
        None => Ok(()),
    }
}
