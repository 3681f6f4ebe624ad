//! The load generator, in the manner of redis-benchmark. Every reply is checked against
//! `upcase_model::upper` of its request (precomputed, so checking costs a `memcmp`). A run that
//! cannot measure says why in words (`Could not connect to ADDR: Connection refused`) and fails.

mod soak;

use clap::ValueEnum;
use std::collections::VecDeque;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub(crate) enum Mode {
    /// C connections, one line in flight on each: req/s and latency percentiles.
    Pingpong,
    /// C connections, W lines in flight on each (pipelined): lines/s and MB/s.
    Stream,
    /// Open C connections at once and hold them, then send a line on each: how many opened and
    /// answered, and connect-time percentiles.
    Conns,
    /// C UDP sockets, one datagram in flight on each: req/s, lost and late replies.
    Udp,
    /// Verified load mixed with every attack of SECURITY.md, for --duration: endless lines,
    /// idle and non-reading connections, resets mid-line, invalid UTF-8, and (with --udp-addr)
    /// hostile datagrams. Reports verified replies, lost and corrupted ones.
    Soak,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Pingpong => "pingpong",
            Mode::Stream => "stream",
            Mode::Conns => "conns",
            Mode::Udp => "udp",
            Mode::Soak => "soak",
        }
    }
}

const MODES_HELP: &str = "\
Modes (--mode):
  pingpong  C connections, one line in flight on each: req/s, latency p50/p99/max
  stream    C connections, W lines in flight on each: lines/s, MB/s
  conns     open C connections at once, hold them, then one line on each: opened,
            answered, failed, connect time p50/p99/max
  udp       C UDP sockets, one datagram in flight on each: req/s, lost, late
  soak      verified load mixed with every attack of SECURITY.md, for --duration

Every reply is verified. Exit status: 0 when every reply was right and nothing failed,
1 when a reply was wrong, a connection failed or the server could not be reached (the
reason is printed on stderr), 2 for bad arguments.";

#[derive(clap::Parser)]
#[command(
    name = "upcase-bench",
    version,
    about = "Load an upcase server and measure it, verifying every reply. \
             Modes: pingpong, stream, conns, udp, soak.",
    after_help = MODES_HELP
)]
pub(crate) struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "pingpong")]
    mode: Mode,
    /// Server address. [default: 127.0.0.1:65432, or 127.0.0.1:9876 for --mode udp]
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// The server's UDP address, for --mode soak.
    #[arg(long, value_name = "HOST:PORT")]
    udp_addr: Option<SocketAddr>,
    /// Connections (or UDP sockets).
    #[arg(long, short = 'c', value_name = "C", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    conns: u32,
    /// Lines in flight per connection (stream mode).
    #[arg(long, short = 'w', value_name = "W", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    window: u32,
    /// Request size in bytes, the newline excluded.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    size: u32,
    /// How long to send, in seconds (pingpong, stream, udp, soak).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// Mixed-script payloads (`upcase_model::unicode_text`: Latin, Greek, Cyrillic, CJK, emoji,
    /// and ß, ﬁ, ΐ that grow) instead of ASCII.
    #[arg(long)]
    unicode: bool,
    /// Print a machine-readable JSON summary on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Give up on a connect or a reply after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    /// The server's process id: report its CPU time (user + system, from /proc/PID/stat) over
    /// the measured window, per verified reply.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

/// Requests and their expected replies, precomputed.
struct Payloads {
    requests: Vec<Vec<u8>>,
    replies: Vec<Vec<u8>>,
}

impl Payloads {
    /// 64 distinct requests of exactly `size` bytes (`\n` excluded) with a trailing `\n`, and
    /// their replies from the model.
    fn new(size: usize, unicode: bool) -> Self {
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        for i in 0..64usize {
            let text = if unicode {
                upcase_model::unicode_text(i as u64 + 1, size)
            } else {
                let words = ["lorem ", "ipsum ", "dolor ", "sit ", "amet "];
                (0..size).map(|k| words[(i + k) % 5]).collect()
            };
            let mut line = String::with_capacity(size + 4);
            for c in text.chars() {
                if line.len() + c.len_utf8() > size {
                    break;
                }
                line.push(c);
            }
            // A `\r` before the `\n` is data for upcase but stripped by some baselines (tokio's
            // LinesCodec); no request ends with one, so every server gets comparable work.
            if line.ends_with('\r') {
                line.pop();
            }
            while line.len() < size {
                line.push('x');
            }
            line.push('\n');
            replies.push(upcase_model::upper(line.as_bytes()));
            requests.push(line.into_bytes());
        }
        Self { requests, replies }
    }
}

