//! Forged-source UDP against the network firmware under QEMU (`PROTOCOL.md` §3.1): reflection
//! loops started by one spoofed datagram die out after a few exchanges, honest clients are not
//! limited, and the source rules hold for what QEMU's user network lets through.
//!
//! What the guest sees: QEMU's user network (slirp) forwards a datagram from the host's
//! 127.0.0.1:P to the guest as coming from 10.0.2.2:P (the same port), and sends the guest's
//! reply to 10.0.2.2:P back to 127.0.0.1:P. Sources that are not the host's own addresses pass
//! unchanged. So a datagram forged on loopback "from" a host-side peer reaches the guest as
//! that peer's, and the guest's reply starts the loop with it: the peer answers the forwarded
//! port, which slirp delivers to the guest as the peer's again.
//!
//! Needs root (raw sockets, as in CI), `qemu-system-arm` and the `thumbv7m-none-eabi` target.
//! Without raw sockets, each test says so and checks nothing.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use upcase_firmware_net_test::{Guest, build_image, can_spoof, recv_within, spoof};
use upcase_model::upper;

/// A loop that has not died within this long fails the test (the peer stops answering). The
/// guard samples a new reply at least once a second of the guest's time, and under a storm of
/// thousands of exchanges a second QEMU delivers the guest's timer ticks late: a second of the
/// guest's time has been seen to take 10 s.
const LOOP_LIMIT: Duration = Duration::from_secs(40);
/// A loop is over once the peer has heard nothing for this long.
const QUIET: Duration = Duration::from_secs(1);
/// "A few exchanges": the most replies a loop may draw from the guest. A single loop gets the
/// first reply and a burst of 4 repeats (`GuardConfig::DEFAULT`), so 5; room is left for the
/// refill (2 a second) while the loop runs.
const FEW: usize = 8;
/// Longer than the guard's sample lasts (1 s of the guest's time), with room for QEMU's clock.
const SAMPLE_OVER: Duration = Duration::from_millis(1500);

fn boot() -> Option<Guest> {
    if !can_spoof() {
        eprintln!("skipped: no raw sockets here (run as root, as CI does)");
        return None;
    }
    Some(Guest::boot(&build_image("", &[]), &[]))
}

/// A host-side UDP peer that answers every datagram, whoever sent it, with `answer(datagram)`,
/// until it has heard nothing for [`QUIET`] (or [`LOOP_LIMIT`] has passed). Returns what it
/// received, in order.
fn partner(socket: UdpSocket, answer: fn(&[u8]) -> Vec<u8>) -> thread::JoinHandle<Vec<Vec<u8>>> {
    thread::spawn(move || {
        let start = Instant::now();
        let mut heard = Vec::new();
        loop {
            assert!(
                start.elapsed() < LOOP_LIMIT,
                "the loop still ran after {LOOP_LIMIT:?} ({} replies)",
                heard.len()
            );
            let Some((datagram, from)) = recv_within(&socket, QUIET) else {
                break;
            };
            socket.send_to(&answer(&datagram), from).unwrap();
            heard.push(datagram);
        }
        heard
    })
}

fn bind() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

/// `after[name] - before[name]`.
fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, name: &str) -> u64 {
    after[name] - before[name]
}

/// One loop of each kind: the guest against a peer that echoes (its replies are fixed points
/// of the transform), one that lowercases (they are not), and one that uppercases (a second
/// upcase server with no guard of its own). Each is started by one forged datagram and must end
/// after a few exchanges, by the guest's loop guard.
#[test]
fn a_spoofed_loop_with_a_host_peer_dies_out() {
    let Some(mut guest) = boot() else { return };
    let echo: fn(&[u8]) -> Vec<u8> = |d| d.to_vec();
    let lower: fn(&[u8]) -> Vec<u8> = |d| d.to_ascii_lowercase();
    let upcase: fn(&[u8]) -> Vec<u8> = |d| upper(d);
    for (name, answer) in [("echo", echo), ("lowercase", lower), ("upcase", upcase)] {
        let before = guest.totals();
        let (socket, peer) = bind();
        let heard = partner(socket, answer);
        spoof(peer, guest.udp_addr(), b"hello, loop");
        let heard = heard.join().expect("the peer thread");
        let after = guest.totals();
        eprintln!(
            "{name} peer: {} replies from the guest, then {} dropped as a loop",
            heard.len(),
            delta(&before, &after, "loop")
        );
        assert!(
            !heard.is_empty(),
            "{name}: the forged datagram was never answered, so no loop was tested"
        );
        assert!(
            heard.iter().all(|d| d == b"HELLO, LOOP"),
            "{name}: {heard:?}"
        );
        assert!(
            heard.len() <= FEW,
            "{name}: the loop drew {} replies",
            heard.len()
        );
        assert!(
            delta(&before, &after, "loop") >= 1,
            "{name}: the loop was not ended by the guard"
        );
    }
}

