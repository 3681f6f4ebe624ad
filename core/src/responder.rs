//! The UDP side of the protocol as one sans-IO turn: a request in, its reply or a reason out.

use crate::datagram::transform_datagram;
use crate::drop::DropReason;
use crate::guard::LoopGuard;
use crate::transform::Transform;
use core::net::SocketAddr;

/// A UDP server's every decision, without IO ([`PROTOCOL.md`](crate::spec) §3): which datagram
/// gets a reply, and which reply.
///
/// One call of [`respond`](Self::respond) is the whole turn, in this order, written once for
/// every driver:
/// 1. the request's size against [`max_request`](Self::max_request)
///    ([`DropReason::Oversized`]);
/// 2. its source ([`LoopGuard::check_source`]);
/// 3. the transform, into the caller's reply buffer, whole or not at all
///    ([`DropReason::ReplyTooLarge`]), capped at the request's length when the amplification
///    cap is on ([`DropReason::Amplification`]);
/// 4. the reply against the loop guard ([`LoopGuard::check_reply`]).
///
/// The driver receives, calls `respond`, and sends what it returns; a reply it then cannot
/// send it counts as [`DropReason::NotSent`].
///
/// # Memory
///
/// The transform, the guard (`N` records of 24 bytes) and two words. The reply buffer is the
/// caller's, so its length is the longest reply the server sends: with the uppercase transform,
/// 3 × the longest request always fits ([`PROTOCOL.md`](crate::spec) §1).
///
/// # Example
///
/// ```
/// use core::net::SocketAddr;
/// use upcase_core::{DropReason, GuardConfig, LoopGuard, Responder, Uppercase};
///
/// let guard = LoopGuard::<64>::new(GuardConfig::DEFAULT, 0x1234_5678_9abc_def0);
/// let mut udp = Responder::new(Uppercase::new(), guard).with_no_amplify(true);
/// let local: SocketAddr = "127.0.0.1:9876".parse().unwrap();
/// let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
/// let mut reply = [0u8; 1500];
///
/// let n = udp.respond(client, local, b"hello", 0, &mut reply)?;
/// assert_eq!(&reply[..n], b"HELLO");
/// // With the cap on, a reply never outgrows its request (`ΐ` would triple), and a reply
/// // buffer too small for the whole reply means no reply at all, never a cut one.
/// assert_eq!(
///     udp.respond(client, local, b"hello", 0, &mut reply[..4]),
///     Err(DropReason::ReplyTooLarge)
/// );
/// // The server itself is never answered.
/// assert_eq!(
///     udp.respond(local, local, b"hello", 0, &mut reply),
///     Err(DropReason::OwnAddress)
/// );
/// # Ok::<(), DropReason>(())
/// ```
#[derive(Debug, Clone)]
pub struct Responder<T, const N: usize> {
    transform: T,
    guard: LoopGuard<N>,
    max_request: usize,
    no_amplify: bool,
}

impl<T, const N: usize> Responder<T, N> {
    /// A responder with no size limit of its own (the reply buffer still bounds replies) and
    /// the amplification cap off, the protocol's defaults.
    pub const fn new(transform: T, guard: LoopGuard<N>) -> Self {
        Self {
            transform,
            guard,
            max_request: usize::MAX,
            no_amplify: false,
        }
    }

    /// Drops requests longer than `max` bytes. A driver whose receive buffer is one byte longer
    /// than its limit recognises a truncated datagram this way.
    pub const fn with_max_request(mut self, max: usize) -> Self {
        self.max_request = max;
        self
    }

    /// With `true`, drops requests whose reply would be longer than the request, so the server
    /// cannot amplify traffic towards a spoofed source ([`PROTOCOL.md`](crate::spec) §3).
    pub const fn with_no_amplify(mut self, on: bool) -> Self {
        self.no_amplify = on;
        self
    }

    /// The longest request answered.
    pub const fn max_request(&self) -> usize {
        self.max_request
    }

    /// Whether the amplification cap is on.
    pub const fn no_amplify(&self) -> bool {
        self.no_amplify
    }

    /// The transform, for a driver that must replace it (after a user transform panicked).
    pub fn transform_mut(&mut self) -> &mut T {
        &mut self.transform
    }

    /// The loop guard.
    pub fn guard(&self) -> &LoopGuard<N> {
        &self.guard
    }
}

