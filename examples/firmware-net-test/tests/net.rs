//! Boots each network firmware image under QEMU through its runner script, then drives it
//! from the host over the forwarded ports: concurrent TCP clients, a pipelined burst, overlong
//! lines, a half-close, UDP datagrams (growing, empty, too large, echoed, from a low port), and
//! the lecture's Python clients. Every reply is checked byte for byte against `upcase-model`
//! (`str::to_uppercase`).
//!
//! The images ([`Image`]): `examples/firmware-net` (smoltcp, a main loop) and
//! `examples/firmware-embassy` (embassy-net, a task pool). Both serve the same protocol with the
//! same sizes and log the same fields, so one suite ([`full_suite`]) runs against each, as one
//! test per image (`cargo test --release embassy` runs the embassy ones). The embassy image is
//! also booted with feature `dhcp`, against QEMU's DHCP server, and with 2 s timeouts, to see
//! its idle and write-stall timeouts fire.
//!
//! Needs `qemu-system-arm`, the `thumbv7m-none-eabi` target and `python3`. Booted by the
//! crate's harness (`src/lib.rs`), so bounded in time as its [`Guest`] is: every socket
//! operation has a timeout, the boot has a deadline, a watchdog kills QEMU, and QEMU is killed
//! when the test ends, whether it passes or fails.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use upcase_firmware_net_test::{Guest, IO_TIMEOUT};
use upcase_model::{replies, unicode_text, upper};

/// The images' line limit (`sizes::MAX_LINE`, `app::MAX_LINE`).
const MAX_LINE: usize = 256;
/// TCP sockets each image serves at once (`sizes::TCP_SOCKETS`, `app::POOL`).
const SOCKETS: usize = 4;
/// The longest UDP request and reply (`sizes::MAX_DATAGRAM`, `app::MAX_DATAGRAM`).
const MAX_DATAGRAM: usize = 1472;
/// Lines in the pipelined burst.
const BURST_LINES: usize = 20_000;

/// A firmware image the suite boots: its crate folder under `examples/` (with its `run.sh`),
/// its binary's name, which also starts its ready line (`NAME: serving ...`), and the cargo
/// features of the build.
#[derive(Debug, Clone, Copy)]
struct Image {
    dir: &'static str,
    name: &'static str,
    features: &'static str,
}

/// The smoltcp image.
const SMOLTCP: Image = Image {
    dir: "firmware-net",
    name: "upcase-firmware-net",
    features: "",
};
/// The embassy-net image.
const EMBASSY: Image = Image {
    dir: "firmware-embassy",
    name: "upcase-firmware-embassy",
    features: "",
};
/// The embassy-net image, taking its address from QEMU's DHCP server.
const EMBASSY_DHCP: Image = Image {
    features: "dhcp",
    ..EMBASSY
};
/// The embassy-net image with 2 s idle and write-stall timeouts (test-only feature).
const EMBASSY_SHORT_TIMEOUTS: Image = Image {
    features: "_short-timeouts",
    ..EMBASSY
};

impl Image {
    fn crate_dir(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(self.dir)
    }

    /// The prefix of the guest's ready line.
    fn serving(&self) -> String {
        format!("{}: serving", self.name)
    }

