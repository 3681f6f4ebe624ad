//! Wire constants of `PROTOCOL.md`: framing modes and the server's error replies.

/// How a TCP byte stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Framing {
    /// Lines end at `\n`; each reply is `transform(line) + "\n"`. The default.
    #[default]
    Lines,
    /// No framing: each chunk that arrives is transformed and written back at once.
    Raw,
}

/// Every error reply starts with these bytes ([`PROTOCOL.md`](crate::spec) §2.3). A client
/// recognises an error reply by its whole line ([`ErrorReply::parse`]), not by this prefix.
pub const ERROR_PREFIX: &[u8] = b"error: ";

/// The error replies a server sends, each one line ([`PROTOCOL.md`](crate::spec) §2.3). This is
/// a reply on the wire, not a Rust error of this crate: a client gets one as
/// [`RequestError::Rejected`](crate::RequestError::Rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ErrorReply {
    /// `error: line too long`: a line was over the limit. Sent once in its place; the
    /// connection goes on with the next line.
    LineTooLong,
    /// `error: too many connections`: the server is at its connection cap. The connection
    /// is then closed.
    TooManyConnections,
    /// `error: shutting down`: sent in place of a partial line that was still buffered when
    /// the server began a graceful shutdown. The connection is then closed.
    ShuttingDown,
    /// `error: idle timeout`: sent in place of a partial line that was still buffered when
    /// the idle timeout closed the connection.
    IdleTimeout,
}

impl ErrorReply {
    /// Every error reply, in the order of `PROTOCOL.md`'s table.
    pub const ALL: [Self; 4] = [
        Self::LineTooLong,
        Self::TooManyConnections,
        Self::ShuttingDown,
        Self::IdleTimeout,
    ];

    /// The complete reply line, `\n` included.
    pub const fn reply(self) -> &'static [u8] {
        match self {
            Self::LineTooLong => b"error: line too long\n",
            Self::TooManyConnections => b"error: too many connections\n",
            Self::ShuttingDown => b"error: shutting down\n",
            Self::IdleTimeout => b"error: idle timeout\n",
        }
    }

    /// Recognises an error reply by its whole line (without its `\n`): `Some` if and only if
    /// `line` equals one of the error lines. Every other line, whatever it starts with, is a
    /// reply (`None`). Under a custom transform a reply can equal an error line; the wire
    /// cannot tell them apart, and both clients read it the same way.
    pub fn parse(line: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|e| e.reply().strip_suffix(b"\n") == Some(line))
    }
}

impl core::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::LineTooLong => "line too long",
            Self::TooManyConnections => "too many connections",
            Self::ShuttingDown => "shutting down",
            Self::IdleTimeout => "idle timeout",
        })
    }
}

impl core::error::Error for ErrorReply {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_back_and_cannot_be_uppercase_output() {
        for e in ErrorReply::ALL {
            let line = e.reply().strip_suffix(b"\n").unwrap();
            assert_eq!(ErrorReply::parse(line), Some(e));
            assert!(line.starts_with(ERROR_PREFIX));
            assert!(line.iter().any(u8::is_ascii_lowercase));
            assert!(!line.contains(&b'\n'));
        }
        // Only whole lines: a prefix is a reply like any other.
        assert_eq!(ErrorReply::parse(b"error: x"), None);
        assert_eq!(ErrorReply::parse(b"error: line too long!"), None);
        assert_eq!(ErrorReply::parse(b"ERROR: LINE TOO LONG"), None);
    }
}