impl<T: Transform, const N: usize> Responder<T, N> {
    /// The turn for one datagram: `request` from `peer`, received on `local` at `now_ms` (any
    /// millisecond clock that never goes back). Writes the reply into `reply` and returns its
    /// length; the reply is exactly `reply[..n]`, and `Ok(0)` is the empty reply to an empty
    /// request, which must be sent too.
    ///
    /// Never blocks; runs in time linear in the request; never panics, whatever the transform
    /// returns.
    ///
    /// # Errors
    ///
    /// The one [`DropReason`] why the datagram gets no reply. Nothing in `reply` is then a
    /// reply.
    pub fn respond(
        &mut self,
        peer: SocketAddr,
        local: SocketAddr,
        request: &[u8],
        now_ms: u64,
        reply: &mut [u8],
    ) -> Result<usize, DropReason> {
        if request.len() > self.max_request {
            return Err(DropReason::Oversized);
        }
        self.guard.check_source(peer, local)?;
        let cap = if self.no_amplify {
            request.len().min(reply.len())
        } else {
            reply.len()
        };
        let (out, _) = reply.split_at_mut(cap);
        let n = match transform_datagram(&mut self.transform, request, out) {
            Ok(n) => n,
            Err(_) if self.no_amplify && cap == request.len() => {
                return Err(DropReason::Amplification);
            }
            Err(_) => return Err(DropReason::ReplyTooLarge),
        };
        let sent = out.get(..n).unwrap_or_default();
        self.guard.check_reply(peer, sent, now_ms)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardConfig;
    use crate::guard::tests::upper;
    use crate::transform::{ByteMap, Uppercase};
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn responder() -> Responder<Uppercase, 64> {
        Responder::new(Uppercase::new(), LoopGuard::new(GuardConfig::DEFAULT, 7))
    }

    #[test]
    fn the_turn_checks_in_order() {
        let local = addr("127.0.0.1:9876");
        let client = addr("127.0.0.1:50000");
        let mut out = [0u8; 16];
        let mut r = responder().with_max_request(8);
        // Size first: even a refused source with a long request reads as oversized.
        assert_eq!(
            r.respond(addr("127.0.0.1:0"), local, &[b'a'; 9], 0, &mut out),
            Err(DropReason::Oversized)
        );
        assert_eq!(
            r.respond(addr("127.0.0.1:0"), local, b"a", 0, &mut out),
            Err(DropReason::SourcePortZero)
        );
        // A reply that does not fit is never cut.
        assert_eq!(
            r.respond(client, local, b"abcdefgh", 0, &mut out[..7]),
            Err(DropReason::ReplyTooLarge)
        );
        assert_eq!(r.respond(client, local, b"", 0, &mut out), Ok(0));
    }

    #[test]
    fn a_custom_transform_is_looped_on_its_own_replies() {
        // ROT13 is its own inverse: a ROT13 server and an upcase one do not fix each other's
        // replies, yet each one's replies repeat.
        let rot13 = ByteMap(|b: u8| match b {
            b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
            b'A'..=b'Z' => (b - b'A' + 13) % 26 + b'A',
            _ => b,
        });
        let mut r = Responder::new(rot13, LoopGuard::<8>::new(GuardConfig::DEFAULT, 9));
        let (local, peer) = (addr("127.0.0.1:9876"), addr("127.0.0.1:50000"));
        let mut out = [0u8; 16];
        let mut datagram = b"HELLO".to_vec();
        let mut answered = 0;
        for _ in 0..1000 {
            let Ok(n) = r.respond(peer, local, &datagram, 0, &mut out) else {
                break;
            };
            answered += 1;
            datagram = upper(&out[..n]); // the peer, an upcase server, answers
        }
        assert!(answered <= 12, "{answered}");
    }

    proptest! {
        #[test]
        fn replies_equal_the_oracle_or_say_why_not(
            request in proptest::collection::vec(any::<u8>(), 0..48),
            cap in 0usize..100,
            no_amplify: bool,
        ) {
            let local = addr("127.0.0.1:9876");
            let client = addr("127.0.0.1:50000");
            let mut r = responder().with_no_amplify(no_amplify);
            let mut out = std::vec![0u8; cap];
            let expect = crate::transform::tests::oracle(&request);
            match r.respond(client, local, &request, 0, &mut out) {
                Ok(n) => {
                    prop_assert_eq!(&out[..n], &expect[..]);
                    prop_assert!(!no_amplify || n <= request.len());
                }
                Err(DropReason::Amplification) => {
                    prop_assert!(no_amplify && expect.len() > request.len());
                }
                Err(DropReason::ReplyTooLarge) => prop_assert!(expect.len() > cap),
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
