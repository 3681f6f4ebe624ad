//! The std server's two drivers over real loopback sockets: arbitrary bytes, written in
//! arbitrary pieces, then the client's half-close. What the client reads, up to the server's
//! end of stream (never a reset), is the reference model's replies byte for byte, on epoll and
//! on io_uring alike (the latter where the kernel allows it). A short `max_line` makes
//! overlong lines and their error replies common.
//!
//! One server per driver for the whole fuzzing process (a thread of it, ended with it),
//! bound to 127.0.0.1 port 0. Every socket operation has a timeout, so a server that withholds
//! a reply or never closes fails the case instead of hanging it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;
use upcase_model::{pieces, replies};
use upcase_std::{Io, Server, ServerConfig};

/// The longest line the servers take.
const MAX_LINE: usize = 64;
/// Bound on every connect, write and read.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a server on `io` in a thread of this process; `None` if it cannot bind (io_uring
/// refused by the kernel).
fn start(io: Io) -> Option<SocketAddr> {
    let mut config = ServerConfig::new()
        .tcp(vec!["127.0.0.1:0".to_owned()])
        .udp(Vec::<String>::new())
        .io(io);
    config.limits.max_line = MAX_LINE;
    let server = Server::bind(config).ok()?;
    let addr = server.tcp_addrs()[0];
    std::thread::spawn(move || server.run());
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

fuzz_target!(|case: (Vec<u8>, Vec<u16>)| {
    let (input, cuts) = case;
    let want = replies(&input, MAX_LINE);
    for &(io, addr) in servers() {
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        // Replies to a few KiB fit the socket buffers: no reader thread needed.
        for r in pieces(input.len(), &cuts) {
            s.write_all(&input[r]).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        if let Err(e) = s.read_to_end(&mut got) {
            panic!(
                "{io:?}: {e} after {} of {} reply bytes",
                got.len(),
                want.len()
            );
        }
        assert!(got == want, "{io:?}: the replies are not the model's");
    }
});
