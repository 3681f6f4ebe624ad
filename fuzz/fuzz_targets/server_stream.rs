//! The std server's two drivers over real loopback sockets: arbitrary bytes, repeated up to 64
//! times (so a case reaches hundreds of KiB, enough for the io_uring worker's direct mode,
//! which needs a receive of 8 KiB), written in arbitrary pieces (coalesced into 64 KiB writes
//! from 32 repeats on), then the client's half-close.
//! What the client reads, up to the server's end of stream (never a reset), is the reference
//! model's replies byte for byte, on epoll and on io_uring alike (the latter where the kernel
//! runs it). A short `max_line` makes overlong lines and their error replies common.
//!
//! One server per driver for the whole fuzzing process (a thread of it, ended with it),
//! bound to 127.0.0.1 port 0. Every socket operation has a timeout, so a server that withholds
//! a reply or never closes fails the case instead of hanging it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;
use upcase_model::{pieces, replies};
use upcase_std::{Io, Server, ServerConfig, ServerEvent};

/// The longest line the servers take.
const MAX_LINE: usize = 64;
/// Bound on every connect, write and read, and on a server's start.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a server on `io` in a thread of this process, and waits until it serves; `None` if
/// it cannot (io_uring refused by the kernel: `Server::run` fails before it serves).
fn start(io: Io) -> Option<SocketAddr> {
    let mut config = ServerConfig::new()
        .tcp(vec!["127.0.0.1:0".to_owned()])
        .udp(Vec::<String>::new())
        .io(io);
    config.limits.max_line = MAX_LINE;
    let server = Server::bind(config).ok()?;
    let addr = server.tcp_addrs()[0];
    let (serving, started) = mpsc::channel();
    std::thread::spawn(move || {
        let run = server.run_with(|e| {
            if e == ServerEvent::Serving {
                let _ = serving.send(());
            }
        });
        if let Err(e) = run {
            eprintln!("{io:?} server not run: {e}");
        }
    });
    started.recv_timeout(TIMEOUT).ok()?;
    Some(addr)
}

fn servers() -> &'static [(Io, SocketAddr)] {
    static SERVERS: OnceLock<Vec<(Io, SocketAddr)>> = OnceLock::new();
    SERVERS.get_or_init(|| {
        [Io::Epoll, Io::Uring]
            .into_iter()
            .filter_map(|io| Some((io, start(io)?)))
            .collect()
    })
}

/// A case from raw bytes: the repeat count (byte 0, 1 to 64), the number of cut points (byte
/// 1, up to 31), the cut points (2 bytes each), and the rest, the bytes to repeat.
fn parse(data: &[u8]) -> (usize, Vec<u16>, &[u8]) {
    let repeat = usize::from(data.first().copied().unwrap_or(0) % 64) + 1;
    let n = usize::from(data.get(1).copied().unwrap_or(0) % 32);
    let rest = data.get(2..).unwrap_or_default();
    let (cuts, unit) = rest.split_at((2 * n).min(rest.len()));
    let cuts = cuts
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    (repeat, cuts, unit)
}

fuzz_target!(|data: &[u8]| {
    let (repeat, cuts, unit) = parse(data);
    let input = unit.repeat(repeat);
    let want = replies(&input, MAX_LINE);
    let input = std::sync::Arc::new(input);
    for &(io, addr) in servers() {
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        // Written by another thread while this one reads: the replies can outgrow the socket
        // buffers.
        let mut w = s.try_clone().unwrap();
        let (input, cuts) = (input.clone(), cuts.clone());
        let writer = std::thread::spawn(move || {
            // Many repeats go out in writes of up to 64 KiB (the pieces coalesced), so that the
            // server's receives fill; fewer, piece by piece.
            let capacity = if repeat >= 32 { 64 * 1024 } else { 0 };
            let mut out = std::io::BufWriter::with_capacity(capacity, &mut w);
            for r in pieces(input.len(), &cuts) {
                out.write_all(&input[r])?;
            }
            out.flush()?;
            drop(out);
            w.shutdown(Shutdown::Write)
        });
        let mut got = Vec::new();
        let read = s.read_to_end(&mut got);
        let written = writer.join().expect("the writer thread");
        if let Err(e) = written.and(read.map(drop)) {
            panic!(
                "{io:?}: {e} after {} of {} reply bytes",
                got.len(),
                want.len()
            );
        }
        assert!(got == want, "{io:?}: the replies are not the model's");
    }
});
