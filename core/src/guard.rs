//! Reflection-loop protection for a UDP server (`PROTOCOL.md` §3.1): which datagrams a server
//! must not answer, decided without IO or a clock of its own.

use core::net::{IpAddr, SocketAddr};

/// Why a UDP server drops a datagram without a reply ([`PROTOCOL.md`](crate::spec) §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// The source port is 0: no reply can be addressed to it.
    SourcePortZero,
    /// The source port is below 1024, where echo, chargen, DNS and NTP live: a reply could
    /// start a reflection loop with such a service. Allowed by [`GuardConfig::low_ports`].
    LowSourcePort,
    /// The source is the server's own address: a reply would come straight back.
    OwnAddress,
    /// The peer sent back, unchanged, the reply it was last sent, and has used up its small
    /// budget of such echoes: most likely another server of this protocol, or an echo service,
    /// in a loop that a spoofed datagram started.
    Echo,
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::SourcePortZero => "source port 0",
            Self::LowSourcePort => "source port below 1024",
            Self::OwnAddress => "source is the server's own address",
            Self::Echo => "peer echoes replies back (reflection loop)",
        })
    }
}

impl core::error::Error for Refusal {}

/// The rules of a [`LoopGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GuardConfig {
    /// Answer source ports below 1024. Default `false`.
    pub low_ports: bool,
    /// Echoes a peer may send back at once before they are limited. Default 4.
    pub echo_burst: u16,
    /// Echoes per second a peer may send once its burst is used up. Default 2.
    pub echoes_per_second: u16,
}

impl GuardConfig {
    /// The defaults: no low ports, a burst of 4 echoes, then 2 per second.
    pub const DEFAULT: Self = Self {
        low_ports: false,
        echo_burst: 4,
        echoes_per_second: 2,
    };
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One peer's record: the fingerprint of the last reply sent to it, and its echo budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    peer: Option<SocketAddr>,
    /// Fingerprint of the last reply sent to `peer`.
    reply: u64,
    /// Echo budget in thousandths of an echo, so that refills need no division per datagram.
    credit: u32,
    /// When `credit` was last refilled, in the caller's milliseconds.
    at_ms: u64,
}

impl Entry {
    const EMPTY: Self = Self {
        peer: None,
        reply: 0,
        credit: 0,
        at_ms: 0,
    };
}

