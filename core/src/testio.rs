//! A scripted in-memory transport for driver tests, blocking and async.

use std::vec::Vec;

/// An IO error with a kind, as a transport would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MockError(pub(crate) embedded_io::ErrorKind);

impl core::fmt::Display for MockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "mock error {:?}", self.0)
    }
}
impl core::error::Error for MockError {}
impl embedded_io::Error for MockError {
    fn kind(&self) -> embedded_io::ErrorKind {
        self.0
    }
}

/// Reads hand out at most `read_max` bytes; writes take at most `write_max`; every third call of
/// each kind first fails with `Interrupted` when `interrupt` is set; writes fail for good once
/// `fail_after` bytes are written.
pub(crate) struct MockIo {
    pub(crate) input: Vec<u8>,
    pub(crate) pos: usize,
    pub(crate) output: Vec<u8>,
    pub(crate) read_max: usize,
    pub(crate) write_max: usize,
    pub(crate) fail_after: Option<usize>,
    pub(crate) interrupt: bool,
    /// At every read: (input bytes handed out before it, output bytes written before it). A
    /// driver reads only once it has written every reply the input so far determines, which
    /// these snapshots let a test check.
    pub(crate) reads: Vec<(usize, usize)>,
    calls: usize,
}

impl MockIo {
    pub(crate) fn new(input: &[u8], read_max: usize, write_max: usize) -> Self {
        Self {
            input: input.to_vec(),
            pos: 0,
            output: Vec::new(),
            read_max,
            write_max,
            fail_after: None,
            interrupt: false,
            reads: Vec::new(),
            calls: 0,
        }
    }

    fn interrupted(&mut self) -> bool {
        self.calls += 1;
        self.interrupt && self.calls.is_multiple_of(3)
    }

