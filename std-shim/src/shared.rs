//! State the server's threads share: the configuration, the counters, the connection cap and the
//! reply budget. Lock-free: atomics only.

use crate::config::ServerConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use upcase_core::Refusal;

/// Counters of a server's whole life, as [`Server::run`](crate::Server::run) returns them and
/// logs them at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerCounters {
    /// TCP connections accepted and served.
    pub connections: u64,
    /// TCP connections refused at the connection cap.
    pub refused: u64,
    /// Transformed replies delivered to the kernel for sending, error replies excluded. With
    /// the graceful close ([`PROTOCOL.md`](upcase_core::spec) §2.6) every one reaches a peer
    /// that does not reset.
    pub lines: u64,
    /// Lines over the limit, each answered with `error: line too long`.
    pub overlong: u64,
    /// Connections closed by the idle or write timeout.
    pub timeouts: u64,
    /// Connections closed because a user transform panicked on them.
    pub panics: u64,
    /// UDP requests answered.
    pub datagrams: u64,
    /// UDP requests dropped, by reason.
    pub udp_dropped: UdpDrops,
    /// Bytes received, TCP and UDP.
    pub bytes_in: u64,
    /// Bytes sent, TCP and UDP.
    pub bytes_out: u64,
}

/// UDP requests dropped without a reply, by reason ([`PROTOCOL.md`](upcase_core::spec) §3,
/// [`SECURITY.md`](crate::security)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct UdpDrops {
    /// Longer than `max_datagram`.
    pub oversized: u64,
    /// The reply would be longer than a UDP payload can be.
    pub reply_too_large: u64,
    /// The reply would be longer than the request, with `udp_no_amplify`.
    pub amplification: u64,
    /// Source port 0.
    pub source_port_zero: u64,
    /// Source port below 1024.
    pub low_source_port: u64,
    /// Sent from the server's own address.
    pub own_address: u64,
    /// An echo of the last reply, over the peer's echo budget (a reflection loop).
    pub echo: u64,
    /// The reply could not be sent (for example, the socket's send buffer was full).
    pub send_failed: u64,
}

impl UdpDrops {
    /// Every drop, whatever its reason.
    pub fn total(&self) -> u64 {
        self.oversized
            + self.reply_too_large
            + self.amplification
            + self.source_port_zero
            + self.low_source_port
            + self.own_address
            + self.echo
            + self.send_failed
    }
}

/// Why a UDP request got no reply: the guard's refusals and the server's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    Oversized,
    ReplyTooLarge,
    Amplification,
    Refused(Refusal),
    SendFailed,
}

/// One counter per field of [`ServerCounters`], updated with relaxed atomics.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) lines: AtomicU64,
    pub(crate) overlong: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) datagrams: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    drops: [AtomicU64; 8],
}

impl Counters {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a dropped datagram.
    pub(crate) fn drop_datagram(&self, why: DropReason) {
        let i = match why {
            DropReason::Oversized => 0,
            DropReason::ReplyTooLarge => 1,
            DropReason::Amplification => 2,
            DropReason::Refused(Refusal::SourcePortZero) => 3,
            DropReason::Refused(Refusal::LowSourcePort) => 4,
            DropReason::Refused(Refusal::OwnAddress) => 5,
            DropReason::Refused(Refusal::Echo) => 6,
            DropReason::SendFailed => 7,
        };
        Self::add(&self.drops[i], 1);
    }

    pub(crate) fn snapshot(&self) -> ServerCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let d = |i: usize| get(&self.drops[i]);
        ServerCounters {
            connections: get(&self.connections),
            refused: get(&self.refused),
            lines: get(&self.lines),
            overlong: get(&self.overlong),
            timeouts: get(&self.timeouts),
            panics: get(&self.panics),
            datagrams: get(&self.datagrams),
            udp_dropped: UdpDrops {
                oversized: d(0),
                reply_too_large: d(1),
                amplification: d(2),
                source_port_zero: d(3),
                low_source_port: d(4),
                own_address: d(5),
                echo: d(6),
                send_failed: d(7),
            },
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
        }
    }
}

/// State shared by the server's threads and its shutdown handles.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) counters: Counters,
    /// Set once, just before the workers are woken for a graceful shutdown. Workers read it
    /// only when woken: it is the event's payload, not a flag they poll.
    pub(crate) stopping: AtomicBool,
    /// Connections counted against the cap.
    active: AtomicUsize,
    /// Reply bytes buffered for slow readers, across all connections.
    buffered: AtomicUsize,
    /// When a warning about resources was last logged, in ms since `epoch`.
    last_warning_ms: AtomicU64,
    pub(crate) epoch: Instant,
}

impl Shared {
    pub(crate) fn new(config: ServerConfig) -> Self {
        Self {
            config,
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
            last_warning_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Counts a new connection against the cap; `false` (and nothing counted) at the cap.
    pub(crate) fn take_slot(&self) -> bool {
        let max = self.config.limits.max_connections;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A connection ended: its place under the cap is free.
    pub(crate) fn release_slot(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records reply bytes buffered (`more`) and sent or dropped (`less`).
    pub(crate) fn buffer_change(&self, more: usize, less: usize) {
        if more > less {
            self.buffered.fetch_add(more - less, Ordering::Relaxed);
        } else if less > more {
            self.buffered.fetch_sub(less - more, Ordering::Relaxed);
        }
    }

    /// Whether the reply budget is spent: connections then read in small steps.
    pub(crate) fn over_budget(&self) -> bool {
        self.buffered.load(Ordering::Relaxed) >= self.config.limits.reply_budget
    }

    /// Whether a resource warning may be logged now: at most one a second, server-wide.
    pub(crate) fn may_warn(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64 + 1000;
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        now >= last + 1000
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