/// Several loops with one peer at once, each with its own payload: their replies interleave, so
/// no two in a row repeat, yet they all end. Usually the first sampled reply is one of them,
/// and probation after its drop ends the rest within a few exchanges (15 replies for 3 loops).
/// A loop can also end on its own (QEMU's network drops a datagram now and then); if that was
/// the sampled one, the others run until the next sample, a second of the guest's time later,
/// which at thousands of exchanges a second is thousands of replies (`PROTOCOL.md` §3.1,
/// "Limits"). So the test asks that every loop ends, at least one of them by the guard.
#[test]
fn interleaved_loops_with_one_peer_die_out() {
    let Some(mut guest) = boot() else { return };
    let before = guest.totals();
    let (socket, peer) = bind();
    let heard = partner(socket, |d| d.to_vec());
    let payloads: [&[u8]; 3] = [b"ONE", b"TWO", b"THREE"];
    for p in payloads {
        spoof(peer, guest.udp_addr(), p);
    }
    let heard = heard.join().expect("every loop ended (the peer thread)");
    let after = guest.totals();
    let drops = delta(&before, &after, "loop");
    eprintln!(
        "3 interleaved loops: {} replies, {drops} dropped as loops",
        heard.len()
    );
    let started = payloads
        .iter()
        .filter(|p| heard.iter().any(|d| d == *p))
        .count();
    assert!(started >= 2, "only {started} loops started: {heard:?}");
    // Every loop ended (the peer heard nothing for a while before LOOP_LIMIT), and the guard
    // ended at least one: the others ended by the guard too, or by a lost datagram.
    assert!(drops >= 1, "{} replies and no loop drop", heard.len());
}

/// Honest use is not limited: distinct requests from one socket, one after the other as fast as
/// the guest answers, all get their reply; an identical request repeated quickly gets the first
/// answer and a burst of repeats, then nothing, and is answered again once probation is over.
#[test]
fn honest_clients_are_answered_and_repeats_are_limited() {
    let Some(mut guest) = boot() else { return };
    let before = guest.totals();
    let (client, _) = bind();
    client.connect(guest.udp_addr()).unwrap();
    for i in 0..300u32 {
        let request = format!("request {i} straße");
        client.send(request.as_bytes()).unwrap();
        let (reply, _) = recv_within(&client, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("request {i} got no reply"));
        assert_eq!(reply, upper(request.as_bytes()), "request {i}");
    }
    let after = guest.totals();
    assert_eq!(
        delta(&before, &after, "loop"),
        0,
        "distinct requests were limited"
    );

    // The repeater may share its guard record with the client (1 chance in 16), whose last
    // reply is then the record's sample until the sample's second is over: the repeats would
    // all be answered until then (`PROTOCOL.md` §3.1). Wait it out, so the first repeat is
    // sampled whichever record the repeater has.
    thread::sleep(SAMPLE_OVER);
    let (repeater, _) = bind();
    repeater.connect(guest.udp_addr()).unwrap();
    let start = Instant::now();
    for _ in 0..20 {
        repeater.send(b"same again").unwrap();
        // Paced, so the guest's 8-datagram receive ring keeps up and the guard decides.
        thread::sleep(Duration::from_millis(5));
    }
    let mut answered = 0;
    let mut last = start;
    while let Some((reply, _)) = recv_within(&repeater, Duration::from_millis(500)) {
        assert_eq!(reply, b"SAME AGAIN");
        answered += 1;
        last = Instant::now();
    }
    // The first answer and a burst of 4 repeats, plus the refill (2 a second) while they came.
    let most = 5 + (2.0 * (last - start).as_secs_f64()).ceil() as usize;
    let limited = guest.totals();
    eprintln!(
        "20 identical requests 5 ms apart: {answered} answered, {} dropped",
        delta(&after, &limited, "loop")
    );
    assert!(
        (2..=most).contains(&answered),
        "{answered} of 20 answered, at most {most} expected"
    );
    // Every one that reached the guest and got no answer was the guard's decision.
    let arrived = delta(&after, &limited, "datagrams");
    assert!(arrived > answered as u64, "only {arrived} of 20 arrived");
    assert_eq!(delta(&after, &limited, "loop"), arrived - answered as u64);
    // Probation (2 s) is over and the budget refilled (2 a second): answered again.
    thread::sleep(Duration::from_millis(3000));
    repeater.send(b"same again").unwrap();
    assert_eq!(
        recv_within(&repeater, Duration::from_secs(5)).map(|(r, _)| r),
        Some(b"SAME AGAIN".to_vec())
    );
}

