//! `--mode stream`: C connections, W lines in flight on each (pipelined), a thread each;
//! reports lines/s and MB/s.

use super::Load;
use super::net::broken;
use super::report::Outcome;
use super::verify::mismatch;
use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Runs `conns` pipelined connections, `window` lines in flight on each, until the load is
/// over.
pub(super) fn run(load: Load<'_>, conns: usize, window: usize) -> Outcome {
    std::thread::scope(|s| {
        for w in 0..conns {
            s.spawn(move || stream_one(load, w, window));
        }
    });
    Outcome::default()
}

/// One pipelined connection: keeps `window` lines in flight until the load is over, then reads
/// the rest of the replies.
fn stream_one(load: Load<'_>, id: usize, window: usize) {
    let Load { p, c, timeout, .. } = load;
    let mut sock = match load.connect() {
        Ok(s) => s,
        Err(why) => return load.fail(why),
    };
    let mut done = 0u64;
    let mut next = id;
    let mut inflight: VecDeque<usize> = VecDeque::with_capacity(window);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut have, mut pos) = (0usize, 0usize);
    let mut sending = true;
    let result = loop {
        // Top the window up, in one write.
        if sending && load.over() {
            sending = false;
        }
        if sending {
            out.clear();
            while inflight.len() < window {
                next = (next + 1) % p.requests.len();
                out.extend_from_slice(&p.requests[next]);
                inflight.push_back(next);
            }
            if let Err(e) = sock.write_all(&out) {
                break Err(e);
            }
        }
        if inflight.is_empty() {
            break Ok(());
        }
        // Read, then check every complete reply.
        if pos > 0 && have - pos < p.replies[inflight[0]].len() {
            buf.copy_within(pos..have, 0);
            (have, pos) = (have - pos, 0);
        }
        match sock.read(&mut buf[have..]) {
            Ok(0) => break Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
        while let Some(&i) = inflight.front() {
            let want = &p.replies[i];
            if have - pos < want.len() {
                break;
            }
            let got = &buf[pos..pos + want.len()];
            if got != &want[..] {
                return c.wrong(mismatch(&format!("connection {id}"), want, got));
            }
            pos += want.len();
            inflight.pop_front();
            c.verified(want.len());
            done += 1;
        }
    };
    if let Err(e) = result {
        load.fail(broken(id, done, &e, timeout));
    }
}
