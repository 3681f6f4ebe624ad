//! Diagnostics: the image's few events, each one function, and the one place that picks where
//! they go. Every backend is a feature, so a board with no debugger attached runs the image
//! with none of them:
//!
//! - `semihosting` (on in the QEMU runs, and a default feature): one text line per event on
//!   the host's stdout, which `run.sh` sends to stderr; the end of the run (a fault, a panic)
//!   ends QEMU. Written without `core::fmt`, which would cost flash for a few numbers. On a
//!   chip with no debugger attached, a semihosting call is a hard fault: leave it off there.
//! - `defmt`: the same events as defmt log frames over RTT (`defmt-rtt` is this image's global
//!   logger; a library would never pick one). Read them with `probe-rs run` or `defmt-print`.
//!
//! With neither, the events cost nothing, and the end of the run is a system reset.

use core::net::Ipv4Addr;

use upcase_core::{CloseReason, Counters, DropReason};

#[cfg(feature = "defmt")]
use defmt_rtt as _;
#[cfg(feature = "semihosting")]
use lm3s6965::Line as _;

/// Totals since boot.
#[derive(Default)]
pub struct Totals {
    /// Connections served to their end.
    pub connections: u64,
    /// Lines answered.
    pub lines: u64,
    /// Lines over the limit.
    pub overlong: u64,
    /// Datagrams received.
    pub datagrams: u64,
    /// Datagrams left without a reply, by [`DropReason::index`].
    pub dropped: [u64; DropReason::COUNT],
    /// Clock reads that would have gone back in time (`hw::Timer::steps_back`): 0.
    pub clock_steps_back: u64,
}

/// How the image got its address.
#[derive(Clone, Copy)]
pub enum Via {
    /// The build's fixed address.
    #[cfg_attr(feature = "dhcp", allow(dead_code))]
    Static,
    /// A DHCP lease (feature `dhcp`).
    #[cfg_attr(not(feature = "dhcp"), allow(dead_code))]
    Dhcp,
}

/// What the image serves, for [`Diag::serving`]. (Read by no one in a build without a backend.)
#[cfg_attr(not(any(feature = "semihosting", feature = "defmt")), allow(dead_code))]
pub struct Serving {
    /// Its IPv4 address.
    pub address: Ipv4Addr,
    /// Where the address came from.
    pub via: Via,
    /// TCP port, and sockets on it.
    pub tcp_port: u16,
    /// TCP sockets, so clients served at once.
    pub sockets: usize,
    /// The longest line.
    pub max_line: usize,
    /// UDP port.
    pub udp_port: u16,
    /// The longest datagram.
    pub max_datagram: usize,
    /// `main`'s stack frame, in bytes.
    pub stack_frame: usize,
}

/// Where the events go: holds the host's stdout under `semihosting`, opened once.
pub struct Diag {
    #[cfg(feature = "semihosting")]
    out: Option<cortex_m_semihosting::hio::HostStream>,
}

impl Diag {
    /// Opens the host's stdout (`semihosting`); nothing otherwise.
    pub fn new() -> Self {
        Self {
            #[cfg(feature = "semihosting")]
            out: cortex_m_semihosting::hio::hstdout().ok(),
        }
    }

    /// The image serves (at boot, and again after each new DHCP lease). `run.sh` prints its ready
    /// lines when it sees this line's first words.
    pub fn serving(&mut self, s: &Serving) {
        #[cfg(feature = "semihosting")]
        {
            let mut l = semi::Line::new(&mut self.out);
            l.text("upcase-firmware-net: serving tcp ");
            l.ipv4(s.address).text(":").num(s.tcp_port.into());
            l.field("sockets", s.sockets as u64);
            l.field("max_line", s.max_line as u64);
            l.text(" udp ")
                .ipv4(s.address)
                .text(":")
                .num(s.udp_port.into());
            l.field("max_datagram", s.max_datagram as u64);
            l.field("main_stack_frame", s.stack_frame as u64);
            l.text(match s.via {
                Via::Static => " address=static",
                Via::Dhcp => " address=dhcp",
            });
            l.end();
        }
        #[cfg(feature = "defmt")]
        defmt::info!(
            "serving {=[u8]:?} tcp {} sockets={} max_line={} udp {} max_datagram={} main_stack_frame={} dhcp={}",
            &s.address.octets()[..],
            s.tcp_port,
            s.sockets,
            s.max_line,
            s.udp_port,
            s.max_datagram,
            s.stack_frame,
            matches!(s.via, Via::Dhcp)
        );
        let _ = s;
    }

