//! What a completion-based driver can get wrong and a readiness one hardly can: buffers and
//! descriptors that must outlive operations in flight. Each test runs against both drivers
//! (io_uring is Linux only): shutdown while every connection is busy, and connections reset
//! while the server is receiving from them or sending to them. The oracle is the model.
#![cfg(target_os = "linux")]

mod common;

use common::{LIMIT, Running, config, connect, read_exactly};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use upcase_std::Io;

const DRIVERS: [Io; 2] = [Io::Epoll, Io::Uring];

/// Client `c`'s request: `lines` distinct lines of about 100 bytes, mixed scripts.
fn request(c: usize, lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        out.extend_from_slice(format!("client {c} line {i} straße ﬁ héllo ").as_bytes());
        out.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, 50));
        out.push(b'\n');
    }
    out
}

/// A TCP server on `io` whose drain may take up to [`LIMIT`], so that no test here depends on
/// the drain deadline; `max_connections` as given, or the default.
fn start(io: Io, max_connections: Option<usize>) -> Running {
    let mut cfg = config(true, false).io(io);
    if let Some(cap) = max_connections {
        cfg.limits.max_connections = cap;
    }
    cfg.runtime.drain_timeout = LIMIT;
    Running::start(cfg)
}

/// Splits `out` into lines, each with its `\n`, the last one possibly open.
fn lines_of(out: &[u8]) -> Vec<&[u8]> {
    out.split_inclusive(|&b| b == b'\n').collect()
}

#[test]
fn shutdown_under_load_answers_a_prefix_of_every_stream_and_counts_exactly_what_was_delivered() {
    const CLIENTS: usize = 16;
    const LINES: usize = 40_000;
    for io in DRIVERS {
        let server = start(io, None);
        let addr = server.tcp();
        let connected = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let connected = connected.clone();
                std::thread::spawn(move || {
                    let input = request(c, LINES);
                    let mut s = connect(addr);
                    connected.fetch_add(1, Ordering::SeqCst);
                    let mut writer = s.try_clone().unwrap();
                    let sent = input.clone();
                    // The writer may be cut short by the shutdown; the reader decides.
                    let w = std::thread::spawn(move || {
                        let _ = writer.write_all(&sent);
                        let _ = writer.shutdown(Shutdown::Write);
                    });
                    let mut out = Vec::new();
                    let read = s.read_to_end(&mut out);
                    let _ = w.join();
                    (input, out, read.map(drop).map_err(|e| e.kind()))
                })
            })
            .collect();
        // Load first: every client is connected and replies flow before the stop.
        let until = Instant::now() + LIMIT;
        while connected.load(Ordering::SeqCst) < CLIENTS
            || server_lines(&server) < CLIENTS as u64 * 50
        {
            assert!(Instant::now() < until, "{io}: no load reached the server");
            std::thread::yield_now();
        }
        let stopped_at = Instant::now();
        let (counters, returned) = server.stop_at();
        assert!(
            returned.duration_since(stopped_at) < LIMIT,
            "{io}: the drain took the whole deadline"
        );
        let mut delivered = 0u64;
        for (c, client) in clients.into_iter().enumerate() {
            let (input, out, read) = client.join().unwrap();
            assert_eq!(
                read,
                Ok(()),
                "{io}: client {c} did not get a clean end of stream"
            );
            let want = upcase_model::replies(&input, upcase_std::defaults::MAX_LINE);
            let (got, want) = (lines_of(&out), lines_of(&want));
            for (i, line) in got.iter().enumerate() {
                if i + 1 == got.len() && *line == b"error: shutting down\n" {
                    break;
                }
                assert_eq!(
                    Some(line),
                    want.get(i),
                    "{io}: client {c}, reply {i} is not the model's"
                );
                delivered += 1;
            }
        }
        assert!(
            delivered < (CLIENTS * LINES) as u64,
            "{io}: every line was answered before the stop: not a shutdown under load"
        );
        assert_eq!(
            counters.lines, delivered,
            "{io}: the server counted replies that no client received, or missed some"
        );
    }
}

/// Lines answered so far, read through a fresh counters handle.
fn server_lines(server: &Running) -> u64 {
    server.counters().snapshot().lines
}

/// Resets `s` (RST, no FIN): `SO_LINGER` 0, then close.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

