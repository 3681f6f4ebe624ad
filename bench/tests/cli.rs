//! The load generator's failures in words (issue 15) and what each mode reports, against closed
//! loopback ports and small in-test servers. Every wait is bounded: a run that hangs is killed
//! and fails the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a run of the binary left: its exit code, stdout, stderr, and how long it took.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `upcase-bench ARGS`, killing it (and failing the test) if it is not done within `limit`.
fn bench(args: &[&str], limit: Duration) -> Run {
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_upcase-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn upcase-bench");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("upcase-bench {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: t0.elapsed(),
    }
}

/// A loopback TCP port with nothing listening on it.
fn closed_tcp_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A loopback UDP port with nothing bound to it.
fn closed_udp_port() -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().to_string()
}

/// A line server on a loopback port, a thread per connection: each line (its `\n` included) is
/// answered with `reply(line)`, until `reply` returns `None`, which closes the connection.
fn server(reply: fn(&[u8]) -> Option<Vec<u8>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut w = conn.try_clone()?;
                let mut r = BufReader::new(conn);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line)? == 0 {
                        return Ok::<(), std::io::Error>(());
                    }
                    match reply(&line) {
                        Some(out) => w.write_all(&out)?,
                        None => return Ok(()),
                    }
                }
            });
        }
    });
    addr
}

fn upcase(line: &[u8]) -> Option<Vec<u8>> {
    Some(upcase_model::upper(line))
}

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn udp_without_a_server_fails_at_once_in_words() {
    let addr = closed_udp_port();
    let r = bench(
        &[
            "--mode",
            "udp",
            "--addr",
            &addr,
            "-c",
            "8",
            "--duration",
            "30",
            "--timeout",
            "3",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("Could not connect to {addr}: Connection refused")),
        "{}",
        r.stderr
    );
    // Not a run of "lost" datagrams until --duration: it stops at the first refusal.
    assert!(r.took < Duration::from_secs(5), "took {:?}", r.took);
    assert!(!r.stdout.contains("lost"), "{}", r.stdout);
}

#[test]
fn udp_without_any_reply_fails_after_the_timeout_in_words() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let r = bench(
        &[
            "--mode",
            "udp",
            "--addr",
            &addr,
            "-c",
            "4",
            "--duration",
            "30",
            "--timeout",
            "1",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("no reply from {addr}")),
        "{}",
        r.stderr
    );
    assert!(r.took < Duration::from_secs(10), "took {:?}", r.took);
    drop(silent);
}

#[test]
fn tcp_modes_without_a_server_fail_at_once_in_words() {
    let addr = closed_tcp_port();
    for mode in ["pingpong", "stream", "conns", "soak"] {
        let r = bench(
            &[
                "--mode",
                mode,
                "--addr",
                &addr,
                "-c",
                "100",
                "--duration",
                "30",
            ],
            LIMIT,
        );
        assert_eq!(r.code, Some(1), "{mode}: {}", r.stderr);
        assert!(
            r.stderr
                .contains(&format!("Could not connect to {addr}: Connection refused")),
            "{mode}: {}",
            r.stderr
        );
        assert!(r.took < Duration::from_secs(10), "{mode} took {:?}", r.took);
        assert!(!r.stdout.contains("req/s"), "{mode}: {}", r.stdout);
    }
}

#[test]
fn json_runs_that_fail_carry_the_reason() {
    let addr = closed_tcp_port();
    let r = bench(&["--mode", "stream", "--addr", &addr, "--json"], LIMIT);
    assert_eq!(r.code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON line");
    let why = v["error"].as_str().expect("a reason");
    assert!(
        why.starts_with(&format!("Could not connect to {addr}")),
        "{why}"
    );
}

#[test]
fn conns_reports_what_it_measures_not_a_rate() {
    let addr = server(upcase);
    let r = bench(&["--mode", "conns", "--addr", &addr, "-c", "20"], LIMIT);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for part in [
        "opened 20/20",
        "answered 20",
        "failed 0",
        "connect p50",
        "p99",
        "max",
    ] {
        assert!(r.stdout.contains(part), "{part}: {}", r.stdout);
    }
    assert!(
        !r.stdout.contains("req/s") && !r.stdout.contains("MB/s"),
        "{}",
        r.stdout
    );
    let r = bench(
        &["--mode", "conns", "--addr", &addr, "-c", "20", "--json"],
        LIMIT,
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["opened"].as_u64(), v["answered"].as_u64()),
        (Some(20), Some(20))
    );
    assert!(v["connect_ms"]["p99"].is_f64());
    assert!(
        v.get("req_per_s").is_none() && v.get("mb_per_s").is_none(),
        "{v}"
    );
}

