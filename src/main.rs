//! `upcase`: the uppercase service's command line. `upcase serve` runs the server (the default
//! when no subcommand is given); `upcase send` is a client.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;
use upcase_std::{ClientError, Framing, Server, ServerConfig, TcpClient, UdpClient, defaults};

const LONG_ABOUT: &str = "\
The uppercase service from the sockets lecture: a client sends a line, the server sends it back
in uppercase (full Unicode: ß becomes SS). Over TCP replies come line by line; over UDP each
datagram gets one reply datagram. The protocol is specified in PROTOCOL.md.

With no subcommand, upcase runs `upcase serve` with the flags given.

Examples:
  upcase                                  serve TCP 127.0.0.1:65432 and UDP 127.0.0.1:9876
  upcase serve --tcp [::1]:0 --no-udp     serve TCP on IPv6 loopback, on a free port
  upcase send hello world                 prints HELLO WORLD
  upcase send --udp 'straße'              prints STRASSE, over UDP
  upcase send < lines.txt                 pipelines every line of the file

Logging goes to stderr and is filtered with RUST_LOG (default: info), e.g. RUST_LOG=debug.";

#[derive(Parser)]
#[command(name = "upcase", version, about = "The uppercase service: serve it, or send it lines.", long_about = LONG_ABOUT)]
#[command(args_conflicts_with_subcommands = true)]
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
    Serve(ServeArgs),
    /// Send lines to a server and print the replies.
    Send(SendArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum FramingArg {
    /// Lines end at \n; each gets transform(line) + \n back.
    Lines,
    /// No framing: every chunk received is uppercased and sent back at once (the lecture's
    /// Python server).
    Raw,
}

#[derive(Args)]
struct ServeArgs {
    /// TCP address to listen on; repeatable. An empty host (":65432") means all IPv4
    /// interfaces; port 0 picks a free port. [default: 127.0.0.1:65432]
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<String>,
    /// UDP address to listen on; repeatable. [default: 127.0.0.1:9876]
    #[arg(long, value_name = "ADDR")]
    udp: Vec<String>,
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
    #[arg(long, value_name = "BYTES", default_value_t = defaults::MAX_LINE as u32, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
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
    /// Server address. [default: 127.0.0.1:65432, or 127.0.0.1:9876 with --udp]
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// Use UDP: one datagram per line.
    #[arg(long)]
    udp: bool,
    /// Give up on a connect or a reply after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    /// Words to send, joined by spaces into one line. Without them, every line of stdin is
    /// sent (pipelined over TCP) and every reply printed, in order.
    text: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Send(args)) => send(args),
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
    let d = ServerConfig::default();
    let pick = |given: Vec<String>, off: bool, default: Vec<String>| match (off, given.is_empty()) {
        (true, _) => Vec::new(),
        (false, true) => default,
        (false, false) => given,
    };
    let config = ServerConfig {
        addresses: upcase_std::Addresses {
            tcp: pick(args.tcp, args.no_tcp, d.addresses.tcp.clone()),
            udp: pick(args.udp, args.no_udp, d.addresses.udp.clone()),
        },
        socket: upcase_std::SocketOptions {
            backlog: args.backlog,
            reuse_port: args.reuse_port,
            only_v6: args.ipv6_only.then_some(true),
            keepalive: args.keepalive.map(|s| upcase_std::Keepalive {
                time: Duration::from_secs(s.max(1)),
                interval: Duration::from_secs(s.clamp(1, 75)),
                retries: 5,
            }),
            recv_buffer_size: args.recv_buffer,
            send_buffer_size: args.send_buffer,
            ..d.socket
        },
        limits: upcase_std::Limits {
            framing: match args.framing {
                FramingArg::Lines => Framing::Lines,
                FramingArg::Raw => Framing::Raw,
            },
            max_line: args.max_line as usize,
            max_connections: args.max_conns as usize,
            reply_budget: args.reply_budget,
            udp_no_amplify: args.udp_no_amplify,
            udp_guard: upcase_std::GuardConfig {
                low_ports: args.udp_allow_low_ports,
                ..d.limits.udp_guard
            },
            ..d.limits
        },
        runtime: upcase_std::Runtime {
            workers: args.workers.map(|w| w as usize),
            idle_timeout: secs(args.idle_timeout),
            write_timeout: secs(args.write_timeout),
            drain_timeout: Duration::from_secs(args.drain_timeout),
            linger_timeout: Duration::from_secs(args.linger_timeout),
        },
        ..d
    };
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

fn send(args: SendArgs) -> Result<ExitCode> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or("--timeout must be a positive number of seconds")?;
    let addr = args.addr.unwrap_or_else(|| {
        if args.udp {
            "127.0.0.1:9876"
        } else {
            "127.0.0.1:65432"
        }
        .to_owned()
    });
    let target: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .collect();
    let connect_err = |e: ClientError| format!("{addr}: {e}");
    let mut out = std::io::stdout().lock();
    let interactive = out.is_terminal();
    let print = |out: &mut std::io::StdoutLock<'_>, reply: &[u8]| -> std::io::Result<()> {
        out.write_all(reply)?;
        out.write_all(b"\n")?;
        if interactive { out.flush() } else { Ok(()) }
    };
    let mut failures = 0usize;
    let mut report = |e: ClientError| -> Result<()> {
        match e {
            ClientError::Request(upcase_std::RequestError::Rejected(_))
            | ClientError::Request(upcase_std::RequestError::ReplyTooLong) => {
                eprintln!("upcase: {e}");
                failures += 1;
                Ok(())
            }
            e => Err(format!("{addr}: {e}").into()),
        }
    };

    if !args.text.is_empty() {
        let line = args.text.join(" ");
        let reply = if args.udp {
            let mut c = UdpClient::connect(&target[..], timeout).map_err(connect_err)?;
            c.request(line.as_bytes()).map(<[u8]>::to_vec)
        } else {
            let mut c = TcpClient::connect(&target[..], timeout).map_err(connect_err)?;
            c.request(line.as_bytes()).map(<[u8]>::to_vec)
        };
        match reply {
            Ok(r) => print(&mut out, &r)?,
            Err(e) => report(e)?,
        }
    } else if args.udp {
        let mut c = UdpClient::connect(&target[..], timeout).map_err(connect_err)?;
        for line in std::io::stdin().lock().split(b'\n') {
            match c.request(&line?) {
                Ok(r) => print(&mut out, r)?,
                Err(e) => report(e)?,
            }
        }
    } else {
        let mut c = TcpClient::connect(&target[..], timeout).map_err(connect_err)?;
        let (mut tx, mut rx) = c.split();
        std::thread::scope(|s| -> Result<()> {
            // Pipelining: stdin is sent as fast as it comes while replies are read here.
            let writer = s.spawn(move || -> std::result::Result<(), String> {
                for line in std::io::stdin().lock().split(b'\n') {
                    let line = line.map_err(|e| format!("reading stdin: {e}"))?;
                    tx.send_line(&line).map_err(|e| e.to_string())?;
                }
                tx.finish().map_err(|e| e.to_string())
            });
            loop {
                match rx.recv_line() {
                    Ok(r) => print(&mut out, r)?,
                    Err(ClientError::Request(upcase_std::RequestError::UnexpectedEof)) => break,
                    Err(e) => report(e)?,
                }
            }
            writer.join().map_err(|_| "stdin thread panicked")??;
            Ok(())
        })?;
    }
    out.flush()?;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
