//! `--mode conns`: opens C connections at once, holds them all, then sends one line on each;
//! reports how many opened and were answered, and the connect-time percentiles.

use super::Load;
use super::net::broken;
use super::report::{ConnsOutcome, Outcome, quantile};
use super::verify::mismatch;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Opens `conns` connections as a storm, holds them, then verifies one line on each.
pub(super) fn run(load: Load<'_>, conns: usize) -> Outcome {
    let Load { p, c, stop, .. } = load;
    // The storm: every connection opened as fast as the threads can, no pacing.
    let threads = conns.clamp(1, 16);
    let opened_any = AtomicBool::new(false);
    let opened: Vec<(usize, TcpStream, Duration)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let opened_any = &opened_any;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for id in (t..conns).step_by(threads) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let t0 = Instant::now();
                        match load.connect() {
                            Ok(sock) => {
                                opened_any.store(true, Ordering::Relaxed);
                                mine.push((id, sock, t0.elapsed()));
                            }
                            // Not one connection opened: the server is not there.
                            Err(why) if !opened_any.load(Ordering::Relaxed) => load.fatal(why),
                            Err(why) => c.fail(why),
                        }
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut times: Vec<Duration> = opened.iter().map(|o| o.2).collect();
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let slow = times
        .iter()
        .filter(|&&t| t >= Duration::from_secs(1))
        .count() as u64;
    // All held open; now one line on each, then every reply.
    let answered = AtomicU64::new(0);
    std::thread::scope(|s| {
        for chunk in opened.chunks(opened.len().div_ceil(threads).max(1)) {
            let answered = &answered;
            s.spawn(move || {
                let mut ok = vec![true; chunk.len()];
                for (k, (id, sock, _)) in chunk.iter().enumerate() {
                    let mut sock: &TcpStream = sock;
                    if let Err(e) = sock.write_all(&p.requests[id % p.requests.len()]) {
                        c.fail(broken(*id, 0, &e, load.timeout));
                        ok[k] = false;
                    }
                }
                let mut buf = vec![0u8; p.replies.iter().map(Vec::len).max().unwrap_or(0)];
                // One deadline for every reply, not a timeout per socket read in turn: a silent
                // server costs --timeout, not --timeout times the connections.
                let deadline = Instant::now() + load.timeout;
                for (k, (id, sock, _)) in chunk.iter().enumerate() {
                    let mut sock: &TcpStream = sock;
                    if !ok[k] {
                        continue;
                    }
                    let want = &p.replies[id % p.replies.len()];
                    let left = deadline.saturating_duration_since(Instant::now());
                    let read = if left.is_zero() {
                        Err(io::ErrorKind::TimedOut.into())
                    } else {
                        sock.set_read_timeout(Some(left))
                            .and_then(|()| sock.read_exact(&mut buf[..want.len()]))
                    };
                    match read {
                        Ok(()) if buf[..want.len()] == want[..] => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            c.verified(want.len());
                        }
                        Ok(()) => c.wrong(mismatch(
                            &format!("connection {id}"),
                            want,
                            &buf[..want.len()],
                        )),
                        Err(e) => c.fail(broken(*id, 0, &e, load.timeout)),
                    }
                }
            });
        }
    });
    Outcome {
        conns: Some(ConnsOutcome {
            opened: opened.len() as u64,
            answered: answered.into_inner(),
            connect_ms: [
                ms(quantile(&times, 0.5)),
                ms(quantile(&times, 0.99)),
                ms(times.last().copied().unwrap_or_default()),
            ],
            slow,
        }),
        ..Outcome::default()
    }
}
