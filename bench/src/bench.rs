//! `upcase bench`: a load generator in the manner of redis-benchmark. Every reply is checked
//! against `str::to_uppercase` of its request (precomputed, so checking costs a `memcmp`).

mod soak;

use clap::ValueEnum;
use std::collections::VecDeque;
use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub(crate) enum Mode {
    /// C connections, one line in flight on each: req/s and latency percentiles.
    Pingpong,
    /// C connections, W lines in flight on each (pipelined): MB/s and lines/s.
    Stream,
    /// Open C connections at once and hold them, then send a line on each: how many answered.
    Conns,
    /// C UDP sockets, one datagram in flight on each: req/s and losses.
    Udp,
    /// Verified load mixed with every attack of SECURITY.md, for --duration: endless lines,
    /// idle and non-reading connections, resets mid-line, invalid UTF-8, and (with --udp-addr)
    /// hostile datagrams. Reports verified replies, lost and corrupted ones.
    Soak,
}

#[derive(clap::Parser)]
#[command(name = "upcase-bench", version, about = "Load an upcase server and measure it, verifying every reply.")]
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
    /// How long to send, in seconds (pingpong, stream, udp).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// Mixed-script payloads (Latin, Greek, Cyrillic, CJK, emoji, ß and ΐ that grow) instead of
    /// ASCII.
    #[arg(long)]
    unicode: bool,
    /// Print a machine-readable JSON summary on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Give up on a connect or a reply after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
}

/// Requests and their expected replies, precomputed.
struct Payloads {
    requests: Vec<Vec<u8>>,
    replies: Vec<Vec<u8>>,
}

const PIECES: &[&str] = &[
    "héllo wörld ",
    "straße ",
    "ΐ ",
    "Σίσυφος ",
    "Привет ",
    "日本語の文 ",
    "😀 ",
    "ﬁ ",
    "ǆ ",
    "ascii text ",
];

impl Payloads {
    /// 64 distinct requests of exactly `size` bytes (`\n` excluded) with a trailing `\n`.
    fn new(size: usize, unicode: bool) -> Self {
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        for i in 0..64usize {
            let mut line = String::with_capacity(size + 4);
            let mut k = i;
            while line.len() < size {
                let piece = if unicode {
                    PIECES[k % PIECES.len()]
                } else {
                    ["lorem ", "ipsum ", "dolor ", "sit ", "amet "][k % 5]
                };
                k = k.wrapping_mul(7).wrapping_add(3);
                for c in piece.chars() {
                    if line.len() + c.len_utf8() > size {
                        break;
                    }
                    line.push(c);
                }
                if line.len() + 4 > size && line.len() < size {
                    // Pad with ASCII to the exact size.
                    while line.len() < size {
                        line.push('x');
                    }
                }
            }
            replies.push(format!("{}\n", line.to_uppercase()).into_bytes());
            requests.push(format!("{line}\n").into_bytes());
        }
        Self { requests, replies }
    }
}

/// Counters shared by the worker threads.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    reply_bytes: AtomicU64,
    mismatches: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

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
        .map_err(|e| format!("cannot resolve {addr_text}: {e}"))?
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
    let started = Instant::now();
    let progress = (std::io::stderr().is_terminal() && !args.json).then(|| {
        let (counters, stop) = (counters.clone(), stop.clone());
        std::thread::spawn(move || progress_line(args.mode, &counters, &stop, started))
    });
    let conns = args.conns as usize;
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
    stop.store(true, Ordering::Relaxed);
    let elapsed = outcome.elapsed.unwrap_or_else(|| started.elapsed());
    if let Some(p) = progress {
        let _ = p.join();
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let requests = get(&counters.requests);
    let secs = elapsed.as_secs_f64();
    let summary = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "addr": addr.to_string(),
        "conns": conns,
        "window": if args.mode == Mode::Stream { args.window } else { 1 },
        "size": args.size,
        "unicode": args.unicode,
        "seconds": secs,
        "requests": requests,
        "req_per_s": requests as f64 / secs,
        "reply_bytes": get(&counters.reply_bytes),
        "mb_per_s": get(&counters.reply_bytes) as f64 / secs / 1e6,
        "mismatches": get(&counters.mismatches),
        "errors": get(&counters.errors),
        "lost": get(&counters.lost),
        "latency_us": outcome.latency.map(|l| serde_json::json!({"p50": l.p50, "p99": l.p99, "max": l.max})),
        "answered": outcome.answered,
        "max_connect_ms": outcome.max_connect.map(|d| d.as_secs_f64() * 1e3),
        "slow_connects": outcome.slow_connects,
    });
    let mismatches = get(&counters.mismatches);
    let errors = get(&counters.errors);
    if args.json {
        println!("{summary}");
    } else {
        print_text(&summary);
    }
    Ok(mismatches == 0 && errors == 0 && outcome.answered.is_none_or(|a| a == conns as u64))
}

