//! Runs the firmware image under QEMU's lm3s6965evb, for each of the four variants (Cortex-M3
//! and Cortex-M0, full Unicode and ASCII-only), and the M3 image served by the async driver.
//! Every image is built with `no-panic`, so each one run here is also one the linker proved
//! free of panic paths:
//!
//! - piped input ended by EOT, checked byte for byte against the house's reference model
//!   (`upcase_model`) with the UART's line ends (`PROTOCOL.md` §4);
//! - typed input: a line ended by a lone CR (a terminal's Enter) gets its reply at once, before
//!   EOT, within a bounded wait;
//! - the flash budget: `size`'s text of the release image, vector table included;
//! - `no-panic` changes no byte of the flash image;
//! - the stack high-water mark of a whole session (the `report` build), against a budget.
//!
//! Needs `qemu-system-arm` and the thumb targets; `scripts/ci.sh` installs both.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use upcase_model::End;

/// The firmware's line limit (its storage is 257 bytes).
const MAX_LINE: usize = 256;
/// The UART's end of stream.
const EOT: u8 = 0x04;
/// Upper bound on one QEMU run.
const QEMU_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound on the wait for the reply to one typed line (QEMU boots in well under a second).
const TYPED_WAIT: Duration = Duration::from_secs(10);
/// The stack budget of a whole session, every variant (the README's figures are below it).
const MAX_STACK: u64 = 400;

/// One image variant.
#[derive(Clone, Copy)]
struct Variant {
    target: &'static str,
    cpu: &'static str,
    unicode: bool,
    /// Further firmware features, comma-separated.
    features: &'static str,
    /// The flash budget (issue 14): `size` text, vector table included.
    max_text: u64,
}

const M3_UNICODE: Variant = Variant {
    target: "thumbv7m-none-eabi",
    cpu: "cortex-m3",
    unicode: true,
    features: "no-panic",
    max_text: 8 * 1024,
};
const M3_ASCII: Variant = Variant {
    target: "thumbv7m-none-eabi",
    cpu: "cortex-m3",
    unicode: false,
    features: "no-panic",
    max_text: 3 * 1024,
};
const M0_UNICODE: Variant = Variant {
    target: "thumbv6m-none-eabi",
    cpu: "cortex-m0",
    unicode: true,
    features: "no-panic",
    max_text: 8 * 1024 + 512,
};
const M0_ASCII: Variant = Variant {
    target: "thumbv6m-none-eabi",
    cpu: "cortex-m0",
    unicode: false,
    features: "no-panic",
    max_text: 3 * 1024,
};

/// The M3 image served by the core's async driver (`--features async`).
const M3_ASYNC: Variant = Variant {
    features: "no-panic,async",
    ..M3_UNICODE
};

fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware")
}

/// Builds one image variant and returns its path.
fn build(v: Variant) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(firmware_dir())
        .args(["build", "--release", "--target", v.target])
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if !v.unicode {
        cmd.arg("--no-default-features");
    }
    if !v.features.is_empty() {
        cmd.args(["--features", v.features]);
    }
    let status = cmd.status().expect("cargo runs");
    // With `no-panic`, a failed link here means a panic path is left in the image: the build
    // output above says "undefined symbol: upcase_firmware_no_panic_proof_failed_...".
    assert!(status.success(), "firmware build failed for {}", name(v));
    // Each variant has its own file, so later builds do not overwrite earlier images.
    let built = firmware_dir()
        .join("target")
        .join(v.target)
        .join("release/upcase-firmware");
    let kept = firmware_dir()
        .join("target")
        .join(format!("upcase-firmware-{}", name(v)));
    std::fs::copy(&built, &kept).expect("copy image");
    kept
}

fn name(v: Variant) -> String {
    let mut name = format!(
        "{}-{}",
        v.target,
        if v.unicode { "unicode" } else { "ascii" }
    );
    for feature in v.features.split(',').filter(|f| !f.is_empty()) {
        name.push('-');
        name.push_str(feature);
    }
    name
}

