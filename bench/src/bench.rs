//! The load generator, in the manner of redis-benchmark. Every reply is checked against
//! `upcase_model::upper` of its request (precomputed, so checking costs a `memcmp`). A run that
//! cannot measure says why in words (`Could not connect to ADDR: Connection refused`) and fails.
//!
//! One module per mode (`pingpong`, `stream`, `conns`, `udp`, `soak`), each given a [`Load`] and
//! returning a `report::Outcome`; the pieces they share once each: `args` (the command line), `net`
//! (connections and failures in words), `verify` (payloads, replies, counters) and `report`
//! (the summary and the server's CPU time).

mod args;
mod conns;
mod net;
mod pingpong;
mod report;
mod soak;
mod stream;
mod udp;
mod verify;

pub(crate) use args::BenchArgs;
use args::Mode;
use net::{cannot_connect, connect, words};
use report::{ServerCpu, progress_line};
use std::io::IsTerminal;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use verify::{Counters, Payloads};

/// What a run that cannot start returns: the reason in words.
pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs the load `args` asks for and reports it. `Ok(true)` when every reply was verified and
/// nothing failed, `Ok(false)` otherwise (the reason on stderr), `Err` for an argument the run
/// could not start with.
pub(crate) fn run(args: BenchArgs) -> Result<bool> {
    let addr_text = args.addr_text();
    let addr = addr_text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr_text}: {}", words(&e)))?
        .next()
        .ok_or_else(|| format!("no address for {addr_text}"))?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or("--timeout must be a positive number of seconds")?;
    let duration = Duration::try_from_secs_f64(args.duration)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or("--duration must be a positive number of seconds")?;
    // Many connections need many descriptors.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let payloads = Arc::new(Payloads::new(args.size as usize, args.unicode));
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let progress = (std::io::stderr().is_terminal() && !args.json).then(|| {
        let (counters, stop) = (counters.clone(), stop.clone());
        let started = Instant::now();
        std::thread::spawn(move || progress_line(args.mode, &counters, &stop, started))
    });
    let conns = args.conns as usize;
    let server_cpu = args.server_pid.map(ServerCpu::start).transpose()?;
    let load = Load {
        addr,
        p: &payloads,
        c: &counters,
        stop: &stop,
        started: Instant::now(),
        duration,
        timeout,
    };
    let outcome = match args.mode {
        Mode::Pingpong => pingpong::run(load, conns),
        Mode::Stream => stream::run(load, conns, args.window as usize),
        Mode::Conns => conns::run(load, conns),
        Mode::Udp => udp::run(load, conns),
        Mode::Soak => soak::run(load, args.udp_addr),
    };
    let elapsed = load.started.elapsed();
    let cpu_s = server_cpu.as_ref().and_then(ServerCpu::seconds);
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    Ok(report::finish(
        &args,
        addr,
        &counters,
        &outcome,
        elapsed,
        server_cpu.as_ref(),
        cpu_s,
    ))
}

/// What every worker needs: the target, the payloads, the shared counters and the limits.
#[derive(Clone, Copy)]
struct Load<'a> {
    /// The server.
    addr: SocketAddr,
    /// The requests and their expected replies.
    p: &'a Payloads,
    /// Where every worker counts.
    c: &'a Counters,
    /// Set when the run must end early (a fatal failure, or the end of the run).
    stop: &'a AtomicBool,
    /// The start of the measured window.
    started: Instant,
    /// How long to send (`--duration`).
    duration: Duration,
    /// How long a connect or a reply is waited for (`--timeout`).
    timeout: Duration,
}

impl Load<'_> {
    /// Whether workers should stop sending.
    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.started.elapsed() >= self.duration
    }

    /// A failure that leaves nothing to measure: record it and stop every worker.
    fn fatal(&self, why: String) {
        self.c.fail(why);
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A failure of one connection: fatal while no reply has been verified yet (the server is
    /// not there, or not answering), otherwise recorded while the others go on.
    fn fail(&self, why: String) {
        if self.c.requests.load(Ordering::Relaxed) == 0 {
            self.fatal(why);
        } else {
            self.c.fail(why);
        }
    }

    /// Opens a connection, or gives the reason in words. The first connection that fails
    /// before any reply came stops the run: there is nothing to measure.
    fn connect(&self) -> std::result::Result<TcpStream, String> {
        connect(self.addr, self.timeout).map_err(|e| cannot_connect(self.addr, &e, self.timeout))
    }
}