/// Decides which UDP datagrams a server answers, so that no spoofed datagram can start a loop
/// between the server and itself, another server of this protocol, or an echo-like service.
///
/// The rules ([`PROTOCOL.md`](crate::spec) §3.1):
/// 1. [`check_source`](Self::check_source), before the transform: never answer source port 0,
///    the server's own address, or (unless [`GuardConfig::low_ports`]) ports below 1024.
/// 2. [`check_reply`](Self::check_reply), after it: a request that is byte for byte the reply
///    last sent to the same peer, and that the transform leaves unchanged, is an echo. Echoes
///    draw on a small per-peer budget ([`GuardConfig::echo_burst`], refilled at
///    [`GuardConfig::echoes_per_second`]); past it they are dropped, and one drop ends a loop.
///    A request that the transform changes is never limited.
///
/// # Memory and time
///
/// `N` peer records of about 56 bytes, in the guard itself: nothing is allocated. A peer's
/// record lives in slot `hash(peer) % N`; a new peer in a taken slot replaces the old one, so
/// the table never grows, and a replaced peer starts again with a full budget. Each check is
/// constant time plus one pass over the reply to fingerprint it.
///
/// The caller supplies the time (`now_ms`, milliseconds from any fixed origin, never going
/// back), so the guard runs the same on a microcontroller and under `std`.
///
/// # Example
///
/// A UDP server's turn for one datagram: the source first, then the whole reply with
/// [`transform_datagram`](crate::transform_datagram), then the reply check, and only then the
/// send.
///
/// ```
/// use core::net::SocketAddr;
/// use upcase_core::{GuardConfig, LoopGuard, Refusal, Uppercase, transform_datagram};
///
/// struct UdpServer {
///     local: SocketAddr,
///     guard: LoopGuard<64>,
///     transform: Uppercase,
///     reply: [u8; 1500],
/// }
///
/// impl UdpServer {
///     /// The reply to send to `peer`, or `None`: drop the datagram without a reply.
///     fn on_datagram(&mut self, peer: SocketAddr, request: &[u8], now_ms: u64) -> Option<&[u8]> {
///         self.guard.check_source(peer, self.local).ok()?;
///         let n = transform_datagram(&mut self.transform, request, &mut self.reply).ok()?;
///         let reply = &self.reply[..n];
///         self.guard.check_reply(peer, request, reply, now_ms).ok()?;
///         Some(reply)
///     }
/// }
///
/// let local: SocketAddr = "127.0.0.1:9876".parse().unwrap();
/// let mut server = UdpServer {
///     local,
///     guard: LoopGuard::new(GuardConfig::DEFAULT),
///     transform: Uppercase::new(),
///     reply: [0; 1500],
/// };
/// let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
/// assert_eq!(server.on_datagram(client, b"hello", 0), Some(&b"HELLO"[..]));
/// // Never answered: the server itself, source port 0, and (by default) ports below 1024.
/// let dns: SocketAddr = "127.0.0.1:53".parse().unwrap();
/// assert_eq!(server.guard.check_source(dns, local), Err(Refusal::LowSourcePort));
/// assert_eq!(server.on_datagram(local, b"hello", 0), None);
/// // A peer that sends back the reply it got, over and over, is a loop: after the burst of
/// // echoes (4 by default, refilled at 2 per second) it gets no reply.
/// let answered = (0..10).filter(|_| server.on_datagram(client, b"HELLO", 0).is_some());
/// assert_eq!(answered.count(), 4);
/// assert!(server.on_datagram(client, b"HELLO", 1000).is_some()); // refilled
/// ```
#[derive(Debug, Clone)]
pub struct LoopGuard<const N: usize> {
    config: GuardConfig,
    entries: [Entry; N],
}

impl<const N: usize> LoopGuard<N> {
    /// A guard with `N` peer records (at least 1 is useful; `N = 0` keeps no records and so
    /// never detects an echo).
    pub const fn new(config: GuardConfig) -> Self {
        Self {
            config,
            entries: [Entry::EMPTY; N],
        }
    }

    /// The rules in force.
    pub const fn config(&self) -> GuardConfig {
        self.config
    }

    /// Checks the source of a datagram received on `local`, before any work is done on it.
    ///
    /// # Errors
    ///
    /// The [`Refusal`] when the datagram must not be answered.
    pub fn check_source(&self, peer: SocketAddr, local: SocketAddr) -> Result<(), Refusal> {
        if peer.port() == 0 {
            return Err(Refusal::SourcePortZero);
        }
        if is_own_address(peer, local) {
            return Err(Refusal::OwnAddress);
        }
        if peer.port() < 1024 && !self.config.low_ports {
            return Err(Refusal::LowSourcePort);
        }
        Ok(())
    }

