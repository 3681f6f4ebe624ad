//! Hostile peers against a real `upcase serve` process (SECURITY.md): each attack gets its
//! documented answer, memory stays bounded (read from /proc/PID/status), and an honest client is
//! served correctly during and after it.

mod common;

use common::{
    LIMIT, ServerProc, connect, connect_with_recv_buffer, read_exactly, read_to_eof, roundtrip,
    udp_socket_to,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use upcase_std::{ErrorReply, TcpClient};

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// An honest client: a few Unicode round trips, each checked.
fn honest(addr: SocketAddr) {
    let mut c = TcpClient::connect(addr, LIMIT).unwrap();
    for line in ["hello", "straße", "Σίσυφος", "日本語 ok"] {
        assert_eq!(
            c.request(line.as_bytes()).unwrap(),
            line.to_uppercase().as_bytes()
        );
    }
}

#[test]
fn a_line_that_never_ends_gets_one_error_and_bounded_memory() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp"]);
    let addr = server.tcp[0];
    honest(addr);
    let before = status_kib(server.pid(), "VmHWM:");
    let mut s = connect(addr);
    let reader = s.try_clone().unwrap();
    let replies = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = (&reader).read_to_end(&mut got);
        got
    });
    let chunk = vec![b'x'; 1 << 20];
    std::thread::scope(|scope| {
        // Honest clients are served while the endless line streams in.
        let h = scope.spawn(|| {
            for _ in 0..20 {
                honest(addr);
            }
        });
        for _ in 0..32 {
            s.write_all(&chunk).unwrap();
        }
        h.join().unwrap();
    });
    s.write_all(b"\nafter\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = replies.join().unwrap();
    let mut expect = ErrorReply::LineTooLong.reply().to_vec();
    expect.extend_from_slice(b"AFTER\n");
    assert_eq!(got, expect);
    let grown = status_kib(server.pid(), "VmHWM:").saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "peak RSS grew by {grown} KiB for a 32 MiB line"
    );
    honest(addr);
}

#[test]
fn idle_connections_are_reclaimed_and_new_clients_served() {
    // Measured under Wine 8.0: of 500 half lines, 71-186 got no error line with a 1 s idle
    // timeout, all 500 with 5 s, and all 100 of 200 connections with 1 s; wineserver, which
    // passes on every socket's readiness, used a whole core throughout.
    if common::skip_under_wine(
        "Wine delivers read events for 1000 sockets over 1 s late, past the 1 s idle timeout",
    ) {
        return;
    }
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--idle-timeout", "1"]);
    let addr = server.tcp[0];
    // A thousand that never send, and a thousand that stop in the middle of a line.
    let mut idle: Vec<TcpStream> = (0..1000).map(|_| connect(addr)).collect();
    for s in idle.iter_mut().take(500) {
        s.write_all(b"half a li").unwrap();
    }
    honest(addr);
    // Each is closed by the server after the idle timeout, gracefully, well within the bound:
    // one that stopped mid-line gets `error: idle timeout` in place of the partial line
    // (PROTOCOL.md §2.6), one that never sent gets end of stream alone.
    let started = Instant::now();
    for (i, mut s) in idle.into_iter().enumerate() {
        let got = read_to_eof(&mut s);
        let expect: &[u8] = if i < 500 {
            b"error: idle timeout\n"
        } else {
            b""
        };
        assert_eq!(got, expect, "connection {i}");
        assert!(started.elapsed() < LIMIT, "idle connections not reclaimed");
    }
    honest(addr);
}

