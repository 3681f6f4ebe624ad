//! End-to-end UDP tests against a real `upcase serve` process on loopback.

mod common;

use common::{LIMIT, Lines, ServerProc};
use std::net::UdpSocket;
use upcase_std::UdpClient;

fn socket_to(server: std::net::SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    })
    .unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

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

fn roundtrip(s: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    s.send(payload).unwrap();
    let n = s.recv(&mut buf).unwrap();
    buf.truncate(n);
    buf
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