fn print_text(s: &serde_json::Value) {
    let mut line = format!(
        "{mode}: {req} requests in {secs:.2} s: {rps:.0} req/s, {mbps:.1} MB/s",
        mode = s["mode"].as_str().unwrap_or("?"),
        req = s["requests"],
        secs = s["seconds"].as_f64().unwrap_or(0.0),
        rps = s["req_per_s"].as_f64().unwrap_or(0.0),
        mbps = s["mb_per_s"].as_f64().unwrap_or(0.0),
    );
    if let Some(l) = s["latency_us"].as_object() {
        line += &format!(
            ", latency p50 {} µs p99 {} µs max {} µs",
            l["p50"], l["p99"], l["max"]
        );
    }
    if !s["answered"].is_null() {
        line += &format!(
            ", answered {}/{}, max connect {:.1} ms, connects over 1 s: {}",
            s["answered"],
            s["conns"],
            s["max_connect_ms"].as_f64().unwrap_or(0.0),
            s["slow_connects"]
        );
    }
    line += &format!(", mismatches {}, errors {}", s["mismatches"], s["errors"]);
    if s["mode"] == "udp" || s["mode"] == "soak" {
        line += &format!(", lost {}", s["lost"]);
    }
    println!("{line}");
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
            "\r{mode:?} {:.1} s: {now} requests, {rate:.0}/s, mismatches {}   ",
            started.elapsed().as_secs_f64(),
            counters.mismatches.load(Ordering::Relaxed)
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
}

#[derive(Default)]
struct Outcome {
    latency: Option<Latency>,
    answered: Option<u64>,
    max_connect: Option<Duration>,
    slow_connects: Option<u64>,
    elapsed: Option<Duration>,
}

struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
}

fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
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
                s.spawn(move || match pingpong_thread(load, &mine) {
                    Ok(lat) => lat,
                    Err(_) => {
                        bump(&load.c.errors, 1);
                        Vec::new()
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let elapsed = load.started.elapsed();
    let mut all: Vec<u32> = samples.concat();
    all.sort_unstable();
    let pct = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0) as u64
    };
    Outcome {
        latency: Some(Latency {
            p50: pct(0.5),
            p99: pct(0.99),
            max: all.last().copied().unwrap_or(0) as u64,
        }),
        elapsed: Some(elapsed),
        ..Outcome::default()
    }
}

/// One connection of [`pingpong_thread`]: the request in flight and how much of its reply came.
struct InFlight {
    sock: mio::net::TcpStream,
    idx: usize,
    sent: usize,
    got: usize,
    t0: Instant,
    buf: Vec<u8>,
}

