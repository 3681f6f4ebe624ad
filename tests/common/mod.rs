//! A real `upcase serve` process on loopback, for end-to-end tests.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The environment variable that names a Windows build of `upcase` (`upcase.exe`) to test under
/// Wine in place of the Linux binary cargo built. The test process stays a Linux program; only
/// `upcase` runs under Wine. `scripts/wine.sh` sets up the prefix and its variables:
///
/// ```sh
/// scripts/wine.sh cargo build --target x86_64-pc-windows-gnu --bin upcase
/// UPCASE_EXE=$PWD/target/x86_64-pc-windows-gnu/debug/upcase.exe scripts/wine.sh cargo test -p upcase
/// ```
pub(crate) const EXE_VAR: &str = "UPCASE_EXE";

/// The Wine loader that runs `UPCASE_EXE` (Debian's `wine64`; `scripts/wine.sh` uses the same).
const WINE: &str = "/usr/lib/wine/wine64";

/// A command that runs the `upcase` under test, with no arguments yet: the binary cargo built,
/// or, when [`EXE_VAR`] is set, `wine64 $UPCASE_EXE`. Every test that runs `upcase` starts it
/// here, so the whole suite follows the variable.
pub(crate) fn upcase() -> Command {
    match std::env::var_os(EXE_VAR) {
        Some(exe) => {
            let mut cmd = Command::new(WINE);
            cmd.arg(exe);
            cmd
        }
        None => Command::new(env!("CARGO_BIN_EXE_upcase")),
    }
}

/// Whether `upcase` runs under Wine ([`EXE_VAR`] is set).
pub(crate) fn under_wine() -> bool {
    std::env::var_os(EXE_VAR).is_some()
}

/// True, after printing one line that says why, when `upcase` runs under Wine: the calling test
/// returns at once, `if skip_under_wine("reads /proc") { return; }`, or leaves out one part,
/// `if !skip_under_wine("its part that ...: why") { ... }`. The line names the test and goes to
/// stderr past the harness's capture, so every run shows each skip and its reason.
pub(crate) fn skip_under_wine(why: &str) -> bool {
    if !under_wine() {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    // Straight to stderr, not through `eprintln!`, which the test harness captures: the line
    // shows in every run, CI's included.
    let _ = writeln!(std::io::stderr(), "skipped under Wine: {test}: {why}");
    true
}

/// The signal that asks `upcase` to stop (the graceful drain): `TERM` on Linux; under Wine,
/// `INT`, which Wine delivers to the Windows program as Ctrl-C. (A `SIGTERM` to the Wine process
/// is no Windows stop request: it ends the process at once, status 143, with no drain.)
pub(crate) fn stop_signal() -> &'static str {
    if under_wine() { "INT" } else { "TERM" }
}

/// The exit status of `upcase` when a second [`stop_signal`] ends its drain at once: 128 + the
/// signal's number, 143 for `SIGTERM`; under Wine 130, what Windows' Ctrl-C (`SIGINT` in the C
/// runtime) gives (`src/platform.rs`, `exit_code`).
pub(crate) fn second_stop_status() -> i32 {
    if under_wine() { 130 } else { 143 }
}

/// Upper bound on anything a test waits for.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// A client connection to `addr`: the connect, and every later read and write, each bounded by
/// [`LIMIT`] (socket timeouts). Panics if the connect fails.
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// Like [`connect`], with the socket's receive buffer set to `bytes` before the connect (so the
/// window the server sees is small and replies back up at the server, not in our kernel).
pub(crate) fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> TcpStream {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.set_recv_buffer_size(bytes).unwrap();
    s.connect_timeout(&addr.into(), LIMIT).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// Reads until exactly `n` more bytes have arrived, all of them within [`LIMIT`] from now
/// ([`upcase_model::net::read_exactly`]). Panics on a timeout, an end of stream or an error,
/// naming how many bytes did arrive.
pub(crate) fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    upcase_model::net::read_exactly(s, n, Instant::now() + LIMIT)
}

