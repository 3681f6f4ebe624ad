//! `Session` (both framings) driven through an arbitrary sequence of every public method, in any
//! order, with any counts: no panic, ever; and whenever the caller keeps the documented call
//! order, the reply stream equals the reference model for exactly the bytes the session accepted.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use upcase_core::{LineFramer, Session, Uppercase};
use upcase_model::{End, replies_with, upper};

#[derive(Debug, Arbitrary)]
enum Op {
    /// Copy up to this many bytes of the input into `recv_buffer`, then `handle_recv(claim)`.
    Recv {
        take: u8,
        claim: u16,
    },
    /// `poll_transmit` into an output buffer of this size (1 to 64 bytes).
    Poll(u8),
    /// Poll until `0`, as a driver does before it reads.
    Drain(u8),
    /// Park the storage in a buffer of `buffered() + 1 + extra` bytes and take it back.
    Park(u8),
    /// Swap in a storage of this size and keep it.
    Replace(u8),
    HandleEof,
    HandleShutdown,
    Query,
}

#[derive(Debug, Arbitrary)]
struct Case {
    raw: bool,
    storage: u8,
    input: Vec<u8>,
    ops: Vec<Op>,
}

fuzz_target!(|case: Case| {
    let storage = usize::from(case.storage) % 48 + 1;
    let max = storage - 1;
    let mut s = if case.raw {
        Session::raw(vec![0u8; storage], Uppercase::new())
    } else {
        Session::lines(LineFramer::new(vec![0u8; storage]), Uppercase::new())
    };
    let mut rest = &case.input[..];
    let mut fed = Vec::new();
    let mut out = Vec::new();
    let mut end = None;
    // The model applies while the storage keeps its size: a smaller one lowers the line limit.
    let mut exact = true;
    let mut current = storage;
    for op in &case.ops {
        match *op {
            Op::Recv { take, claim } => {
                let buf = s.recv_buffer();
                let k = usize::from(take).min(buf.len()).min(rest.len());
                buf[..k].copy_from_slice(&rest[..k]);
                rest = &rest[k..];
                // What `handle_recv` accepts: the claim, clamped to what was offered.
                let accepted = usize::from(claim).min(buf.len());
                let offered = buf[..accepted].to_vec();
                let before = s.counters().bytes_in;
                s.handle_recv(usize::from(claim));
                let took = s.counters().bytes_in.wrapping_sub(before) as usize;
                if end.is_none() && claim > 0 {
                    assert_eq!(took, accepted);
                    fed.extend_from_slice(&offered);
                } else {
                    assert_eq!(took, 0, "input after EOF must be ignored");
                }
            }
            Op::Poll(n) => {
                let mut buf = vec![0u8; usize::from(n) % 64 + 1];
                let n = s.poll_transmit(&mut buf);
                out.extend_from_slice(&buf[..n]);
            }
            Op::Drain(n) => {
                let mut buf = vec![0u8; usize::from(n) % 64 + 1];
                for _ in 0..100_000 {
                    let n = s.poll_transmit(&mut buf);
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Op::Park(extra) => {
                let small = s.buffered() + 1 + usize::from(extra) % 4;
                if let Ok(big) = s.replace_storage(vec![0u8; small]) {
                    assert_eq!(big.len(), current);
                    let held = s.buffered();
                    match s.replace_storage(big) {
                        Ok(_) => {}
                        // Only when the storage was filled to its last byte by a commit
                        // without a poll in between (outside the call order).
                        Err(_) => {
                            assert!(held >= current);
                            exact &= small == storage;
                            current = small;
                        }
                    }
                }
            }
            Op::Replace(size) => {
                let size = usize::from(size) % 64;
                if s.replace_storage(vec![0u8; size]).is_ok() {
                    exact &= size == storage;
                    current = size;
                }
            }
            Op::HandleEof => {
                end.get_or_insert(End::Eof);
                s.handle_eof();
            }
            Op::HandleShutdown => {
                end.get_or_insert(End::Shutdown);
                s.handle_shutdown();
            }
            Op::Query => {
                let _ = (
                    s.is_done(),
                    s.is_idle(),
                    s.is_open(),
                    s.buffered(),
                    s.counters(),
                );
            }
        }
    }
    // End the input the documented way and collect the rest of the replies.
    let end = *end.get_or_insert_with(|| {
        s.handle_eof();
        End::Eof
    });
    let mut buf = [0u8; 7];
    for _ in 0..100_000 {
        let n = s.poll_transmit(&mut buf);
        out.extend_from_slice(&buf[..n]);
        if n == 0 && s.is_done() {
            break;
        }
        if n == 0 {
            // Done is reached only through poll_transmit; a zero without done is a bug.
            panic!("poll_transmit returned 0 after EOF without finishing");
        }
    }
    assert!(s.is_done());
    assert_eq!(s.counters().bytes_out as usize, out.len() % (1 << 32));
    if exact {
        let expect = if case.raw {
            upper(&fed)
        } else {
            replies_with(&fed, max, end, upper)
        };
        assert_eq!(out, expect);
    }
});
