//! End-to-end TCP tests against a real `upcase serve` process on loopback.

mod common;

use common::{LIMIT, Lines, ServerProc, connect, exchange, read_exactly, read_to_eof};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use upcase_model::net::assert_nothing_more;
use upcase_std::{ClientError, ErrorReply, RequestError, TcpClient};

#[test]
fn ipv4_and_ipv6_unicode_lines() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--tcp", "[::1]:0", "--no-udp"]);
    assert_eq!(server.tcp.len(), 2);
    assert!(server.tcp.iter().any(SocketAddr::is_ipv6));
    for (i, &addr) in server.tcp.iter().enumerate() {
        let mut c = TcpClient::connect(addr, LIMIT).unwrap();
        let mut lines_gen = Lines::new(i as u64 + 7);
        for _ in 0..200 {
            let line = lines_gen.line(6);
            let reply = c.request(line.as_bytes()).unwrap();
            assert_eq!(reply, line.to_uppercase().as_bytes(), "{addr} {line:?}");
        }
    }
}

#[test]
fn sixty_four_concurrent_clients_verify_every_reply() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp"]);
    let addr = server.tcp[0];
    std::thread::scope(|s| {
        for seed in 0..64u64 {
            s.spawn(move || {
                let mut c = TcpClient::connect(addr, LIMIT).unwrap();
                let mut lines_gen = Lines::new(seed * 31 + 1);
                let lines: Vec<String> = (0..100).map(|_| lines_gen.line(8)).collect();
                // Pipelined: all lines out, then all replies back, in order.
                let (mut tx, mut rx) = c.split();
                for l in &lines {
                    tx.send_line(l.as_bytes()).unwrap();
                }
                tx.finish().unwrap();
                for l in &lines {
                    assert_eq!(rx.recv_line().unwrap(), l.to_uppercase().as_bytes());
                }
                assert!(matches!(
                    rx.recv_line(),
                    Err(ClientError::Request(RequestError::UnexpectedEof))
                ));
            });
        }
    });
}

#[test]
fn crlf_half_close_and_partial_line_at_eof() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp"]);
    let out = exchange(server.tcp[0], "one\r\ntwo\n\nstraße".as_bytes());
    assert_eq!(out, "ONE\r\nTWO\n\nSTRASSE".as_bytes());
}

#[test]
fn overlong_line_then_good_line_on_the_same_connection() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--max-line", "16"]);
    let mut input = vec![b'x'; 100_000];
    input.extend_from_slice(b"\nexactly sixteen!\nok\n");
    let out = exchange(server.tcp[0], &input);
    let mut expect = ErrorReply::LineTooLong.reply().to_vec();
    expect.extend_from_slice(b"EXACTLY SIXTEEN!\nOK\n");
    assert_eq!(out, expect);
}

#[test]
fn raw_framing_serves_the_lecture_python_client() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--framing", "raw"]);
    let addr = server.tcp[0];
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/lecture_client.py"
        ))
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            "Hello, world".into(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Received 'HELLO, WORLD'\n"
    );
    // Raw framing transforms bytes as they come, newlines included, with no framing.
    assert_eq!(
        exchange(addr, "a\nstraße\r\n".as_bytes()),
        "A\nSTRASSE\r\n".as_bytes()
    );
}