    /// Checks a reply before it is sent to `peer`, and records it. Call it only for replies
    /// that will be sent (after [`check_source`](Self::check_source) passed).
    ///
    /// # Errors
    ///
    /// [`Refusal::Echo`] when the request echoes the last reply and the peer's echo budget is
    /// used up. The reply is then not recorded: the peer's record still holds the reply it
    /// echoes.
    pub fn check_reply(
        &mut self,
        peer: SocketAddr,
        request: &[u8],
        reply: &[u8],
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let fingerprint = fingerprint(reply);
        let config = self.config;
        let Some(entry) = self.slot(peer) else {
            return Ok(());
        };
        let burst = u32::from(config.echo_burst) * 1000;
        if entry.peer != Some(peer) {
            *entry = Entry {
                peer: Some(peer),
                reply: fingerprint,
                credit: burst,
                at_ms: now_ms,
            };
            return Ok(());
        }
        // Refill: `echoes_per_second` per 1000 ms is one thousandth of an echo per ms each.
        let elapsed = now_ms.saturating_sub(entry.at_ms);
        let refill = elapsed.saturating_mul(u64::from(config.echoes_per_second));
        entry.credit = u64::from(entry.credit)
            .saturating_add(refill)
            .min(u64::from(burst)) as u32;
        entry.at_ms = now_ms;
        if request == reply && entry.reply == fingerprint {
            if entry.credit < 1000 {
                return Err(Refusal::Echo);
            }
            entry.credit -= 1000;
        }
        entry.reply = fingerprint;
        Ok(())
    }

    fn slot(&mut self, peer: SocketAddr) -> Option<&mut Entry> {
        let n = self.entries.len();
        if n == 0 {
            return None;
        }
        let i = (hash_addr(peer) % n as u64) as usize;
        self.entries.get_mut(i)
    }
}

/// Whether `peer` is the socket bound at `local` itself: the same address and port, or, for a
/// socket bound to the unspecified address, the same port on a loopback address.
fn is_own_address(peer: SocketAddr, local: SocketAddr) -> bool {
    if peer.port() != local.port() {
        return false;
    }
    let (p, l) = (canonical(peer.ip()), canonical(local.ip()));
    p == l || (l.is_unspecified() && (p.is_loopback() || p.is_unspecified()))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A 64-bit fingerprint of `bytes`: eight bytes per multiply. Not cryptographic: a collision
/// can only make the guard count a fixed-point request as an echo of another reply.
fn fingerprint(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(K).rotate_left(29);
    }
    h ^ (h >> 32)
}

