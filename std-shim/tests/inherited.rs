//! Sockets the program already holds (a service manager's, in `upcase serve`), and what a running
//! server reports to its program: `Serving` once every socket is served, `Draining` when the
//! shutdown begins, and counters read while it runs.

mod common;
use common::LIMIT;
use std::net::{TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use upcase_std::{
    BindError, ConfigError, Server, ServerConfig, ServerCounters, ServerEvent, TcpClient,
    UdpClient, defaults,
};

#[test]
fn given_sockets_are_served_and_nothing_else_is_bound() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    let server = Server::from_listeners(
        ServerConfig::new().no_tcp().no_udp().io(common::io()),
        vec![tcp],
        vec![udp],
    )
    .unwrap();
    // Exactly the given sockets: not the default addresses as well.
    assert_eq!(server.tcp_addrs(), [tcp_addr]);
    assert_eq!(server.udp_addrs(), [udp_addr]);
    let stop = server.shutdown_handle();
    let counters = server.counters_handle();
    let (events_tx, events) = mpsc::channel();
    let running = std::thread::spawn(move || server.run_with(move |e| events_tx.send(e).unwrap()));
    assert_eq!(events.recv_timeout(LIMIT), Ok(ServerEvent::Serving));

    let mut client = TcpClient::connect(tcp_addr, LIMIT).unwrap();
    assert_eq!(client.request("straße".as_bytes()).unwrap(), b"STRASSE");
    let mut udp_client = UdpClient::connect(udp_addr, LIMIT).unwrap();
    assert_eq!(udp_client.request(b"datagram").unwrap(), b"DATAGRAM");
    // Read while running. A worker counts a reply just after handing it to the kernel, so the
    // count may trail the reply by a moment: wait for it, bounded.
    let deadline = Instant::now() + LIMIT;
    let counted = |c: ServerCounters| (c.connections, c.lines, c.datagrams);
    while counted(counters.snapshot()) != (1, 1, 1) {
        assert!(Instant::now() < deadline, "{:?}", counters.snapshot());
        std::thread::park_timeout(Duration::from_millis(1));
    }

    drop(client);
    stop.shutdown();
    assert_eq!(events.recv_timeout(LIMIT), Ok(ServerEvent::Draining));
    let end = running.join().unwrap().unwrap();
    assert_eq!((end.lines, end.datagrams), (1, 1));
    // Nothing else is reported, and `Serving` came once.
    assert_eq!(
        events.recv_timeout(Duration::ZERO),
        Err(mpsc::RecvTimeoutError::Disconnected)
    );
}

#[test]
fn given_sockets_and_configured_addresses_are_served_together() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let given = tcp.local_addr().unwrap();
    let config = ServerConfig::new()
        .tcp(["127.0.0.1:0"])
        .no_udp()
        .io(common::io());
    let server = Server::from_listeners(config, vec![tcp], vec![]).unwrap();
    let addrs = server.tcp_addrs();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert!(addrs.contains(&given), "{addrs:?}");
    assert!(server.udp_addrs().is_empty());
}

#[test]
fn nothing_given_and_nothing_configured_is_nothing_to_serve() {
    let none = Server::from_listeners(ServerConfig::new().no_tcp().no_udp(), vec![], vec![]);
    assert!(matches!(
        none.err(),
        Some(BindError::Config(ConfigError::NothingToServe))
    ));
    // The other checks still apply to given sockets.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let bad = Server::from_listeners(
        ServerConfig::new().no_tcp().no_udp().workers(0),
        vec![tcp],
        vec![],
    );
    assert!(matches!(
        bad.err(),
        Some(BindError::Config(ConfigError::WorkersZero))
    ));
    // And the default is still the defaults' addresses.
    assert_eq!(ServerConfig::new().addresses.tcp, [defaults::TCP]);
}