/// Starts `image` on `cpu`, the UART on the child's stdin and stdout.
fn qemu(image: &Path, cpu: &str) -> Child {
    Command::new("qemu-system-arm")
        .args(["-cpu", cpu, "-machine", "lm3s6965evb", "-display", "none"])
        .args(["-monitor", "none", "-serial", "stdio"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-arm is installed (scripts/ci.sh installs it)")
}

/// Waits for `child` to exit within `limit`, killing it and failing otherwise; fails on a
/// non-zero exit.
fn wait_ok(child: &mut Child, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("QEMU run over {limit:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{what}: image exited with {status:?}");
}

/// Runs `image` on `cpu` with `input` on the UART; returns the UART's output, failing on a
/// non-zero exit or a run over the time limit.
fn run(image: &Path, cpu: &str, input: &[u8]) -> Vec<u8> {
    let mut child = qemu(image, cpu);
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    wait_ok(&mut child, QEMU_LIMIT, &image.display().to_string());
    let _ = feeder.join();
    reader.join().unwrap().unwrap()
}

/// The UART's line ends (`PROTOCOL.md` §4) as a rewrite of the input: every CR ends its line as
/// CR LF, an LF right after a CR is that same line end, and a bare LF stays as it is.
fn uart_line_ends(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in input.iter().enumerate() {
        if b == b'\n' && i > 0 && input[i - 1] == b'\r' {
            continue; // the LF of a CR LF: its CR already ended the line
        }
        out.push(b);
        if b == b'\r' {
            out.push(b'\n');
        }
    }
    out
}

/// The model of the image: `PROTOCOL.md` §1 and §2 for a 256-byte line limit, over the UART's
/// line ends, up to EOT; with `end`, what is determined when the input stops there.
fn expected(input: &[u8], unicode: bool, end: End) -> Vec<u8> {
    let body = &input[..input.iter().position(|&b| b == EOT).unwrap_or(input.len())];
    let upper: fn(&[u8]) -> Vec<u8> = if unicode {
        upcase_model::upper
    } else {
        upcase_model::upper_ascii
    };
    upcase_model::replies_with(&uart_line_ends(body), MAX_LINE, end, upper)
}

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut bulk = Vec::new();
    for i in 0..2000 {
        bulk.extend_from_slice(format!("line {i}: straße ΐ mixed Ünïcödé\n").as_bytes());
    }
    let mut overlong = vec![b'x'; 1000];
    overlong.extend_from_slice(b"\nstill served\n");
    let exact = [
        vec![b'y'; MAX_LINE],
        b"\n".to_vec(),
        vec![b'z'; MAX_LINE + 1],
        b"\nok\n".to_vec(),
        // With a CR, the CR counts: 255 bytes and CR fit, 256 and CR do not.
        vec![b'c'; MAX_LINE - 1],
        b"\r".to_vec(),
        vec![b'd'; MAX_LINE],
        b"\rok\r".to_vec(),
    ]
    .concat();
    vec![
        (
            "ascii, crlf and unicode",
            "hello, world\r\nstraße\nΐ ﬁ\n\nno newline at eot"
                .as_bytes()
                .to_vec(),
        ),
        (
            "lone cr ends a line",
            "typed\rstraße\r\r\nmixed\r\nbare lf\ncr cr lf\r\r\nlast\r"
                .as_bytes()
                .to_vec(),
        ),
        ("overlong then good", overlong),
        ("limit exactly", exact),
        (
            "invalid utf-8 and control bytes",
            b"\xff\xfeabc\n\xc3\n\x00nul\x07\x1b[0m\n\xe2\x82".to_vec(),
        ),
        ("2000 lines in bulk", bulk),
    ]
}

/// Types lines ended by a lone CR, each only after the reply to the one before has arrived:
/// each reply must come at once, not at EOT.
fn check_typed(image: &Path, v: Variant) {
    let mut child = qemu(image, v.cpu);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut typed = Vec::new();
    let mut got = Vec::new();
    // The LF typed alone after "hello\r" belongs to its CR: it must not add an empty line.
    let keys: [&[u8]; 5] = [b"hello\r", b"\n", "straße ΐ\r".as_bytes(), b"\r", b"x\r\n"];
    for key in keys {
        typed.extend_from_slice(key);
        stdin.write_all(key).unwrap();
        stdin.flush().unwrap();
        let want = expected(&typed, v.unicode, End::Open);
        let deadline = Instant::now() + TYPED_WAIT;
        while got.len() < want.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => got.extend(bytes),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{}: no reply within {TYPED_WAIT:?} after typing {:?} (before EOT): \
                         got {:?}, want {:?}",
                        name(v),
                        String::from_utf8_lossy(&typed),
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want)
                    );
                }
            }
        }
        assert_eq!(got, want, "{}: after typing {typed:?}", name(v));
    }
    stdin.write_all(&[EOT]).unwrap();
    drop(stdin);
    wait_ok(&mut child, QEMU_LIMIT, &name(v));
    reader.join().unwrap();
    got.extend(rx.try_iter().flatten());
    assert_eq!(
        got,
        expected(&typed, v.unicode, End::Eof),
        "{}: at EOT",
        name(v)
    );
}