/// Counters shared by the worker threads, and the first failure in words.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    reply_bytes: AtomicU64,
    mismatches: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
    late: AtomicU64,
    failure: Mutex<Option<String>>,
}

impl Counters {
    /// Counts an error and keeps the first one's reason.
    fn fail(&self, why: String) {
        bump(&self.errors, 1);
        let mut first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(why);
    }

    /// Counts a wrong reply and keeps its description as the first failure if none came yet.
    fn wrong(&self, why: String) {
        bump(&self.mismatches, 1);
        let mut first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(why);
    }

    fn verified(&self, bytes: usize) {
        bump(&self.requests, 1);
        bump(&self.reply_bytes, bytes as u64);
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// An I/O error in words, without the `(os error N)` suffix: `Connection refused`.
fn words(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Why a connection to `addr` could not be made, redis-benchmark style.
fn cannot_connect(addr: SocketAddr, e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
            "Could not connect to {addr}: no answer within {:.1} s",
            timeout.as_secs_f64()
        ),
        _ => format!("Could not connect to {addr}: {}", words(e)),
    }
}

/// Why connection number `conn` stopped after `done` verified replies.
fn broken(conn: usize, done: u64, e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            format!("connection {conn}: the server closed the connection after {done} replies")
        }
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
            "connection {conn}: no reply within {:.1} s (after {done} replies)",
            timeout.as_secs_f64()
        ),
        _ => format!("connection {conn}: {} (after {done} replies)", words(e)),
    }
}

/// A wrong reply to `who` (`connection 3`), with the start of what was expected and what came.
fn mismatch(who: &str, want: &[u8], got: &[u8]) -> String {
    let show = |b: &[u8]| {
        let s = String::from_utf8_lossy(&b[..b.len().min(48)]).into_owned();
        format!(
            "\"{}\"{}",
            s.escape_debug(),
            if b.len() > 48 { "…" } else { "" }
        )
    };
    format!(
        "{who}: wrong reply: expected {}, got {}",
        show(want),
        show(got)
    )
}

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The CPU time a process has used so far, in clock ticks: `utime + stime` (fields 14 and 15
/// of `/proc/PID/stat`; the command name in field 2 may hold spaces and parentheses, so the
/// fields are counted after its last `)`).
fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no ')' in /proc/PID/stat"))?;
    // `after` starts at field 3 (state), so field N is at index N - 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short /proc/PID/stat"))
    };
    Ok(field(14)? + field(15)?)
}

/// Clock ticks per second (`getconf CLK_TCK`), or 100 if that cannot be asked.
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// The server's CPU time at the start of the measured window.
struct ServerCpu {
    pid: u32,
    start: u64,
    hz: f64,
}

impl ServerCpu {
    fn start(pid: u32) -> Result<Self> {
        let hz = ticks_per_second();
        let start = cpu_ticks(pid).map_err(|e| {
            format!(
                "--server-pid {pid}: cannot read /proc/{pid}/stat: {}",
                words(&e)
            )
        })?;
        Ok(Self { pid, start, hz })
    }

    /// The server's CPU seconds since `start`, or `None` if it is gone.
    fn seconds(&self) -> Option<f64> {
        let end = cpu_ticks(self.pid).ok()?;
        Some(end.saturating_sub(self.start) as f64 / self.hz)
    }
}

