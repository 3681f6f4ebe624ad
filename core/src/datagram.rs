//! Datagrams: one message in, one whole reply out.

use crate::transform::Transform;

/// Why [`transform_datagram`] produced no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DatagramError {
    /// The whole reply needs `needed` bytes and the output buffer is smaller. Nothing in the
    /// output buffer is a valid reply.
    ReplyTooLarge {
        /// The exact length of the full reply.
        needed: usize,
    },
}

impl core::fmt::Display for DatagramError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::ReplyTooLarge { needed } => {
                write!(f, "reply of {needed} bytes does not fit the output buffer")
            }
        }
    }
}

impl core::error::Error for DatagramError {}

/// Transforms one whole message into `output` and returns the reply length.
///
/// The reply is exact or absent: on [`DatagramError::ReplyTooLarge`] the caller must not send
/// any part of `output`. The transform is left reset either way. With the uppercase transform
/// the reply is at most three times the input ([`PROTOCOL.md`](crate::spec) §1), so an output
/// of `3 * input.len()` bytes always suffices.
///
/// Runs in time linear in the input; uses 64 bytes of stack to measure an overflow.
///
/// A UDP server checks each datagram with a [`LoopGuard`](crate::LoopGuard) before and after
/// this call; its docs show the whole turn.
///
/// # Example
///
/// ```
/// use upcase_core::{DatagramError, Uppercase, transform_datagram};
///
/// let mut transform = Uppercase::new();
/// let mut reply = [0u8; 16];
/// let n = transform_datagram(&mut transform, b"one datagram", &mut reply)?;
/// assert_eq!(&reply[..n], b"ONE DATAGRAM");
/// // A reply that does not fit is not sent in part: nothing of it is a reply.
/// let too_small = transform_datagram(&mut transform, b"hello", &mut reply[..3]);
/// assert_eq!(too_small, Err(DatagramError::ReplyTooLarge { needed: 5 }));
/// # Ok::<(), DatagramError>(())
/// ```
pub fn transform_datagram<T: Transform>(
    transform: &mut T,
    input: &[u8],
    output: &mut [u8],
) -> Result<usize, DatagramError> {
    let mut written = 0;
    let mut rest = input;
    let mut overflow = 0usize;
    let mut scratch = [0u8; 64];
    // Transform into `output`; once it is full, keep going into `scratch` only to count.
    loop {
        let dst: &mut [u8] = if written < output.len() {
            &mut output[written..]
        } else {
            &mut scratch
        };
        let cap = dst.len();
        let (read, n) = if rest.is_empty() {
            (0, transform.finish(dst).min(cap))
        } else {
            let p = transform.process(rest, dst);
            (p.read.min(rest.len()), p.written.min(cap))
        };
        if written < output.len() {
            written += n;
        } else {
            overflow += n;
        }
        if rest.is_empty() && n == 0 {
            break;
        }
        if read == 0 && n == 0 {
            rest = &[]; // a transform that makes no progress: end the message
        } else {
            rest = &rest[read..];
        }
    }
    if overflow == 0 {
        Ok(written)
    } else {
        Err(DatagramError::ReplyTooLarge {
            needed: written + overflow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Uppercase;
    use crate::transform::tests::oracle;
    use proptest::prelude::*;

    #[test]
    #[cfg(feature = "unicode")]
    fn u0390_triples_and_does_not_fit_an_equal_buffer() {
        let input = "\u{390}".as_bytes();
        let mut out = [0u8; 2];
        let err = transform_datagram(&mut Uppercase::new(), input, &mut out);
        assert_eq!(err, Err(DatagramError::ReplyTooLarge { needed: 6 }));
        let mut out = [0u8; 6];
        assert_eq!(
            transform_datagram(&mut Uppercase::new(), input, &mut out),
            Ok(6)
        );
        assert_eq!(&out, "\u{399}\u{308}\u{301}".as_bytes());
    }

    #[test]
    fn empty_datagram_gives_empty_reply() {
        assert_eq!(
            transform_datagram(&mut Uppercase::new(), b"", &mut []),
            Ok(0)
        );
    }

    proptest! {
        #[test]
        fn exact_or_error(input in proptest::collection::vec(any::<u8>(), 0..64), cap in 0usize..200) {
            let expect = oracle(&input);
            let mut out = std::vec![0u8; cap];
            let mut t = Uppercase::new();
            match transform_datagram(&mut t, &input, &mut out) {
                Ok(n) => prop_assert_eq!(&out[..n], &expect[..]),
                Err(DatagramError::ReplyTooLarge { needed }) => {
                    prop_assert!(cap < expect.len());
                    prop_assert_eq!(needed, expect.len());
                }
            }
            // The transform is reset: the next datagram is unaffected.
            let mut big = [0u8; 16];
            prop_assert_eq!(transform_datagram(&mut t, b"ok", &mut big), Ok(2));
            prop_assert_eq!(&big[..2], b"OK");
        }
    }
}
