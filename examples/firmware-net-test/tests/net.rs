//! Boots the network firmware (`examples/firmware-net`) under QEMU through its runner script,
//! then drives it from the host over the forwarded ports: concurrent TCP clients, a pipelined
//! burst, overlong lines, a half-close, UDP datagrams (growing, empty, too large, echoed, from a
//! low port), and the lecture's Python clients. Every reply is checked byte for byte against
//! `upcase-model` (`str::to_uppercase`).
//!
//! Needs `qemu-system-arm`, the `thumbv7m-none-eabi` target and `python3`. Bounded in time:
//! every socket operation has a timeout, the boot has a deadline, a watchdog kills QEMU after
//! [`TOTAL_LIMIT`], and QEMU is killed when the test ends, whether it passes or fails.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use upcase_model::{replies, unicode_text, upper};

/// The image's line limit (`sizes::MAX_LINE`).
const MAX_LINE: usize = 256;
/// TCP sockets the image serves at once (`sizes::TCP_SOCKETS`).
const SOCKETS: usize = 4;
/// The longest UDP request and reply (`sizes::MAX_DATAGRAM`).
const MAX_DATAGRAM: usize = 1472;
/// Lines in the pipelined burst.
const BURST_LINES: usize = 20_000;
/// Upper bound on any one socket operation.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound on a boot, from spawning QEMU to the ready lines.
const BOOT_LIMIT: Duration = Duration::from_secs(30);
/// The watchdog kills QEMU after this long, whatever the test is doing.
const TOTAL_LIMIT: Duration = Duration::from_secs(120);

fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-net")
}

/// Builds the release image and returns its path.
fn build_image() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .current_dir(firmware_dir())
        .args(["build", "--release"])
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "firmware-net build failed");
    firmware_dir().join("target/thumbv7m-none-eabi/release/upcase-firmware-net")
}

/// A free port: bound to 127.0.0.1:0 and closed again. QEMU may still lose a race for it; then
/// [`Guest::boot`] tries other ports.
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// The image running under QEMU, killed on drop.
struct Guest {
    child: Child,
    tcp: u16,
    udp: u16,
    /// The guest's diagnostics (the runner's stderr), line by line.
    log: Arc<Mutex<Vec<String>>>,
    /// Dropping it stops the watchdog.
    _watchdog: mpsc::Sender<()>,
}

impl Guest {
    /// Boots `image` through `run.sh` on free ports and waits for its ready lines.
    fn boot(image: &Path) -> Guest {
        for _attempt in 0..5 {
            let (tcp, udp) = (free_port(false), free_port(true));
            let mut child = Command::new(firmware_dir().join("run.sh"))
                .arg(image)
                .env("UPCASE_NET_TCP", tcp.to_string())
                .env("UPCASE_NET_UDP", udp.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run.sh starts (qemu-system-arm is installed by scripts/ci.sh)");
            let log = Arc::new(Mutex::new(Vec::new()));
            let stderr = child.stderr.take().unwrap();
            let sink = Arc::clone(&log);
            thread::spawn(move || {
                for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(line);
                }
            });
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
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
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        seen.push(line);
                        if seen == want {
                            break true;
                        }
                    }
                    Err(_) => break false,
                }
            };
            if ready {
                let (stop, stopped) = mpsc::channel::<()>();
                let pid = child.id();
                thread::spawn(move || {
                    if stopped.recv_timeout(TOTAL_LIMIT) == Err(mpsc::RecvTimeoutError::Timeout) {
                        eprintln!("watchdog: QEMU still running after {TOTAL_LIMIT:?}: killing it");
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    }
                });
                return Guest {
                    child,
                    tcp,
                    udp,
                    log,
                    _watchdog: stop,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            thread::sleep(Duration::from_millis(200));
            let log = log.lock().unwrap().join("\n");
            assert!(
                log.contains("Could not set up host forwarding rule"),
                "the image did not start serving within {BOOT_LIMIT:?}; stdout {seen:?}; log:\n{log}"
            );
            eprintln!("ports {tcp}/{udp} were taken before QEMU bound them: trying others");
        }
        panic!("no free port pair in 5 tries");
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.tcp)).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    fn udp_socket(&self, bind: &str) -> std::io::Result<UdpSocket> {
        let u = UdpSocket::bind(bind)?;
        u.connect(("127.0.0.1", self.udp))?;
        u.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(u)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
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

/// Reads until the server closes; fails on a timeout or a reset.
fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("read until the server closes");
    got
}