pub(crate) fn run(args: BenchArgs) -> Result<bool> {
    let addr_text = args.addr.clone().unwrap_or_else(|| {
        if args.mode == Mode::Udp {
            "127.0.0.1:9876"
        } else {
            "127.0.0.1:65432"
        }
        .to_owned()
    });
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
        Mode::Pingpong => pingpong(load, conns),
        Mode::Stream => stream(load, conns, args.window as usize),
        Mode::Conns => hold_conns(load, conns),
        Mode::Udp => udp(load, conns),
        Mode::Soak => soak::run(load, args.udp_addr),
    };
    let elapsed = load.started.elapsed();
    let cpu_s = server_cpu.as_ref().and_then(ServerCpu::seconds);
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (requests, mismatches, errors) = (
        get(&counters.requests),
        get(&counters.mismatches),
        get(&counters.errors),
    );
    let mut failure = counters
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if failure.is_none() && requests + mismatches == 0 {
        failure = Some(format!(
            "no reply from {addr} in {:.1} s (is a{} server listening there?)",
            elapsed.as_secs_f64(),
            if args.mode == Mode::Udp {
                " UDP"
            } else {
                "n upcase"
            }
        ));
    }
    if failure.is_none()
        && let Some(c) = &outcome.conns
        && c.answered < conns as u64
    {
        failure = Some(format!(
            "{} of {conns} connections were not answered",
            conns as u64 - c.answered
        ));
    }
    let secs = elapsed.as_secs_f64();
    let mut summary = serde_json::json!({
        "mode": args.mode.name(),
        "addr": addr.to_string(),
        "conns": conns,
        "size": args.size,
        "unicode": args.unicode,
        "seconds": secs,
        "requests": requests,
        "mismatches": mismatches,
        "errors": errors,
        "error": failure,
    });
    let fields = summary.as_object_mut().expect("an object");
    let mut put = |k: &str, v: serde_json::Value| fields.insert(k.to_owned(), v);
    if args.mode != Mode::Conns {
        put("req_per_s", (requests as f64 / secs).into());
        put("reply_bytes", get(&counters.reply_bytes).into());
        put(
            "mb_per_s",
            (get(&counters.reply_bytes) as f64 / secs / 1e6).into(),
        );
    }
    if args.mode == Mode::Stream {
        put("window", args.window.into());
    }
    if matches!(args.mode, Mode::Udp | Mode::Soak) {
        put("lost", get(&counters.lost).into());
    }
    if args.mode == Mode::Udp {
        put("late", get(&counters.late).into());
    }
    if let Some(l) = &outcome.latency {
        put(
            "latency_us",
            serde_json::json!({"p50": l.p50, "p99": l.p99, "max": l.max}),
        );
    }
    if let Some(c) = &outcome.conns {
        put("opened", c.opened.into());
        put("answered", c.answered.into());
        put("failed", (conns as u64 - c.answered).into());
        put(
            "connect_ms",
            serde_json::json!({"p50": c.connect_ms[0], "p99": c.connect_ms[1], "max": c.connect_ms[2]}),
        );
        put("slow_connects", c.slow.into());
    }
    if let Some(cpu) = &server_cpu {
        put(
            "server_cpu",
            serde_json::json!({
                "pid": cpu.pid,
                "seconds": cpu_s,
                "us_per_reply": cpu_s.filter(|_| requests > 0).map(|s| s * 1e6 / requests as f64),
            }),
        );
    }
    if args.json {
        println!("{summary}");
    } else if requests + mismatches > 0 || outcome.conns.is_some() {
        println!("{}", text(&summary));
    }
    if let Some(why) = &summary["error"].as_str() {
        let more = errors.saturating_sub(1);
        if more > 0 {
            let s = if more == 1 { "" } else { "s" };
            eprintln!("upcase-bench: {why} (and {more} more error{s})");
        } else {
            eprintln!("upcase-bench: {why}");
        }
    }
    Ok(summary["error"].is_null() && mismatches == 0 && errors == 0)
}

