//! The sans-IO pieces that run on a clock, driven by an arbitrary one: a session's timers and
//! close phases under any order of calls and any time steps, and the UDP responder under any
//! peers, requests and times. No panic; the session's promises hold at every step; replies are
//! the oracle's; a loop between two responders dies out.
#![no_main]

use arbitrary::Arbitrary;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use libfuzzer_sys::fuzz_target;
use upcase_core::{
    Closing, DropReason, GuardConfig, LineFramer, LoopGuard, Responder, Session, Timeouts,
    Uppercase,
};

#[derive(Debug, Arbitrary)]
enum Op {
    Recv(Vec<u8>),
    Eof,
    Shutdown,
    Refuse,
    Transmit(u8),
    Sent(u16),
    Blocked,
    HalfClosed,
    /// Time moves on by this many ms (time never goes back).
    Tick(u16),
    Deadline(u16),
    /// A datagram from peer `peer % 8` (some of them forbidden sources).
    Datagram {
        peer: u8,
        payload: Vec<u8>,
        reply_room: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Case {
    raw: bool,
    idle: u16,
    stall: u16,
    linger: u16,
    key: u128,
    ops: Vec<Op>,
    loop_payloads: Vec<Vec<u8>>,
}

fn peer(i: u8) -> SocketAddr {
    let ips = [
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        "::1".parse().unwrap(),
        "::ffff:192.0.2.7".parse().unwrap(),
    ];
    let port = [9876, 0, 53, 40000, 40001][usize::from(i) % 5];
    SocketAddr::new(ips[usize::from(i / 5) % ips.len()], port)
}

fuzz_target!(|case: Case| {
    let timeouts = Timeouts::NONE
        .idle_ms(case.idle.into())
        .write_stall_ms(case.stall.into())
        .linger_ms(case.linger.into());
    let mut s = if case.raw {
        Session::raw(vec![0u8; 16], Uppercase::new())
    } else {
        Session::lines(LineFramer::new(vec![0u8; 16]), Uppercase::new())
    }
    .with_timeouts(timeouts);
    let local: SocketAddr = "127.0.0.1:9876".parse().unwrap();
    let mut udp = Responder::new(
        Uppercase::new(),
        LoopGuard::<4>::new(GuardConfig::DEFAULT, case.key),
    )
    .with_max_request(64);
    let mut now = 0u64;
    s.handle_time(now);
    let mut out = [0u8; 256];
    for op in &case.ops {
        match op {
            Op::Recv(bytes) => {
                let b = s.recv_buffer();
                let k = b.len().min(bytes.len());
                b[..k].copy_from_slice(&bytes[..k]);
                s.handle_recv(k);
            }
            Op::Eof => s.handle_eof(),
            Op::Shutdown => s.handle_shutdown(),
            Op::Refuse => s.refuse(),
            Op::Transmit(n) => {
                let n = usize::from(*n).min(out.len());
                let mut last = 0;
                let k = s.poll_transmit_with(&mut out[..n], |e| {
                    assert!(e.at > last || (e.at == last && last == 0), "ends in order");
                    assert!(e.at <= n);
                    last = e.at;
                });
                assert!(k <= n);
                if matches!(s.poll_close(), Some(Closing::Close | Closing::Linger)) {
                    assert_eq!(k, 0, "nothing is produced once the replies are done");
                }
            }
            Op::Sent(n) => s.handle_sent(usize::from(*n)),
            Op::Blocked => s.handle_blocked(),
            Op::HalfClosed => s.handle_half_closed(),
            Op::Tick(ms) => {
                now += u64::from(*ms);
                s.handle_time(now);
            }
            Op::Deadline(ms) => s.set_deadline(Some(now + u64::from(*ms))),
            Op::Datagram {
                peer: p,
                payload,
                reply_room,
            } => {
                let from = peer(*p);
                let room = usize::from(*reply_room);
                match udp.respond(from, local, payload, now, &mut out[..room]) {
                    Ok(n) => {
                        let expect = upcase_model::upper(payload);
                        assert_eq!(&out[..n], &expect[..]);
                        assert!(payload.len() <= 64);
                        assert!(from.port() >= 1024 && from != local);
                    }
                    Err(DropReason::NotSent) => panic!("the core never reports NotSent"),
                    Err(_) => {}
                }
            }
        }
        // The timer the session asks for is never in the past once handled.
        if let Some(at) = s.poll_timeout() {
            if at <= now {
                s.handle_time(now);
                assert!(
                    s.poll_timeout().is_none_or(|t| t > now),
                    "a due timer fired"
                );
            }
        }
        if s.is_closed() {
            assert!(s.recv_buffer().is_empty() || s.poll_close() != Some(Closing::Close));
        }
    }
    // Whatever happened, a finite sequence of driver steps closes the session once every timer
    // runs: EOF, transmit, half-close, and time.
    if case.idle > 0 && case.linger > 0 {
        s.handle_eof();
        for _ in 0..10_000 {
            let k = s.poll_transmit(&mut out);
            if k > 0 {
                s.handle_sent(k);
                continue;
            }
            match s.poll_close() {
                Some(Closing::Close) => break,
                Some(Closing::HalfClose | Closing::DropAndHalfClose) => s.handle_half_closed(),
                _ => {
                    now = s.poll_timeout().unwrap_or(now).max(now) + 1;
                    s.handle_time(now);
                }
            }
        }
        assert_eq!(
            s.poll_close(),
            Some(Closing::Close),
            "the session never closed"
        );
    }
    // Two guarded responders and spoofed datagrams between them: every loop dies out.
    let (a, b) = (peer(3), peer(4).ip());
    let b = SocketAddr::new(b, 40001);
    let mut ra = Responder::new(
        Uppercase::new(),
        LoopGuard::<4>::new(GuardConfig::DEFAULT, case.key),
    );
    let mut rb = Responder::new(
        Uppercase::new(),
        LoopGuard::<4>::new(GuardConfig::DEFAULT, !case.key),
    );
    let mut flying: Vec<(bool, Vec<u8>)> = case
        .loop_payloads
        .iter()
        .take(8)
        .map(|p| (true, p.clone()))
        .collect();
    let mut rounds = 0;
    let mut reply = vec![0u8; 3 * 256];
    while !flying.is_empty() {
        rounds += 1;
        assert!(
            rounds <= 64,
            "a loop between two responders did not die out"
        );
        let mut next = Vec::new();
        for (to_a, p) in flying {
            let p = &p[..p.len().min(256)];
            let r = if to_a {
                ra.respond(b, a, p, 0, &mut reply)
            } else {
                rb.respond(a, b, p, 0, &mut reply)
            };
            if let Ok(n) = r {
                next.push((!to_a, reply[..n].to_vec()));
            }
        }
        flying = next;
    }
});