/// Compares byte for byte, naming the first differing offset.
fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        let at = at.unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} bytes received, {} expected, first difference at byte {at}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            String::from_utf8_lossy(&got[at.min(got.len())..(at + 40).min(got.len())]),
            String::from_utf8_lossy(&want[at.min(want.len())..(at + 40).min(want.len())]),
        );
    }
}

/// A random line of 0 to 64 characters (at most 256 bytes), never containing `\n`.
fn random_line(seed: u64) -> Vec<u8> {
    let len = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize; // 0..=63
    unicode_text(seed, len + 1).into_bytes()
}

/// Sends `lines`, each with `\n`, and reads back exactly their replies.
fn round_trip(s: &mut TcpStream, lines: &[Vec<u8>]) {
    let mut input = Vec::new();
    let mut want = Vec::new();
    for line in lines {
        assert!(line.len() <= MAX_LINE);
        input.extend_from_slice(line);
        input.push(b'\n');
        want.extend(upper(line));
        want.push(b'\n');
    }
    s.write_all(&input).expect("write lines");
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).expect("read replies");
    assert_bytes("round trip", &got, &want);
}

/// `SOCKETS` clients at once, each with its own random Unicode lines. Each first gets a reply
/// while all are connected, so they are served at once, not one after another.
fn concurrent_clients(guest: &Guest, round: u64) {
    let ready = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..SOCKETS as u64)
        .map(|i| {
            let mut s = guest.connect();
            let ready = Arc::clone(&ready);
            thread::spawn(move || {
                let lines: Vec<Vec<u8>> = (0..200)
                    .map(|k| random_line(round * 1_000_000 + i * 1000 + k))
                    .collect();
                round_trip(&mut s, &lines[..1]);
                ready.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + IO_TIMEOUT;
                while ready.load(Ordering::SeqCst) < SOCKETS {
                    assert!(
                        Instant::now() < deadline,
                        "the other clients were not served"
                    );
                    thread::sleep(Duration::from_millis(5));
                }
                for batch in lines[1..].chunks(7) {
                    round_trip(&mut s, batch);
                }
                s.shutdown(Shutdown::Write).unwrap();
                assert_bytes("after the half-close", &read_to_eof(&mut s), b"");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
}

/// Thousands of lines written in one stream while the replies are read: returns lines/s and
/// request bytes/s.
fn pipelined_burst(guest: &Guest) -> (f64, f64) {
    let mut input = Vec::new();
    for k in 0..BURST_LINES as u64 {
        input.extend(random_line(7_000_000 + k));
        input.push(b'\n');
    }
    let want = replies(&input, MAX_LINE);
    let bytes = input.len() as f64;
    let mut s = guest.connect();
    let mut w = s.try_clone().unwrap();
    let start = Instant::now();
    let writer = thread::spawn(move || {
        w.write_all(&input).expect("write the burst");
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_eof(&mut s);
    let elapsed = start.elapsed().as_secs_f64();
    writer.join().unwrap();
    assert_bytes("pipelined burst", &got, &want);
    (BURST_LINES as f64 / elapsed, bytes / elapsed)
}

/// Overlong lines (one over the limit by a byte, one of 10 000 bytes), a line of exactly the
/// limit, then a partial line answered at the half-close.
fn overlong_and_half_close(guest: &Guest) {
    let input = [
        vec![b'y'; MAX_LINE],
        b"\n".to_vec(),
        vec![b'z'; MAX_LINE + 1],
        b"\nok\n".to_vec(),
        "straße ".repeat(2000).into_bytes(),
        b"\nafter\npartial \xCE\x90".to_vec(),
    ]
    .concat();
    let mut s = guest.connect();
    s.write_all(&input).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = read_to_eof(&mut s);
    assert_bytes("overlong lines", &got, &replies(&input, MAX_LINE));
    assert!(
        got.starts_with(
            &[
                vec![b'Y'; MAX_LINE],
                b"\nerror: line too long\nOK\n".to_vec()
            ]
            .concat()
        )
    );

    let mut s = guest.connect();
    s.write_all(b"one\ntwo").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_bytes("half-close", &read_to_eof(&mut s), b"ONE\nTWO");
}

/// The lecture's Python clients (`tests/lecture.py`).
fn lecture_clients(guest: &Guest) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lecture.py");
    let out = Command::new("python3")
        .arg(script)
        .args([guest.tcp.to_string(), guest.udp.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "lecture.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Received b'HELLO'\nReceived b'HELLO'\n"
    );
}

/// Waits up to `wait` for a datagram; `None` if none came.
fn recv_within(u: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    u.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 65536];
    let got = match u.recv(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("udp recv: {e}"),
    };
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    got
}

/// Returns how many of 20 echoes were answered, and whether the low-port check ran.
fn udp(guest: &Guest) -> (usize, bool) {
    let u = guest.udp_socket("127.0.0.1:0").unwrap();
    let ask = |payload: &[u8]| {
        u.send(payload).unwrap();
        let got = recv_within(&u, Duration::from_secs(5)).expect("a reply datagram");
        assert_bytes("udp reply", &got, &upper(payload));
    };
    // One datagram, one reply: empty ones, newlines as data, growing characters, invalid
    // UTF-8, and a reply of exactly the maximum size (245 × ΐ: 490 bytes grow to 1470).
    for payload in [
        b"hello".to_vec(),
        Vec::new(),
        b"a\nb\r\n".to_vec(),
        "straße ﬁ ΐ".as_bytes().to_vec(),
        "\u{390}".repeat(245).into_bytes(),
        b"\xff\xfeabc\xc3".to_vec(),
        unicode_text(42, 200).into_bytes(),
    ] {
        assert!(upper(&payload).len() <= MAX_DATAGRAM);
        ask(&payload);
    }
    for k in 0..50 {
        let mut p = unicode_text(100 + k, 1 + (k as usize * 7) % 300).into_bytes();
        p.truncate(400);
        let p = String::from_utf8_lossy(&p).into_owned().into_bytes();
        ask(&p);
    }
    // A reply over the maximum (246 × ΐ grow to 1476 bytes) is dropped, never truncated, and
    // so is a request too long for one unfragmented packet. The next request is answered.
    u.send("\u{390}".repeat(246).as_bytes()).unwrap();
    assert_eq!(
        recv_within(&u, Duration::from_secs(1)),
        None,
        "an oversized reply was sent"
    );
    u.send(&[b'a'; MAX_DATAGRAM + 100]).unwrap();
    assert_eq!(
        recv_within(&u, Duration::from_secs(1)),
        None,
        "an oversized request was answered"
    );
    ask(b"next");

    // Loop protection: a peer that sends back, again and again, exactly the reply it got (a
    // fixed point of the transform) gets the first reply and a burst of 4 echoes; changing
    // requests from it are never limited.
    let echo = guest.udp_socket("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        echo.send(b"HELLO").unwrap();
        thread::sleep(Duration::from_millis(10));
    }
    let mut answered = 0;
    while let Some(r) = recv_within(&echo, Duration::from_millis(500)) {
        assert_eq!(r, b"HELLO");
        answered += 1;
    }
    assert!(
        (5..=7).contains(&answered),
        "{answered} of 20 echoes answered"
    );
    echo.send(b"changed").unwrap();
    assert_eq!(
        recv_within(&echo, Duration::from_secs(5)).as_deref(),
        Some(&b"CHANGED"[..])
    );

    // A source port below 1024 (echo, chargen, DNS, NTP live there) gets no reply. Binding one
    // needs root, as in CI; elsewhere this check is skipped.
    let low_port = match guest.udp_socket("127.0.0.1:1000") {
        Ok(low) => {
            low.send(b"hello").unwrap();
            let reply = recv_within(&low, Duration::from_secs(1));
            assert_eq!(reply, None, "port 1000 was answered");
            true
        }
        Err(e) => {
            eprintln!("skipped the low-port check: cannot bind port 1000 ({e})");
            false
        }
    };
    (answered, low_port)
}

/// The number after `name=` in `line`.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// The largest `stack_high_water=` the guest reported.
fn stack_high_water(log: &str) -> Option<u64> {
    log.split_whitespace()
        .filter_map(|w| w.strip_prefix("stack_high_water="))
        .filter_map(|n| n.parse().ok())
        .max()
}

#[test]
fn serves_tcp_and_udp_from_qemu() {
    let image = build_image();
    let started = Instant::now();
    let guest = Guest::boot(&image);
    let booted = started.elapsed();

    concurrent_clients(&guest, 1);
    let (lines_per_second, bytes_per_second) = pipelined_burst(&guest);
    overlong_and_half_close(&guest);
    lecture_clients(&guest);
    let (echoes_answered, low_port_checked) = udp(&guest);
    // Every socket listens again after its clients closed: all of them serve at once again.
    concurrent_clients(&guest, 2);

    // The guest logs one line per closed connection: give it a moment for the last ones.
    thread::sleep(Duration::from_millis(500));
    let log = guest.log();
    assert!(log.contains("upcase-firmware-net: serving"), "log:\n{log}");
    let closed = log.lines().filter(|l| l.starts_with("closed:")).count();
    assert!(
        closed >= 2 * SOCKETS + 3,
        "{closed} closed connections logged:\n{log}"
    );
    // The guest counted each unanswered datagram under its reason.
    let last = log.lines().last().unwrap_or_default();
    assert_eq!(
        field(last, "loop"),
        Some(20 - echoes_answered as u64),
        "{last}"
    );
    assert_eq!(field(last, "reply_too_large"), Some(1), "{last}");
    let low = u64::from(low_port_checked);
    assert_eq!(field(last, "low_source_port"), Some(low), "{last}");
    assert_eq!(field(last, "not_sent"), Some(0), "{last}");
    eprintln!(
        "figures: boot to ready {:.1} s; pipelined burst {lines_per_second:.0} lines/s ({:.2} MB/s of requests); \
         stack high-water {} B; total {:.1} s",
        booted.as_secs_f64(),
        bytes_per_second / 1e6,
        stack_high_water(&log).map_or("?".into(), |n| n.to_string()),
        started.elapsed().as_secs_f64()
    );
    for line in log
        .lines()
        .filter(|l| l.starts_with("upcase-firmware-net: serving"))
    {
        eprintln!("guest: {line}");
    }
    eprintln!("guest: {}", log.lines().last().unwrap_or_default());
}

/// The recipes in `core/README.md` ("On a network stack") are copies of code that CI compiles:
/// each ```text block there must appear, line for line, in its source file.
#[test]
fn readme_recipes_are_the_compiled_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("core/README.md")).unwrap();
    let section = readme
        .split("## On a network stack")
        .nth(1)
        .expect("core/README.md has an 'On a network stack' section");
    let section = section.split("\n## ").next().unwrap();
    let sources = [
        "examples/firmware-net/src/glue.rs",
        "examples/firmware-net/embassy/src/lib.rs",
    ];
    let blocks: Vec<&str> = section
        .split("```text\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), sources.len(), "one recipe per source file");
    for (block, source) in blocks.iter().zip(sources) {
        let code = std::fs::read_to_string(root.join(source)).unwrap();
        assert!(
            code.contains(block.trim_end()),
            "the recipe in core/README.md drifted from {source}:\n{block}"
        );
    }
}
