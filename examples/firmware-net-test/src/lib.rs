//! A harness for the network firmware's QEMU tests: build an image with chosen features, boot
//! it through `run.sh` on free host ports, read its diagnostics as they come, and forge UDP
//! datagrams on loopback.
//!
//! Used by every test of `tests/`: `net.rs` boots both images (smoltcp's and embassy's) with
//! [`Guest::boot_runner`], the others firmware-net's with [`Guest::boot`]. Bounded in time:
//! every wait has a deadline, a watchdog kills QEMU after [`TOTAL_LIMIT`], and QEMU is killed
//! when its [`Guest`] is dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound on a boot, from spawning QEMU to the ready lines.
pub const BOOT_LIMIT: Duration = Duration::from_secs(30);
/// The watchdog kills QEMU after this long, whatever the test is doing.
pub const TOTAL_LIMIT: Duration = Duration::from_secs(120);
/// Upper bound on one socket operation or one wait for a diagnostic line.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The firmware's folder.
pub fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-net")
}

/// Builds the release image with `features` (on top of the defaults) and returns its path:
/// into the firmware's own `target/` for no features (the image `cargo run --release` boots),
/// else into `target/<name>/`, so builds with other features do not rebuild each other.
pub fn build_image(name: &str, features: &[&str]) -> PathBuf {
    // One build at a time from this process: cargo would wait on its lock anyway.
    static BUILD: Mutex<()> = Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let mut target = firmware_dir().join("target");
    if !features.is_empty() {
        target.push(name);
    }
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(firmware_dir())
        .args(["build", "--release", "--target-dir"])
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if !features.is_empty() {
        cargo.args(["--features", &features.join(",")]);
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "firmware-net build ({features:?}) failed");
    target.join("thumbv7m-none-eabi/release/upcase-firmware-net")
}