#[test]
fn a_client_that_never_reads_is_cut_off_without_slowing_others() {
    let server = ServerProc::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--no-udp",
        "--write-timeout",
        "1",
        "--linger-timeout",
        "1",
    ]);
    let addr = server.tcp[0];
    let before = status_kib(server.pid(), "VmHWM:");
    let hog = connect(addr);
    let writer = {
        let hog = hog.try_clone().unwrap();
        std::thread::spawn(move || {
            // Lines as fast as the server takes them, never reading a reply. Backpressure
            // stops the server reading; the write timeout then begins the graceful close
            // (input discarded for the 1 s linger), after which our writes fail. Bounded in
            // time, not bytes: discarding is as fast as loopback.
            let lines = b"never read this reply\n".repeat(4096);
            let started = Instant::now();
            let mut sent = 0usize;
            while started.elapsed() < LIMIT {
                match (&hog).write(&lines) {
                    Ok(n) => sent += n,
                    Err(_) => return (sent, started.elapsed()),
                }
            }
            panic!("server never stopped reading from a client that does not read");
        })
    };
    // Others are served meanwhile.
    for _ in 0..20 {
        honest(addr);
    }
    let (sent, took) = writer.join().unwrap();
    assert!(sent > 0);
    // Write timeout, plus the linger, plus a sweep period or two.
    assert!(took < Duration::from_secs(6), "cut off only after {took:?}");
    let grown = status_kib(server.pid(), "VmHWM:").saturating_sub(before);
    assert!(grown < 8 * 1024, "peak RSS grew by {grown} KiB");
    honest(addr);
}

#[test]
fn connection_flood_beyond_the_cap_is_refused_cleanly() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--max-conns", "50"]);
    let addr = server.tcp[0];
    // Fill the cap with served connections.
    let mut held: Vec<TcpClient> = (0..50)
        .map(|_| TcpClient::connect(addr, LIMIT).unwrap())
        .collect();
    for c in &mut held {
        assert_eq!(c.request(b"in").unwrap(), b"IN");
    }
    // The flood: each gets the error line (or a reset) and is closed.
    for _ in 0..300 {
        let mut s = connect(addr);
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) => assert_eq!(got, ErrorReply::TooManyConnections.reply()),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    // Held connections were not disturbed; after they go, new clients are served.
    for c in &mut held {
        assert_eq!(c.request(b"still").unwrap(), b"STILL");
    }
    drop(held);
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut c = TcpClient::connect(addr, LIMIT).unwrap();
        if c.request(b"later").is_ok_and(|r| r == b"LATER") {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after the flood");
    }
}

#[test]
fn running_out_of_file_descriptors_backs_off_and_recovers() {
    if common::skip_under_wine(
        "RLIMIT_NOFILE does not bind a Windows program: Wine keeps its sockets in wineserver",
    ) {
        return;
    }
    // Soft and hard limit 48: the server cannot raise it. Some descriptors are taken by the
    // runtime, the listeners and the logger; the rest by connections.
    let mut server = ServerProc::start_with_nofile(48, &["--tcp", "127.0.0.1:0", "--no-udp"]);
    let addr = server.tcp[0];
    // 80 connections: the kernel completes them all (backlog), the server accepts until EMFILE.
    // Each sends a line; the first ones are answered, and then one is not, because the server
    // has no descriptor left to accept it with.
    let mut held: Vec<TcpStream> = (0..80).map(|_| connect(addr)).collect();
    let exhausted = Instant::now();
    for s in &mut held {
        s.write_all(b"x\n").unwrap();
    }
    let mut answered = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut reply = [0u8; 2];
        match s.read_exact(&mut reply) {
            Ok(()) => {
                assert_eq!(&reply, b"X\n");
                answered += 1;
            }
            Err(_) => break,
        }
    }
    assert!(
        (1..80).contains(&answered),
        "answered {answered} of 80 with 48 descriptors"
    );
    // Still out of descriptors for 1.5 s more: the waiting client stays unanswered, and the
    // server backs off instead of spinning on its listener (it uses little CPU).
    let cpu_before = cpu_secs(server.pid());
    let waiting = &mut held[answered];
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut reply = [0u8; 2];
    assert!(
        waiting.read_exact(&mut reply).is_err(),
        "answered without a descriptor"
    );
    let cpu = cpu_secs(server.pid()) - cpu_before;
    assert!(
        cpu < 0.5,
        "the server used {cpu:.2} s of CPU in 1.5 s of backing off"
    );
    // Closing them frees descriptors; an honest client is then served (bounded retry while
    // the server works through its backlog).
    drop(held);
    let exhaustion = exhausted.elapsed();
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(mut c) = TcpClient::connect(addr, Duration::from_secs(2))
            && c.request(b"recovered").is_ok_and(|r| r == b"RECOVERED")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after descriptor exhaustion"
        );
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let logs = server.logs();
    assert!(
        logs.contains("out of file descriptors"),
        "exhaustion not logged:\n{logs}"
    );
    // The warning is rate-limited: at most one a second of exhaustion, server-wide.
    let warned: Vec<f64> = logs
        .lines()
        .filter(|l| l.contains("cannot accept"))
        .map(|l| seconds_of_day(l).unwrap_or_else(|| panic!("no timestamp: {l}")))
        .collect();
    assert!(
        warned.len() as f64 <= exhaustion.as_secs_f64().ceil() + 1.0,
        "{} warnings in {exhaustion:?} of exhaustion",
        warned.len()
    );
    println!(
        "{} warnings in {exhaustion:.1?} of exhaustion; {cpu:.2} s of server CPU in 1.5 s of it",
        warned.len()
    );
    for w in warned.windows(2) {
        let gap = (w[1] - w[0]).rem_euclid(86_400.0);
        assert!(gap >= 0.9, "two warnings {gap:.3} s apart");
    }
}

