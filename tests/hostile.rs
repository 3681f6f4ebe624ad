//! Hostile peers against a real `upcase serve` process (SECURITY.md): each attack gets its
//! documented answer, memory stays bounded (read from /proc/PID/status), and an honest client is
//! served correctly during and after it.

mod common;

use common::{LIMIT, ServerProc};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
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

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
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
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--idle-timeout", "1"]);
    let addr = server.tcp[0];
    // A thousand that never send, and a thousand that stop in the middle of a line.
    let mut idle: Vec<TcpStream> = (0..1000).map(|_| connect(addr)).collect();
    for s in idle.iter_mut().take(500) {
        s.write_all(b"half a li").unwrap();
    }
    honest(addr);
    // Each is closed by the server after the idle timeout: the read ends (EOF or reset), well
    // within the bound.
    let started = Instant::now();
    for mut s in idle {
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("idle connection got {n} bytes"),
        }
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
    // Soft and hard limit 48: the server cannot raise it. Some descriptors are taken by the
    // runtime, the listeners and the logger; the rest by connections.
    let mut server = ServerProc::start_with_nofile(48, &["--tcp", "127.0.0.1:0", "--no-udp"]);
    let addr = server.tcp[0];
    // 80 connections: the kernel completes them all (backlog), the server accepts until EMFILE.
    // Each sends a line; the first ones are answered, and then one is not, because the server
    // has no descriptor left to accept it with.
    let mut held: Vec<TcpStream> = (0..80).map(|_| connect(addr)).collect();
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
    // Closing them frees descriptors; an honest client is then served (bounded retry while
    // the server works through its backlog).
    drop(held);
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
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(
        got,
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
                        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                        s.connect(addr).unwrap();
                        s.set_read_timeout(Some(LIMIT)).unwrap();
                        for i in 0..20 {
                            let payload: Vec<u8> = match (w + k + i) % 4 {
                                0 => "\u{390}".repeat(i + 1).into_bytes(),
                                1 => Vec::new(),
                                2 => b"\xff\x00ctl\x07".to_vec(),
                                _ => format!("flood {w} {k} {i} straße").into_bytes(),
                            };
                            s.send(&payload).unwrap();
                            let mut buf = vec![0u8; 65536];
                            let n = s.recv(&mut buf).unwrap();
                            let mut expect = Vec::new();
                            for c in payload.utf8_chunks() {
                                expect.extend_from_slice(c.valid().to_uppercase().as_bytes());
                                expect.extend_from_slice(c.invalid());
                            }
                            assert_eq!(&buf[..n], &expect[..]);
                            sent += payload.len();
                            received += n;
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