    fn do_read(&mut self, buf: &mut [u8]) -> Result<usize, MockError> {
        if self.interrupted() {
            return Err(MockError(embedded_io::ErrorKind::Interrupted));
        }
        self.reads.push((self.pos, self.output.len()));
        let n = buf
            .len()
            .min(self.read_max)
            .min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    fn do_write(&mut self, buf: &[u8]) -> Result<usize, MockError> {
        if self.interrupted() {
            return Err(MockError(embedded_io::ErrorKind::Interrupted));
        }
        if self
            .fail_after
            .is_some_and(|limit| self.output.len() >= limit)
        {
            return Err(MockError(embedded_io::ErrorKind::BrokenPipe));
        }
        let n = buf.len().min(self.write_max);
        self.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl embedded_io::ErrorType for MockIo {
    type Error = MockError;
}
impl embedded_io::Read for MockIo {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, MockError> {
        self.do_read(buf)
    }
}
impl embedded_io::Write for MockIo {
    fn write(&mut self, buf: &[u8]) -> Result<usize, MockError> {
        self.do_write(buf)
    }
    fn flush(&mut self) -> Result<(), MockError> {
        Ok(())
    }
}
#[cfg(feature = "async")]
impl embedded_io_async::Read for MockIo {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, MockError> {
        self.do_read(buf)
    }
}
#[cfg(feature = "async")]
impl embedded_io_async::Write for MockIo {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, MockError> {
        self.do_write(buf)
    }
    async fn flush(&mut self) -> Result<(), MockError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::tests::oracle;
    use crate::{ErrorReply, Framing, LineFramer, RequestError, ServeError, Session};
    use crate::{Uppercase, blocking};
    use embedded_io::ErrorKind;
    use proptest::prelude::*;

    type Serve = fn(
        &mut MockIo,
        &mut Session<Vec<u8>, Uppercase>,
        &mut [u8],
    ) -> Result<(), ServeError<MockError>>;

    /// Every driver flavour under test: the blocking one, and the async one run to completion.
    fn servers() -> Vec<(&'static str, Serve)> {
        #[cfg_attr(not(feature = "async"), allow(unused_mut))]
        let mut v: Vec<(&'static str, Serve)> =
            std::vec![("blocking", |io, s, st| blocking::serve(io, s, st))];
        #[cfg(feature = "async")]
        v.push(("async", |io, s, st| {
            futures_executor::block_on(crate::asynch::serve(io, s, st))
        }));
        v
    }

    fn session(max: usize, framing: Framing) -> Session<Vec<u8>, Uppercase> {
        match framing {
            Framing::Lines => {
                Session::lines(LineFramer::new(std::vec![0u8; max + 1]), Uppercase::new())
            }
            Framing::Raw => Session::raw(std::vec![0u8; max + 1], Uppercase::new()),
        }
    }

    /// Checks that before every read the driver had written exactly the replies that the input
    /// handed out so far determines.
    fn assert_realtime(io: &MockIo, framing: Framing, max: usize) {
        for &(given, written) in &io.reads {
            let so_far = &io.input[..given];
            let want = match framing {
                Framing::Lines => upcase_model::determined_lines(so_far, max),
                Framing::Raw => upcase_model::determined_raw(so_far),
            };
            assert_eq!(
                &io.output[..written],
                &want[..],
                "before reading past byte {given}"
            );
        }
    }

    #[test]
    fn one_byte_reads_short_writes_and_interrupts() {
        let input = "hello\r\nstra\u{df}e\nxxxxxxxxxxxxxxxxxxxx\nok\ntail".as_bytes();
        for (name, serve) in servers() {
            for (read_max, write_max, staging) in [(1, 1, 1), (3, 2, 5), (1000, 1000, 256)] {
                let mut io = MockIo::new(input, read_max, write_max);
                io.interrupt = true;
                let mut s = session(16, Framing::Lines);
                serve(&mut io, &mut s, &mut std::vec![0u8; staging]).unwrap();
                let sum = s.counters();
                let mut expect = Vec::new();
                expect.extend(oracle(b"hello\r"));
                expect.push(b'\n');
                expect.extend(oracle("stra\u{df}e".as_bytes()));
                expect.push(b'\n');
                expect.extend_from_slice(ErrorReply::LineTooLong.reply());
                expect.extend_from_slice(b"OK\nTAIL");
                assert_eq!(io.output, expect, "{name} {read_max}/{write_max}/{staging}");
                assert_eq!(sum.bytes_in, input.len() as u32);
                assert_eq!(sum.bytes_out, expect.len() as u32);
                assert_eq!((sum.lines, sum.overlong), (4, 1));
            }
        }
    }

    #[test]
    fn write_error_is_reported_and_output_is_a_prefix() {
        for (name, serve) in servers() {
            let mut io = MockIo::new(b"aaaa\nbbbb\ncccc\n", 1000, 3);
            io.fail_after = Some(6);
            let mut s = session(16, Framing::Lines);
            let err = serve(&mut io, &mut s, &mut [0u8; 4]).unwrap_err();
            assert_eq!(
                err,
                ServeError::Io(MockError(ErrorKind::BrokenPipe)),
                "{name}"
            );
            assert!(b"AAAA\nBBBB\nCCCC\n".starts_with(&io.output), "{name}");
        }
    }

    #[test]
    fn empty_staging_still_serves() {
        let mut io = MockIo::new(b"abc\n", 2, 2);
        let mut s = session(8, Framing::Lines);
        blocking::serve(&mut io, &mut s, &mut []).unwrap();
        assert_eq!(io.output, b"ABC\n");
    }

    #[test]
    fn raw_framing_echoes_chunks_uppercased() {
        let input = "sendall without newline \u{e9}".as_bytes();
        for (name, serve) in servers() {
            let mut io = MockIo::new(input, 3, 1000);
            let mut s = session(4, Framing::Raw);
            serve(&mut io, &mut s, &mut [0u8; 8]).unwrap();
            assert_eq!(io.output, oracle(input), "{name}");
        }
    }

    #[test]
    fn client_request_and_pipelining() {
        // The "server" side is scripted: its replies are the mock's input.
        let mut io = MockIo::new(
            b"ONE\nTWO\nerror: line too long\nA REPLY LONGER THAN THIRTY-ONE BYTES\nX",
            2,
            1,
        );
        io.interrupt = true;
        let mut replies = LineFramer::<[u8; 32]>::new_array();
        assert_eq!(
            blocking::request(&mut io, &mut replies, b"one"),
            Ok(&b"ONE"[..])
        );
        blocking::send_line(&mut io, b"two").unwrap();
        assert_eq!(blocking::recv_line(&mut io, &mut replies), Ok(&b"TWO"[..]));
        assert_eq!(
            blocking::recv_line(&mut io, &mut replies),
            Err(RequestError::Rejected(ErrorReply::LineTooLong))
        );
        assert_eq!(
            blocking::recv_line(&mut io, &mut replies),
            Err(RequestError::ReplyTooLong)
        );
        assert_eq!(
            blocking::recv_line(&mut io, &mut replies),
            Err(RequestError::UnexpectedEof)
        );
        assert_eq!(
            blocking::send_line(&mut io, b"a\nb"),
            Err(RequestError::Newline)
        );
        assert_eq!(io.output, b"one\ntwo\n");
    }

    #[cfg(feature = "async")]
    #[test]
    fn async_client_request() {
        let mut io = MockIo::new(b"HI\n", 1, 1);
        let mut replies = LineFramer::<[u8; 8]>::new_array();
        let got = futures_executor::block_on(crate::asynch::request(&mut io, &mut replies, b"hi"));
        assert_eq!(got, Ok(&b"HI"[..]));
        assert_eq!(io.output, b"hi\n");
    }

    #[cfg(feature = "unicode")]
    #[test]
    fn raw_driver_with_a_tiny_staging_buffer_withholds_nothing() {
        // One `ΐ` (2 bytes in, 6 out) through a 4-byte staging buffer: all 6 bytes before EOF.
        for (name, serve) in servers() {
            for staging in 1..=7 {
                let input = "\u{390}".as_bytes();
                let mut io = MockIo::new(input, 2, 7);
                let mut s = session(4, Framing::Raw);
                serve(&mut io, &mut s, &mut std::vec![0u8; staging]).unwrap();
                assert_realtime(&io, Framing::Raw, 4);
                assert_eq!(io.reads.last(), Some(&(2, 6)), "{name} staging={staging}");
            }
        }
    }

    proptest! {
        #[test]
        fn drivers_write_every_determined_reply_before_reading_on(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), any::<u8>(), b'a'..=b'z', Just(0xCE), Just(0x90)], 0..100),
            read_max in 1usize..8,
            write_max in 1usize..8,
            staging in 1usize..8,
            max in 1usize..12,
        ) {
            if cfg!(feature = "unicode") {
                for framing in [Framing::Lines, Framing::Raw] {
                    for (_, serve) in servers() {
                        let mut io = MockIo::new(&input, read_max, write_max);
                        serve(&mut io, &mut session(max, framing), &mut std::vec![0u8; staging]).unwrap();
                        assert_realtime(&io, framing, max);
                    }
                }
            }
        }

        #[test]
        fn any_read_and_write_sizes_give_the_same_stream(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>(), b'a'..=b'z'], 0..120),
            read_max in 1usize..9,
            write_max in 1usize..9,
            staging in 0usize..12,
        ) {
            let mut reference = MockIo::new(&input, 4096, 4096);
            blocking::serve(&mut reference, &mut session(10, Framing::Lines), &mut [0u8; 4096]).unwrap();
            for (_, serve) in servers() {
                let mut io = MockIo::new(&input, read_max, write_max);
                serve(&mut io, &mut session(10, Framing::Lines), &mut std::vec![0u8; staging]).unwrap();
                prop_assert_eq!(&io.output, &reference.output);
            }
        }
    }
}
