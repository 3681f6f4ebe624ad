//! Errors of the IO drivers, one small enum per operation.

use crate::protocol::ErrorReply;
use core::fmt;

/// Why [`serve`](crate::blocking::serve) stopped before the session was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ServeError<E> {
    /// The transport failed. `Interrupted` errors are retried and never end up here.
    Io(E),
    /// The transport accepted no bytes of a non-empty write.
    WriteZero,
}

impl<E> From<E> for ServeError<E> {
    fn from(e: E) -> Self {
        Self::Io(e)
    }
}

impl<E: fmt::Debug> fmt::Display for ServeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "io error: {e:?}"),
            Self::WriteZero => f.write_str("write accepted zero bytes"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for ServeError<E> {}

/// Why a client call ([`request`](crate::blocking::request) and friends) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RequestError<E> {
    /// The transport failed. `Interrupted` errors are retried and never end up here.
    Io(E),
    /// The transport accepted no bytes of a non-empty write.
    WriteZero,
    /// The request contains a `\n`, so it would be more than one line. Nothing was sent.
    Newline,
    /// The server closed the connection before the reply's `\n`.
    UnexpectedEof,
    /// The reply is longer than the reply buffer can hold. The rest of it is skipped.
    ReplyTooLong,
    /// The server answered with an error reply.
    Rejected(ErrorReply),
}

impl<E> From<E> for RequestError<E> {
    fn from(e: E) -> Self {
        Self::Io(e)
    }
}

impl<E> From<ServeError<E>> for RequestError<E> {
    fn from(e: ServeError<E>) -> Self {
        match e {
            ServeError::Io(e) => Self::Io(e),
            ServeError::WriteZero => Self::WriteZero,
        }
    }
}

impl<E: fmt::Debug> fmt::Display for RequestError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "io error: {e:?}"),
            Self::WriteZero => f.write_str("write accepted zero bytes"),
            Self::Newline => f.write_str("request contains a newline"),
            Self::UnexpectedEof => f.write_str("connection closed before the reply ended"),
            Self::ReplyTooLong => f.write_str("reply longer than the reply buffer"),
            Self::Rejected(e) => write!(f, "server replied with an error: {e}"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for RequestError<E> {}
