//! `upcase serve`: the process around the library's server. Process policy lives here, never in
//! `upcase-std`: the file descriptor limit, the signals, the ready lines on stdout.

use crate::Result;
use crate::args::{FramingArg, IoArg, LECTURE_JAVA_TCP, ServeArgs};
use crate::notify::{self, Notifier};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::time::Duration;
use upcase_std::{Framing, Io, Server, ServerConfig, ServerCounters, ServerEvent, defaults};

/// `--keepalive SECS`: the probe interval is SECS too, at most this many seconds.
const KEEPALIVE_MAX_INTERVAL: u64 = 75;
/// `--keepalive SECS`: unanswered probes before the connection is dropped.
const KEEPALIVE_RETRIES: u32 = 5;

/// Process policy, which the library leaves to the program: every connection holds a file
/// descriptor, so the soft limit is raised to the hard one; and a backlog over
/// `net.core.somaxconn` is clamped by the kernel, which is worth a warning.
fn prepare_process(backlog: u32) {
    match crate::platform::raise_socket_limit() {
        Ok(Some(n)) => tracing::debug!(nofile = n, "raised the soft file descriptor limit"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    if let Some(max) = crate::platform::backlog_cap()
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
    let mut requests = crate::platform::StopRequests::install()?;
    std::thread::spawn(move || {
        let Some(first) = requests.wait() else { return };
        tracing::info!(
            signal = first.name(),
            "shutting down gracefully; a second signal exits at once"
        );
        match handle.recv() {
            Ok(h) => h.shutdown(),
            Err(_) => std::process::exit(first.exit_code().into()),
        }
        if let Some(second) = requests.wait() {
            tracing::warn!(
                signal = second.name(),
                "second signal: exiting now, without draining"
            );
            std::process::exit(second.exit_code().into());
        }
    });
    Ok(())
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

pub(crate) fn serve(args: ServeArgs) -> Result<ExitCode> {
    let (give_handle, handle) = std::sync::mpsc::channel();
    install_signals(handle)?;
    // Sockets from a service manager replace the default addresses; flags may add more.
    let inherited = crate::activation::inherited()?;
    let mut config = ServerConfig::new();
    if inherited.is_some() {
        config = config.no_tcp().no_udp();
    }
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
    runtime.io = match args.io {
        IoArg::Auto => Io::Auto,
        IoArg::Uring => Io::Uring,
        IoArg::Epoll => Io::Epoll,
    };
    runtime.idle_timeout = secs(args.idle_timeout);
    runtime.write_timeout = secs(args.write_timeout);
    runtime.drain_timeout = Duration::from_secs(args.drain_timeout);
    runtime.linger_timeout = Duration::from_secs(args.linger_timeout);
    prepare_process(config.socket.backlog);
    let server = match inherited {
        Some(inherited) => {
            for socket in &inherited.described {
                tracing::info!("serving an inherited socket: {socket}");
            }
            Server::from_listeners(config, inherited.tcp, inherited.udp)?
        }
        None => Server::bind(config)?,
    };
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
    match Notifier::from_env() {
        Some(notifier) => run_notifying(server, notifier)?,
        None => server.run()?,
    };
    Ok(ExitCode::SUCCESS)
}

/// How often the `STATUS=` line is refreshed while serving.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Runs `server`, telling the service manager: `READY=1` once every socket is served, the
/// counters every [`STATUS_EVERY`], and `STOPPING=1` when the drain begins.
fn run_notifying(server: Server, notifier: Notifier) -> std::io::Result<ServerCounters> {
    let notifier = Arc::new(notifier);
    let counters = server.counters_handle();
    // Dropping the sender ends the status thread at once.
    let mut refresh: Option<mpsc::Sender<()>> = None;
    server.run_with(|event| match event {
        ServerEvent::Serving => {
            let now = notify::status("serving", &counters.snapshot());
            notifier.notify(&format!("READY=1\n{now}"));
            let (tx, rx) = mpsc::channel::<()>();
            refresh = Some(tx);
            let (notifier, counters) = (notifier.clone(), counters.clone());
            let spawned = std::thread::Builder::new()
                .name("upcase-status".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(STATUS_EVERY)
                    {
                        notifier.notify(&notify::status("serving", &counters.snapshot()));
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no status thread: STATUS= is sent at start and stop only");
            }
        }
        ServerEvent::Draining => {
            refresh = None;
            let now = notify::status("draining", &counters.snapshot());
            notifier.notify(&format!("STOPPING=1\n{now}"));
        }
        _ => {}
    })
}