    /// Builds the release image and returns a copy of it that no other build overwrites (the
    /// variants of one crate share its target folder, and tests run in parallel).
    fn build(&self) -> PathBuf {
        static BUILDS: Mutex<()> = Mutex::new(());
        let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(self.crate_dir())
            .args(["build", "--release"])
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        if !self.features.is_empty() {
            cargo.args(["--features", self.features]);
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "{} build failed", self.dir);
        let built = self
            .crate_dir()
            .join("target/thumbv7m-none-eabi/release")
            .join(self.name);
        let copy = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{}{}{}",
            self.name,
            if self.features.is_empty() { "" } else { "-" },
            self.features.replace(',', "-")
        ));
        std::fs::copy(&built, &copy).expect("copy the image");
        copy
    }

    /// Boots `path`, a build of this image, through its crate's `run.sh` on free ports and
    /// waits for its ready lines.
    fn boot(&self, path: &Path) -> Guest {
        Guest::boot_runner(&self.crate_dir().join("run.sh"), path, &[])
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

/// Waits up to `wait` for a datagram on a connected socket; `None` if none came.
fn recv_within(u: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    upcase_firmware_net_test::recv_within(u, wait).map(|(datagram, _from)| datagram)
}

/// Returns how many datagrams the loop guard dropped, and whether the low-port check ran.
fn udp(guest: &Guest) -> (u64, bool) {
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

    // Loop protection (PROTOCOL.md §3.1): a peer that sends back, again and again, exactly the
    // reply it got (a fixed point of the transform) gets the first reply and a burst of 4
    // repeats, then drops. A drop puts it on probation for 2 s, renewed by each drop, in which
    // every reply draws on the budget that refills at 2 a second; so a changed request is
    // answered again within a few tries spaced by the refill time.
    let echo = guest.udp_socket("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        echo.send(b"HELLO").unwrap();
        thread::sleep(Duration::from_millis(10));
    }
    let mut answered = 0u64;
    while let Some(r) = recv_within(&echo, Duration::from_millis(500)) {
        assert_eq!(r, b"HELLO");
        answered += 1;
    }
    assert!(
        (5..=7).contains(&answered),
        "{answered} of 20 echoes answered"
    );
    let mut tries = 0;
    let again = loop {
        tries += 1;
        echo.send(b"changed").unwrap();
        if let Some(reply) = recv_within(&echo, Duration::from_millis(600)) {
            break Some(reply);
        }
        if tries == 8 {
            break None;
        }
    };
    assert_eq!(
        again.as_deref(),
        Some(&b"CHANGED"[..]),
        "no reply to a changed request in {tries} tries"
    );
    let loop_drops = 20 - answered + (tries - 1) as u64;

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
    (loop_drops, low_port)
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

/// The whole suite against one image: every TCP and UDP check, then the guest's own counters.
fn full_suite(image: Image) {
    let path = image.build();
    let started = Instant::now();
    let mut guest = image.boot(&path);
    let booted = started.elapsed();

    concurrent_clients(&guest, 1);
    let (lines_per_second, bytes_per_second) = pipelined_burst(&guest);
    overlong_and_half_close(&guest);
    lecture_clients(&guest);
    let (loop_drops, low_port_checked) = udp(&guest);
    // Every socket listens again after its clients closed: all of them serve at once again.
    concurrent_clients(&guest, 2);

    // The guest logs one line per closed connection: give it a moment for the last ones.
    thread::sleep(Duration::from_millis(500));
    let log = guest.log();
    assert!(log.contains(&image.serving()), "log:\n{log}");
    let closed = log.lines().filter(|l| l.starts_with("closed:")).count();
    assert!(
        closed >= 2 * SOCKETS + 3,
        "{closed} closed connections logged:\n{log}"
    );
    // The guest counted each unanswered datagram under its reason.
    let last = log.lines().last().unwrap_or_default();
    // Both images name each counter by `upcase_core::DropReason::name`.
    assert_eq!(field(last, "loop"), Some(loop_drops), "{last}");
    assert_eq!(field(last, "reply_too_large"), Some(1), "{last}");
    let low = u64::from(low_port_checked);
    assert_eq!(field(last, "low_source_port"), Some(low), "{last}");
    assert_eq!(field(last, "not_sent"), Some(0), "{last}");
    eprintln!(
        "figures ({}): boot to ready {:.1} s; pipelined burst {lines_per_second:.0} lines/s ({:.2} MB/s of requests); \
         stack high-water {} B; total {:.1} s",
        image.name,
        booted.as_secs_f64(),
        bytes_per_second / 1e6,
        stack_high_water(&log).map_or("?".into(), |n| n.to_string()),
        started.elapsed().as_secs_f64()
    );
    for line in log.lines().filter(|l| l.starts_with(&image.serving())) {
        eprintln!("guest: {line}");
    }
    eprintln!("guest: {}", log.lines().last().unwrap_or_default());
}

#[test]
fn smoltcp_image_serves_tcp_and_udp() {
    full_suite(SMOLTCP);
}

#[test]
fn embassy_image_serves_tcp_and_udp() {
    full_suite(EMBASSY);
}

/// The embassy image with feature `dhcp`: it serves only once QEMU's DHCP server has leased it
/// 10.0.2.15 (the address the host forwards go to), and then serves TCP and UDP.
#[test]
fn embassy_dhcp_image_leases_its_address_and_serves() {
    let path = EMBASSY_DHCP.build();
    let mut guest = EMBASSY_DHCP.boot(&path);
    let log = guest.log();
    let serving = log
        .lines()
        .find(|l| l.starts_with(&EMBASSY_DHCP.serving()))
        .unwrap_or_else(|| panic!("no ready line:\n{log}"));
    assert!(
        serving.contains(" address=10.0.2.15/24 by=dhcp"),
        "not leased by DHCP: {serving}"
    );
    overlong_and_half_close(&guest);
    let u = guest.udp_socket("127.0.0.1:0").unwrap();
    let payload = "dhcp straße".as_bytes();
    u.send(payload).unwrap();
    let got = recv_within(&u, Duration::from_secs(5)).expect("a reply datagram");
    assert_bytes("udp reply", &got, &upper(payload));
}

/// The embassy image's timeouts, shortened to 2 s: a client that trickles a byte every 500 ms
/// is never idle; a silent one is closed gracefully, its partial line answered with
/// `error: idle timeout` (`PROTOCOL.md` §2.3, §2.6); one that writes and never reads is given
/// up once its replies make no progress.
#[test]
fn embassy_image_closes_idle_and_stalled_connections() {
    let image = EMBASSY_SHORT_TIMEOUTS;
    let path = image.build();
    let mut guest = image.boot(&path);

    let mut s = guest.connect();
    for _ in 0..8 {
        s.write_all(b"a").unwrap();
        thread::sleep(Duration::from_millis(500));
    }
    s.write_all(b"\nok\nhalf").unwrap();
    let started = Instant::now();
    let got = read_to_eof(&mut s);
    let waited = started.elapsed();
    assert_bytes("idle close", &got, b"AAAAAAAA\nOK\nerror: idle timeout\n");
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(10)).contains(&waited),
        "closed after {waited:?} of silence, not about 2 s"
    );
    drop(s); // ends the guest's linger (PROTOCOL.md §2.6 step 3) at once

    // Lines without end, never read: QEMU's host side buffers several MB of replies before the
    // guest's writes stall, so this writes up to 64 MB, for at most 60 s.
    let mut w = guest.connect();
    let line = [b"x".repeat(199), b"\n".to_vec()].concat();
    let chunk = line.repeat(512);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = 0usize;
    let failed = loop {
        if written >= 64 << 20 || Instant::now() > deadline {
            break None;
        }
        match w.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Some(e),
        }
    };
    let failed = failed.unwrap_or_else(|| {
        panic!("{written} bytes written, never read, and the connection still stands")
    });
    assert!(
        matches!(
            failed.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
        ),
        "after {written} bytes: {failed}"
    );

    // The guest logs each end by its cause.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut ends = loop {
        let log = guest.log();
        let ends: Vec<String> = log
            .lines()
            .filter(|l| l.starts_with("closed:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
            .collect();
        if ends.len() >= 2 || Instant::now() > deadline {
            break ends;
        }
        thread::sleep(Duration::from_millis(50));
    };
    ends.sort();
    assert_eq!(
        ends,
        ["end=idle", "end=write_stall"],
        "log:\n{}",
        guest.log()
    );
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
