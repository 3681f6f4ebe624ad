//! Pipes input through the firmware image under QEMU's lm3s6965evb and checks the UART output
//! byte for byte against a reference model built on `str::to_uppercase`.
//!
//! Needs `qemu-system-arm` and the thumb targets; `scripts/ci.sh` installs both.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The firmware's line limit (its storage is 257 bytes).
const MAX_LINE: usize = 256;
/// The UART's end of stream.
const EOT: u8 = 0x04;
/// Upper bound on one QEMU run.
const QEMU_LIMIT: Duration = Duration::from_secs(60);

fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware")
}

/// Builds one image variant and returns its path.
fn build(target: &str, unicode: bool) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(firmware_dir())
        .args(["build", "--release", "--target", target])
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if !unicode {
        cmd.arg("--no-default-features");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(
        status.success(),
        "firmware build failed for {target} unicode={unicode}"
    );
    // Each variant has its own file, so later builds do not overwrite earlier images.
    let built = firmware_dir()
        .join("target")
        .join(target)
        .join("release/upcase-firmware");
    let kept = firmware_dir().join("target").join(format!(
        "upcase-firmware-{target}-{}",
        if unicode { "unicode" } else { "ascii" }
    ));
    std::fs::copy(&built, &kept).expect("copy image");
    kept
}

/// Runs `image` on `cpu` with `input` on the UART; returns stdout, failing on a non-zero exit
/// or a run over the time limit.
fn run(image: &Path, cpu: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("qemu-system-arm")
        .args([
            "-cpu",
            cpu,
            "-machine",
            "lm3s6965evb",
            "-display",
            "none",
            "-monitor",
            "none",
        ])
        .args([
            "-serial",
            "stdio",
            "-semihosting-config",
            "enable=on,target=native",
            "-kernel",
        ])
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-arm is installed (scripts/ci.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + QEMU_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("QEMU run over {QEMU_LIMIT:?}: {}", image.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "image exited with {status:?}");
    let _ = feeder.join();
    reader.join().unwrap().unwrap()
}

/// The reference model: PROTOCOL.md §1 and §2 for a 256-byte line limit.
fn expected(input: &[u8], unicode: bool) -> Vec<u8> {
    let upper = |bytes: &[u8]| -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in bytes.utf8_chunks() {
            let valid = chunk.valid();
            let up = if unicode {
                valid.to_uppercase()
            } else {
                valid.to_ascii_uppercase()
            };
            out.extend_from_slice(up.as_bytes());
            out.extend_from_slice(chunk.invalid());
        }
        out
    };
    let body = &input[..input.iter().position(|&b| b == EOT).unwrap_or(input.len())];
    let mut parts: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    let mut out = Vec::new();
    for line in parts {
        if line.len() > MAX_LINE {
            out.extend_from_slice(b"error: line too long\n");
        } else {
            out.extend(upper(line));
            out.push(b'\n');
        }
    }
    if tail.len() > MAX_LINE {
        out.extend_from_slice(b"error: line too long\n");
    } else {
        out.extend(upper(tail));
    }
    out
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
    ]
    .concat();
    vec![
        (
            "ascii, crlf and unicode",
            "hello, world\r\nstraße\nΐ ﬁ\n\nno newline at eot"
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

fn check_image(target: &str, cpu: &str, unicode: bool) {
    let image = build(target, unicode);
    for (name, mut input) in cases() {
        let want = expected(&input, unicode);
        input.push(EOT);
        let got = run(&image, cpu, &input);
        assert!(
            got == want,
            "{target} unicode={unicode}: case {name:?}: output differs at byte {}",
            got.iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()))
        );
    }
}

#[test]
fn cortex_m3_unicode() {
    check_image("thumbv7m-none-eabi", "cortex-m3", true);
}

#[test]
fn cortex_m3_ascii_only() {
    check_image("thumbv7m-none-eabi", "cortex-m3", false);
}

#[test]
fn cortex_m0_unicode() {
    check_image("thumbv6m-none-eabi", "cortex-m0", true);
}

#[test]
fn cortex_m0_ascii_only() {
    check_image("thumbv6m-none-eabi", "cortex-m0", false);
}
