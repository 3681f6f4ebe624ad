//! State the server's threads share: the configuration, the counters, the connection cap and the
//! reply budget. Lock-free: atomics only.

use crate::config::ServerConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use upcase_core::DropReason;

/// Counters of a server's whole life, as [`Server::run`](crate::Server::run) returns them and
/// logs them at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerCounters {
    /// TCP connections accepted and served.
    pub connections: u64,
    /// TCP connections refused at the connection cap.
    pub refused: u64,
    /// Transformed replies to lines handed whole to the kernel for sending, error replies
    /// excluded (`lines` framing). With the graceful close ([`PROTOCOL.md`](upcase_core::spec)
    /// §2.6) every one reaches a peer that does not reset. Counted from where the session says
    /// each reply ends, never from the bytes.
    pub lines: u64,
    /// Chunks whose transformed reply was handed whole to the kernel (`raw` framing).
    pub chunks: u64,
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

/// UDP requests dropped without a reply, one count per [`DropReason`]
/// ([`PROTOCOL.md`](upcase_core::spec) §3, [`SECURITY.md`](crate::security)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpDrops {
    counts: [u64; DropReason::COUNT],
}

impl UdpDrops {
    /// The requests dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts.get(reason.index()).copied().unwrap_or(0)
    }

    /// Every reason with its count, in the order of [`DropReason::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.into_iter().map(|r| (r, self.get(r)))
    }

    /// Every drop, whatever its reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl std::fmt::Display for UdpDrops {
    /// `dropped_<reason>=<count>` for every reason, space-separated: the stop log's form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (reason, n)) in self.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}dropped_{}={n}", reason.name())?;
        }
        Ok(())
    }
}

/// One counter per field of [`ServerCounters`], updated with relaxed atomics.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) lines: AtomicU64,
    pub(crate) chunks: AtomicU64,
    pub(crate) overlong: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) datagrams: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
}

impl Counters {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a dropped datagram.
    pub(crate) fn drop_datagram(&self, why: DropReason) {
        if let Some(c) = self.drops.get(why.index()) {
            Self::add(c, 1);
        }
    }

    pub(crate) fn snapshot(&self) -> ServerCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerCounters {
            connections: get(&self.connections),
            refused: get(&self.refused),
            lines: get(&self.lines),
            chunks: get(&self.chunks),
            overlong: get(&self.overlong),
            timeouts: get(&self.timeouts),
            panics: get(&self.panics),
            datagrams: get(&self.datagrams),
            udp_dropped: UdpDrops {
                counts: self.drops.each_ref().map(get),
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
    /// The origin of the milliseconds the core's sans-IO machines are given.
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

    /// Reply bytes buffered for slow readers now, across all connections.
    #[cfg(test)]
    pub(crate) fn snapshot_buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Whether the reply budget is spent: connections then read in small steps.
    pub(crate) fn over_budget(&self) -> bool {
        self.buffered.load(Ordering::Relaxed) >= self.config.limits.reply_budget
    }

    /// Milliseconds since `epoch`: the clock of the core's sessions and guards.
    pub(crate) fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `at` in milliseconds since `epoch`.
    pub(crate) fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
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