/// A free port: bound to 127.0.0.1:0 and closed again. QEMU may still lose a race for it; then
/// [`Guest::boot`] tries other ports.
fn free_port(udp: bool) -> u16 {
    let addr = if udp {
        UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    addr.expect("a free loopback port").port()
}

/// The image running under QEMU, killed on drop.
pub struct Guest {
    child: Child,
    /// The host port forwarded to the guest's TCP port.
    pub tcp: u16,
    /// The host port forwarded to the guest's UDP port.
    pub udp: u16,
    /// The guest's diagnostics, line by line, as they arrive, with when they did.
    lines: mpsc::Receiver<(Instant, String)>,
    /// Every line received so far.
    log: Vec<String>,
    /// When each line of `log` arrived.
    arrived: Vec<Instant>,
    /// Dropping it stops the watchdog.
    _watchdog: mpsc::Sender<()>,
}

impl Guest {
    /// Boots `image`, a build of firmware-net, through its `run.sh` on free ports, with `env`
    /// added to the runner's environment, and waits for its ready lines.
    pub fn boot(image: &Path, env: &[(&str, &str)]) -> Guest {
        Self::boot_runner(&firmware_dir().join("run.sh"), image, env)
    }

    /// [`boot`](Self::boot) through `runner`, the `run.sh` of the image's own crate (each
    /// network image's calls `examples/lm3s6965/run.sh` with the image's name).
    pub fn boot_runner(runner: &Path, image: &Path, env: &[(&str, &str)]) -> Guest {
        for _attempt in 0..5 {
            let (tcp, udp) = (free_port(false), free_port(true));
            let mut child = Command::new(runner)
                .arg(image)
                .env("UPCASE_NET_TCP", tcp.to_string())
                .env("UPCASE_NET_UDP", udp.to_string())
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run.sh starts (qemu-system-arm is installed by scripts/ci.sh)");
            let (log_tx, lines) = mpsc::channel();
            let stderr = child.stderr.take().expect("piped");
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if log_tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
            let (out_tx, out) = mpsc::channel();
            let stdout = child.stdout.take().expect("piped");
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if out_tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let want = [
                format!("listening tcp 127.0.0.1:{tcp}"),
                format!("listening udp 127.0.0.1:{udp}"),
            ];
            let deadline = Instant::now() + BOOT_LIMIT;
            let mut seen = Vec::new();
            let ready = loop {
                match out.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(line) => {
                        seen.push(line);
                        if seen == want {
                            break true;
                        }
                    }
                    Err(_) => break false,
                }
            };
            let (stop, stopped) = mpsc::channel::<()>();
            let mut guest = Guest {
                child,
                tcp,
                udp,
                lines,
                log: Vec::new(),
                arrived: Vec::new(),
                _watchdog: stop,
            };
            guest.drain();
            if ready {
                let pid = guest.child.id();
                thread::spawn(move || {
                    if stopped.recv_timeout(TOTAL_LIMIT) == Err(mpsc::RecvTimeoutError::Timeout) {
                        eprintln!("watchdog: QEMU still running after {TOTAL_LIMIT:?}: killing it");
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    }
                });
                return guest;
            }
            let _ = guest.child.kill();
            let _ = guest.child.wait();
            // The stderr reader ends with QEMU: collect what it said.
            while let Ok((_, line)) = guest.lines.recv_timeout(Duration::from_secs(2)) {
                guest.log.push(line);
            }
            let log = guest.log.join("\n");
            assert!(
                log.contains("Could not set up host forwarding rule"),
                "the image did not start serving within {BOOT_LIMIT:?}; stdout {seen:?}; log:\n{log}"
            );
            eprintln!("ports {tcp}/{udp} were taken before QEMU bound them: trying others");
        }
        panic!("no free port pair in 5 tries");
    }

    /// Takes the lines that have arrived, without waiting.
    fn drain(&mut self) {
        while let Ok((at, line)) = self.lines.try_recv() {
            self.log.push(line);
            self.arrived.push(at);
        }
    }

    /// Every diagnostic line so far.
    pub fn log(&mut self) -> String {
        self.drain();
        self.log.join("\n")
    }

    /// The first diagnostic line so far that starts with `prefix`, or else the next one, for
    /// which it waits up to [`IO_TIMEOUT`].
    pub fn line(&mut self, prefix: &str) -> String {
        self.line_since(0, prefix)
    }

    /// Where the log stands now: pass it to [`line_since`](Self::line_since) after an action
    /// to find the line the action makes, whether it came before or after that call.
    pub fn mark(&mut self) -> usize {
        self.drain();
        self.log.len()
    }

    /// The first diagnostic line after `mark` that starts with `prefix`, waiting up to
    /// [`IO_TIMEOUT`] for it.
    pub fn line_since(&mut self, mark: usize, prefix: &str) -> String {
        self.line_since_at(mark, prefix).0
    }

    /// [`line_since`](Self::line_since), with when the line arrived.
    pub fn line_since_at(&mut self, mark: usize, prefix: &str) -> (String, Instant) {
        self.drain();
        let found = (mark..self.log.len()).find(|&i| self.log[i].starts_with(prefix));
        if let Some(i) = found {
            return (self.log[i].clone(), self.arrived[i]);
        }
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.log.push(line.clone());
                    self.arrived.push(at);
                    if line.starts_with(prefix) {
                        return (line, at);
                    }
                }
                Err(_) => panic!(
                    "no line starting with {prefix:?} within {IO_TIMEOUT:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// A TCP connection to the guest, with [`IO_TIMEOUT`] on reads and writes.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.tcp)).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    /// A UDP socket bound to `bind` and connected to the guest's UDP port, with a 5 s read
    /// timeout.
    pub fn udp_socket(&self, bind: &str) -> std::io::Result<UdpSocket> {
        let u = UdpSocket::bind(bind)?;
        u.connect(("127.0.0.1", self.udp))?;
        u.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(u)
    }

    /// The host address that reaches the guest's UDP port.
    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.udp))
    }

    /// The guest's totals: one connection (`x\n`, then a half-close) makes it log a `closed:`
    /// line, whose `name=value` fields this returns. Counts that connection and its line.
    /// Fails if the guest's clock ever went back (`clock_steps_back`).
    pub fn totals(&mut self) -> HashMap<String, u64> {
        let mark = self.mark();
        let mut s = self.connect();
        s.write_all(b"x\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"X\n");
        let line = self.line_since(mark, "closed:");
        let totals = fields(line.split(" totals:").nth(1).unwrap_or_default());
        // A property of every run: the guest's clock never went back.
        assert_eq!(totals.get("clock_steps_back"), Some(&0), "{line}");
        totals
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // run.sh execs QEMU, so this is QEMU's own process id.
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!(
                "QEMU exited on its own ({status}); guest log:\n{}",
                self.log()
            );
        } else if thread::panicking() {
            eprintln!("guest log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `name=value` fields of a diagnostic line with numeric values.
pub fn fields(line: &str) -> HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|w| {
            let (name, value) = w.split_once('=')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Waits up to `wait` for a datagram on `socket`; `None` if none came. Returns it with its
/// source.
pub fn recv_within(socket: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    socket
        .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("udp recv: {e}"),
    }
}

/// Sends one UDP datagram with a forged source, `from`, to `to`, through a raw IPv4 socket
/// (root only): the kernel delivers it as if `from` had sent it. IPv4 only.
pub fn spoof(from: SocketAddr, to: SocketAddr, payload: &[u8]) {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (from, to) else {
        panic!("spoof: IPv4 only");
    };
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&u16::try_from(udp_len).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // the checksum, below
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12 + udp_len);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&u16::try_from(udp_len).unwrap().to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let sum = match !ones_complement_sum(&pseudo) {
        0 => 0xFFFF, // 0 means "no checksum" in UDP over IPv4
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    // The IPv4 header: the kernel fills in the identification and the header checksum.
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&u16::try_from(20 + udp_len).unwrap().to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&src.ip().octets());
    packet.extend_from_slice(&dst.ip().octets());
    packet.extend_from_slice(&udp);
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .expect("a raw socket (the forged-source tests run as root, as CI does)");
    raw.set_header_included_v4(true).unwrap();
    let dest = SockAddr::from(SocketAddr::new(to.ip(), 0));
    assert_eq!(raw.send_to(&packet, &dest).unwrap(), packet.len());
}

/// Whether this process may open raw sockets (root, or `CAP_NET_RAW`).
pub fn can_spoof() -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).is_ok()
}

/// The one's complement sum of 16-bit words (RFC 1071), not yet complemented.
fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}