/// Drives the connections numbered `ids`, one request in flight on each, until the load is
/// over; returns the latencies in microseconds.
fn pingpong_thread(load: Load<'_>, ids: &[usize]) -> std::io::Result<Vec<u32>> {
    use mio::{Events, Interest, Poll, Token};
    let Load { p, c, .. } = load;
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(ids.len());
    let max_reply = p.replies.iter().map(Vec::len).max().unwrap_or(0);
    for (j, &id) in ids.iter().enumerate() {
        let std_sock = connect(load.addr, load.timeout)?;
        std_sock.set_nonblocking(true)?;
        let mut sock = mio::net::TcpStream::from_std(std_sock);
        poll.registry()
            .register(&mut sock, Token(j), Interest::READABLE | Interest::WRITABLE)?;
        conns.push(InFlight {
            sock,
            idx: id % p.requests.len(),
            sent: 0,
            got: 0,
            t0: Instant::now(),
            buf: vec![0u8; max_reply],
        });
    }
    let mut lat = Vec::new();
    let mut events = Events::with_capacity(256);
    let mut last_progress = Instant::now();
    while !load.over() {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        if events.is_empty() && last_progress.elapsed() > load.timeout {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        for ev in &events {
            let Some(f) = conns.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                // Send what is left of the request.
                let req = &p.requests[f.idx];
                while f.sent < req.len() {
                    match f.sock.write(&req[f.sent..]) {
                        Ok(n) => f.sent += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                // Read the reply, no further than its known length.
                let want = &p.replies[f.idx];
                match f.sock.read(&mut f.buf[f.got..want.len()]) {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => f.got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
                if f.got < want.len() {
                    continue;
                }
                lat.push(f.t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if f.buf[..want.len()] != want[..] {
                    bump(&c.mismatches, 1);
                    return Ok(lat);
                }
                bump(&c.requests, 1);
                bump(&c.reply_bytes, want.len() as u64);
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
    Ok(lat)
}

fn stream(load: Load<'_>, conns: usize, window: usize) -> Outcome {
    std::thread::scope(|s| {
        for w in 0..conns {
            s.spawn(move || {
                if stream_one(load, w, window).is_err() {
                    bump(&load.c.errors, 1);
                }
            });
        }
    });
    Outcome {
        elapsed: Some(load.started.elapsed()),
        ..Outcome::default()
    }
}

fn stream_one(load: Load<'_>, seed: usize, window: usize) -> std::io::Result<()> {
    let Load { p, c, .. } = load;
    let mut sock = connect(load.addr, load.timeout)?;
    let mut next = seed;
    let mut inflight: VecDeque<usize> = VecDeque::with_capacity(window);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut have, mut pos) = (0usize, 0usize);
    let mut sending = true;
    loop {
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
            sock.write_all(&out)?;
        }
        if inflight.is_empty() {
            return Ok(());
        }
        // Read, then check every complete reply.
        if pos > 0 && have - pos < p.replies[inflight[0]].len() {
            buf.copy_within(pos..have, 0);
            (have, pos) = (have - pos, 0);
        }
        let n = sock.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        while let Some(&i) = inflight.front() {
            let want = &p.replies[i];
            if have - pos < want.len() {
                break;
            }
            if buf[pos..pos + want.len()] != want[..] {
                bump(&c.mismatches, 1);
                return Ok(());
            }
            pos += want.len();
            inflight.pop_front();
            bump(&c.requests, 1);
            bump(&c.reply_bytes, want.len() as u64);
        }
    }
}

fn hold_conns(load: Load<'_>, conns: usize) -> Outcome {
    let Load {
        addr,
        p,
        c,
        timeout,
        ..
    } = load;
    // The storm: every connection opened as fast as the threads can, no pacing.
    let threads = conns.clamp(1, 16);
    let started = Instant::now();
    let opened: Vec<(TcpStream, Duration)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for _ in (t..conns).step_by(threads) {
                        let t0 = Instant::now();
                        match connect(addr, timeout) {
                            Ok(sock) => mine.push((sock, t0.elapsed())),
                            Err(_) => bump(&c.errors, 1),
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
    let max_connect = opened.iter().map(|o| o.1).max().unwrap_or_default();
    let slow = opened
        .iter()
        .filter(|o| o.1 >= Duration::from_secs(1))
        .count() as u64;
    // All held open; now one line on each, then every reply.
    let socks: Vec<TcpStream> = opened.into_iter().map(|o| o.0).collect();
    let answered = AtomicU64::new(0);
    std::thread::scope(|s| {
        for chunk in socks.chunks(socks.len().div_ceil(threads).max(1)) {
            let answered = &answered;
            s.spawn(move || {
                for (k, mut sock) in chunk.iter().enumerate() {
                    if sock.write_all(&p.requests[k % p.requests.len()]).is_err() {
                        bump(&c.errors, 1);
                    }
                }
                let mut buf = vec![0u8; p.replies.iter().map(Vec::len).max().unwrap_or(0)];
                for (k, mut sock) in chunk.iter().enumerate() {
                    let want = &p.replies[k % p.replies.len()];
                    match sock.read_exact(&mut buf[..want.len()]) {
                        Ok(()) if buf[..want.len()] == want[..] => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            bump(&c.requests, 1);
                            bump(&c.reply_bytes, want.len() as u64);
                        }
                        Ok(()) => bump(&c.mismatches, 1),
                        Err(_) => bump(&c.errors, 1),
                    }
                }
            });
        }
    });
    Outcome {
        answered: Some(answered.into_inner()),
        max_connect: Some(max_connect),
        slow_connects: Some(slow),
        elapsed: Some(started.elapsed()),
        ..Outcome::default()
    }
}

fn udp(load: Load<'_>, sockets: usize) -> Outcome {
    let Load {
        addr,
        p,
        c,
        timeout,
        ..
    } = load;
    // A lost datagram is waited for this long, then counted lost.
    let loss_wait = timeout.min(Duration::from_millis(200));
    std::thread::scope(|s| {
        for w in 0..sockets {
            s.spawn(move || {
                let local = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let Ok(sock) = UdpSocket::bind(local)
                    .and_then(|s| s.connect(addr).map(|()| s))
                    .and_then(|s| s.set_read_timeout(Some(loss_wait)).map(|()| s))
                else {
                    bump(&c.errors, 1);
                    return;
                };
                let mut buf = vec![0u8; 65536];
                let mut i = w;
                while !load.over() {
                    i = (i + 1) % p.requests.len();
                    // The datagram is the line without its newline.
                    let req = &p.requests[i][..p.requests[i].len() - 1];
                    let want = &p.replies[i][..p.replies[i].len() - 1];
                    if sock.send(req).is_err() {
                        bump(&c.errors, 1);
                        continue;
                    }
                    match sock.recv(&mut buf) {
                        Ok(n) if &buf[..n] == want => {
                            bump(&c.requests, 1);
                            bump(&c.reply_bytes, n as u64);
                        }
                        Ok(_) => bump(&c.mismatches, 1),
                        Err(_) => bump(&c.lost, 1),
                    }
                }
            });
        }
    });
    Outcome {
        elapsed: Some(load.started.elapsed()),
        ..Outcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::Payloads;

    #[test]
    fn payloads_have_the_exact_size_and_valid_expected_replies() {
        for unicode in [false, true] {
            for size in [1, 5, 16, 64, 1024] {
                let p = Payloads::new(size, unicode);
                for (req, rep) in p.requests.iter().zip(&p.replies) {
                    assert_eq!(req.len(), size + 1, "size {size} unicode {unicode}");
                    let text = std::str::from_utf8(&req[..size]).unwrap();
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
}
