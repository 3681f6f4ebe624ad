//! Reporting: what a mode measured, the server's CPU time over the measured window, and the
//! summary of a run, as one line of text or as JSON, with the first failure in words.

use super::Result;
use super::args::{BenchArgs, Mode};
use super::net::words;
use super::verify::Counters;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a mode measured beyond the shared counters.
#[derive(Default)]
pub(super) struct Outcome {
    /// Latency percentiles (pingpong).
    pub(super) latency: Option<Latency>,
    /// The connection storm (conns).
    pub(super) conns: Option<ConnsOutcome>,
}

/// Latency p50, p99 and max, in microseconds.
pub(super) struct Latency {
    pub(super) p50: u64,
    pub(super) p99: u64,
    pub(super) max: u64,
}

/// What `--mode conns` measures.
pub(super) struct ConnsOutcome {
    /// Connections opened.
    pub(super) opened: u64,
    /// Connections whose line got the right reply.
    pub(super) answered: u64,
    /// Connect time p50, p99 and max, in milliseconds.
    pub(super) connect_ms: [f64; 3],
    /// Connects that took a second or more (a SYN retransmit).
    pub(super) slow: u64,
}

/// The value at quantile `q` of sorted `v`, or the default if it is empty.
pub(super) fn quantile<T: Copy + Default>(v: &[T], q: f64) -> T {
    v.get(((v.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or_default()
}

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
pub(super) struct ServerCpu {
    pid: u32,
    start: u64,
    hz: f64,
}

impl ServerCpu {
    /// Reads the CPU time of process `pid` now, or says in words why it cannot.
    pub(super) fn start(pid: u32) -> Result<Self> {
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
    pub(super) fn seconds(&self) -> Option<f64> {
        let end = cpu_ticks(self.pid).ok()?;
        Some(end.saturating_sub(self.start) as f64 / self.hz)
    }
}

/// Reports a finished run: the summary on stdout (text, or JSON with `--json`) and the first
/// failure in words on stderr. Returns whether every reply was verified and nothing failed.
/// `elapsed` is the measured window; `cpu_s` the server's CPU seconds over it, if measured.
pub(super) fn finish(
    args: &BenchArgs,
    addr: SocketAddr,
    counters: &Counters,
    outcome: &Outcome,
    elapsed: Duration,
    server_cpu: Option<&ServerCpu>,
    cpu_s: Option<f64>,
) -> bool {
    let conns = args.conns as usize;
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
    summary["error"].is_null() && mismatches == 0 && errors == 0
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

/// Rewrites one progress line on stderr every 250 ms until `stop`.
pub(super) fn progress_line(mode: Mode, counters: &Counters, stop: &AtomicBool, started: Instant) {
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

#[cfg(test)]
mod tests {
    use super::cpu_ticks;

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