/// Reads until the server closes its side, all of it within [`LIMIT`] from now
/// ([`upcase_model::net::read_to_eof`]; the stream's read timeout is left as it was). Asserts a
/// clean end of stream: a reset, another error or the deadline fails the test, naming how many bytes came.
pub(crate) fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    upcase_model::net::read_to_eof(s, Instant::now() + LIMIT)
}

/// Connects ([`connect`]), sends `input`, half-closes, and returns everything the server sent
/// until it closed ([`read_to_eof`]: within [`LIMIT`], and a reset fails the test).
pub(crate) fn exchange(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(input).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    read_to_eof(&mut s)
}

/// A UDP socket on the loopback address of `server`'s family, port 0, connected to `server`,
/// with a read timeout of [`LIMIT`]: every receive is bounded.
pub(crate) fn udp_socket_to(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    })
    .unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

/// Sends `payload` on the connected socket `s` and returns the next datagram it receives (within
/// its read timeout, [`LIMIT`] from [`udp_socket_to`]; a timeout fails the test).
pub(crate) fn roundtrip(s: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    s.send(payload).unwrap();
    let n = s.recv(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A port on 127.0.0.1 where nothing listens now, over TCP and over UDP.
pub(crate) fn free_port() -> u16 {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    match UdpSocket::bind(("127.0.0.1", port)) {
        Ok(_) => port,
        Err(_) => free_port(),
    }
}

/// Sends signal `name` (`TERM`, `INT`, `STOP`, ...) to process `pid` with `kill(1)` and returns
/// at once; asserts that `kill` succeeded.
pub(crate) fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{name} {pid} failed");
}

/// The exit status of `child`, if it exits within `limit` (polled every millisecond).
pub(crate) fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts `cmd` with `RUST_LOG` set to `rust_log`, stdin from /dev/null, and stdout and stderr
/// piped for the caller to read. Panics, naming the command, if it cannot start.
pub(crate) fn spawn_piped(cmd: &mut Command, rust_log: &str) -> Child {
    cmd.env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// A running server. Killed by PID on drop; its stderr is printed when a test fails.
pub(crate) struct ServerProc {
    child: Child,
    pub(crate) tcp: Vec<SocketAddr>,
    pub(crate) udp: Vec<SocketAddr>,
    /// The thread that reads its stderr into `log` (`None` once joined, or when nobody reads).
    stderr: Option<std::thread::JoinHandle<()>>,
    /// Its stderr so far, line by line as the server writes it.
    log: Arc<Mutex<String>>,
}

impl ServerProc {
    /// Starts `upcase serve ARGS` and waits (bounded) for its `listening` lines.
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut cmd = upcase();
        cmd.arg("serve").args(args);
        Self::spawn(cmd, args, true)
    }

    /// Like [`start`](Self::start), with soft and hard `RLIMIT_NOFILE` set to `nofile`, so the
    /// server cannot raise it.
    pub(crate) fn start_with_nofile(nofile: u32, args: &[&str]) -> Self {
        let program = upcase();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("ulimit -n {nofile} && exec \"$@\""), "sh"])
            .arg(program.get_program())
            .args(program.get_args())
            .arg("serve")
            .args(args);
        Self::spawn(cmd, args, true)
    }

    /// Like [`start`](Self::start), but stderr is a pipe whose reading end is closed at once:
    /// nobody reads it, so every log line the server writes fails (EPIPE).
    pub(crate) fn start_with_closed_stderr(args: &[&str]) -> Self {
        let mut cmd = upcase();
        cmd.arg("serve").args(args);
        Self::spawn(cmd, args, false)
    }

    fn spawn(mut cmd: Command, args: &[&str], read_stderr: bool) -> Self {
        let mut child = spawn_piped(&mut cmd, "debug");
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = if read_stderr {
            let log = log.clone();
            Some(std::thread::spawn(move || {
                let mut err = BufReader::new(err);
                let mut line = Vec::new();
                // Ends at the server's exit (EOF on the pipe).
                while err.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
            }))
        } else {
            drop(err);
            log.lock()
                .unwrap()
                .push_str("(stderr closed by the test)\n");
            None
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // One `listening` line per address flag (tests pass IP literals), or the default one.
        let count = |flag: &str, off: &str| match args.iter().filter(|a| **a == flag).count() {
            _ if args.contains(&off) => 0,
            0 => 1,
            n => n,
        };
        let (want_tcp, want_udp) = (count("--tcp", "--no-tcp"), count("--udp", "--no-udp"));
        let mut me = Self {
            child,
            tcp: vec![],
            udp: vec![],
            stderr,
            log,
        };
        let deadline = Instant::now() + LIMIT;
        while me.tcp.len() < want_tcp || me.udp.len() < want_udp {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(Ok(line)) => line,
                other => panic!("server not ready: {other:?}\n{}", me.logs()),
            };
            let mut words = line.split(' ');
            assert_eq!(
                words.next(),
                Some("listening"),
                "unexpected stdout line {line:?}"
            );
            let kind = words.next().unwrap();
            let addr: SocketAddr = words.next().unwrap().parse().unwrap();
            match kind {
                "tcp" => me.tcp.push(addr),
                "udp" => me.udp.push(addr),
                _ => panic!("unexpected stdout line {line:?}"),
            }
        }
        me
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the stop request ([`stop_signal`]: SIGTERM, or Ctrl-C under Wine) and returns at
    /// once.
    pub(crate) fn request_stop(&self) {
        self.signal(stop_signal());
    }

    /// Sends signal `name` (`TERM`, `INT`, `STOP`, ...) to the process and returns at once.
    /// Under Wine the process is Wine's Linux process running `upcase.exe`, so `STOP` and
    /// `CONT` pause and resume it as on Linux, and `INT` arrives as Ctrl-C.
    pub(crate) fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Sends the stop request ([`request_stop`](Self::request_stop)) and waits (bounded) for
    /// the exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        self.request_stop();
        self.wait()
    }

    /// Waits (bounded by [`LIMIT`]) for the process to exit.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        match self.wait_within(LIMIT) {
            Some(status) => status,
            None => panic!("server did not exit\n{}", self.logs()),
        }
    }

    /// The exit status, if the process exits within `limit` (polled every millisecond).
    pub(crate) fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_within(&mut self.child, limit)
    }

    /// Waits (bounded by [`LIMIT`]) until the server has logged a line containing `needle`.
    pub(crate) fn wait_for_log(&mut self, needle: &str) {
        let deadline = Instant::now() + LIMIT;
        while !self.log.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the server never logged {needle:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The server's stderr so far; once it has exited (it is killed first if it has not), all
    /// of it.
    pub(crate) fn logs(&mut self) -> String {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
        self.log.lock().unwrap().clone()
    }

    /// The counters of the `upcase stopped` log line, by name (`lines`, `datagrams`, ...).
    /// Call after the server has exited.
    pub(crate) fn stop_counters(&mut self) -> std::collections::HashMap<String, u64> {
        stop_counters(&self.logs())
    }
}

/// The counters of the `upcase stopped` line in a server's log, by name (`lines`,
/// `datagrams`, ...). Panics, showing the log, if there is no such line.
pub(crate) fn stop_counters(logs: &str) -> std::collections::HashMap<String, u64> {
    let line = logs
        .lines()
        .find(|l| l.contains("upcase stopped"))
        .unwrap_or_else(|| panic!("no `upcase stopped` line:\n{logs}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.trim_end_matches(',').parse().ok()?)))
        .collect()
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.logs());
        }
    }
}

/// A deterministic stream of mixed-script lines (xorshift; no dependency).
pub(crate) struct Lines(u64);

const PIECES: &[&str] = &[
    "hello",
    "straße",
    "ΐ",
    "ﬁ",
    "héllo wörld",
    "日本語",
    "ǆ",
    "ŉ",
    "Σίσυφος",
    "😀",
    "\u{0}\u{7}",
    "\r",
    "abc",
    " ",
    "ﬃ",
    "İ",
    "ß",
];

impl Lines {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A line of 0 to `max_pieces` pieces, never containing `\n`.
    pub(crate) fn line(&mut self, max_pieces: u64) -> String {
        let n = self.next_u64() % (max_pieces + 1);
        (0..n)
            .map(|_| PIECES[(self.next_u64() % PIECES.len() as u64) as usize])
            .collect()
    }
}
