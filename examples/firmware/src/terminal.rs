//! This UART's line ends for terminals (`PROTOCOL.md` §4): a terminal's Enter sends CR alone,
//! and the protocol's lines end at LF (§2.1), so without this nothing would come back until EOT.
//!
//! The adapter hands the session every CR followed by an LF of its own, and drops an LF that
//! arrives right after a CR (the LF it already sent). So a lone CR ends a line as CR LF does,
//! at once, and the reply to either ends with CR LF, which starts a new line on a terminal:
//!
//! | typed or piped | the session reads | the reply |
//! | --- | --- | --- |
//! | `x\n` | `x\n` | `X\n` (as before) |
//! | `x\r\n` | `x\r\n` | `X\r\n` (as before) |
//! | `x\r` | `x\r\n` | `X\r\n`, at once |
//!
//! The core's framing is untouched: this is a transport's convention, in the transport.

use embedded_io::{ErrorType, Read, ReadReady, Write};

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// A byte stream with this UART's line ends: reads as described in the module docs, writes
/// passed through.
pub struct Terminal<U> {
    inner: U,
    /// The last byte read was a CR: an LF next is the one already handed out, and is dropped.
    after_cr: bool,
    /// The LF after a CR did not fit in the caller's buffer: it comes first in the next read.
    owed_lf: bool,
}

impl<U> Terminal<U> {
    pub fn new(inner: U) -> Self {
        Self {
            inner,
            after_cr: false,
            owed_lf: false,
        }
    }
}

impl<U: ErrorType> ErrorType for Terminal<U> {
    type Error = U::Error;
}

impl<U: Read + ReadReady> Read for Terminal<U> {
    /// Blocks until at least one byte can be returned, then takes what the UART holds. `Ok(0)`
    /// is the UART's end of stream.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut n = 0;
        if self.owed_lf && !buf.is_empty() {
            buf[0] = LF;
            n = 1;
            self.owed_lf = false;
        }
        // One byte at a time: the first one blocks, the rest only while the UART has more. A
        // dropped LF returns nothing, so the loop then waits for the next byte.
        while n < buf.len() && (n == 0 || self.inner.read_ready()?) {
            let mut byte = [0u8];
            if self.inner.read(&mut byte)? == 0 {
                break;
            }
            let b = byte[0];
            let after_cr = core::mem::replace(&mut self.after_cr, b == CR);
            if b == LF && after_cr {
                continue;
            }
            buf[n] = b;
            n += 1;
            if b == CR {
                match buf.get_mut(n) {
                    Some(slot) => {
                        *slot = LF;
                        n += 1;
                    }
                    None => self.owed_lf = true,
                }
            }
        }
        Ok(n)
    }
}

impl<U: Write> Write for Terminal<U> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()
    }
}

/// The same stream behind the async traits, for the `async` feature: every call completes at
/// once (the UART blocks), so a plain poll loop drives the core's async driver.
#[cfg(feature = "async")]
impl<U: Read + ReadReady> embedded_io_async::Read for Terminal<U> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        Read::read(self, buf)
    }
}

#[cfg(feature = "async")]
impl<U: Write> embedded_io_async::Write for Terminal<U> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Write::write(self, buf)
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        Write::flush(self)
    }
}
