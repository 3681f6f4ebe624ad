//! Why a UDP datagram gets no reply: one enum for every reason, from the guard, the responder
//! and the driver, so that counters are derived from it rather than mapped by hand.

/// Why a UDP request was dropped without a reply ([`PROTOCOL.md`](crate::spec) §3).
///
/// [`ALL`](Self::ALL) lists every reason once and [`index`](Self::index) is its place there,
/// so a driver keeps one counter per reason in an array of [`COUNT`](Self::COUNT) and names
/// each with [`name`](Self::name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DropReason {
    /// Longer than the largest request the server accepts (or truncated by the receive).
    Oversized,
    /// The whole reply does not fit the reply buffer (a UDP payload: 65,507 bytes), and a
    /// reply is never truncated.
    ReplyTooLarge,
    /// The reply would be longer than the request, and the amplification cap is on.
    Amplification,
    /// The source port is 0: no reply can be addressed to it.
    SourcePortZero,
    /// The source address is unspecified, broadcast or multicast: a reply would reach no one,
    /// or every member of a group.
    NotUnicast,
    /// The source is the server's own address: a reply would come straight back.
    OwnAddress,
    /// The source port is below 1024, where echo, chargen, DNS and NTP live.
    LowSourcePort,
    /// The reply repeats one already sent to this peer (or the peer is on probation) and its
    /// budget is spent: a reflection loop ([`PROTOCOL.md`](crate::spec) §3.1).
    Loop,
    /// The driver could not send the reply (a full send buffer or transmit ring). Never
    /// returned by the core: a driver reports it.
    NotSent,
}

impl DropReason {
    /// Every reason, in the order of [`index`](Self::index).
    pub const ALL: [Self; 9] = [
        Self::Oversized,
        Self::ReplyTooLarge,
        Self::Amplification,
        Self::SourcePortZero,
        Self::NotUnicast,
        Self::OwnAddress,
        Self::LowSourcePort,
        Self::Loop,
        Self::NotSent,
    ];

    /// How many reasons there are.
    pub const COUNT: usize = Self::ALL.len();

    /// This reason's place in [`ALL`](Self::ALL): `0..COUNT`.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short `snake_case` name for logs and counters, e.g. `low_source_port`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::ReplyTooLarge => "reply_too_large",
            Self::Amplification => "amplification",
            Self::SourcePortZero => "source_port_zero",
            Self::NotUnicast => "not_unicast",
            Self::OwnAddress => "own_address",
            Self::LowSourcePort => "low_source_port",
            Self::Loop => "loop",
            Self::NotSent => "not_sent",
        }
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Oversized => "request longer than the limit",
            Self::ReplyTooLarge => "reply too large for one datagram",
            Self::Amplification => "reply longer than the request (amplification cap)",
            Self::SourcePortZero => "source port 0",
            Self::NotUnicast => "source address is not unicast",
            Self::OwnAddress => "source is the server's own address",
            Self::LowSourcePort => "source port below 1024",
            Self::Loop => "repeated reply to the same peer (reflection loop)",
            Self::NotSent => "reply could not be sent",
        })
    }
}

impl core::error::Error for DropReason {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_at_its_index() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: std::vec::Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