#[test]
fn connection_cap_refuses_cleanly_and_recovers() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--max-conns", "2"]);
    let addr = server.tcp[0];
    let mut a = TcpClient::connect(addr, LIMIT).unwrap();
    let mut b = TcpClient::connect(addr, LIMIT).unwrap();
    // Both are being served, so both count against the cap.
    assert_eq!(a.request(b"a").unwrap(), b"A");
    assert_eq!(b.request(b"b").unwrap(), b"B");
    let mut third = connect(addr);
    assert_eq!(
        read_to_eof(&mut third),
        ErrorReply::TooManyConnections.reply()
    );
    drop(a);
    // Once a slot frees up, new clients are served again. The slot is released after the
    // server has seen the close, so retry (bounded) until it has.
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let mut c = TcpClient::connect(addr, LIMIT).unwrap();
        match c.request(b"again") {
            Ok(r) => {
                assert_eq!(r, b"AGAIN");
                break;
            }
            // Still refused: the error line, or, when our line reached the closed socket first,
            // a reset (PROTOCOL.md §2.3: the server closes right after the error line).
            Err(ClientError::Request(RequestError::Rejected(ErrorReply::TooManyConnections)))
            | Err(ClientError::Request(RequestError::Io(_) | RequestError::UnexpectedEof)) => {
                assert!(std::time::Instant::now() < deadline, "slot never freed");
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(b.request(b"still here").unwrap(), b"STILL HERE");
}

#[test]
fn graceful_shutdown_under_load_loses_no_complete_line() {
    let mut server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp"]);
    let addr = server.tcp[0];
    // Quiet clients: complete lines and a partial one, all acknowledged before SIGTERM.
    let mut quiet: Vec<(TcpStream, Vec<u8>)> = (0..8)
        .map(|i| {
            let mut s = connect(addr);
            let body = format!("first {i}\nsecond {i}\npartial {i}");
            s.write_all(body.as_bytes()).unwrap();
            let expect = format!("FIRST {i}\nSECOND {i}\n");
            let got = read_exactly(&mut s, expect.len());
            assert_eq!(got, expect.as_bytes());
            (s, got)
        })
        .collect();
    // Loaded clients: pipelining lines without pause while the signal arrives.
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Connected before the threads start, so none can arrive after the server has gone.
    let socks: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    let (first_reply, replying) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let loaders: Vec<_> = socks
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let stop = &stop;
                let first_reply = first_reply.clone();
                scope.spawn(move || {
                    let reader = s.try_clone().unwrap();
                    let read = std::thread::spawn(move || {
                        let mut out = vec![0u8; 1];
                        // The first reply byte: this connection's load reaches the server.
                        let got = (&reader).read(&mut out).unwrap_or(0);
                        out.truncate(got);
                        let _ = first_reply.send(());
                        let _ = (&reader).read_to_end(&mut out);
                        out
                    });
                    let mut sent = 0u64;
                    let mut w = &s;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 2_000_000 {
                        if w.write_all(format!("load {i} line {sent}\n").as_bytes())
                            .is_err()
                        {
                            break;
                        }
                        sent += 1;
                    }
                    let out = read.join().unwrap();
                    // Every reply is whole and in order: a prefix of the expected stream, cut only
                    // at a line boundary, and ended by `error: shutting down` if a partial line
                    // was buffered at the signal (PROTOCOL.md §2.5).
                    let text = String::from_utf8(out).unwrap();
                    assert!(
                        text.is_empty() || text.ends_with('\n'),
                        "reply cut: {:?}",
                        &text[text.len().saturating_sub(40)..]
                    );
                    let text = text.strip_suffix("error: shutting down\n").unwrap_or(&text);
                    for (n, line) in text.lines().enumerate() {
                        assert_eq!(line, format!("LOAD {i} LINE {n}"));
                    }
                    text.lines().count()
                })
            })
            .collect();
        // Every loaded connection is being answered before the signal (bounded wait).
        for _ in 0..4 {
            replying
                .recv_timeout(LIMIT)
                .expect("load reaches the server");
        }
        let status = server.terminate();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(status.success(), "exit status {status:?}");
        for l in loaders {
            l.join().unwrap();
        }
    });
    for (s, _) in &mut quiet {
        assert_eq!(read_to_eof(s), ErrorReply::ShuttingDown.reply());
    }
}

#[test]
fn raw_framing_sends_all_65538_bytes_of_10923_iota_before_the_close() {
    // The reproduction of issue 10, item 1, as it was reported.
    let server = ServerProc::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--no-udp",
        "--framing",
        "raw",
        "--max-line",
        "200000",
    ]);
    let input = "\u{390}".repeat(10_923);
    let expect = upcase_model::upper(input.as_bytes());
    assert_eq!(expect.len(), 65_538);
    let mut s = connect(server.tcp[0]);
    s.write_all(input.as_bytes()).unwrap();
    // Every byte arrives while the client still has its sending side open.
    let got = read_exactly(&mut s, expect.len());
    assert!(got == expect, "the reply differs from the model");
    assert_nothing_more(&mut s, "after 10,923 × ΐ");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"");
}

