//! A UDP socket is served until it would block, not until a receive call returns less than it
//! could hold (issue 20). Off Linux each receive call returns one datagram, and an event loop
//! that stops early is not woken again for the datagrams left: Windows re-arms readiness only
//! after `WouldBlock`, and any system wakes the loop only when a new datagram arrives.
//!
//! The test queues datagrams on the server's bound socket before its worker starts, so that one
//! readiness event is all the worker ever gets. CI runs it twice on Linux: as built (`recvmmsg`,
//! up to 32 datagrams per call) and with the `_single-datagram` test feature, which takes the
//! one-datagram-per-call path that macOS, FreeBSD and Windows take:
//!
//! ```sh
//! cargo test -p upcase-std --test udp_drain --features _single-datagram
//! ```

mod common;

use common::{LIMIT, config};
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use upcase_std::Server;

/// More than 6 batches of 32, and more than one datagram per readiness event.
const DATAGRAMS: usize = 200;
/// Room for every request and every reply, in the server's socket and in the client's.
const BUFFER: usize = 1 << 20;
/// How long a missing reply is waited for once the replies stop coming. The server answers
/// 200 queued datagrams within milliseconds; a reply that has not come by then never will,
/// because nothing wakes the server again.
const QUIET: Duration = Duration::from_secs(2);

fn request(i: usize) -> Vec<u8> {
    format!("queued datagram {i:03}, straße").into_bytes()
}

#[test]
fn every_datagram_queued_before_the_server_runs_gets_its_reply() {
    let mut cfg = config(false, true);
    cfg.socket.recv_buffer_size = Some(BUFFER);
    let server = Server::bind(cfg).expect("bind");
    let addr = server.udp_addrs()[0];

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(BUFFER)
        .unwrap();
    client.connect(addr).unwrap();
    // The socket is bound, so these wait in its queue: nobody reads it yet.
    for i in 0..DATAGRAMS {
        client.send(&request(i)).unwrap();
    }

    let handle = server.shutdown_handle();
    let run = std::thread::spawn(move || server.run());

    // Every reply, by the request it answers, checked against the model.
    let expected: Vec<Vec<u8>> = (0..DATAGRAMS)
        .map(|i| upcase_model::upper(&request(i)))
        .collect();
    let mut answered = BTreeSet::new();
    let mut buf = [0u8; 256];
    client.set_read_timeout(Some(QUIET)).unwrap();
    let deadline = Instant::now() + LIMIT;
    while answered.len() < DATAGRAMS && Instant::now() < deadline {
        let n = match client.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("receive failed: {e}"),
        };
        let Some(i) = expected.iter().position(|r| r[..] == buf[..n]) else {
            panic!("a reply that answers no request: {:?}", &buf[..n]);
        };
        assert!(answered.insert(i), "request {i} was answered twice");
    }

    handle.shutdown();
    let counters = run.join().expect("server thread").expect("server run");
    let missing: Vec<usize> = (0..DATAGRAMS).filter(|i| !answered.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {DATAGRAMS} queued datagrams were answered; the server stopped serving its socket \
         before it would block. Unanswered: {} requests, the first {:?}",
        answered.len(),
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(counters.datagrams, DATAGRAMS as u64, "{counters:?}");
    assert_eq!(counters.udp_dropped.total(), 0, "{counters:?}");
}
