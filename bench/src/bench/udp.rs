//! `--mode udp`: C UDP sockets, one datagram in flight on each, a thread each; reports req/s,
//! lost and late replies.

use super::Load;
use super::net::words;
use super::report::Outcome;
use super::verify::{bump, mismatch};
use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Runs `sockets` UDP sockets, one datagram in flight on each, until the load is over.
pub(super) fn run(load: Load<'_>, sockets: usize) -> Outcome {
    std::thread::scope(|s| {
        for w in 0..sockets {
            s.spawn(move || udp_one(load, w));
        }
    });
    Outcome::default()
}

/// One UDP socket, one datagram in flight. A reply that does not come within the loss wait is
/// counted lost; if it comes later it is recognised and counted late instead. A refused send
/// (ICMP port unreachable: no server) stops the whole run, as does no reply at all for
/// `--timeout`.
fn udp_one(load: Load<'_>, id: usize) {
    let Load {
        addr,
        p,
        c,
        timeout,
        ..
    } = load;
    // A lost datagram is waited for this long, then counted lost.
    let loss_wait = timeout.min(Duration::from_millis(200));
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = match UdpSocket::bind(local)
        .and_then(|s| s.connect(addr).map(|()| s))
        .and_then(|s| s.set_read_timeout(Some(loss_wait)).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            return load.fatal(format!(
                "socket {id}: cannot open a UDP socket to {addr}: {}",
                words(&e)
            ));
        }
    };
    let refused = |e: &io::Error| {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            load.fatal(format!(
                "Could not connect to {addr}: {} (no UDP server there)",
                words(e)
            ));
        } else {
            load.fatal(format!("socket {id}: {}", words(e)));
        }
    };
    let mut buf = vec![0u8; 65536];
    // Requests whose reply was counted lost: a reply to one of them that comes later is late.
    let mut overdue: VecDeque<(usize, u64)> = VecDeque::new();
    let mut scratch = Vec::new();
    let mut i = id;
    let (mut req, mut want) = (Vec::new(), Vec::new());
    let mut seq = 0u64;
    while !load.over() {
        i = (i + 1) % p.requests.len();
        seq += 1;
        // The datagram is a 10-digit sequence number, then the line without its newline: no
        // two datagrams of a socket are alike, as an honest client's distinct requests are not
        // (a peer that repeats one identical request is limited by the loop guard, PROTOCOL.md
        // §3.1). Digits are their own uppercase, so the reply is the number, then the line's.
        tagged(&mut req, seq, &p.requests[i]);
        tagged(&mut want, seq, &p.replies[i]);
        if let Err(e) = sock.send(&req) {
            return refused(&e);
        }
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n] == want[..] => c.verified(n),
                Ok(n) => {
                    let got = &buf[..n];
                    let stale = overdue.iter().position(|&(j, q)| {
                        tagged(&mut scratch, q, &p.replies[j]);
                        scratch[..] == *got
                    });
                    if let Some(k) = stale {
                        overdue.remove(k);
                        bump(&c.late, 1);
                        c.lost.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    return c.wrong(mismatch(&format!("socket {id}"), &want, got));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    bump(&c.lost, 1);
                    if overdue.len() == p.requests.len() {
                        overdue.pop_front();
                    }
                    overdue.push_back((i, seq));
                    if c.requests.load(Ordering::Relaxed) == 0 && load.started.elapsed() >= timeout
                    {
                        return load.fatal(format!(
                            "no reply from {addr} within {:.1} s (is a UDP server listening there?)",
                            timeout.as_secs_f64()
                        ));
                    }
                }
                Err(e) => return refused(&e),
            }
            break;
        }
    }
}

/// Fills `out` with `seq` as 10 decimal digits, then `line` without its newline.
fn tagged(out: &mut Vec<u8>, seq: u64, line: &[u8]) {
    use std::io::Write;
    out.clear();
    let _ = write!(out, "{:010}", seq % 10_000_000_000);
    out.extend_from_slice(&line[..line.len() - 1]);
}
