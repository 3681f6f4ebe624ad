//! Async drivers over `embedded_io_async::{Read, Write}` (the traits of `embedded-io-async` 0.7;
//! feature `async`), for Embassy and other executors. Same behaviour and guarantees as
//! [`crate::blocking`]; each call is a future that holds the same state the blocking call keeps
//! on its stack. The crate documentation shows `asynch::serve` on an embassy-net socket.

crate::drivers::drivers!(embedded_io_async, [async], [.await]);

// `ServeError`, `Session`, `Transform`, `Read`, `Write` and `ErrorKind` come from the
// expansion above.
use crate::session::Closing;
use core::future::Future;
use core::pin::pin;
use core::task::Poll;

/// The time source of [`serve_timed`]: milliseconds from a fixed origin, never going back, and
/// a way to wait. On Embassy: `Instant::now().as_millis()` and `Timer::at`.
pub trait Clock {
    /// The time now, in milliseconds.
    fn now_ms(&self) -> u64;
    /// Completes at `at_ms` (at once if it has passed).
    fn sleep_until(&self, at_ms: u64) -> impl Future<Output = ()>;
}

/// Which of two futures finished first.
enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures; the first to finish wins, and the other is dropped (cancelled).
async fn select<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    core::future::poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        if let Poll::Ready(y) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(y));
        }
        Poll::Pending
    })
    .await
}

/// Sleeps until `at` (a session's next timer), or for ever when it is `None`.
async fn timer<C: Clock>(at: Option<u64>, clock: &C) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => core::future::pending().await,
    }
}

/// [`serve`], with the session's timers ([`Timeouts`](crate::Timeouts)) run on `clock`: a silent
/// peer is closed at the idle timeout, one that reads nothing at the write-stall timeout, and
/// the session's [`set_deadline`](Session::set_deadline) holds.
///
/// Returns `Ok(())` once the session asks to close ([`Session::poll_close`]): the caller then
/// closes the connection (on embassy-net, `close()` and `flush()`: smoltcp lingers by itself).
/// When [`Closing::DropAndHalfClose`] or [`Closing::Close`] is due, output the transport has
/// not taken is given up. [`Session::close_reason`] says why it closed.
///
/// Each read and each write is raced against the next timer, so **the transport's `read` and
/// `write` must be cancel-safe**: a cancelled call must have moved no bytes. embassy-net's
/// `TcpSocket` is. Memory: the session plus `staging`.
///
/// # Errors
///
/// As [`serve`].
pub async fn serve_timed<IO, B, T, C>(
    io: &mut IO,
    session: &mut Session<B, T>,
    staging: &mut [u8],
    clock: &C,
) -> Result<(), ServeError<IO::Error>>
where
    IO: Read + Write,
    B: AsRef<[u8]> + AsMut<[u8]>,
    T: Transform,
    C: Clock,
{
    let mut one = [0u8; 1];
    let staging = if staging.is_empty() {
        &mut one[..]
    } else {
        staging
    };
    loop {
        session.handle_time(clock.now_ms());
        if session.poll_close().is_some() {
            return Ok(());
        }
        let n = session.poll_transmit(staging);
        let mut out = staging.get(..n).unwrap_or_default();
        while !out.is_empty() {
            session.handle_blocked(); // a write is outstanding: the stall timer runs
            match select(io.write(out), timer(session.poll_timeout(), clock)).await {
                Either::Left(Ok(0)) => return Err(ServeError::WriteZero),
                Either::Left(Ok(k)) => {
                    session.handle_sent(k);
                    out = out.get(k..).unwrap_or_default();
                }
                Either::Left(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                Either::Left(Err(e)) => return Err(ServeError::Io(e)),
                Either::Right(()) => {
                    session.handle_time(clock.now_ms());
                    if matches!(
                        session.poll_close(),
                        Some(Closing::DropAndHalfClose | Closing::Close)
                    ) {
                        return Ok(());
                    }
                }
            }
        }
        if n > 0 {
            continue;
        }
        if session.is_done() {
            io.flush().await?;
            return Ok(());
        }
        let at = session.poll_timeout();
        match select(io.read(session.recv_buffer()), timer(at, clock)).await {
            Either::Left(Ok(0)) => session.handle_eof(),
            Either::Left(Ok(k)) => session.handle_recv(k),
            Either::Left(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
            Either::Left(Err(e)) => return Err(ServeError::Io(e)),
            Either::Right(()) => {} // the loop's `handle_time` fires the timer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testio::MockError;
    use crate::{CloseReason, LineFramer, Timeouts, Uppercase};
    use core::cell::Cell;
    use std::vec::Vec;

    /// Time that jumps to each timer the driver waits for: a test of timers takes no time.
    struct JumpClock(Cell<u64>);

    impl Clock for JumpClock {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
        async fn sleep_until(&self, at_ms: u64) {
            self.0.set(self.0.get().max(at_ms));
        }
    }

    /// Hands out `input` once, then never answers a read again; writes take everything until
    /// `stall_after` bytes, then never complete.
    struct Silent {
        input: Option<Vec<u8>>,
        output: Vec<u8>,
        stall_after: usize,
    }

    impl embedded_io_async::ErrorType for Silent {
        type Error = MockError;
    }

    impl Read for Silent {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, MockError> {
            match self.input.take() {
                Some(bytes) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                None => core::future::pending().await,
            }
        }
    }

    impl Write for Silent {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, MockError> {
            let room = self.stall_after - self.output.len();
            if room == 0 {
                return core::future::pending().await;
            }
            let n = room.min(buf.len());
            self.output.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        async fn flush(&mut self) -> Result<(), MockError> {
            Ok(())
        }
    }

    fn run(input: &[u8], stall_after: usize) -> (Vec<u8>, Option<CloseReason>, u64) {
        let timeouts = Timeouts::NONE
            .idle_ms(60_000)
            .write_stall_ms(30_000)
            .linger_ms(5_000);
        let mut session = Session::lines(LineFramer::new(std::vec![0u8; 65]), Uppercase::new())
            .with_timeouts(timeouts);
        let mut io = Silent {
            input: Some(input.to_vec()),
            output: Vec::new(),
            stall_after,
        };
        let clock = JumpClock(Cell::new(1_000));
        let mut staging = [0u8; 8];
        futures_executor::block_on(serve_timed(&mut io, &mut session, &mut staging, &clock))
            .unwrap();
        (io.output, session.close_reason(), clock.now_ms())
    }

    #[test]
    fn a_silent_peer_is_closed_at_the_idle_timeout() {
        // Complete lines are answered at once; the partial one gets the idle error.
        let (out, why, at) = run(b"one\ntw", usize::MAX);
        assert_eq!(out, b"ONE\nerror: idle timeout\n");
        assert_eq!(why, Some(CloseReason::IdleTimeout));
        assert_eq!(at, 61_000);
    }

    #[test]
    fn a_peer_that_reads_nothing_is_closed_at_the_write_stall_timeout() {
        let (out, why, at) = run(b"one\ntwo\n", 5);
        assert_eq!(out, b"ONE\nT");
        assert_eq!(why, Some(CloseReason::WriteStall));
        assert_eq!(at, 31_000);
    }
}
