//! The command line: the modes, the options, and the server addresses loaded when `--addr` is
//! not given.

use clap::ValueEnum;
use std::net::SocketAddr;
use upcase_std::defaults;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub(crate) enum Mode {
    /// C connections, one line in flight on each: req/s and latency percentiles.
    Pingpong,
    /// C connections, W lines in flight on each (pipelined): lines/s and MB/s.
    Stream,
    /// Open C connections at once and hold them, then send a line on each: how many opened and
    /// answered, and connect-time percentiles.
    Conns,
    /// C UDP sockets, one datagram in flight on each: req/s, lost and late replies.
    Udp,
    /// Verified load mixed with every attack of SECURITY.md, for --duration: endless lines,
    /// idle and non-reading connections, resets mid-line, invalid UTF-8, and (with --udp-addr)
    /// hostile datagrams. Reports verified replies, lost and corrupted ones.
    Soak,
}

impl Mode {
    /// The mode's name on the command line and in the summary (`"pingpong"`).
    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Pingpong => "pingpong",
            Mode::Stream => "stream",
            Mode::Conns => "conns",
            Mode::Udp => "udp",
            Mode::Soak => "soak",
        }
    }
}

const MODES_HELP: &str = "\
Modes (--mode):
  pingpong  C connections, one line in flight on each: req/s, latency p50/p99/max
  stream    C connections, W lines in flight on each: lines/s, MB/s
  conns     open C connections at once, hold them, then one line on each: opened,
            answered, failed, connect time p50/p99/max
  udp       C UDP sockets, one datagram in flight on each: req/s, lost, late
  soak      verified load mixed with every attack of SECURITY.md, for --duration

Every reply is verified. Exit status: 0 when every reply was right and nothing failed,
1 when a reply was wrong, a connection failed or the server could not be reached (the
reason is printed on stderr), 2 for bad arguments.";

#[derive(clap::Parser)]
#[command(
    name = "upcase-bench",
    version,
    about = "Load an upcase server and measure it, verifying every reply. \
             Modes: pingpong, stream, conns, udp, soak.",
    after_help = MODES_HELP
)]
pub(crate) struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "pingpong")]
    pub(super) mode: Mode,
    /// Server address. [default: 127.0.0.1:65432, or 127.0.0.1:9876 for --mode udp]
    #[arg(long, value_name = "HOST:PORT")]
    pub(super) addr: Option<String>,
    /// The server's UDP address, for --mode soak.
    #[arg(long, value_name = "HOST:PORT")]
    pub(super) udp_addr: Option<SocketAddr>,
    /// Connections (or UDP sockets).
    #[arg(long, short = 'c', value_name = "C", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(super) conns: u32,
    /// Lines in flight per connection (stream mode).
    #[arg(long, short = 'w', value_name = "W", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(super) window: u32,
    /// Request size in bytes, the newline excluded.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(super) size: u32,
    /// How long to send, in seconds (pingpong, stream, udp, soak).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub(super) duration: f64,
    /// Mixed-script payloads (`upcase_model::unicode_text`: Latin, Greek, Cyrillic, CJK, emoji,
    /// and ß, ﬁ, ΐ that grow) instead of ASCII.
    #[arg(long)]
    pub(super) unicode: bool,
    /// Print a machine-readable JSON summary on stdout instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// Give up on a connect or a reply after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub(super) timeout: f64,
    /// The server's process id: report its CPU time (user + system, from /proc/PID/stat) over
    /// the measured window, per verified reply.
    #[arg(long, value_name = "PID")]
    pub(super) server_pid: Option<u32>,
}

impl BenchArgs {
    /// The address to load as written: `--addr`, or else the address `upcase serve` listens on
    /// by default for the mode's transport (`upcase_std::defaults::UDP` for `udp`,
    /// `upcase_std::defaults::TCP` for every other mode), so a bench run with no `--addr` meets
    /// a server started with no flags.
    pub(super) fn addr_text(&self) -> String {
        self.addr.clone().unwrap_or_else(|| {
            if self.mode == Mode::Udp {
                defaults::UDP
            } else {
                defaults::TCP
            }
            .to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{BenchArgs, Mode};
    use clap::{CommandFactory, Parser};
    use upcase_std::defaults;

    #[test]
    fn without_addr_each_mode_loads_the_server_s_default_address() {
        for (mode, want) in [
            ("pingpong", defaults::TCP),
            ("stream", defaults::TCP),
            ("conns", defaults::TCP),
            ("soak", defaults::TCP),
            ("udp", defaults::UDP),
        ] {
            let args = BenchArgs::try_parse_from(["upcase-bench", "--mode", mode]).unwrap();
            assert_eq!(args.addr_text(), want, "--mode {mode}");
        }
        let args =
            BenchArgs::try_parse_from(["upcase-bench", "--mode", "udp", "--addr", "h:1"]).unwrap();
        assert_eq!((args.mode, args.addr_text().as_str()), (Mode::Udp, "h:1"));
    }

    #[test]
    fn help_names_the_default_addresses_the_code_uses() {
        // The help text is a literal doc comment: this keeps it in step with the constants.
        let help = BenchArgs::command().render_help().to_string();
        let want = format!(
            "[default: {}, or {} for --mode udp]",
            defaults::TCP,
            defaults::UDP
        );
        assert!(help.contains(&want), "{want:?} not in:\n{help}");
    }
}
