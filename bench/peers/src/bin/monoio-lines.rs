//! The io_uring baseline (issue 21): what a monoio user would write for the fastest line server
//! on Linux. One thread per core, each running monoio's io_uring driver (no epoll fallback: a
//! kernel that refuses io_uring makes it exit 1 and say why) with its own `SO_REUSEPORT`
//! listener on the same address, so the kernel spreads connections across the threads.
//!
//! Each connection owns one 64 KiB read buffer, handed to the kernel for each read. After a
//! read, `memchr::memrchr` finds the last `\n`; every complete line up to it is uppercased in one
//! pass (`str::to_uppercase` on each valid UTF-8 run, every other byte verbatim: PROTOCOL.md §1,
//! byte for byte what upcase answers) and sent with one `write_all`. The partial line after it
//! stays in the buffer for the next read. A line longer than the buffer is answered piecewise as
//! it comes (a UTF-8 sequence cut by the buffer's end waits for its last bytes), so memory stays
//! 64 KiB per connection plus the reply; upcase would answer such a line with
//! `error: line too long` instead (§2.2).
//!
//! End of stream (the client's half-close, §2.1): the trailing partial line is answered with its
//! uppercase and no `\n`, then the connection is closed, as the other peers do.
//!
//! `monoio-lines TCP_ADDR` prints `listening tcp ADDR` once every thread listens, like `upcase
//! serve`. With port 0 the first thread's port is the one every other thread binds.

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use monoio::{IoUringDriver, RuntimeBuilder};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;

/// The read buffer of each connection.
const BUFFER: usize = 64 * 1024;

/// Appends the reply to `input` to `out`: each valid UTF-8 run uppercased, every other byte
/// verbatim.
fn upper(input: &[u8], out: &mut Vec<u8>) {
    for chunk in input.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_uppercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
}

/// How many bytes at the end of a full buffer with no `\n` to hold back: an incomplete UTF-8
/// sequence (at most 3 bytes), which the next read may complete.
fn incomplete_tail(input: &[u8]) -> usize {
    input.utf8_chunks().last().map_or(0, |c| c.invalid().len())
}

/// After a read, how many bytes at the start of `buf` to answer now: through the last `\n`
/// (`memrchr`, searched only in the bytes after the `held` ones, which had none), or when the
/// buffer is `full` and has no `\n`, all but an incomplete UTF-8 sequence at its end. 0: wait
/// for more.
fn answerable(buf: &[u8], held: usize, full: bool) -> usize {
    match memchr::memrchr(b'\n', &buf[held..]) {
        Some(i) => held + i + 1,
        None if full => buf.len() - incomplete_tail(buf),
        None => 0,
    }
}

/// Serves one connection until the client's end of stream or an error.
async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(BUFFER);
    let mut out: Vec<u8> = Vec::with_capacity(BUFFER);
    loop {
        // Read after the partial line already held.
        let held = buf.len();
        let (read, slice) = stream.read(buf.slice_mut(held..)).await;
        buf = slice.into_inner();
        if read? == 0 {
            // End of stream: the partial line's reply, without a newline, then close.
            if !buf.is_empty() {
                out.clear();
                upper(&buf, &mut out);
                let (written, _) = stream.write_all(out).await;
                written?;
            }
            return Ok(());
        }
        let end = answerable(&buf, held, buf.len() == buf.capacity());
        if end == 0 {
            continue;
        }
        out.clear();
        upper(&buf[..end], &mut out);
        buf.drain(..end);
        let (written, back) = stream.write_all(out).await;
        out = back;
        written?;
    }
}

/// Accepts connections on `listener` forever, a task each.
async fn accept(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(serve(stream));
            }
            // Out of descriptors, or a connection reset before it was accepted: go on.
            Err(e) => eprintln!("monoio-lines: accept: {e}"),
        }
    }
}

