//! The `upcase` command line itself: `serve` on port 0, then `send`.

mod common;

use common::ServerProc;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn upcase(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_upcase"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    out
}

#[test]
fn send_words_over_tcp_and_udp() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let tcp = server.tcp[0].to_string();
    let udp = server.udp[0].to_string();
    let out = upcase(&["send", "--addr", &tcp, "hello", "straße"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "HELLO STRASSE\n".as_bytes());
    let out = upcase(&["send", "--udp", "--addr", &udp, "ﬁ", "ΐ"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "FI \u{399}\u{308}\u{301}\n".as_bytes());
}

#[test]
fn send_pipelines_stdin_in_order() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp"]);
    let input: String = (0..100_000).map(|i| format!("line {i} é\n")).collect();
    let out = upcase(
        &["send", "--addr", &server.tcp[0].to_string()],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), input.to_uppercase());
}

#[test]
fn send_fails_clearly_when_nothing_listens() {
    // Bind then drop a listener: its port is free, and nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = upcase(
        &[
            "send",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "2",
            "x",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn bad_flag_values_exit_2_with_a_message() {
    for args in [
        &["serve", "--framing", "words"][..],
        &["serve", "--max-line", "0"],
        &["serve", "--max-conns", "many"],
        &["serve", "--no-tcp", "--tcp", "127.0.0.1:0"],
    ] {
        let out = upcase(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error:"),
            "{args:?}"
        );
    }
}

#[test]
fn no_subcommand_means_serve_and_stdout_has_only_ready_lines() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_upcase"))
        .args(["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut l).unwrap();
        lines.push(l);
    }
    assert!(
        lines[0].starts_with("listening tcp 127.0.0.1:"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("listening udp 127.0.0.1:"),
        "{lines:?}"
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "", "nothing else on stdout");
    assert!(child.wait().unwrap().success());
}
