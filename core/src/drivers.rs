//! The IO drivers, written once and expanded twice: blocking over `embedded_io` and async over
//! `embedded_io_async`. They only move bytes between the transport and the pure layer.

/// Expands to the driver functions over the traits of `$io` (`embedded_io` or
/// `embedded_io_async`). `$($async)*` is `async` or nothing; `$($await)*` is `.await` or nothing.
macro_rules! drivers {
    ($io:ident, [$($async:tt)*], [$($await:tt)*]) => {
        use $io::{Error as _, ErrorKind, Read, Write};
        use crate::error::{RequestError, ServeError};
        use crate::framer::{LineFramer, Overlong};
        use crate::protocol::ErrorReply;
        use crate::session::Session;
        use crate::transform::Transform;

        /// Reads once into `buf`, retrying `Interrupted`. `Ok(0)` is end of stream.
        $($async)* fn read_some<R: Read>(io: &mut R, buf: &mut [u8]) -> Result<usize, R::Error> {
            loop {
                match io.read(buf) $($await)* {
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    other => return other,
                }
            }
        }

        /// Writes all of `buf`, retrying `Interrupted`; never panics on `Ok(0)`.
        $($async)* fn write_all<W: Write>(io: &mut W, mut buf: &[u8]) -> Result<(), ServeError<W::Error>> {
            while !buf.is_empty() {
                match io.write(buf) $($await)* {
                    Ok(0) => return Err(ServeError::WriteZero),
                    Ok(n) => buf = buf.get(n..).unwrap_or_default(),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(ServeError::Io(e)),
                }
            }
            Ok(())
        }

        /// Serves one connection until the session is done. Its counters are then in
        /// [`Session::counters`].
        ///
        /// Replies are batched: `staging` is filled with as many replies as the buffered input
        /// allows before each write, and flushed before every read, so a peer always has every
        /// reply to what it sent before the server waits for more. An empty `staging` is replaced
        /// by a 1-byte buffer. The transport is flushed once, when the session is done.
        ///
        /// Blocks (or awaits) on the transport. Memory: the session plus `staging`; nothing else.
        ///
        /// # Errors
        ///
        /// The first transport error other than `Interrupted`. The call can be repeated with the
        /// same session: all output produced before the failed read has been written, so after a
        /// read error (a timeout, or a shutdown signalled through the transport) the caller may
        /// call [`Session::handle_shutdown`] and serve again to flush the rest.
        pub $($async)* fn serve<IO, B, T>(
            io: &mut IO,
            session: &mut Session<B, T>,
            staging: &mut [u8],
        ) -> Result<(), ServeError<IO::Error>>
        where
            IO: Read + Write,
            B: AsRef<[u8]> + AsMut<[u8]>,
            T: Transform,
        {
            let mut one = [0u8; 1];
            let staging = if staging.is_empty() { &mut one[..] } else { staging };
            loop {
                let n = session.poll_transmit(staging);
                if n > 0 {
                    write_all(io, staging.get(..n).unwrap_or_default()) $($await)* ?;
                    session.handle_sent(n);
                    continue;
                }
                if session.is_done() {
                    io.flush() $($await)* ?;
                    return Ok(());
                }
                match read_some(io, session.recv_buffer()) $($await)* ? {
                    0 => session.handle_eof(),
                    n => session.handle_recv(n),
                }
            }
        }

        /// Sends `line` and its `\n`. Does not wait for the reply: several lines may be sent
        /// before their replies are read with [`recv_line`] (pipelining), and replies come back
        /// in order.
        ///
        /// # Errors
        ///
        /// [`RequestError::Newline`] if `line` contains `\n` (nothing is sent), or a transport
        /// error.
        pub $($async)* fn send_line<W: Write>(io: &mut W, line: &[u8]) -> Result<(), RequestError<W::Error>> {
            if line.contains(&b'\n') {
                return Err(RequestError::Newline);
            }
            write_all(io, line) $($await)* ?;
            write_all(io, b"\n") $($await)* ?;
            io.flush() $($await)* ?;
            Ok(())
        }

        /// Reads the next reply line (without its `\n`) into `replies`, which buffers what
        /// arrives after it for the next call. The reply is borrowed from `replies`.
        ///
        /// Blocks (or awaits) until a whole line has arrived.
        ///
        /// # Errors
        ///
        /// [`RequestError::Rejected`] for an error reply, [`RequestError::ReplyTooLong`] for a
        /// reply over the framer's limit (it is skipped, so the next call reads the next reply),
        /// [`RequestError::UnexpectedEof`] when the connection ends first, or a transport error.
        pub $($async)* fn recv_line<'f, R: Read, B: AsRef<[u8]> + AsMut<[u8]>>(
            io: &mut R,
            replies: &'f mut LineFramer<B>,
        ) -> Result<&'f [u8], RequestError<R::Error>> {
            let line = loop {
                match replies.poll_range() {
                    Some(Ok(line)) => break line,
                    Some(Err(Overlong)) => return Err(RequestError::ReplyTooLong),
                    None => {}
                }
                match read_some(io, replies.spare()) $($await)* ? {
                    0 => return Err(RequestError::UnexpectedEof),
                    n => replies.commit(n),
                }
            };
            let line = replies.storage().get(line).unwrap_or_default();
            match ErrorReply::parse(line) {
                Some(e) => Err(RequestError::Rejected(e)),
                None => Ok(line),
            }
        }

        /// One round trip: [`send_line`] then [`recv_line`].
        ///
        /// # Errors
        ///
        /// As [`send_line`] and [`recv_line`].
        pub $($async)* fn request<'f, IO: Read + Write, B: AsRef<[u8]> + AsMut<[u8]>>(
            io: &mut IO,
            replies: &'f mut LineFramer<B>,
            line: &[u8],
        ) -> Result<&'f [u8], RequestError<IO::Error>> {
            send_line(io, line) $($await)* ?;
            recv_line(io, replies) $($await)*
        }
    };
}

pub(crate) use drivers;