/// Starts one thread with its io_uring runtime and its own listener on `addr`; sends the
/// listener's address, or why there is none, on `ready`, then serves forever.
fn spawn_worker(addr: SocketAddr, ready: mpsc::Sender<Result<SocketAddr, String>>) {
    std::thread::spawn(move || {
        let runtime = match RuntimeBuilder::<IoUringDriver>::new().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot set up io_uring: {e}")));
                return;
            }
        };
        let mut runtime = runtime;
        runtime.block_on(async move {
            let opts = ListenerOpts::new().reuse_port(true);
            let listener = match TcpListener::bind_with_config(addr, &opts) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready.send(Err(format!("cannot listen on {addr}: {e}")));
                    return;
                }
            };
            match listener.local_addr() {
                Ok(local) => {
                    let _ = ready.send(Ok(local));
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("no local address: {e}")));
                    return;
                }
            }
            accept(listener).await;
        });
    });
}

fn main() -> std::process::ExitCode {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let fail = |why: String| {
        eprintln!("monoio-lines: {why}");
        std::process::ExitCode::FAILURE
    };
    let addr = match text.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => return fail(format!("no address for {text}")),
        Err(e) => return fail(format!("cannot resolve {text}: {e}")),
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let (ready, started) = mpsc::channel();
    // The first thread picks the port (when `addr` asks for port 0); the others share it.
    spawn_worker(addr, ready.clone());
    let local = match started.recv() {
        Ok(Ok(local)) => local,
        Ok(Err(why)) => return fail(why),
        Err(_) => return fail("the first thread ended before it listened".into()),
    };
    for _ in 1..threads {
        spawn_worker(local, ready.clone());
    }
    for _ in 1..threads {
        match started.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(why)) => return fail(why),
            Err(_) => return fail("a thread ended before it listened".into()),
        }
    }
    println!("listening tcp {local}");
    // The threads serve until the process is stopped (SIGTERM, as scripts/bench.py does).
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::{answerable, incomplete_tail, upper};

    /// `serve`'s loop without the socket: `input` arrives in reads of at most `read` bytes into a
    /// buffer of `capacity`, then end of stream. Returns every byte written.
    fn replies(input: &[u8], capacity: usize, read: &mut impl FnMut() -> usize) -> Vec<u8> {
        let (mut buf, mut out, mut at) = (Vec::new(), Vec::new(), 0);
        while at < input.len() {
            let held = buf.len();
            let n = read().clamp(1, capacity - held).min(input.len() - at);
            buf.extend_from_slice(&input[at..at + n]);
            at += n;
            let end = answerable(&buf, held, buf.len() == capacity);
            upper(&buf[..end], &mut out);
            buf.drain(..end);
        }
        upper(&buf, &mut out);
        out
    }

    #[test]
    fn any_reads_into_any_buffer_answer_what_the_model_answers() {
        // Bytes that make lines, grow under uppercase, split across reads, or are invalid.
        let pieces: [&[u8]; 12] = [
            b"a",
            b"Z",
            b"\n",
            b"\r",
            "ß".as_bytes(),
            "ﬁ".as_bytes(),
            "ΐ".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            b"\xff",
            b"\xe2\x82",
            b"\xed\xa0\x80",
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as usize
        };
        for case in 0..2000 {
            let input: Vec<u8> = (0..next() % 64)
                .flat_map(|_| pieces[next() % pieces.len()].iter().copied())
                .collect();
            // Small buffers reach the full-buffer path; 4 is the least that holds a character.
            let capacity = 4 + next() % 16;
            let got = replies(&input, capacity, &mut || next() % 24);
            assert_eq!(
                got,
                upcase_model::upper(&input),
                "case {case}, capacity {capacity}, input {input:?}"
            );
        }
    }

    #[test]
    fn valid_utf8_is_answered_as_str_to_uppercase() {
        for text in ["hello\n", "straße ﬁ ΐ\n", "a\r\n\nb", "", "日本語 ok\n"] {
            let mut out = Vec::new();
            upper(text.as_bytes(), &mut out);
            assert_eq!(out, text.to_uppercase().as_bytes(), "{text:?}");
        }
    }

    #[test]
    fn invalid_bytes_are_kept_verbatim() {
        let mut out = Vec::new();
        upper(b"\xff\xfeok\x00\xe2\x82 a", &mut out);
        assert_eq!(out, b"\xff\xfeOK\x00\xe2\x82 A");
    }

    #[test]
    fn only_an_incomplete_sequence_at_the_end_is_held() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail("ab€".as_bytes()), 0);
        assert_eq!(incomplete_tail(b"ab\xe2\x82"), 2);
        assert_eq!(incomplete_tail(b"ab\xf0"), 1);
    }
}