fn hash_addr(peer: SocketAddr) -> u64 {
    let mut bytes = [0u8; 18];
    match canonical(peer.ip()) {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes[..16].copy_from_slice(&v6.octets()),
    }
    bytes[16..].copy_from_slice(&peer.port().to_le_bytes());
    fingerprint(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Uppercase, transform_datagram};
    use std::vec::Vec;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Two guarded servers, A and B, and one spoofed datagram: B's address as the source, sent
    /// to A. Returns how many datagrams each answered and when, in simulated time, with one
    /// round trip every `rtt_ms`.
    fn two_servers(payload: &[u8], rtt_ms: u64, limit: usize) -> Vec<(char, u64)> {
        let (a_addr, b_addr) = (addr("127.0.0.1:40000"), addr("127.0.0.1:40001"));
        let mut guards = [
            LoopGuard::<64>::new(GuardConfig::DEFAULT),
            LoopGuard::<64>::new(GuardConfig::DEFAULT),
        ];
        let mut answered = Vec::new();
        let (mut to, mut from) = (0usize, b_addr);
        let mut datagram = payload.to_vec();
        let mut now = 0;
        for _ in 0..limit {
            let local = [a_addr, b_addr][to];
            let guard = &mut guards[to];
            if guard.check_source(from, local).is_err() {
                break;
            }
            let mut reply = std::vec![0u8; 3 * datagram.len()];
            let n = transform_datagram(&mut Uppercase::new(), &datagram, &mut reply).unwrap();
            reply.truncate(n);
            if guard.check_reply(from, &datagram, &reply, now).is_err() {
                break;
            }
            answered.push((['A', 'B'][to], now));
            datagram = reply;
            from = local;
            to = 1 - to;
            now += rtt_ms;
        }
        answered
    }

    #[test]
    fn a_spoofed_datagram_between_two_servers_dies_out() {
        // Faster than the refill (one echo per 500 ms): the budget runs out and one drop ends
        // the loop.
        for rtt in [0, 1, 50, 200] {
            let answered = two_servers(b"hello", rtt, 100_000);
            assert!(answered.len() < 40, "rtt {rtt}: {}", answered.len());
            for server in ['A', 'B'] {
                let early = answered.iter().filter(|(s, t)| *s == server && *t < 2000);
                assert!(early.count() <= 20, "rtt {rtt}");
            }
        }
        // At loopback speed, the burst alone: the first reply and 4 echoes each way.
        assert!(two_servers(b"hello", 0, 100_000).len() <= 11);
    }

    #[test]
    fn a_slow_loop_is_held_to_the_refill_rate() {
        // A loop slower than the refill is not detected as over budget, but it costs each
        // server at most `echoes_per_second`: far below the 10 per second of the target.
        let answered = two_servers(b"hello", 400, 1_000);
        for server in ['A', 'B'] {
            let mine: Vec<u64> = answered
                .iter()
                .filter(|(s, _)| *s == server)
                .map(|(_, t)| *t)
                .collect();
            assert!(mine.iter().filter(|&&t| t < 2000).count() <= 20);
            for second in 2..mine.last().copied().unwrap_or(0) / 1000 {
                let n = mine.iter().filter(|&&t| t / 1000 == second).count();
                assert!(n <= 2, "{server} second {second}: {n}");
            }
        }
    }

    #[test]
    fn own_address_port_zero_and_low_ports_are_refused() {
        let g = LoopGuard::<4>::new(GuardConfig::DEFAULT);
        let local = addr("127.0.0.1:9876");
        assert_eq!(g.check_source(local, local), Err(Refusal::OwnAddress));
        let any = addr("0.0.0.0:9876");
        assert_eq!(g.check_source(local, any), Err(Refusal::OwnAddress));
        assert_eq!(
            g.check_source(addr("[::ffff:127.0.0.1]:9876"), local),
            Err(Refusal::OwnAddress)
        );
        assert_eq!(
            g.check_source(addr("127.0.0.1:0"), local),
            Err(Refusal::SourcePortZero)
        );
        for port in [7, 19, 53, 123, 1023] {
            let peer = SocketAddr::new(local.ip(), port);
            assert_eq!(g.check_source(peer, local), Err(Refusal::LowSourcePort));
        }
        assert_eq!(g.check_source(addr("127.0.0.1:1024"), local), Ok(()));
        assert_eq!(g.check_source(addr("127.0.0.2:9876"), local), Ok(()));
        let open = LoopGuard::<4>::new(GuardConfig {
            low_ports: true,
            ..GuardConfig::DEFAULT
        });
        assert_eq!(open.check_source(addr("127.0.0.1:53"), local), Ok(()));
    }

    #[test]
    fn changing_requests_are_never_limited() {
        let mut g = LoopGuard::<1>::new(GuardConfig::DEFAULT);
        let peer = addr("192.0.2.1:5000");
        for i in 0..10_000u32 {
            let req = std::format!("request {i}");
            let reply = req.to_uppercase();
            assert_eq!(
                g.check_reply(peer, req.as_bytes(), reply.as_bytes(), 0),
                Ok(())
            );
        }
    }

    #[test]
    fn a_repeated_uppercase_request_gets_a_few_replies_per_second() {
        let mut g = LoopGuard::<8>::new(GuardConfig::DEFAULT);
        let peer = addr("192.0.2.1:5000");
        let mut answered = 0;
        // 10 seconds of 1000 identical requests per second.
        for ms in 0..10_000 {
            if g.check_reply(peer, b"HELLO", b"HELLO", ms).is_ok() {
                answered += 1;
            }
        }
        // The first, the burst of 4, then 2 per second.
        assert!((20..=26).contains(&answered), "{answered}");
        // Another peer is unaffected.
        let other = addr("192.0.2.2:5000");
        assert_eq!(g.check_reply(other, b"HELLO", b"HELLO", 10_000), Ok(()));
    }
}