/// The one-line text summary of a run, from its JSON.
fn text(s: &serde_json::Value) -> String {
    let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
    let mode = s["mode"].as_str().unwrap_or("?");
    let mut line = match mode {
        "conns" => format!(
            "conns: opened {}/{}, answered {}, failed {}; connect p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, over 1 s: {}",
            s["opened"],
            s["conns"],
            s["answered"],
            s["failed"],
            s["connect_ms"]["p50"].as_f64().unwrap_or(0.0),
            s["connect_ms"]["p99"].as_f64().unwrap_or(0.0),
            s["connect_ms"]["max"].as_f64().unwrap_or(0.0),
            s["slow_connects"],
        ),
        "stream" => format!(
            "stream: {} lines in {:.2} s: {:.0} lines/s, {:.1} MB/s",
            s["requests"],
            f("seconds"),
            f("req_per_s"),
            f("mb_per_s")
        ),
        "soak" => format!(
            "soak: {} verified replies in {:.2} s",
            s["requests"],
            f("seconds")
        ),
        _ => format!(
            "{mode}: {} replies in {:.2} s: {:.0} req/s, {:.1} MB/s",
            s["requests"],
            f("seconds"),
            f("req_per_s"),
            f("mb_per_s")
        ),
    };
    if let Some(l) = s["latency_us"].as_object() {
        line += &format!(
            ", latency p50 {} µs, p99 {} µs, max {} µs",
            l["p50"], l["p99"], l["max"]
        );
    }
    line += &format!("; wrong {}, errors {}", s["mismatches"], s["errors"]);
    if !s["lost"].is_null() {
        line += &format!(", lost {}", s["lost"]);
    }
    if !s["late"].is_null() {
        line += &format!(", late {}", s["late"]);
    }
    if let Some(us) = s["server_cpu"]["us_per_reply"].as_f64() {
        line += &format!(
            "; server CPU {us:.2} µs/reply ({:.2} s, pid {})",
            s["server_cpu"]["seconds"].as_f64().unwrap_or(0.0),
            s["server_cpu"]["pid"]
        );
    } else if !s["server_cpu"].is_null() {
        line += &format!(
            "; server CPU unknown (pid {} gone or no reply)",
            s["server_cpu"]["pid"]
        );
    }
    line
}

fn progress_line(mode: Mode, counters: &Counters, stop: &AtomicBool, started: Instant) {
    let mut last = 0;
    let mut last_t = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let now = counters.requests.load(Ordering::Relaxed);
        let rate = (now - last) as f64 / last_t.elapsed().as_secs_f64();
        (last, last_t) = (now, Instant::now());
        eprint!(
            "\r{} {:.1} s: {now} replies, {rate:.0}/s, wrong {}, errors {}   ",
            mode.name(),
            started.elapsed().as_secs_f64(),
            counters.mismatches.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
        );
    }
    eprint!("\r{:80}\r", "");
}

/// What every worker needs: the target, the payloads, the shared counters and the limits.
#[derive(Clone, Copy)]
struct Load<'a> {
    addr: SocketAddr,
    p: &'a Payloads,
    c: &'a Counters,
    stop: &'a AtomicBool,
    started: Instant,
    duration: Duration,
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

#[derive(Default)]
struct Outcome {
    latency: Option<Latency>,
    conns: Option<ConnsOutcome>,
}

struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
}

/// What `--mode conns` measures.
struct ConnsOutcome {
    opened: u64,
    answered: u64,
    /// Connect time p50, p99 and max, in milliseconds.
    connect_ms: [f64; 3],
    /// Connects that took a second or more (a SYN retransmit).
    slow: u64,
}

fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// The value at quantile `q` of sorted `v`, or the default if it is empty.
fn quantile<T: Copy + Default>(v: &[T], q: f64) -> T {
    v.get(((v.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or_default()
}

fn pingpong(load: Load<'_>, conns: usize) -> Outcome {
    // Event-driven, one thread per core: a client that spends little CPU per request leaves
    // the machine to the server it measures.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(conns);
    let samples: Vec<Vec<u32>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<usize> = (t..conns).step_by(threads).collect();
                s.spawn(move || pingpong_thread(load, &mine))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut all: Vec<u32> = samples.concat();
    all.sort_unstable();
    Outcome {
        latency: Some(Latency {
            p50: quantile(&all, 0.5).into(),
            p99: quantile(&all, 0.99).into(),
            max: all.last().copied().unwrap_or(0).into(),
        }),
        ..Outcome::default()
    }
}

/// One connection of [`pingpong_thread`]: the request in flight and how much of its reply came.
struct InFlight {
    sock: mio::net::TcpStream,
    id: usize,
    idx: usize,
    sent: usize,
    got: usize,
    done: u64,
    t0: Instant,
    buf: Vec<u8>,
}

/// Drives the connections numbered `ids`, one request in flight on each, until the load is
/// over; returns the latencies in microseconds. A failure is recorded in words and ends this
/// thread's connections.
fn pingpong_thread(load: Load<'_>, ids: &[usize]) -> Vec<u32> {
    let mut lat = Vec::new();
    if let Err(why) = pingpong_conns(load, ids, &mut lat) {
        load.fail(why);
    }
    lat
}

fn pingpong_conns(
    load: Load<'_>,
    ids: &[usize],
    lat: &mut Vec<u32>,
) -> std::result::Result<(), String> {
    use mio::{Events, Interest, Poll, Token};
    let Load { p, c, timeout, .. } = load;
    let setup = |e: io::Error| format!("cannot poll: {}", words(&e));
    let mut poll = Poll::new().map_err(setup)?;
    let mut conns = Vec::with_capacity(ids.len());
    let max_reply = p.replies.iter().map(Vec::len).max().unwrap_or(0);
    for (j, &id) in ids.iter().enumerate() {
        let std_sock = load.connect()?;
        std_sock.set_nonblocking(true).map_err(setup)?;
        let mut sock = mio::net::TcpStream::from_std(std_sock);
        poll.registry()
            .register(&mut sock, Token(j), Interest::READABLE | Interest::WRITABLE)
            .map_err(setup)?;
        conns.push(InFlight {
            sock,
            id,
            idx: id % p.requests.len(),
            sent: 0,
            got: 0,
            done: 0,
            t0: Instant::now(),
            buf: vec![0u8; max_reply],
        });
    }
    let mut events = Events::with_capacity(256);
    let mut last_progress = Instant::now();
    while !load.over() {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(setup)?;
        if events.is_empty() && last_progress.elapsed() > timeout {
            // Name the connection that waits longest.
            let f = conns
                .iter()
                .min_by_key(|f| f.t0)
                .expect("at least one connection");
            return Err(broken(
                f.id,
                f.done,
                &io::ErrorKind::TimedOut.into(),
                timeout,
            ));
        }
        for ev in &events {
            let Some(f) = conns.get_mut(ev.token().0) else {
                continue;
            };
            let fail = |f: &InFlight, e: io::Error| broken(f.id, f.done, &e, timeout);
            loop {
                // Send what is left of the request.
                let req = &p.requests[f.idx];
                while f.sent < req.len() {
                    match f.sock.write(&req[f.sent..]) {
                        Ok(n) => f.sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(fail(f, e)),
                    }
                }
                // Read the reply, no further than its known length.
                let want = &p.replies[f.idx];
                match f.sock.read(&mut f.buf[f.got..want.len()]) {
                    Ok(0) => return Err(fail(f, io::ErrorKind::UnexpectedEof.into())),
                    Ok(n) => f.got += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(fail(f, e)),
                }
                if f.got < want.len() {
                    continue;
                }
                lat.push(f.t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if f.buf[..want.len()] != want[..] {
                    c.wrong(mismatch(
                        &format!("connection {}", f.id),
                        want,
                        &f.buf[..want.len()],
                    ));
                    return Ok(());
                }
                c.verified(want.len());
                f.done += 1;
                last_progress = Instant::now();
                // The next request on this connection.
                f.idx = (f.idx + 1) % p.requests.len();
                (f.sent, f.got, f.t0) = (0, 0, Instant::now());
                if load.over() {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn stream(load: Load<'_>, conns: usize, window: usize) -> Outcome {
    std::thread::scope(|s| {
        for w in 0..conns {
            s.spawn(move || stream_one(load, w, window));
        }
    });
    Outcome::default()
}

/// One pipelined connection: keeps `window` lines in flight until the load is over, then reads
/// the rest of the replies.
fn stream_one(load: Load<'_>, id: usize, window: usize) {
    let Load { p, c, timeout, .. } = load;
    let mut sock = match load.connect() {
        Ok(s) => s,
        Err(why) => return load.fail(why),
    };
    let mut done = 0u64;
    let mut next = id;
    let mut inflight: VecDeque<usize> = VecDeque::with_capacity(window);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut have, mut pos) = (0usize, 0usize);
    let mut sending = true;
    let result = loop {
        // Top the window up, in one write.
        if sending && load.over() {
            sending = false;
        }
        if sending {
            out.clear();
            while inflight.len() < window {
                next = (next + 1) % p.requests.len();
                out.extend_from_slice(&p.requests[next]);
                inflight.push_back(next);
            }
            if let Err(e) = sock.write_all(&out) {
                break Err(e);
            }
        }
        if inflight.is_empty() {
            break Ok(());
        }
        // Read, then check every complete reply.
        if pos > 0 && have - pos < p.replies[inflight[0]].len() {
            buf.copy_within(pos..have, 0);
            (have, pos) = (have - pos, 0);
        }
        match sock.read(&mut buf[have..]) {
            Ok(0) => break Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
        while let Some(&i) = inflight.front() {
            let want = &p.replies[i];
            if have - pos < want.len() {
                break;
            }
            let got = &buf[pos..pos + want.len()];
            if got != &want[..] {
                return c.wrong(mismatch(&format!("connection {id}"), want, got));
            }
            pos += want.len();
            inflight.pop_front();
            c.verified(want.len());
            done += 1;
        }
    };
    if let Err(e) = result {
        load.fail(broken(id, done, &e, timeout));
    }
}

fn hold_conns(load: Load<'_>, conns: usize) -> Outcome {
    let Load { p, c, stop, .. } = load;
    // The storm: every connection opened as fast as the threads can, no pacing.
    let threads = conns.clamp(1, 16);
    let opened_any = AtomicBool::new(false);
    let opened: Vec<(usize, TcpStream, Duration)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let opened_any = &opened_any;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for id in (t..conns).step_by(threads) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let t0 = Instant::now();
                        match load.connect() {
                            Ok(sock) => {
                                opened_any.store(true, Ordering::Relaxed);
                                mine.push((id, sock, t0.elapsed()));
                            }
                            // Not one connection opened: the server is not there.
                            Err(why) if !opened_any.load(Ordering::Relaxed) => load.fatal(why),
                            Err(why) => c.fail(why),
                        }
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut times: Vec<Duration> = opened.iter().map(|o| o.2).collect();
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let slow = times
        .iter()
        .filter(|&&t| t >= Duration::from_secs(1))
        .count() as u64;
    // All held open; now one line on each, then every reply.
    let answered = AtomicU64::new(0);
    std::thread::scope(|s| {
        for chunk in opened.chunks(opened.len().div_ceil(threads).max(1)) {
            let answered = &answered;
            s.spawn(move || {
                let mut ok = vec![true; chunk.len()];
                for (k, (id, sock, _)) in chunk.iter().enumerate() {
                    let mut sock: &TcpStream = sock;
                    if let Err(e) = sock.write_all(&p.requests[id % p.requests.len()]) {
                        c.fail(broken(*id, 0, &e, load.timeout));
                        ok[k] = false;
                    }
                }
                let mut buf = vec![0u8; p.replies.iter().map(Vec::len).max().unwrap_or(0)];
                // One deadline for every reply, not a timeout per socket read in turn: a silent
                // server costs --timeout, not --timeout times the connections.
                let deadline = Instant::now() + load.timeout;
                for (k, (id, sock, _)) in chunk.iter().enumerate() {
                    let mut sock: &TcpStream = sock;
                    if !ok[k] {
                        continue;
                    }
                    let want = &p.replies[id % p.replies.len()];
                    let left = deadline.saturating_duration_since(Instant::now());
                    let read = if left.is_zero() {
                        Err(io::ErrorKind::TimedOut.into())
                    } else {
                        sock.set_read_timeout(Some(left))
                            .and_then(|()| sock.read_exact(&mut buf[..want.len()]))
                    };
                    match read {
                        Ok(()) if buf[..want.len()] == want[..] => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            c.verified(want.len());
                        }
                        Ok(()) => c.wrong(mismatch(
                            &format!("connection {id}"),
                            want,
                            &buf[..want.len()],
                        )),
                        Err(e) => c.fail(broken(*id, 0, &e, load.timeout)),
                    }
                }
            });
        }
    });
    Outcome {
        conns: Some(ConnsOutcome {
            opened: opened.len() as u64,
            answered: answered.into_inner(),
            connect_ms: [
                ms(quantile(&times, 0.5)),
                ms(quantile(&times, 0.99)),
                ms(times.last().copied().unwrap_or_default()),
            ],
            slow,
        }),
        ..Outcome::default()
    }
}

fn udp(load: Load<'_>, sockets: usize) -> Outcome {
    std::thread::scope(|s| {
        for w in 0..sockets {
            s.spawn(move || udp_one(load, w));
        }
    });
    Outcome::default()
}

/// One UDP socket, one datagram in flight. A reply that does not come within the loss wait is
/// counted lost; if it comes later it is recognised and counted late instead. A refused send
/// (ICMP port unreachable: no server) stops the whole run, as does no reply at all for
/// `--timeout`.
fn udp_one(load: Load<'_>, id: usize) {
    let Load {
        addr,
        p,
        c,
        timeout,
        ..
    } = load;
    // A lost datagram is waited for this long, then counted lost.
    let loss_wait = timeout.min(Duration::from_millis(200));
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = match UdpSocket::bind(local)
        .and_then(|s| s.connect(addr).map(|()| s))
        .and_then(|s| s.set_read_timeout(Some(loss_wait)).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            return load.fatal(format!(
                "socket {id}: cannot open a UDP socket to {addr}: {}",
                words(&e)
            ));
        }
    };
    let refused = |e: &io::Error| {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            load.fatal(format!(
                "Could not connect to {addr}: {} (no UDP server there)",
                words(e)
            ));
        } else {
            load.fatal(format!("socket {id}: {}", words(e)));
        }
    };
    let mut buf = vec![0u8; 65536];
    // Requests whose reply was counted lost: a reply to one of them that comes later is late.
    let mut overdue: VecDeque<usize> = VecDeque::new();
    let mut i = id;
    while !load.over() {
        i = (i + 1) % p.requests.len();
        // The datagram is the line without its newline.
        let req = &p.requests[i][..p.requests[i].len() - 1];
        let want = &p.replies[i][..p.replies[i].len() - 1];
        if let Err(e) = sock.send(req) {
            return refused(&e);
        }
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if &buf[..n] == want => c.verified(n),
                Ok(n) => {
                    let got = &buf[..n];
                    let stale = overdue
                        .iter()
                        .position(|&j| &p.replies[j][..p.replies[j].len() - 1] == got);
                    if let Some(k) = stale {
                        overdue.remove(k);
                        bump(&c.late, 1);
                        c.lost.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    return c.wrong(mismatch(&format!("socket {id}"), want, got));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    bump(&c.lost, 1);
                    if overdue.len() == p.requests.len() {
                        overdue.pop_front();
                    }
                    overdue.push_back(i);
                    if c.requests.load(Ordering::Relaxed) == 0 && load.started.elapsed() >= timeout
                    {
                        return load.fatal(format!(
                            "no reply from {addr} within {:.1} s (is a UDP server listening there?)",
                            timeout.as_secs_f64()
                        ));
                    }
                }
                Err(e) => return refused(&e),
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Payloads, cpu_ticks};

    #[test]
    fn payloads_have_the_exact_size_and_the_model_s_replies() {
        for unicode in [false, true] {
            for size in [1, 5, 16, 64, 1024] {
                let p = Payloads::new(size, unicode);
                for (req, rep) in p.requests.iter().zip(&p.replies) {
                    assert_eq!(req.len(), size + 1, "size {size} unicode {unicode}");
                    let text = std::str::from_utf8(&req[..size]).unwrap();
                    assert!(!text.contains('\n') && !text.ends_with('\r'));
                    assert_eq!(&rep[..], format!("{}\n", text.to_uppercase()).as_bytes());
                }
            }
        }
        assert!(
            Payloads::new(64, true)
                .requests
                .iter()
                .any(|r| !r.is_ascii())
        );
    }

    #[test]
    fn reads_its_own_cpu_time() {
        let before = cpu_ticks(std::process::id()).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ticks(std::process::id()).unwrap() >= before);
    }
}