    /// The DHCP lease was lost: the image serves nothing until the next one.
    #[cfg_attr(not(feature = "dhcp"), allow(dead_code))]
    pub fn deconfigured(&mut self) {
        #[cfg(feature = "semihosting")]
        {
            let mut l = semi::Line::new(&mut self.out);
            l.text("upcase-firmware-net: dhcp lease lost");
            l.end();
        }
        #[cfg(feature = "defmt")]
        defmt::warn!("dhcp lease lost");
    }

    /// One connection ended: its counters, the totals, and the stack high-water mark.
    pub fn closed(
        &mut self,
        now_ms: u64,
        reason: Option<CloseReason>,
        c: &Counters,
        t: &Totals,
        stack_high_water: usize,
    ) {
        #[cfg(feature = "semihosting")]
        {
            let mut l = semi::Line::new(&mut self.out);
            l.text("closed:").field("uptime_ms", now_ms);
            l.text(" reason=").text(reason_name(reason));
            l.field("lines", c.lines.into());
            l.field("overlong", c.overlong.into());
            l.field("bytes_in", c.bytes_in.into());
            l.field("bytes_out", c.bytes_out.into());
            l.text(" totals:");
            l.field("connections", t.connections);
            l.field("lines", t.lines);
            l.field("overlong", t.overlong);
            l.field("datagrams", t.datagrams);
            l.text(" dropped:");
            for (reason, n) in DropReason::ALL.iter().zip(t.dropped) {
                l.field(reason.name(), n);
            }
            l.field("clock_steps_back", t.clock_steps_back);
            l.field("stack_high_water", stack_high_water as u64);
            l.end();
        }
        #[cfg(feature = "defmt")]
        defmt::info!(
            "closed: uptime_ms={} reason={} {} totals: connections={} lines={} overlong={} datagrams={} dropped={} clock_steps_back={} stack_high_water={}",
            now_ms,
            reason_name(reason),
            c,
            t.connections,
            t.lines,
            t.overlong,
            t.datagrams,
            t.dropped,
            t.clock_steps_back,
            stack_high_water
        );
        let _ = (now_ms, reason, c, t, stack_high_water);
    }
}

/// A close reason as one word, for a `name=value` field.
#[cfg_attr(not(any(feature = "semihosting", feature = "defmt")), allow(dead_code))]
fn reason_name(reason: Option<CloseReason>) -> &'static str {
    match reason {
        None => "reset", // the peer reset it, or smoltcp gave up on it
        Some(CloseReason::Eof) => "eof",
        Some(CloseReason::Shutdown) => "shutdown",
        Some(CloseReason::IdleTimeout) => "idle_timeout",
        Some(CloseReason::WriteStall) => "write_stall",
        Some(CloseReason::Refused) => "refused",
        Some(CloseReason::Deadline) => "deadline",
    }
}

/// Ends the run: under QEMU with status 0 (`ok`) or 1; on a board, a system reset.
pub fn exit(ok: bool) -> ! {
    lm3s6965::exit(ok);
    cortex_m::peripheral::SCB::sys_reset()
}

#[cfg(feature = "semihosting")]
mod semi {
    use cortex_m_semihosting::hio::HostStream;

    /// One line to the host, sent in pieces of up to 128 bytes (one semihosting call each);
    /// built by `lm3s6965::Line`'s methods.
    pub struct Line<'a> {
        out: &'a mut Option<HostStream>,
        buf: [u8; 128],
        len: usize,
    }

    impl<'a> Line<'a> {
        pub fn new(out: &'a mut Option<HostStream>) -> Self {
            Self {
                out,
                buf: [0; 128],
                len: 0,
            }
        }

        fn flush(&mut self) {
            if let (Some(out), Some(bytes)) = (self.out.as_mut(), self.buf.get(..self.len)) {
                let _ = out.write_all(bytes);
            }
            self.len = 0;
        }

        /// Ends the line and sends it.
        pub fn end(&mut self) {
            lm3s6965::Line::byte(self, b'\n');
            self.flush();
        }
    }

    impl lm3s6965::Line for Line<'_> {
        fn byte(&mut self, b: u8) {
            if self.len == self.buf.len() {
                self.flush();
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }
}
