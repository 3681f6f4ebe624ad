//! End-to-end UDP tests against a real `upcase serve` process on loopback.

mod common;

use common::{LIMIT, Lines, ServerProc, roundtrip, udp_socket_to as socket_to};
use std::net::UdpSocket;
use upcase_std::UdpClient;

#[test]
fn replies_are_exact_length_on_ipv4_and_ipv6() {
    let server = ServerProc::start(&["--no-tcp", "--udp", "127.0.0.1:0", "--udp", "[::1]:0"]);
    for &addr in &server.udp {
        let s = socket_to(addr);
        let mut buf = vec![0u8; 65536];
        let mut lines = Lines::new(addr.port().into());
        for i in 0..200 {
            // Newlines are data over UDP.
            let payload = if i % 10 == 0 {
                format!("{}\n{}", lines.line(4), lines.line(4))
            } else {
                lines.line(8)
            };
            s.send(payload.as_bytes()).unwrap();
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], payload.to_uppercase().as_bytes(), "{addr}");
        }
        // An empty datagram gets an empty reply.
        s.send(b"").unwrap();
        assert_eq!(s.recv(&mut buf).unwrap(), 0);
    }
}

/// A request the server must drop, followed by a marker that it must answer: the first reply
/// to arrive must be the marker's. One socket, one server thread: order is kept on loopback.
fn assert_dropped(s: &UdpSocket, request: &[u8]) {
    s.send(request).unwrap();
    let reply = roundtrip(s, b"marker");
    assert_eq!(
        reply,
        b"MARKER",
        "the request got a reply of {} bytes",
        reply.len()
    );
}

#[test]
fn replies_that_cannot_fit_are_dropped_whole() {
    let server = ServerProc::start(&["--no-tcp", "--udp", "127.0.0.1:0"]);
    let s = socket_to(server.udp[0]);
    // 30000 × U+0390 = 60000 bytes; the reply would be 180000 bytes, over the UDP limit.
    assert_dropped(&s, "\u{390}".repeat(30_000).as_bytes());
    // The largest reply that fits is sent whole: 65505 bytes from 21835 × U+0390.
    let big = "\u{390}".repeat(10_917);
    let mut c = UdpClient::connect(server.udp[0], LIMIT).unwrap();
    assert_eq!(
        c.request(big.as_bytes()).unwrap(),
        big.to_uppercase().as_bytes()
    );
}

#[test]
fn amplification_cap_drops_growing_replies_only() {
    let server = ServerProc::start(&["--no-tcp", "--udp", "127.0.0.1:0", "--udp-no-amplify"]);
    let s = socket_to(server.udp[0]);
    assert_dropped(&s, "\u{390}".as_bytes());
    assert_dropped(&s, "ŉ".as_bytes()); // 2 B grow to 3 B
    // ß (2 B) becomes SS (2 B): not growing, so answered.
    assert_eq!(roundtrip(&s, "straße".as_bytes()), "STRASSE".as_bytes());
    let mut c = UdpClient::connect(server.udp[0], LIMIT).unwrap();
    assert_eq!(c.request("héllo".as_bytes()).unwrap(), "HÉLLO".as_bytes());
}

/// A socket on 127.0.0.1 with a free port below 1024 (root may bind them; the tests run as
/// root).
fn low_port_socket() -> UdpSocket {
    let s = (900..1024u16)
        .rev()
        .find_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
        .expect("no free port below 1024 (the tests run as root)");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

#[test]
fn low_source_ports_get_no_reply_unless_the_flag_allows_them() {
    let low = low_port_socket();
    let mut server = ServerProc::start(&["--no-tcp", "--udp", "127.0.0.1:0"]);
    low.send_to(b"ntp?", server.udp[0]).unwrap();
    // A marker from an ordinary port: the server serves its socket in order, so once the
    // marker is answered, the low port's datagram has been handled.
    let s = socket_to(server.udp[0]);
    assert_eq!(roundtrip(&s, b"marker"), b"MARKER");
    low.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let r = low.recv_from(&mut buf);
    assert!(
        r.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a port below 1024 got a reply: {r:?}"
    );
    low.set_nonblocking(false).unwrap();
    assert!(server.terminate().success());
    let counters = server.stop_counters();
    assert_eq!(counters["dropped_low_source_port"], 1, "{counters:?}");
    assert_eq!(counters["datagrams"], 1, "{counters:?}");

    let server = ServerProc::start(&["--no-tcp", "--udp", "127.0.0.1:0", "--udp-allow-low-ports"]);
    low.send_to(b"ntp?", server.udp[0]).unwrap();
    let (n, from) = low.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"NTP?"[..], server.udp[0]));
}

#[test]
fn a_second_server_cannot_take_a_udp_port_in_use() {
    let first = ServerProc::start(&["--no-tcp", "--udp", "127.0.0.1:0"]);
    let port = first.udp[0].to_string();
    let out = common::upcase()
        .args(["serve", "--no-tcp", "--udp", &port])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "it said it was listening: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // Said in our words on every system: Windows' own ("Only one usage of each socket
    // address ...") and Wine's ("OS Error 10048") do not say "in use".
    assert!(err.contains("address in use"), "{err}");
    // The first one still has its traffic.
    let s = socket_to(first.udp[0]);
    assert_eq!(roundtrip(&s, b"mine"), b"MINE");
    if common::under_wine() {
        // Windows has no SO_REUSEPORT: the flag is an error there (docs/platforms.md).
        let out = common::upcase()
            .args(["serve", "--no-tcp", "--udp", "127.0.0.1:0", "--reuse-port"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty(), "it said it was listening: {out:?}");
        assert!(err.contains("no SO_REUSEPORT"), "{err}");
        return;
    }
    // With --reuse-port on both, sharing is the explicit opt-in.
    let a = ServerProc::start(&["--no-tcp", "--udp", "127.0.0.1:0", "--reuse-port"]);
    let shared = a.udp[0].to_string();
    let b = ServerProc::start(&["--no-tcp", "--udp", &shared, "--reuse-port"]);
    assert_eq!(a.udp, b.udp);
}
