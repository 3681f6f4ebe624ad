//! Reflection-loop protection for a UDP server (`PROTOCOL.md` §3.1): which datagrams a server
//! must not answer, decided without IO or a clock of its own.

use crate::drop::DropReason;
use core::net::{IpAddr, SocketAddr};

/// The rules of a [`LoopGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct GuardConfig {
    /// Answer source ports below 1024. Default `false`.
    pub low_ports: bool,
    /// Repeats a peer may draw at once before they are limited. Default 4.
    pub echo_burst: u16,
    /// Repeats per second a peer may draw once its burst is used up. Default 2.
    pub echoes_per_second: u16,
}

impl GuardConfig {
    /// The defaults: no low ports, a burst of 4 repeats, then 2 per second.
    pub const DEFAULT: Self = Self {
        low_ports: false,
        echo_burst: 4,
        echoes_per_second: 2,
    };

    /// These rules with source ports below 1024 answered (`true`) or refused (`false`).
    pub const fn low_ports(mut self, allow: bool) -> Self {
        self.low_ports = allow;
        self
    }

    /// These rules with a burst of `burst` repeats, refilled at `per_second` a second.
    pub const fn repeats(mut self, burst: u16, per_second: u16) -> Self {
        self.echo_burst = burst;
        self.echoes_per_second = per_second;
        self
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long one sampled reply is watched for repeats before another is sampled, in ms.
const SAMPLE_MS: u32 = 1000;
/// The largest step back of the caller's clock read as no time passed, in ms.
const STEP_BACK_MS: u32 = 60_000;
/// How long a peer stays on probation after a drop, in ms.
const PROBATION_MS: u32 = 2000;
/// One repeat, in the thousandths that budgets are kept in.
const ONE: u32 = 1000;

/// One record of the table: 24 bytes, whatever the peers that share it.
///
/// Times are the low 32 bits of the caller's milliseconds, compared with wrapping arithmetic:
/// exact for intervals under 24 days, which is all a record needs (its budget refills in
/// seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    /// Keyed fingerprint of the sampled reply (peer included); 0: none yet.
    sample: u64,
    /// When `sample` was taken.
    sampled_at: u32,
    /// Repeats drawn and not yet refilled, in thousandths. 0 is a full budget, so an all-zero
    /// record (a `static` in `.bss`) is a fresh one.
    spent: u32,
    /// When `spent` was last refilled.
    refilled_at: u32,
    /// Probation lasts while this is ahead of the clock; 0: never began.
    probation_until: u32,
}

impl Record {
    const EMPTY: Self = Self {
        sample: 0,
        sampled_at: 0,
        spent: 0,
        refilled_at: 0,
        probation_until: 0,
    };
}

/// Decides which UDP datagrams a server answers, so that no spoofed datagram can start a loop
/// between the server and itself, another server of this protocol, or an echo-like service.
///
/// The rules ([`PROTOCOL.md`](crate::spec) §3.1):
/// 1. [`check_source`](Self::check_source), before the transform: never answer source port 0,
///    a source that is not unicast, the server's own address, or (unless
///    [`GuardConfig::low_ports`]) ports below 1024.
/// 2. [`check_reply`](Self::check_reply), after it: a loop sends the same reply to the same
///    peer again and again. The guard samples one reply per peer at least once a second and
///    counts its **repeats**; repeats draw on a budget ([`GuardConfig::echo_burst`], refilled
///    at [`GuardConfig::echoes_per_second`]). A repeat past the budget is dropped, and the drop
///    puts the peer on probation for 2 s (renewed by each further drop), during which every
///    reply to it draws on the same budget. So one drop ends a loop, and probation ends any
///    other loops with the same peer within a few exchanges.
///
/// A client that sends distinct requests gets distinct replies and is never limited; one that
/// repeats an identical request gets a few answers a second.
///
/// # Memory and time
///
/// `N` records of 24 bytes and 24 bytes of rules and key, in the guard itself: nothing is
/// allocated, and `LoopGuard<16>` is 408 bytes on a Cortex-M3. A peer's record is chosen by
/// SipHash-1-3 of its address and port under the guard's key, so that an attacker who does not
/// know the key cannot pick two peers that share a record. Peers that do share one share its
/// budget, probation and sample (so one peer's repeats may be counted only from the next
/// sample, up to a second later): nothing is evicted, so no peer can wipe another's record. Each check is constant time plus one pass over the reply to
/// fingerprint it.
///
/// The caller supplies the time (`now_ms`, milliseconds from any fixed origin, never going
/// back), so the guard runs the same on a microcontroller and under `std`.
///
/// # Limits
///
/// As `PROTOCOL.md` §3.1 states them: loops whose every reply comes back less often than the
/// refill rate can escape the sample (each costs at most that rate); a partner that changes
/// its answer every time is not detected; a spoofer can put an honest peer on probation.
///
/// # Example
///
/// [`Responder`](crate::Responder) runs the whole turn of a UDP server, this guard included.
/// By hand:
///
/// ```
/// use core::net::SocketAddr;
/// use upcase_core::{DropReason, GuardConfig, LoopGuard};
///
/// // The key: random per process under std, a per-device seed on a microcontroller.
/// let mut guard = LoopGuard::<64>::new(GuardConfig::DEFAULT, 0x5eed_0f_7415_d3f1c3);
/// let local: SocketAddr = "127.0.0.1:9876".parse().unwrap();
/// let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
/// assert_eq!(guard.check_source(client, local), Ok(()));
/// // Never answered: the server itself, and (by default) ports below 1024.
/// let dns: SocketAddr = "127.0.0.1:53".parse().unwrap();
/// assert_eq!(guard.check_source(dns, local), Err(DropReason::LowSourcePort));
/// assert_eq!(guard.check_source(local, local), Err(DropReason::OwnAddress));
/// // Distinct replies are never limited.
/// for i in 0..1000u32 {
///     assert_eq!(guard.check_reply(client, &i.to_le_bytes(), 0), Ok(()));
/// }
/// // The same reply again and again is a loop: after a burst, no more replies.
/// let answered = (0..100).filter(|_| guard.check_reply(client, b"HELLO", 5_000).is_ok());
/// assert!(answered.count() <= 6);
/// ```
#[derive(Debug, Clone)]
pub struct LoopGuard<const N: usize> {
    config: GuardConfig,
    key: (u64, u64),
    records: [Record; N],
}

impl<const N: usize> LoopGuard<N> {
    /// A guard with `N` records (`N = 0` keeps none and so never detects a loop) and a 128-bit
    /// hash `key`. Under `std`, pick the key at random per process; on a microcontroller with no
    /// random source, a per-device value (a serial number, a MAC address) mixed with a secret of
    /// the image. A guard whose key is known lets its attacker choose peers that share records.
    pub const fn new(config: GuardConfig, key: u128) -> Self {
        Self {
            config,
            key: (key as u64, (key >> 64) as u64),
            records: [Record::EMPTY; N],
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
    /// [`DropReason::SourcePortZero`], [`DropReason::NotUnicast`],
    /// [`DropReason::OwnAddress`] or [`DropReason::LowSourcePort`] when the datagram must not
    /// be answered.
    pub fn check_source(&self, peer: SocketAddr, local: SocketAddr) -> Result<(), DropReason> {
        if peer.port() == 0 {
            return Err(DropReason::SourcePortZero);
        }
        if !is_unicast(canonical(peer.ip())) {
            return Err(DropReason::NotUnicast);
        }
        if is_own_address(peer, local) {
            return Err(DropReason::OwnAddress);
        }
        if peer.port() < 1024 && !self.config.low_ports {
            return Err(DropReason::LowSourcePort);
        }
        Ok(())
    }

    /// Checks `reply` before it is sent to `peer` at `now_ms`, and records it. Call it only for
    /// replies that will be sent (after [`check_source`](Self::check_source) passed).
    ///
    /// # Errors
    ///
    /// [`DropReason::Loop`] when the reply is a repeat, or the peer is on probation, and its
    /// budget is spent.
    pub fn check_reply(
        &mut self,
        peer: SocketAddr,
        reply: &[u8],
        now_ms: u64,
    ) -> Result<(), DropReason> {
        let config = self.config;
        let peer_hash = self.hash_peer(peer);
        let Some(record) = self.records.get_mut((peer_hash % N.max(1) as u64) as usize) else {
            return Ok(());
        };
        let now = now_ms as u32;
        // Time since `then`; 0 if `now` is up to a minute before it: a clock that steps back a
        // little (seen on QEMU's) must neither refill the budget nor end a sample, which the
        // wrapped difference, near 2^32, would do at once.
        let since = |then: u32| match now.wrapping_sub(then) {
            d if d > u32::MAX - STEP_BACK_MS => 0,
            d => d,
        };
        // Refill the budget: `echoes_per_second` per 1000 ms is that many thousandths a ms.
        let elapsed = since(record.refilled_at);
        let refill = u64::from(elapsed) * u64::from(config.echoes_per_second);
        record.spent = u64::from(record.spent).saturating_sub(refill) as u32;
        record.refilled_at = now;
        // Sample: the first reply after the last sample's second is over.
        let fingerprint = fingerprint(peer_hash, reply) | 1;
        let repeat = if record.sample == 0 || since(record.sampled_at) >= SAMPLE_MS {
            record.sample = fingerprint;
            record.sampled_at = now;
            false
        } else {
            record.sample == fingerprint
        };
        let on_probation =
            record.probation_until != 0 && (record.probation_until.wrapping_sub(now) as i32) > 0;
        if !(repeat || on_probation) {
            return Ok(());
        }
        let burst = u32::from(config.echo_burst) * ONE;
        if record.spent.saturating_add(ONE) > burst {
            // `| 1`: a deadline of 0 would read as "never began".
            record.probation_until = now.wrapping_add(PROBATION_MS) | 1;
            return Err(DropReason::Loop);
        }
        record.spent += ONE;
        Ok(())
    }

    fn hash_peer(&self, peer: SocketAddr) -> u64 {
        let mut bytes = [0u8; 18];
        let (ip, port) = bytes.split_at_mut(16);
        match canonical(peer.ip()) {
            IpAddr::V4(v4) => copy(ip, &v4.octets()),
            IpAddr::V6(v6) => copy(ip, &v6.octets()),
        }
        copy(port, &peer.port().to_le_bytes());
        siphash13(self.key, &bytes)
    }
}

/// Copies as much of `src` as fits into `dst`, with no bounds check that could panic.
fn copy(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

/// Whether `peer` is the socket bound at `local` itself: the same address and port, or, for a
/// socket bound to the unspecified address, the same port on a loopback address.
fn is_own_address(peer: SocketAddr, local: SocketAddr) -> bool {
    if peer.port() != local.port() {
        return false;
    }
    let (p, l) = (canonical(peer.ip()), canonical(local.ip()));
    p == l || (l.is_unspecified() && p.is_loopback())
}

/// Whether a reply to `ip` reaches one host: not unspecified, broadcast or multicast.
fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A 64-bit fingerprint of `bytes` under `seed`: eight bytes per multiply. Only equality
/// matters: a collision can make two different replies to one peer count as a repeat.
fn fingerprint(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ word(c)).wrapping_mul(K).rotate_left(29);
    }
    h = (h ^ word(chunks.remainder()))
        .wrapping_mul(K)
        .rotate_left(29);
    h ^ (h >> 32)
}

/// Up to eight bytes as a little-endian word, zero-padded.
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    copy(&mut w, bytes);
    u64::from_le_bytes(w)
}

/// SipHash-1-3 of `data` under `key` (Aumasson and Bernstein's keyed hash, one compression and
/// three finalisation rounds): unpredictable without the key.
fn siphash13(key: (u64, u64), data: &[u8]) -> u64 {
    let mut v = [
        key.0 ^ 0x736f_6d65_7073_6575,
        key.1 ^ 0x646f_7261_6e64_6f6d,
        key.0 ^ 0x6c79_6765_6e65_7261,
        key.1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let m = word(c);
        v[3] ^= m;
        sip_round(&mut v);
        v[0] ^= m;
    }
    let last = word(chunks.remainder()) | ((data.len() as u64) << 56);
    v[3] ^= last;
    sip_round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..3 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_clock_that_steps_back_neither_refills_nor_ends_the_sample() {
        let mut g = LoopGuard::<4>::new(GuardConfig::DEFAULT, 7);
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        // Repeats 5 ms apart with the clock stepping back 1 ms every other time: after the
        // first answer and the burst of 4, the same reply is dropped, as with a steady clock.
        let answered = (0..20u64)
            .filter(|i| {
                g.check_reply(peer, b"SAME", 10_000 + i * 5 - (i % 2) * 6)
                    .is_ok()
            })
            .count();
        assert_eq!(answered, 5);
    }
    use crate::{Uppercase, transform_datagram};
    use std::vec::Vec;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const KEY: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

    #[test]
    fn siphash13_matches_std() {
        // std's `DefaultHasher::new()` is SipHash-1-3 under the zero key (an implementation
        // detail of the pinned toolchain, not a documented promise: if it ever changes, this
        // oracle goes with it). Every length from 0 to 40 crosses each tail case.
        use core::hash::Hasher;
        let input: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for n in 0..=input.len() {
            let mut std_hash = std::hash::DefaultHasher::new();
            std_hash.write(&input[..n]);
            assert_eq!(
                siphash13((0, 0), &input[..n]),
                std_hash.finish(),
                "length {n}"
            );
        }
        // Keyed: another key, another hash.
        assert_ne!(siphash13((1, 2), b"x"), siphash13((1, 3), b"x"));
    }

    /// A server's turn with the guard: the reply, or `None` when it is dropped.
    fn turn(
        g: &mut LoopGuard<64>,
        local: SocketAddr,
        peer: SocketAddr,
        request: &[u8],
        now: u64,
        transform: fn(&[u8]) -> Vec<u8>,
    ) -> Option<Vec<u8>> {
        g.check_source(peer, local).ok()?;
        let reply = transform(request);
        g.check_reply(peer, &reply, now).ok()?;
        Some(reply)
    }

    pub(crate) fn upper(b: &[u8]) -> Vec<u8> {
        let mut out = std::vec![0u8; 3 * b.len()];
        let n = transform_datagram(&mut Uppercase::new(), b, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn lower(b: &[u8]) -> Vec<u8> {
        b.to_ascii_lowercase()
    }

    /// Two servers A and B (B running `b_transform`, guarded too only if `b_guarded`), and
    /// `payloads.len()` spoofed datagrams "from" B to A, interleaved: each in-flight datagram
    /// is handled in turn. Returns how many replies A sent.
    fn loop_between(
        payloads: &[&[u8]],
        b_transform: fn(&[u8]) -> Vec<u8>,
        b_guarded: bool,
        rtt_ms: u64,
        limit: usize,
    ) -> usize {
        let (a, b) = (addr("127.0.0.1:40000"), addr("127.0.0.1:40001"));
        let mut ga = LoopGuard::<64>::new(GuardConfig::DEFAULT, KEY);
        let mut gb = LoopGuard::<64>::new(GuardConfig::DEFAULT, KEY ^ 1);
        // (to A?, payload) for each loop still alive.
        let mut flying: Vec<(bool, Vec<u8>)> =
            payloads.iter().map(|p| (true, p.to_vec())).collect();
        let (mut now, mut a_sent) = (0, 0);
        for _ in 0..limit {
            if flying.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for (to_a, payload) in flying {
                let reply = if to_a {
                    let r = turn(&mut ga, a, b, &payload, now, upper);
                    a_sent += usize::from(r.is_some());
                    r
                } else if b_guarded {
                    turn(&mut gb, b, a, &payload, now, b_transform)
                } else {
                    Some(b_transform(&payload))
                };
                if let Some(r) = reply {
                    next.push((!to_a, r));
                }
            }
            flying = next;
            now += rtt_ms;
        }
        a_sent
    }

    #[test]
    fn loops_between_two_upcase_servers_die_out_however_interleaved() {
        for rtt in [0, 1, 50] {
            assert!(
                loop_between(&[b"hello"], upper, true, rtt, 100_000) <= 6,
                "rtt {rtt}"
            );
            // The issue's attack: two payloads alternating, so that "the last reply" never
            // matched. And many more at once.
            assert!(loop_between(&[b"a", b"b"], upper, true, rtt, 100_000) <= 12);
            let many: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_le_bytes().to_vec()).collect();
            let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
            // Each loop lives a few exchanges: the sampled one's burst, then probation.
            let sent = loop_between(&many, upper, true, rtt, 100_000);
            assert!(sent <= 6 * 50, "rtt {rtt}: {sent}");
        }
    }

    #[test]
    fn loops_through_an_unguarded_partner_die_out() {
        // An echo service, and one that lowercases: its reply is no fixed point of ours.
        for partner in [(|b: &[u8]| b.to_vec()) as fn(&[u8]) -> Vec<u8>, lower] {
            for payloads in [&[&b"hello"[..]][..], &[b"x", b"y", b"z"]] {
                let sent = loop_between(payloads, partner, false, 0, 100_000);
                assert!(sent <= 4 * payloads.len() + 6, "{sent}");
            }
        }
    }

    #[test]
    fn a_slow_loop_is_held_to_the_refill_rate() {
        // Slower than the sample's second: each reply is sampled afresh, and costs at most the
        // refill rate; 10 s of a loop at 400 ms a round trip.
        let sent = loop_between(&[b"hello"], upper, false, 400, 25);
        assert!(sent <= 25);
        let sent = loop_between(&[b"hello"], upper, false, 100, 100);
        // 10 s: at most a burst, one free sample a second and 2 a second.
        assert!(sent <= 4 + 10 + 20 + 1, "{sent}");
    }

    #[test]
    fn sources_that_must_never_get_a_reply() {
        let g = LoopGuard::<4>::new(GuardConfig::DEFAULT, KEY);
        let local = addr("127.0.0.1:9876");
        assert_eq!(g.check_source(local, local), Err(DropReason::OwnAddress));
        let any = addr("0.0.0.0:9876");
        assert_eq!(g.check_source(local, any), Err(DropReason::OwnAddress));
        assert_eq!(
            g.check_source(addr("[::ffff:127.0.0.1]:9876"), local),
            Err(DropReason::OwnAddress)
        );
        assert_eq!(
            g.check_source(addr("127.0.0.1:0"), local),
            Err(DropReason::SourcePortZero)
        );
        for peer in [
            "0.0.0.0:5000",
            "255.255.255.255:5000",
            "224.0.0.1:5000",
            "239.1.2.3:5000",
            "[::]:5000",
            "[ff02::1]:5000",
            "[::ffff:224.0.0.1]:5000",
        ] {
            assert_eq!(
                g.check_source(addr(peer), local),
                Err(DropReason::NotUnicast),
                "{peer}"
            );
        }
        for port in [7, 19, 53, 123, 1023] {
            let peer = SocketAddr::new(local.ip(), port);
            assert_eq!(g.check_source(peer, local), Err(DropReason::LowSourcePort));
        }
        assert_eq!(g.check_source(addr("127.0.0.1:1024"), local), Ok(()));
        assert_eq!(g.check_source(addr("127.0.0.2:9876"), local), Ok(()));
        let open = LoopGuard::<4>::new(GuardConfig::DEFAULT.low_ports(true), KEY);
        assert_eq!(open.check_source(addr("127.0.0.1:53"), local), Ok(()));
    }

    #[test]
    fn distinct_requests_at_full_speed_are_never_limited() {
        // One record for every peer: the worst case for sharing.
        let mut g = LoopGuard::<1>::new(GuardConfig::DEFAULT, KEY);
        let peer = addr("192.0.2.1:5000");
        for i in 0..100_000u32 {
            let reply = std::format!("REQUEST {i}");
            assert_eq!(
                g.check_reply(peer, reply.as_bytes(), u64::from(i / 100)),
                Ok(())
            );
        }
    }

    #[test]
    fn a_few_repeats_a_second_are_always_answered() {
        let mut g = LoopGuard::<8>::new(GuardConfig::DEFAULT, KEY);
        let peer = addr("192.0.2.1:5000");
        // Two a second, for a minute, with distinct requests in between.
        for ms in (0..60_000).step_by(500) {
            assert_eq!(g.check_reply(peer, b"PING", ms), Ok(()), "at {ms} ms");
            assert_eq!(g.check_reply(peer, &ms.to_le_bytes(), ms + 1), Ok(()));
        }
        // A burst of 4 repeats at once, too.
        let mut g = LoopGuard::<8>::new(GuardConfig::DEFAULT, KEY);
        for _ in 0..5 {
            assert_eq!(g.check_reply(peer, b"PING", 0), Ok(()));
        }
    }

    #[test]
    fn a_flood_of_one_request_gets_a_few_replies_a_second_and_others_are_untouched() {
        let mut g = LoopGuard::<64>::new(GuardConfig::DEFAULT, KEY);
        let peer = addr("192.0.2.1:5000");
        let answered = (0..10_000)
            .filter(|&ms| g.check_reply(peer, b"HELLO", ms).is_ok())
            .count();
        // 10 s: the first, the burst, one fresh sample a second, 2 a second.
        assert!((20..=36).contains(&answered), "{answered}");
        let other = addr("192.0.2.2:5000");
        if g.hash_peer(other) % 64 != g.hash_peer(peer) % 64 {
            assert_eq!(g.check_reply(other, b"HELLO", 10_000), Ok(()));
        }
    }

    #[test]
    fn peers_sharing_a_record_cannot_reset_each_other() {
        // Two peers in one record: the issue's collision made each come back with a full
        // budget. Now they share it, and their loops die together.
        let (a, b) = (addr("127.0.0.1:40000"), addr("127.0.0.1:40001"));
        let (p, q) = (addr("198.51.100.1:7000"), addr("198.51.100.2:7000"));
        let mut g = LoopGuard::<1>::new(GuardConfig::DEFAULT, KEY);
        let mut answered = 0;
        for round in 0..10_000u64 {
            for (peer, payload) in [(p, &b"X"[..]), (q, &b"Y"[..])] {
                if turn_one(&mut g, a, peer, payload, round / 10).is_some() {
                    answered += 1;
                }
            }
        }
        let _ = b;
        assert!(answered <= 12, "{answered}");
    }

    fn turn_one(
        g: &mut LoopGuard<1>,
        local: SocketAddr,
        peer: SocketAddr,
        request: &[u8],
        now: u64,
    ) -> Option<()> {
        g.check_source(peer, local).ok()?;
        g.check_reply(peer, &upper(request), now).ok()
    }

    #[test]
    fn the_key_decides_which_peers_share_records() {
        let peers: Vec<SocketAddr> = (0..64u16)
            .map(|i| SocketAddr::new(addr("10.0.0.1:1").ip(), 2000 + i))
            .collect();
        let slots = |key: u128| -> Vec<u64> {
            let g = LoopGuard::<16>::new(GuardConfig::DEFAULT, key);
            peers.iter().map(|&p| g.hash_peer(p) % 16).collect()
        };
        assert_ne!(slots(1), slots(2));
        assert_eq!(slots(3), slots(3));
    }

    #[test]
    fn a_record_is_24_bytes() {
        assert_eq!(core::mem::size_of::<Record>(), 24);
        assert!(core::mem::size_of::<LoopGuard<16>>() <= 16 * 24 + 24);
    }
}