#[test]
fn connections_reset_mid_receive_and_mid_send_free_their_places_and_the_rest_is_served() {
    const CAP: usize = 8;
    const ROUNDS: usize = 4;
    for io in DRIVERS {
        let server = start(io, Some(CAP));
        let addr = server.tcp();
        let mut connects = 0u64;
        for round in 0..ROUNDS {
            let mut conns = Vec::new();
            for c in 0..CAP {
                let mut s = connect(addr);
                connects += 1;
                if c % 2 == 0 {
                    // Mid-send: requests until the socket takes no more, and no reading, so the
                    // server's replies back up behind a full socket. A first reply proves the
                    // server is at work.
                    let input = request(c, 100_000);
                    s.set_nonblocking(true).unwrap();
                    let mut off = 0;
                    while off < input.len() {
                        match s.write(&input[off..]) {
                            Ok(n) => off += n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => panic!("{io}: {e}"),
                        }
                    }
                    s.set_nonblocking(false).unwrap();
                    let first = read_exactly(&mut s, 16);
                    assert_eq!(first, format!("CLIENT {c} LINE 0 ").as_bytes(), "{io}");
                } else {
                    // Mid-receive: half a line, then nothing.
                    s.write_all(b"half a li").unwrap();
                }
                conns.push(s);
            }
            conns.into_iter().for_each(reset);
            // Every place under the cap is free again: CAP clients at once are all served
            // (those that came before the server saw a reset are refused, and try again).
            let until = Instant::now() + LIMIT;
            loop {
                assert!(
                    Instant::now() < until,
                    "{io}: round {round}: places not freed"
                );
                let batch: Vec<TcpStream> = (0..CAP)
                    .map(|i| {
                        let mut s = connect(addr);
                        s.write_all(format!("round {round} client {i}\n").as_bytes())
                            .unwrap();
                        s
                    })
                    .collect();
                connects += CAP as u64;
                let mut all_served = true;
                for (i, mut s) in batch.into_iter().enumerate() {
                    s.shutdown(Shutdown::Write).unwrap();
                    let out = common::read_to_eof(&mut s);
                    if out == b"error: too many connections\n" {
                        all_served = false;
                        continue;
                    }
                    let want = format!("ROUND {round} CLIENT {i}\n");
                    assert_eq!(out, want.as_bytes(), "{io}: round {round}");
                }
                if all_served {
                    break;
                }
            }
        }
        // Nothing is left open: the stop does not wait for the drain deadline.
        let stopped_at = Instant::now();
        let (counters, returned) = server.stop_at();
        assert!(
            returned.duration_since(stopped_at) < Duration::from_secs(5),
            "{io}: a reset connection was still open at the stop"
        );
        assert_eq!(counters.connections + counters.refused, connects, "{io}");
    }
}

/// The io_uring worker serves a flowing stream with direct system calls between poll
/// operations, and a request-reply client with receive and send operations; one connection
/// goes from one to the other and back. Every byte comes back exactly, in order, in every
/// phase: a bulk stream read while it is written, single requests each answered before the
/// next, a second stream, and a last partial line answered at the half-close, then a clean end
/// of stream (no reset).
#[test]
fn a_connection_that_streams_then_asks_one_line_at_a_time_then_streams_gets_every_byte() {
    const BULK_LINES: usize = 20_000; // about 2 MiB: every receive fills, so direct mode begins
    let max_line = upcase_std::defaults::MAX_LINE;
    for io in DRIVERS {
        let server = start(io, None);
        let mut s = connect(server.tcp());
        for phase in 0..2 {
            // A stream, written by one thread while this one reads every reply.
            let input = request(phase, BULK_LINES);
            let want = upcase_model::replies(&input, max_line);
            let mut writer = s.try_clone().unwrap();
            let written = std::thread::spawn(move || writer.write_all(&input));
            let got = read_exactly(&mut s, want.len());
            written.join().unwrap().unwrap();
            assert!(got == want, "{io}: stream {phase} is not the model's");
            // Then one line at a time, each answered before the next is sent.
            for i in 0..50 {
                let line = format!("phase {phase} request {i} ﬁnal ß\n");
                s.write_all(line.as_bytes()).unwrap();
                let want = upcase_model::replies(line.as_bytes(), max_line);
                assert_eq!(
                    read_exactly(&mut s, want.len()),
                    want,
                    "{io}: request {i} after stream {phase}"
                );
            }
        }
        s.write_all("tail ß".as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            common::read_to_eof(&mut s),
            "TAIL SS".as_bytes(),
            "{io}: the partial line at the half-close"
        );
    }
}
