//! `upcase-bench --mode soak`: verified load mixed with every attack of SECURITY.md. Replies
//! are checked against `upcase_model::upper`.

use super::Load;
use super::net::{cannot_connect, connect, words};
use super::report::Outcome;
use super::verify::{bump, mismatch};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;
use upcase_model::upper as oracle;

pub(super) fn run(load: Load<'_>, udp: Option<SocketAddr>) -> Outcome {
    std::thread::scope(|s| {
        s.spawn(|| super::pingpong::run(load, 4));
        s.spawn(|| super::stream::run(load, 2, 16));
        s.spawn(|| repeat(load, "endless line", endless_line));
        s.spawn(|| repeat(load, "non-reader", non_reader));
        s.spawn(|| repeat(load, "reset mid-line", reset_mid_line));
        s.spawn(|| repeat(load, "invalid UTF-8", invalid_utf8));
        s.spawn(|| idle_connections(load, 200));
        if let Some(addr) = udp {
            s.spawn(move || repeat(load, "hostile datagrams", |l| hostile_udp(l, addr)));
        }
    });
    Outcome::default()
}

/// Runs one attack over and over until the soak is over; an honest failure counts as an error,
/// with its reason in words.
fn repeat(load: Load<'_>, name: &str, attack: impl Fn(Load<'_>) -> std::io::Result<()>) {
    while !load.over() {
        match attack(load) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                load.fail(cannot_connect(load.addr, &e, load.timeout));
            }
            Err(e) => load.fail(format!("soak, {name}: {}", words(&e))),
        }
    }
}

/// Checks `got` against `want`, counting a verified reply or a corrupted one.
fn verify(load: Load<'_>, what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        load.c.verified(got.len());
    } else {
        load.c.wrong(mismatch(&format!("soak, {what}"), want, got));
    }
}

/// 16 MiB with no newline, then a good line: one `error: line too long`, then the reply.
fn endless_line(load: Load<'_>) -> std::io::Result<()> {
    let mut s = connect(load.addr, load.timeout)?;
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..16 {
        s.write_all(&chunk)?;
    }
    s.write_all(b"\nafter the endless line\n")?;
    s.shutdown(Shutdown::Write)?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    verify(
        load,
        "endless line",
        &got,
        b"error: line too long\nAFTER THE ENDLESS LINE\n",
    );
    Ok(())
}

/// Sends lines and never reads a reply, for a second; the connection is then dropped.
fn non_reader(load: Load<'_>) -> std::io::Result<()> {
    let s = connect(load.addr, load.timeout)?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    let lines = b"nobody reads these replies\n".repeat(1024);
    while (&s).write_all(&lines).is_ok() && !load.over() {}
    Ok(())
}

/// A partial line, then a reset (`SO_LINGER` 0).
fn reset_mid_line(load: Load<'_>) -> std::io::Result<()> {
    let s = connect(load.addr, load.timeout)?;
    (&s).write_all(b"this line is cut by a res")?;
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
    drop(s);
    // Pacing, not synchronisation: a few hundred resets a second is attack enough, and keeps
    // the ephemeral ports free.
    std::thread::sleep(Duration::from_millis(5));
    Ok(())
}

/// Lines of invalid UTF-8, NUL and control bytes among valid text, each reply verified.
fn invalid_utf8(load: Load<'_>) -> std::io::Result<()> {
    let mut s = connect(load.addr, load.timeout)?;
    let lines: [&[u8]; 4] = [
        b"\xff\xfeok\x00nul\x07",
        b"\xc3\xa9t\xc3\xa9 \xe2\x82 \xed\xa0\x80 stra\xc3\x9fe",
        b"\x1b[31mred\x1b[0m \xf0\x9f\x98",
        b"\xce\x90\xce\x90 \xef\xac\x81",
    ];
    let mut buf = vec![0u8; 256];
    for line in lines {
        s.write_all(line)?;
        s.write_all(b"\n")?;
        let mut want = oracle(line);
        want.push(b'\n');
        s.read_exact(&mut buf[..want.len()])?;
        verify(load, "invalid UTF-8", &buf[..want.len()], &want);
    }
    Ok(())
}

/// Holds `n` connections that never send, for the whole soak.
fn idle_connections(load: Load<'_>, n: usize) {
    let held: Vec<TcpStream> = (0..n)
        .filter_map(|_| connect(load.addr, load.timeout).ok())
        .collect();
    while !load.over() {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
}

/// Datagrams that grow threefold, empty ones, invalid bytes, and one whose reply cannot fit
/// (dropped: the next reply must be the marker's).
fn hostile_udp(load: Load<'_>, addr: SocketAddr) -> std::io::Result<()> {
    let s = UdpSocket::bind(if addr.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    })?;
    s.connect(addr)?;
    s.set_read_timeout(Some(load.timeout))?;
    let mut buf = vec![0u8; 65536];
    let grows = "\u{390}".repeat(100);
    let too_big = "\u{390}".repeat(30_000);
    let cases: [&[u8]; 4] = [grows.as_bytes(), b"", b"\xff\x00x\x07", too_big.as_bytes()];
    for payload in cases {
        s.send(payload)?;
        let want = if payload.len() == too_big.len() {
            s.send(b"marker")?;
            b"MARKER".to_vec()
        } else {
            oracle(payload)
        };
        match s.recv(&mut buf) {
            Ok(n) => verify(load, "hostile datagrams", &buf[..n], &want),
            Err(_) => bump(&load.c.lost, 1),
        }
    }
    Ok(())
}
