//! `--mode pingpong`: C connections, one line in flight on each, driven by one mio event loop
//! per core; reports req/s and latency percentiles.

use super::Load;
use super::net::{broken, words};
use super::report::{Latency, Outcome, quantile};
use super::verify::mismatch;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Runs `conns` connections, one request in flight on each, until the load is over.
pub(super) fn run(load: Load<'_>, conns: usize) -> Outcome {
    // Event-driven, one thread per core: a client that spends little CPU per request leaves
    // the machine to the server it measures.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(conns);
    let samples: Vec<Vec<u32>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<usize> = (t..conns).step_by(threads).collect();
                s.spawn(move || pingpong_thread(load, &mine))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut all: Vec<u32> = samples.concat();
    all.sort_unstable();
    Outcome {
        latency: Some(Latency {
            p50: quantile(&all, 0.5).into(),
            p99: quantile(&all, 0.99).into(),
            max: all.last().copied().unwrap_or(0).into(),
        }),
        ..Outcome::default()
    }
}

/// One connection of [`pingpong_thread`]: the request in flight and how much of its reply came.
struct InFlight {
    sock: mio::net::TcpStream,
    id: usize,
    idx: usize,
    sent: usize,
    got: usize,
    done: u64,
    t0: Instant,
    buf: Vec<u8>,
}

/// Drives the connections numbered `ids`, one request in flight on each, until the load is
/// over; returns the latencies in microseconds. A failure is recorded in words and ends this
/// thread's connections.
fn pingpong_thread(load: Load<'_>, ids: &[usize]) -> Vec<u32> {
    let mut lat = Vec::new();
    if let Err(why) = pingpong_conns(load, ids, &mut lat) {
        load.fail(why);
    }
    lat
}

fn pingpong_conns(
    load: Load<'_>,
    ids: &[usize],
    lat: &mut Vec<u32>,
) -> std::result::Result<(), String> {
    use mio::{Events, Interest, Poll, Token};
    let Load { p, c, timeout, .. } = load;
    let setup = |e: io::Error| format!("cannot poll: {}", words(&e));
    let mut poll = Poll::new().map_err(setup)?;
    let mut conns = Vec::with_capacity(ids.len());
    let max_reply = p.replies.iter().map(Vec::len).max().unwrap_or(0);
    for (j, &id) in ids.iter().enumerate() {
        let std_sock = load.connect()?;
        std_sock.set_nonblocking(true).map_err(setup)?;
        let mut sock = mio::net::TcpStream::from_std(std_sock);
        poll.registry()
            .register(&mut sock, Token(j), Interest::READABLE | Interest::WRITABLE)
            .map_err(setup)?;
        conns.push(InFlight {
            sock,
            id,
            idx: id % p.requests.len(),
            sent: 0,
            got: 0,
            done: 0,
            t0: Instant::now(),
            buf: vec![0u8; max_reply],
        });
    }
    let mut events = Events::with_capacity(256);
    let mut last_progress = Instant::now();
    while !load.over() {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(setup)?;
        if events.is_empty() && last_progress.elapsed() > timeout {
            // Name the connection that waits longest.
            let f = conns
                .iter()
                .min_by_key(|f| f.t0)
                .expect("at least one connection");
            return Err(broken(
                f.id,
                f.done,
                &io::ErrorKind::TimedOut.into(),
                timeout,
            ));
        }
        for ev in &events {
            let Some(f) = conns.get_mut(ev.token().0) else {
                continue;
            };
            let fail = |f: &InFlight, e: io::Error| broken(f.id, f.done, &e, timeout);
            loop {
                // Send what is left of the request.
                let req = &p.requests[f.idx];
                while f.sent < req.len() {
                    match f.sock.write(&req[f.sent..]) {
                        Ok(n) => f.sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(fail(f, e)),
                    }
                }
                // Read the reply, no further than its known length.
                let want = &p.replies[f.idx];
                match f.sock.read(&mut f.buf[f.got..want.len()]) {
                    Ok(0) => return Err(fail(f, io::ErrorKind::UnexpectedEof.into())),
                    Ok(n) => f.got += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(fail(f, e)),
                }
                if f.got < want.len() {
                    continue;
                }
                lat.push(f.t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if f.buf[..want.len()] != want[..] {
                    c.wrong(mismatch(
                        &format!("connection {}", f.id),
                        want,
                        &f.buf[..want.len()],
                    ));
                    return Ok(());
                }
                c.verified(want.len());
                f.done += 1;
                last_progress = Instant::now();
                // The next request on this connection.
                f.idx = (f.idx + 1) % p.requests.len();
                (f.sent, f.got, f.t0) = (0, 0, Instant::now());
                if load.over() {
                    break;
                }
            }
        }
    }
    Ok(())
}
