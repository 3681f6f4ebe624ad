//! A server of a custom transform, built on `upcase-std` as its docs show (ROT13), against both
//! clients and `upcase send` (issue 18, item 3). An error reply is recognised by its whole line
//! (PROTOCOL.md §2.3), so a transformed line that merely starts with `error: ` is a reply, the
//! two clients read every line alike, and `send` prints the server's line as it arrived.

mod common;

use std::sync::Arc;
use std::time::Duration;
use upcase_std::{
    ByteMap, ClientError, ErrorReply, RequestError, Server, ServerConfig, TcpClient, UdpClient,
};

fn rot13(b: u8) -> u8 {
    match b {
        b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
        b'A'..=b'Z' => (b - b'A' + 13) % 26 + b'A',
        _ => b,
    }
}

/// A ROT13 server on free loopback ports, run on its own thread until the handle stops it.
fn rot13_server() -> (Server, upcase_std::ShutdownHandle) {
    let mut config = ServerConfig::default();
    config.addresses.tcp = vec!["127.0.0.1:0".into()];
    config.addresses.udp = vec!["127.0.0.1:0".into()];
    config.transform = Arc::new(|| Box::new(ByteMap(rot13)));
    config.runtime.workers = Some(1);
    let server = Server::bind(config).unwrap();
    let stop = server.shutdown_handle();
    (server, stop)
}

#[test]
fn both_clients_and_send_read_a_custom_transforms_lines_alike() {
    let (server, stop) = rot13_server();
    let (tcp, udp) = (server.tcp_addrs()[0], server.udp_addrs()[0]);
    let running = std::thread::spawn(move || server.run());
    let timeout = Duration::from_secs(20);
    let mut t = TcpClient::connect(tcp, timeout).unwrap();
    let mut u = UdpClient::connect(udp, timeout).unwrap();

    // `reebe: k` becomes `error: x`: no error line, so a reply, on both transports.
    assert_eq!(t.request(b"reebe: k").unwrap(), b"error: x");
    assert_eq!(u.request(b"reebe: k").unwrap(), b"error: x");
    // A line whose ROT13 equals an error line cannot be told from one on the wire: both
    // clients read it as that error, alike (the documented limit of custom transforms).
    for client in ["tcp", "udp"] {
        let got = match client {
            "tcp" => t.request(b"reebe: yvar gbb ybat").map(<[u8]>::to_vec),
            _ => u.request(b"reebe: yvar gbb ybat").map(<[u8]>::to_vec),
        };
        assert!(
            matches!(
                got,
                Err(ClientError::Request(RequestError::Rejected(
                    ErrorReply::LineTooLong
                )))
            ),
            "{client}: {got:?}"
        );
    }
    // The TCP connection goes on after it.
    assert_eq!(t.request(b"uryyb").unwrap(), b"hello");

    // `upcase send` prints each line exactly as it arrived, over TCP and UDP.
    for transport in [
        vec!["--addr".to_owned(), tcp.to_string()],
        vec!["--udp".to_owned(), "--addr".to_owned(), udp.to_string()],
    ] {
        let out = common::upcase()
            .arg("send")
            .args(&transport)
            .arg("reebe: k")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"error: x\n", "{transport:?}: {out:?}");
        assert!(out.status.success(), "{transport:?}: {out:?}");
    }
    drop((t, u));
    stop.shutdown();
    running.join().unwrap().unwrap();
}
