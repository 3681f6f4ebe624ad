//! The std driver's edges (issue 19), from the client's side against a real `upcase serve`:
//! urgent bytes, connections still in the backlog at shutdown.

mod common;

use common::{ServerProc, connect, read_exactly, read_to_eof};
use std::io::Write;
use std::net::TcpStream;

/// Item 1: `recv` stops short at an urgent mark, and a driver that took a short read for an
/// empty socket never read the rest: `TWO` never came. An urgent byte is now data in its place
/// (PROTOCOL.md §2), and every line after it is answered at once, in both framings.
#[test]
fn an_urgent_byte_is_data_and_the_lines_after_it_are_answered() {
    for (framing, expect) in [("lines", &b"ONE\n!TWO\n"[..]), ("raw", b"ONE\n!TWO\n")] {
        let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--framing", framing]);
        let mut s = connect(server.tcp[0]);
        // Served once, so the connection is accepted and set up before the server pauses.
        s.write_all(b"x\n").unwrap();
        assert_eq!(read_exactly(&mut s, 2), b"X\n");
        // Paused, so that all three arrive before the server reads any of them.
        server.signal("STOP");
        s.write_all(b"one\n").unwrap();
        socket2::SockRef::from(&s).send_out_of_band(b"!").unwrap();
        s.write_all(b"two\n").unwrap();
        server.signal("CONT");
        // Every byte, before any end of stream: the client has not closed.
        assert_eq!(read_exactly(&mut s, expect.len()), expect, "{framing}");
    }
}

/// Item 5: connections the kernel completed while the server was paused sat in the listen
/// backlog; closing the last listener at the drain reset them. Now each reads a clean end of
/// stream: unanswered if the server had not accepted it when the shutdown began, answered if
/// it had (PROTOCOL.md §2.5), never reset.
#[test]
fn connections_in_the_backlog_at_shutdown_close_without_a_reset() {
    let mut server = ServerProc::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--no-udp",
        "--drain-timeout",
        "5",
        "--workers",
        "1",
    ]);
    let addr = server.tcp[0];
    server.signal("STOP");
    let mut clients: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
    for c in &mut clients {
        c.write_all(b"a line\n").unwrap();
    }
    server.request_stop();
    server.signal("CONT");
    for (i, c) in clients.iter_mut().enumerate() {
        // Our EOF lets the server end its linger; its FIN ends our read (a reset fails it).
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let got = read_to_eof(c);
        assert!(got.is_empty() || got == b"A LINE\n", "client {i}: {got:?}");
    }
    assert!(server.wait().success());
}