/// The source rules, for each source slirp delivers to the guest as it was forged: port 0, a
/// port below 1024, the guest's own address and port. Each forged datagram is counted under
/// its reason and answered by nothing; a request from an ordinary port right after is
/// answered. Sources that are not unicast (multicast, broadcast) never reach the guest through
/// slirp, which the test checks too, so it notices if they ever do.
#[test]
fn source_rules_hold_for_forged_sources() {
    let Some(mut guest) = boot() else { return };
    // (source, the reason it is dropped for, whether slirp delivers it to the guest)
    let cases: [(&str, &str, bool); 6] = [
        ("127.0.0.1:0", "source_port_zero", true),
        ("127.0.0.1:53", "low_source_port", true),
        ("127.0.0.1:1023", "low_source_port", true),
        // Not a host address, so slirp leaves it as it is: the guest's own.
        ("10.0.2.15:9876", "own_address", true),
        // Never delivered to the guest (QEMU 7.2 here): the core's tests cover them.
        ("224.0.0.1:40000", "not_unicast", false),
        ("255.255.255.255:40000", "not_unicast", false),
    ];
    let (client, _) = bind();
    client.connect(guest.udp_addr()).unwrap();
    for (i, (source, reason, delivered)) in cases.into_iter().enumerate() {
        let source: SocketAddr = source.parse().unwrap();
        // Where a reply to a loopback source would arrive, if the guest sent one.
        let catcher = (source.ip().is_loopback() && source.port() != 0)
            .then(|| UdpSocket::bind(source).ok())
            .flatten();
        let before = guest.totals();
        spoof(source, guest.udp_addr(), b"forged");
        // The datagram after it, from an honest port, is answered: the forged one was handled.
        // (Each one distinct: repeats would be limited.)
        let honest = format!("after {i}");
        client.send(honest.as_bytes()).unwrap();
        let (reply, _) = recv_within(&client, Duration::from_secs(5)).expect("a reply");
        assert_eq!(reply, upper(honest.as_bytes()));
        let after = guest.totals();
        let counted = delta(&before, &after, reason);
        let datagrams = delta(&before, &after, "datagrams");
        eprintln!("forged from {source}: {reason} +{counted}, datagrams +{datagrams}");
        if let Some(catcher) = &catcher {
            assert_eq!(
                recv_within(catcher, Duration::from_millis(200)),
                None,
                "{source} was answered"
            );
        }
        if delivered {
            assert_eq!(datagrams, 2, "forged from {source}: not delivered");
        }
        if datagrams == 2 {
            assert_eq!(counted, 1, "forged from {source}: not counted as {reason}");
        } else {
            assert_eq!((datagrams, counted), (1, 0), "forged from {source}");
            eprintln!("  (QEMU's user network does not deliver it: no guest decision to test)");
        }
    }
}