#[test]
fn server_cpu_per_reply_is_reported_beside_throughput() {
    // The in-test server runs in this process, so this process is the server to watch.
    let addr = server(upcase);
    let pid = std::process::id().to_string();
    let args = [
        "--addr",
        &addr,
        "-c",
        "2",
        "--duration",
        "0.5",
        "--server-pid",
        &pid,
    ];
    let r = bench(&[&args[..], &["--json"]].concat(), LIMIT);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["requests"].as_u64().unwrap() > 0);
    assert_eq!(
        v["server_cpu"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert!(
        v["server_cpu"]["us_per_reply"].as_f64().unwrap() >= 0.0,
        "{v}"
    );
    let r = bench(&args, LIMIT);
    assert!(
        r.stdout.contains("req/s") && r.stdout.contains("µs/reply"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_missing_server_pid_is_an_error_in_words() {
    let addr = server(upcase);
    let r = bench(&["--addr", &addr, "--server-pid", "4000000000"], LIMIT);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("/proc/4000000000/stat"), "{}", r.stderr);
}

#[test]
fn a_wrong_reply_is_shown_and_fails() {
    let addr = server(|line| Some(line.to_vec()));
    for mode in ["pingpong", "stream", "conns"] {
        let r = bench(
            &[
                "--mode",
                mode,
                "--addr",
                &addr,
                "-c",
                "2",
                "--duration",
                "1",
            ],
            LIMIT,
        );
        assert_eq!(r.code, Some(1), "{mode}");
        assert!(
            r.stderr.contains("wrong reply: expected \""),
            "{mode}: {}",
            r.stderr
        );
        assert!(r.stderr.contains(", got \""), "{mode}: {}", r.stderr);
    }
}

#[test]
fn a_server_that_hangs_up_is_named() {
    // Answers nothing: every connection closes at its first line.
    let addr = server(|_| None);
    let r = bench(
        &[
            "--mode",
            "stream",
            "--addr",
            &addr,
            "-c",
            "2",
            "--duration",
            "1",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("the server closed the connection after 0 replies"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_silent_tcp_server_times_out_in_words() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // Accepted by the kernel (the backlog), never read.
    let r = bench(
        &[
            "--mode",
            "pingpong",
            "--addr",
            &addr,
            "-c",
            "2",
            "--timeout",
            "1",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("no reply within 1.0 s"), "{}", r.stderr);
    drop(l);
}

#[test]
fn a_silent_server_costs_conns_mode_one_timeout_not_one_per_connection() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // 64 connections wait in the listen backlog, accepted by the kernel, never answered.
    let r = bench(
        &[
            "--mode",
            "conns",
            "--addr",
            &addr,
            "-c",
            "64",
            "--timeout",
            "1",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stdout.contains("opened 64/64, answered 0, failed 64"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("no reply within 1.0 s"), "{}", r.stderr);
    assert!(r.took < Duration::from_secs(5), "took {:?}", r.took);
    drop(l);
}

#[test]
fn help_lists_every_mode() {
    for flag in ["-h", "--help"] {
        let r = bench(&[flag], LIMIT);
        assert_eq!(r.code, Some(0));
        for mode in ["pingpong", "stream", "conns", "udp", "soak"] {
            assert!(r.stdout.contains(mode), "{flag} lacks {mode}: {}", r.stdout);
        }
    }
}

#[test]
fn a_bad_argument_exits_2() {
    let r = bench(&["--mode", "nonsense"], LIMIT);
    assert_eq!(r.code, Some(2));
    let r = bench(&["--duration", "0"], LIMIT);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("--duration"), "{}", r.stderr);
}