fn check_image(v: Variant) {
    let image = build(v);
    for (case, mut input) in cases() {
        let want = expected(&input, v.unicode, End::Eof);
        input.push(EOT);
        let got = run(&image, v.cpu, &input);
        assert!(
            got == want,
            "{}: case {case:?}: output differs at byte {}",
            name(v),
            got.iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()))
        );
    }
    check_typed(&image, v);
}

#[test]
fn cortex_m3_unicode() {
    check_image(M3_UNICODE);
}

#[test]
fn cortex_m3_ascii_only() {
    check_image(M3_ASCII);
}

#[test]
fn cortex_m3_async_driver() {
    check_image(M3_ASYNC);
}

#[test]
fn cortex_m0_unicode() {
    check_image(M0_UNICODE);
}

#[test]
fn cortex_m0_ascii_only() {
    check_image(M0_ASCII);
}

/// One allocated section of an ELF image.
struct Section {
    writable: bool,
    nobits: bool,
    addr: u64,
    bytes: Vec<u8>,
}

/// The allocated sections (those a loader places in memory) of an ELF32 little-endian image,
/// with their contents (empty for `.bss`-like sections, which take no file space).
fn sections(image: &Path) -> Vec<Section> {
    let elf = std::fs::read(image).expect("read image");
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x01\x01",
        "an ELF32 little-endian image"
    );
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()));
    let (shoff, shentsize, shnum) = (u32_at(0x20), u16_at(0x2E), u16_at(0x30));
    const SHF_WRITE: u64 = 1;
    const SHF_ALLOC: u64 = 2;
    const SHT_NOBITS: u64 = 8;
    let mut found = Vec::new();
    for i in 0..shnum {
        let sh = (shoff + i * shentsize) as usize;
        let (kind, flags, addr) = (u32_at(sh + 4), u32_at(sh + 8), u32_at(sh + 12));
        let (offset, len) = (u32_at(sh + 16) as usize, u32_at(sh + 20) as usize);
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        let nobits = kind == SHT_NOBITS;
        found.push(Section {
            writable: flags & SHF_WRITE != 0,
            nobits,
            addr,
            bytes: if nobits {
                vec![0; len]
            } else {
                elf[offset..offset + len].to_vec()
            },
        });
    }
    found
}

/// `size`'s three figures (Berkeley format) of an ELF32 little-endian image: text (allocated,
/// not writable: code, read-only data and the vector table), data, bss.
fn size(image: &Path) -> (u64, u64, u64) {
    let (mut text, mut data, mut bss) = (0, 0, 0);
    for s in sections(image) {
        let len = s.bytes.len() as u64;
        match (s.writable, s.nobits) {
            (_, true) => bss += len,
            (true, false) => data += len,
            (false, false) => text += len,
        }
    }
    (text, data, bss)
}