/// User plus system CPU time of process `pid`, in seconds (/proc/PID/stat, 100 ticks a second).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The time of day of a log line's leading RFC 3339 timestamp, in seconds.
fn seconds_of_day(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split_once('T')?.1;
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[test]
fn resets_mid_line_and_bad_bytes_do_not_disturb_the_server() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp"]);
    let addr = server.tcp[0];
    for _ in 0..50 {
        let s = connect(addr);
        (&s).write_all(b"a line cut by a re").unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
    }
    honest(addr);
    // Invalid UTF-8, NUL and control bytes come back verbatim, valid parts uppercased.
    let mut s = connect(addr);
    s.write_all(b"\xff\xfeok\x00nul\x07\x1b[0m\xc3\xa9\xe2\x82\n\xed\xa0\x80x\n")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_to_eof(&mut s),
        b"\xff\xfeOK\x00NUL\x07\x1b[0M\xc3\x89\xe2\x82\n\xed\xa0\x80X\n"
    );
    honest(addr);
}

#[test]
fn udp_hostile_datagrams_and_a_flood_keep_the_amplification_bound() {
    let server = ServerProc::start(&["--no-tcp", "--udp", "127.0.0.1:0"]);
    let addr = server.udp[0];
    let before = status_kib(server.pid(), "VmHWM:");
    // A flood from many source ports, each checking its own replies and counting bytes.
    let (sent, received) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..16)
            .map(|w| {
                scope.spawn(move || {
                    let (mut sent, mut received) = (0usize, 0usize);
                    for k in 0..16 {
                        let s = udp_socket_to(addr);
                        for i in 0..20 {
                            // Hostile bytes, but no request twice: identical requests
                            // repeated faster than 2 a second are limited as a loop would
                            // be (PROTOCOL.md §3.1), which is not what this test measures.
                            let payload: Vec<u8> = match (w + k + i) % 4 {
                                0 => "\u{390}".repeat(i + 1).into_bytes(),
                                1 if i < 4 => Vec::new(),
                                1 => vec![0u8; i],
                                2 => [&b"\xff\x00ctl"[..], &[i as u8, 0x07]].concat(),
                                _ => format!("flood {w} {k} {i} straße").into_bytes(),
                            };
                            let reply = roundtrip(&s, &payload);
                            assert_eq!(reply, upcase_model::upper(&payload));
                            sent += payload.len();
                            received += reply.len();
                        }
                    }
                    (sent, received)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    assert!(
        received <= 3 * sent,
        "amplification over 3x: {received} for {sent}"
    );
    let grown = status_kib(server.pid(), "VmHWM:").saturating_sub(before);
    assert!(grown < 8 * 1024, "peak RSS grew by {grown} KiB");
}

/// The number in environment variable `name`, or `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes shared by the bulk clients that send the same lines.
type Bytes = std::sync::Arc<Vec<u8>>;

/// One bulk client: its socket, what it still has to send, and how far its replies got.
struct Bulk {
    stream: TcpStream,
    input: Bytes,
    expect: Bytes,
    sent: usize,
    received: usize,
}

impl Bulk {
    /// One pass: send what the socket takes, read at most `read_max` bytes and check them
    /// against the model. Returns the bytes read.
    fn pass(&mut self, buf: &mut [u8], read_max: usize, i: usize) -> usize {
        while self.sent < self.input.len() {
            match (&self.stream).write(&self.input[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("bulk client {i}: write failed: {e}"),
            }
        }
        let want = read_max.min(self.expect.len() - self.received);
        if want == 0 {
            return 0;
        }
        match (&self.stream).read(&mut buf[..want]) {
            Ok(0) => panic!("bulk client {i}: cut after {} bytes", self.received),
            Ok(n) => {
                let at = self.received;
                assert!(
                    buf[..n] == self.expect[at..at + n],
                    "bulk client {i}: a wrong byte within bytes {at}..{}",
                    at + n
                );
                self.received += n;
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("bulk client {i}: read failed: {e}"),
        }
    }

    fn done(&self) -> bool {
        self.received == self.expect.len()
    }
}

#[test]
fn slow_reading_bulk_clients_keep_memory_bounded_and_honest_clients_prompt() {
    // Issue 10, item 8: with default flags, many clients each pipeline a few hundred KiB of
    // Unicode lines and then read slowly, but keep their connections. CI runs 300 (a debug
    // build on 2 cores); the 2000 is measured by hand:
    //   UPCASE_SLOW_READERS=2000 cargo test --release --test hostile slow_reading -- --nocapture
    slow_readers(&[]);
}

#[test]
fn slow_reading_bulk_clients_with_replies_held_by_the_server_stay_within_the_budget() {
    // The same with a tiny kernel send buffer: replies wait in the server's memory, not the
    // kernel's, so what bounds it is the reply budget and the reclaiming of output buffers.
    slow_readers(&["--send-buffer", "8192"]);
}

/// Many slow-reading bulk clients and an honest one (`UPCASE_SLOW_READERS` clients, default
/// 300, of `UPCASE_SLOW_READER_KIB` KiB each, default 160), against a server with one worker
/// started with `extra` flags: honest replies within 0.5 s, peak RSS within 64 MiB, every bulk
/// reply exact.
fn slow_readers(extra: &[&str]) {
    // Measured under Wine 8.0: worst honest replies 0.29 s, 5.8 s, 6.9 s, 8.7 s, 10.8 s,
    // 13.3 s, the slow ones a connection left in the accept queue (`ss -ltn`) while the server
    // used half a core and wineserver a whole one; and an idle upcase.exe's peak RSS under Wine
    // is already 51 MiB.
    if common::skip_under_wine(
        "Wine leaves a new connection seconds in the accept queue beside 300 busy ones",
    ) {
        return;
    }
    let clients = env_or("UPCASE_SLOW_READERS", 300);
    let kib = env_or("UPCASE_SLOW_READER_KIB", 160);
    let _ = rlimit::increase_nofile_limit(u64::MAX); // the test itself holds `clients` sockets
    // One worker serves every client, the honest one's worst case (with two, the accepts may
    // split them): when a batch of events was served in its order, full turns first, its reply
    // waited behind the bulk clients' turns, 1.0–1.7 s in 4 runs of 8 over io_uring.
    let mut args = vec!["--tcp", "127.0.0.1:0", "--no-udp", "--workers", "1"];
    args.extend_from_slice(extra);
    let server = ServerProc::start(&args);
    let addr = server.tcp[0];
    // Four different inputs of `kib` KiB of lines, and their replies from the model.
    let variants: Vec<(Bytes, Bytes)> = (0..4u64)
        .map(|v| {
            let mut input = Vec::new();
            let mut k = 0;
            while input.len() < kib * 1024 {
                input.extend_from_slice(
                    upcase_model::unicode_text(v * 1_000_003 + k, 60).as_bytes(),
                );
                input.push(b'\n');
                k += 1;
            }
            let expect = upcase_model::replies(&input, upcase_std::defaults::MAX_LINE);
            (input.into(), expect.into())
        })
        .collect();
    let bulk: Vec<Bulk> = (0..clients)
        .map(|i| {
            // A small receive window: replies back up at the server, not in our kernel.
            let mut stream = connect_with_recv_buffer(addr, 16 * 1024);
            // One round trip first, so the server has accepted every bulk client before any
            // pipelines (a burst of connections arriving with data is a connection flood).
            stream.write_all(format!("hello {i}\n").as_bytes()).unwrap();
            let hello = read_exactly(&mut stream, format!("HELLO {i}\n").len());
            assert_eq!(hello, format!("HELLO {i}\n").as_bytes());
            stream.set_nonblocking(true).unwrap();
            let (input, expect) = variants[i % 4].clone();
            Bulk {
                stream,
                input,
                expect,
                sent: 0,
                received: 0,
            }
        })
        .collect();
    let total: usize = bulk.iter().map(|b| b.expect.len()).sum();
    let received = std::sync::atomic::AtomicUsize::new(0);
    // Bulk clients that have sent all their lines (pipelined) and now only read, slowly.
    let pipelined = std::sync::atomic::AtomicUsize::new(0);
    let finished = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut latencies = Vec::new();
    std::thread::scope(|scope| {
        // Two driver threads share the bulk clients: each pass, every client sends what its
        // socket takes and reads at most 4 KiB; then a 20 ms pause. That is the slow reader:
        // at most 200 KiB/s per connection (pacing the clients, not synchronising anything).
        let mut halves = bulk;
        let second = halves.split_off(clients / 2);
        let drivers: Vec<_> = [(0, halves), (clients / 2, second)]
            .into_iter()
            .map(|(first, mut mine)| {
                let (received, pipelined) = (&received, &pipelined);
                scope.spawn(move || {
                    let mut buf = vec![0u8; 4096];
                    while !mine.iter().all(Bulk::done) {
                        assert!(Instant::now() < deadline, "bulk clients not served in time");
                        for (j, b) in mine.iter_mut().enumerate() {
                            let before = b.sent;
                            let n = b.pass(&mut buf, 4096, first + j);
                            received.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                            if before < b.input.len() && b.sent == b.input.len() {
                                pipelined.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    mine // kept open until every client has finished
                })
            })
            .collect();
        // Meanwhile, an honest client on a new connection, now and then, timed.
        let honest = scope.spawn(|| {
            // From when every bulk client has pipelined all its lines: the server has a few
            // hundred KiB of requests from each to answer, and slow readers to answer them to.
            while pipelined.load(std::sync::atomic::Ordering::Relaxed) < clients {
                assert!(
                    Instant::now() < deadline,
                    "bulk clients could not send their lines"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut times = Vec::new();
            while !finished.load(std::sync::atomic::Ordering::Relaxed)
                && times.len() < 20
                && Instant::now() < deadline
            {
                let t = Instant::now();
                let mut c = TcpClient::connect(addr, LIMIT).unwrap();
                let line = format!("honest {} straße", times.len());
                assert_eq!(
                    c.request(line.as_bytes()).unwrap(),
                    line.to_uppercase().as_bytes()
                );
                times.push(t.elapsed());
                // The next one a little later, while the bulk clients are still busy.
                let pause = Instant::now() + Duration::from_millis(100);
                while Instant::now() < pause && !finished.load(std::sync::atomic::Ordering::Relaxed)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            times
        });
        let kept: Vec<Vec<Bulk>> = drivers.into_iter().map(|d| d.join().unwrap()).collect();
        finished.store(true, std::sync::atomic::Ordering::Relaxed);
        latencies = honest.join().unwrap();
        // Every bulk connection still open and whole: the replies matched byte for byte as
        // they came; here, the totals.
        for (i, b) in kept.iter().flatten().enumerate() {
            assert_eq!(b.received, b.expect.len(), "bulk client {i}");
            assert_eq!(b.sent, b.input.len(), "bulk client {i}");
        }
    });
    let took = started.elapsed();
    assert_eq!(received.load(std::sync::atomic::Ordering::Relaxed), total);
    let peak_kib = status_kib(server.pid(), "VmHWM:");
    let worst = latencies.iter().max().copied().unwrap_or_default();
    println!(
        "{clients} bulk clients x {kib} KiB, server flags {extra:?}, in {took:.1?}: server peak \
         RSS {} MiB; honest reply \
         times over {} requests: max {worst:?}",
        peak_kib / 1024,
        latencies.len()
    );
    assert!(
        latencies.len() >= 3,
        "too few honest requests measured: {latencies:?}"
    );
    assert!(
        worst < Duration::from_millis(500),
        "an honest reply took {worst:?}: {latencies:?}"
    );
    assert!(peak_kib <= 64 * 1024, "server peak RSS {peak_kib} KiB");
}

/// Issue 19, item 3: a refused connection that keeps sending was discarded until its socket
/// would block, with no cap per turn, so with one worker an honest client's worst reply took
/// 416–1,188 ms (15–65 ms beside the same flooder served). Discarding now takes a turn's share
/// like serving does. Both worst round trips are printed for the note.
#[test]
fn a_refused_flooder_cannot_keep_the_worker_to_itself() {
    for refused in [true, false] {
        // With a cap of 1 the flooders, which connect after the honest client, are refused;
        // with 5, served.
        let cap = if refused { "1" } else { "5" };
        let server = ServerProc::start(&[
            "--tcp",
            "127.0.0.1:0",
            "--no-udp",
            "--workers",
            "1",
            "--max-conns",
            cap,
            "--linger-timeout",
            "60",
        ]);
        let addr = server.tcp[0];
        let mut honest = TcpClient::connect(addr, LIMIT).unwrap();
        assert_eq!(honest.request(b"first").unwrap(), b"FIRST");
        let stop = std::sync::atomic::AtomicBool::new(false);
        let worst = std::thread::scope(|scope| {
            // Four flooders: refused ones each linger (60 s) discarding what they send.
            for _ in 0..4 {
                scope.spawn(|| {
                    let mut flooder = connect(addr);
                    // A served flooder stops being read once its replies back up: a write that
                    // waits that long ends the flood.
                    flooder
                        .set_write_timeout(Some(Duration::from_secs(1)))
                        .unwrap();
                    let chunk = b"flood flood flood\n".repeat(16 << 20 >> 4);
                    // Bounded by time: until the honest client is done, or 20 s.
                    let started = Instant::now();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && started.elapsed() < LIMIT
                    {
                        if flooder.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                });
            }
            let mut worst = Duration::ZERO;
            for i in 0..2000u32 {
                let line = format!("honest {i}");
                let t = Instant::now();
                assert_eq!(
                    honest.request(line.as_bytes()).unwrap(),
                    line.to_uppercase().as_bytes()
                );
                worst = worst.max(t.elapsed());
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            worst
        });
        let kind = if refused { "refused" } else { "served" };
        println!("beside a {kind} flooder: worst round trip {worst:?}");
        // The served case is the control. Under Wine, four served flooders saturate wineserver:
        // one CI run measured 285 ms there (58 ms beside the refused ones), so only the
        // refused case, the one this test is about, keeps its bound under Wine.
        if refused
            || !common::skip_under_wine(
                "its bound on the served control: four served flooders saturate wineserver \
                 (285 ms measured)",
            )
        {
            assert!(worst < Duration::from_millis(250), "{kind}: {worst:?}");
        }
    }
}