/// Writes `input` in pieces of 1 to a few hundred bytes (characters split across writes
/// included); after each, every reply byte the input so far determines must arrive, and no
/// more, before the next write. End to end, through the `upcase` binary.
fn check_realtime(framing: &str, seed: u64) {
    const MAX_LINE: usize = 64;
    let server = ServerProc::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--no-udp",
        "--framing",
        framing,
        "--max-line",
        &MAX_LINE.to_string(),
    ]);
    let mut text = upcase_model::unicode_text(seed, 6000).into_bytes();
    // Newlines, invalid bytes and an overlong line among the Unicode.
    for (k, at) in (0..text.len()).step_by(97).enumerate().rev() {
        let insert: &[u8] = match k % 5 {
            0..=2 => b"\n",
            3 => b"\xff\xe2\x82",
            _ => &[b'x'; 150],
        };
        text.splice(at..at, insert.iter().copied());
    }
    let cuts: Vec<u64> = {
        let mut x = seed | 1;
        (0..400)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect()
    };
    let mut s = connect(server.tcp[0]);
    let (mut sent, mut received) = (0usize, Vec::new());
    for piece in upcase_model::chunks(&text, &cuts) {
        s.write_all(piece).unwrap();
        sent += piece.len();
        let expect = if framing == "raw" {
            upcase_model::determined_raw(&text[..sent])
        } else {
            upcase_model::determined_lines(&text[..sent], MAX_LINE)
        };
        received.extend(read_exactly(&mut s, expect.len() - received.len()));
        assert!(received == expect, "{framing}: {sent} bytes sent");
        assert_nothing_more(&mut s, &format!("{framing}: {sent} bytes sent"));
    }
    s.shutdown(Shutdown::Write).unwrap();
    received.extend(read_to_eof(&mut s));
    let full = if framing == "raw" {
        upcase_model::upper(&text)
    } else {
        upcase_model::replies(&text, MAX_LINE)
    };
    assert!(received == full, "{framing}: the reply at EOF");
}

#[test]
fn every_determined_reply_byte_arrives_before_more_input_in_both_framings() {
    check_realtime("lines", 11);
    check_realtime("raw", 12);
}

#[test]
fn upcase_send_shows_the_refusal_of_a_full_server_not_a_broken_pipe() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--max-conns", "1"]);
    let addr = server.tcp[0].to_string();
    let mut held = TcpClient::connect(server.tcp[0], LIMIT).unwrap();
    assert_eq!(held.request(b"held").unwrap(), b"HELD");
    // Both ways of sending: words, and lines on stdin (more than any socket buffer holds, so
    // the writer is still busy when the refusal arrives).
    let many: Vec<u8> = b"a line of stdin\n".repeat(500_000);
    for stdin in [None, Some(&b"one\ntwo\n"[..]), Some(&many[..])] {
        let mut cmd = common::upcase();
        cmd.args(["send", "--addr", &addr, "--timeout", "5"]);
        if stdin.is_none() {
            cmd.arg("hello");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let data = stdin.unwrap_or_default().to_vec();
        // `send` may stop reading stdin once refused: a failed feed is fine.
        let feeder = std::thread::spawn(move || input.write_all(&data));
        let out = child.wait_with_output().unwrap();
        let _ = feeder.join().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{out:?}");
        assert!(
            text.contains("error: too many connections"),
            "the refusal is not shown: {text:?}"
        );
        assert!(!text.to_lowercase().contains("broken pipe"), "{text:?}");
        assert!(!text.to_lowercase().contains("reset"), "{text:?}");
    }
    assert_eq!(held.request(b"still").unwrap(), b"STILL");
}