/// What a flasher writes: each allocated section that takes file space, its address and bytes.
fn flash_image(image: &Path) -> Vec<(u64, Vec<u8>)> {
    sections(image)
        .into_iter()
        .filter(|s| !s.nobits && !s.bytes.is_empty())
        .map(|s| (s.addr, s.bytes))
        .collect()
}

/// The flash budgets of issue 14: full Unicode in 8 KiB on a Cortex-M3 (8.5 KiB on a
/// Cortex-M0), ASCII-only in 3 KiB. A regression fails here with the figures.
#[test]
fn flash_budgets() {
    let mut over = Vec::new();
    for v in [M3_UNICODE, M3_ASCII, M3_ASYNC, M0_UNICODE, M0_ASCII] {
        let (text, data, bss) = size(&build(v));
        eprintln!(
            "{:<48} text {text:>6}  data {data:>4}  bss {bss:>5}",
            name(v)
        );
        if text + data > v.max_text {
            over.push(format!(
                "{}: {} B of flash, budget {}",
                name(v),
                text + data,
                v.max_text
            ));
        }
    }
    assert!(over.is_empty(), "over the flash budget: {over:?}");
}

/// `no-panic` swaps the panic handler for a call the linker cannot resolve, and the optimiser
/// drops that handler from a panic-free image: the flash image is the same, byte for byte, as
/// without the feature. So the image the linker proved is the one the other tests run.
#[test]
fn no_panic_changes_no_flash_byte() {
    for v in [M3_UNICODE, M3_ASCII] {
        let plain = Variant { features: "", ..v };
        let proven = flash_image(&build(v));
        assert!(
            proven.iter().map(|(_, b)| b.len()).sum::<usize>() > 1024,
            "{}: an image of code",
            name(v)
        );
        assert!(
            proven == flash_image(&build(plain)),
            "{}: the flash image differs from the one built without no-panic",
            name(v)
        );
    }
}

/// The stack high-water mark of a whole session, from the `report` build (the stack is painted
/// at boot and scanned at EOT, and the summary follows the replies on the UART), over every
/// case above in one session. Prints the figures the README gives, with the rate of QEMU's
/// UART model; fails over [`MAX_STACK`].
#[test]
fn stack_high_water() {
    let input = cases()
        .into_iter()
        .map(|(_, case)| case)
        .collect::<Vec<_>>()
        .join(&b'\n');
    let mut over = Vec::new();
    for v in [M3_UNICODE, M3_ASCII, M3_ASYNC, M0_UNICODE, M0_ASCII] {
        let v = Variant {
            features: String::leak(format!("{},report", v.features)),
            ..v
        };
        let mut piped = input.clone();
        piped.push(EOT);
        let started = Instant::now();
        let got = run(&build(v), v.cpu, &piped);
        let seconds = started.elapsed().as_secs_f64();
        let want = expected(&input, v.unicode, End::Eof);
        assert!(got.starts_with(&want), "{}: the replies differ", name(v));
        let summary = String::from_utf8_lossy(&got[want.len()..]);
        let field = |key: &str| -> u64 {
            summary
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.trim_end_matches('B').parse().ok())
                .unwrap_or_else(|| panic!("{}: no {key} in {summary:?}", name(v)))
        };
        let (stack, lines) = (field("stack_high_water="), field("lines="));
        eprintln!(
            "{:<48} stack high-water {stack:>4} B; {lines} lines in {seconds:.1} s, boot \
             included ({:.0} lines/s through QEMU's UART)",
            name(v),
            lines as f64 / seconds
        );
        if stack > MAX_STACK {
            over.push(format!("{}: {stack} B", name(v)));
        }
    }
    assert!(
        over.is_empty(),
        "over the stack budget of {MAX_STACK} B: {over:?}"
    );
}
