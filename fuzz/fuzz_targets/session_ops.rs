//! The blocking driver over a scripted transport: reads of any size (EOF included), short
//! writes, and write errors. No panic; what was written is a prefix of the expected reply
//! stream (all of it when no error occurred); the counters add up.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use upcase_core::{LineFramer, ServeError, Session, Uppercase, blocking};
use upcase_model::{Event, frame, replies};

#[derive(Debug, Arbitrary)]
enum Op {
    /// The next read returns at most this many bytes (at least 1 while input remains).
    Read(u8),
    /// The next write takes at most this many bytes (at least 1).
    Write(u8),
    /// The next call is interrupted (retried by the driver).
    Interrupt,
    /// Writes fail from now on.
    FailWrites,
}

#[derive(Debug, Arbitrary)]
struct Case {
    input: Vec<u8>,
    ops: Vec<Op>,
    max_line: u8,
    staging: u8,
}

#[derive(Debug)]
struct IoError(embedded_io::ErrorKind);
impl core::fmt::Display for IoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl core::error::Error for IoError {}
impl embedded_io::Error for IoError {
    fn kind(&self) -> embedded_io::ErrorKind {
        self.0
    }
}

struct Script<'a> {
    input: &'a [u8],
    ops: std::slice::Iter<'a, Op>,
    read_max: usize,
    write_max: usize,
    interrupt: bool,
    failing: bool,
    written: Vec<u8>,
}

impl Script<'_> {
    fn step(&mut self) -> Result<(), IoError> {
        match self.ops.next() {
            Some(Op::Read(n)) => self.read_max = usize::from(*n).max(1),
            Some(Op::Write(n)) => self.write_max = usize::from(*n).max(1),
            Some(Op::Interrupt) => self.interrupt = true,
            Some(Op::FailWrites) => self.failing = true,
            None => {}
        }
        if std::mem::take(&mut self.interrupt) {
            return Err(IoError(embedded_io::ErrorKind::Interrupted));
        }
        Ok(())
    }
}

impl embedded_io::ErrorType for Script<'_> {
    type Error = IoError;
}
impl embedded_io::Read for Script<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        self.step()?;
        let n = buf.len().min(self.read_max).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}
impl embedded_io::Write for Script<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        self.step()?;
        if self.failing {
            return Err(IoError(embedded_io::ErrorKind::BrokenPipe));
        }
        let n = buf.len().min(self.write_max);
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}

fuzz_target!(|case: Case| {
    let max = usize::from(case.max_line) % 48;
    let expect = replies(&case.input, max);
    let mut io = Script {
        input: &case.input,
        ops: case.ops.iter(),
        read_max: 7,
        write_max: 5,
        interrupt: false,
        failing: false,
        written: Vec::new(),
    };
    let mut session = Session::lines(LineFramer::new(vec![0u8; max + 1]), Uppercase::new());
    let mut staging = vec![0u8; usize::from(case.staging) % 32];
    let result = blocking::serve(&mut io, &mut session, &mut staging);
    assert!(
        expect.starts_with(&io.written),
        "written bytes are not a prefix of the replies"
    );
    let sum = session.counters();
    match result {
        Ok(()) => {
            assert_eq!(io.written, expect);
            assert_eq!(sum.bytes_in, case.input.len() as u32);
            assert_eq!(sum.bytes_out, expect.len() as u32);
            let events = frame(&case.input, max);
            let overlong = events.iter().filter(|e| **e == Event::Overlong).count();
            assert_eq!(sum.overlong, overlong as u32);
            assert_eq!(sum.lines, (events.len() - overlong) as u32);
        }
        Err(ServeError::Io(IoError(kind))) => {
            assert_eq!(kind, embedded_io::ErrorKind::BrokenPipe);
            assert!(io.failing);
        }
        Err(ServeError::WriteZero) => panic!("the script never accepts zero bytes"),
    }
});
