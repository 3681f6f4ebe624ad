//! The `upcase` command line itself: `serve` on port 0, then `send`; exit codes and messages,
//! the lecture's clients, logs, completions and the man page.

mod common;

use common::{LIMIT, ServerProc, connect, read_exactly};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn upcase(args: &[&str], stdin: &[u8]) -> Output {
    upcase_os(args.iter().map(OsStr::new), stdin)
}

fn upcase_os<'a>(args: impl IntoIterator<Item = &'a OsStr>, stdin: &[u8]) -> Output {
    let mut child = common::upcase()
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
    // A process that stops early (the server closed) need not read all of its stdin.
    if let Err(e) = feeder.join().unwrap() {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
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
    let port = common::free_port();
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
    assert!(
        err.contains("add --udp"),
        "a refused TCP connect hints at UDP: {err}"
    );
}

#[test]
fn bad_flag_values_exit_2_with_a_message() {
    for args in [
        &["serve", "--framing", "words"][..],
        &["serve", "--max-line", "0"],
        &["serve", "--max-conns", "many"],
        &["serve", "--no-tcp", "--tcp", "127.0.0.1:0"],
        // Nothing to serve is a bad combination of arguments, not a failure to start.
        &["serve", "--no-tcp", "--no-udp"],
        &["--no-udp", "--no-tcp"],
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
    let mut child = common::upcase()
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
    common::signal(child.id(), common::stop_signal());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "", "nothing else on stdout");
    assert!(child.wait().unwrap().success());
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn malformed_addresses_exit_2_showing_the_expected_form() {
    for args in [
        &["serve", "--tcp", "foo"][..],
        &["serve", "--tcp", "127.0.0.1:99999"],
        &["serve", "--udp", "::1:9876"],
        &["serve", "--tcp", "[nothost]:1"],
        &["--tcp", "127.0.0.1"],
        &["send", "--addr", "localhost", "x"],
        &["send", "--addr", "127.0.0.1:65536", "x"],
    ] {
        let out = upcase(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        for form in ["HOST:PORT", "[::1]:", ":65432"] {
            assert!(err.contains(form), "{args:?}: {err}");
        }
    }
    // A well-formed name that does not resolve is a failure at bind time, not a usage error.
    let out = upcase(&["serve", "--tcp", "no-such-host.invalid:1"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn send_addr_colon_port_means_loopback() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let tcp = format!(":{}", server.tcp[0].port());
    let out = upcase(&["send", "--addr", &tcp, "hi"], b"");
    assert_eq!(out.stdout, b"HI\n", "{}", stderr(&out));
    let udp = format!(":{}", server.udp[0].port());
    let out = upcase(&["send", "--udp", "--addr", &udp, "hi"], b"");
    assert_eq!(out.stdout, b"HI\n", "{}", stderr(&out));
}

// Unix only: there arguments are bytes; Windows' are UTF-16, and reach upcase as WTF-8.
#[cfg(unix)]
#[test]
fn send_accepts_arguments_that_are_not_utf8() {
    if common::skip_under_wine(
        "Windows arguments are UTF-16: bytes that are not UTF-8 cannot reach upcase.exe",
    ) {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let word = OsStr::from_bytes(b"\xff\xfeab\xc3");
    let (tcp, udp) = (server.tcp[0].to_string(), server.udp[0].to_string());
    for (addr, udp) in [(&tcp, None), (&udp, Some("--udp"))] {
        let mut args = vec![OsStr::new("send"), OsStr::new("--addr"), OsStr::new(addr)];
        args.extend(udp.map(OsStr::new));
        args.extend([word, OsStr::new("é")]);
        let out = upcase_os(args, b"");
        assert!(out.status.success(), "{}", stderr(&out));
        // Invalid UTF-8 is copied, the rest uppercased (PROTOCOL.md §1).
        assert_eq!(out.stdout, b"\xff\xfeAB\xc3 \xc3\x89\n");
    }
}

#[test]
fn error_replies_stay_on_stdout_in_order_and_exit_3() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--max-line", "4"]);
    let addr = server.tcp[0].to_string();
    let out = upcase(&["send", "--addr", &addr], b"ab\nabcdefgh\ncd\n");
    assert_eq!(out.stdout, b"AB\nerror: line too long\nCD\n");
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("1 of 3 replies was an error line"), "{err}");
    let out = upcase(&["send", "--addr", &addr, "abcdefgh"], b"");
    assert_eq!(out.stdout, b"error: line too long\n");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Where the limit comes from, and what to do about it.
    let err = stderr(&out);
    assert!(err.contains("the server's limit, its --max-line"), "{err}");
}

#[test]
fn a_refusal_is_shown_not_a_broken_pipe() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--max-conns", "1"]);
    let addr = server.tcp[0].to_string();
    // Take the only slot, and know that the server has accepted it.
    let mut held = connect(server.tcp[0]);
    held.write_all(b"x\n").unwrap();
    read_exactly(&mut held, 2);
    let many: Vec<u8> = b"line\n".repeat(200_000);
    for (args, stdin) in [
        (&["send", "--addr", &addr, "x"][..], &b""[..]),
        (&["send", "--addr", &addr], &b"x\n"[..]),
        (&["send", "--addr", &addr], &many[..]),
    ] {
        let out = upcase(args, stdin);
        let err = stderr(&out);
        assert!(!err.to_lowercase().contains("broken pipe"), "{err}");
        // A client that had sent data may see a reset instead (SECURITY.md); it says so.
        if out.stdout.is_empty() {
            assert!(err.contains("reset"), "{err}");
            assert_eq!(out.status.code(), Some(1));
            continue;
        }
        assert_eq!(out.stdout, b"error: too many connections\n", "{err}");
        assert_eq!(out.status.code(), Some(3), "{err}");
    }
}

#[test]
fn timeouts_exit_4_and_say_so() {
    // A UDP socket that never answers, and a TCP listener that never accepts.
    let silent_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = silent_udp.local_addr().unwrap().to_string();
    let tcp = silent_tcp.local_addr().unwrap().to_string();
    for args in [
        &["send", "--udp", "--addr", &udp, "--timeout", "0.3", "x"][..],
        &["send", "--addr", &tcp, "--timeout", "0.3", "x"],
        &["send", "--addr", &tcp, "--timeout", "0.3"],
    ] {
        let out = upcase(args, b"x\n");
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    }
}

#[test]
fn udp_errors_are_not_worded_as_connection_errors() {
    if common::skip_under_wine(
        "Wine 8.0 does not report an ICMP port unreachable to a UDP socket (Windows: WSAECONNRESET)",
    ) {
        return;
    }
    let addr = format!("127.0.0.1:{}", common::free_port());
    let out = upcase(
        &["send", "--udp", "--addr", &addr, "--timeout", "2", "x"],
        b"",
    );
    let err = stderr(&out);
    // Loopback reports the ICMP port unreachable as a refusal.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("network error"), "{err}");
    assert!(err.contains("nothing listens on UDP"), "{err}");
    assert!(!err.contains("connection error"), "{err}");
}

#[test]
fn send_waits_for_stdin_as_long_as_it_takes() {
    let server = ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp"]);
    let mut child = common::upcase()
        .args([
            "send",
            "--addr",
            &server.tcp[0].to_string(),
            "--timeout",
            "0.2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for word in ["one", "two"] {
        stdin.write_all(format!("{word}\n").as_bytes()).unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, format!("{}\n", word.to_uppercase()));
        // Idle on stdin for several timeouts: nothing is overdue, so nothing times out.
        std::thread::sleep(Duration::from_millis(700));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn help_documents_the_exit_codes() {
    let out = upcase(&["send", "--help"], b"");
    let help = String::from_utf8(out.stdout).unwrap();
    for code in ["0  ", "1  ", "2  ", "3  ", "4  "] {
        assert!(help.contains(&format!("\n  {code}")), "{help}");
    }
}

/// Starts `upcase ARGS` with `RUST_LOG` as given, waits for its `want` `listening` lines (or
/// its exit), and returns them with the child.
fn start_raw(args: &[&str], want: usize, rust_log: &str) -> (std::process::Child, Vec<String>) {
    let mut child = common::upcase()
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if stdout.read_line(&mut l).unwrap() == 0 {
            break;
        }
        lines.push(l.trim_end().to_owned());
        if lines.len() == want {
            break;
        }
    }
    (child, lines)
}

/// The stop request (SIGTERM; Ctrl-C under Wine), then the exit status and the whole log.
fn stop(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    common::signal(child.id(), common::stop_signal());
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    (child.wait().unwrap(), log)
}

#[test]
fn logs_say_framing_as_the_flag_does_and_raw_leaves_max_line_unused() {
    let (child, _) = start_raw(&["--tcp", "127.0.0.1:0", "--no-udp"], 1, "info");
    let (status, log) = stop(child);
    assert!(status.success(), "{log}");
    let max_line = format!("framing=lines max_line={}", upcase_std::defaults::MAX_LINE);
    assert!(log.contains(&max_line), "{log}");
    assert!(log.contains("workers="), "{log}");
    let (child, _) = start_raw(
        &["--tcp", "127.0.0.1:0", "--no-udp", "--framing", "raw"],
        1,
        "info",
    );
    let (_, log) = stop(child);
    assert!(log.contains("framing=raw max_line=unused"), "{log}");
}

#[test]
fn a_bad_rust_log_warns_once_and_logs_at_info() {
    let (child, _) = start_raw(&["--tcp", "127.0.0.1:0", "--no-udp"], 1, "[[[not a filter");
    let (status, log) = stop(child);
    assert!(status.success(), "{log}");
    assert_eq!(
        log.matches("RUST_LOG is not a valid filter").count(),
        1,
        "{log}"
    );
    assert!(log.contains("INFO"), "{log}");
}

/// The lecture's Python TCP client: `sendall(b"hello")` with no newline, then `recv(1024)`.
fn python_client(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(b"hello").unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn the_python_client_against_lines_framing_gets_a_hint_in_the_log() {
    let mut server =
        ServerProc::start(&["--tcp", "127.0.0.1:0", "--no-udp", "--idle-timeout", "1"]);
    let started = Instant::now();
    // It waits for a reply that lines framing never sends before the newline; the idle timeout
    // answers the partial line with its error and closes the connection (Python prints
    // `Received 'error: idle timeout\n'`).
    assert_eq!(python_client(server.tcp[0]), b"error: idle timeout\n");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A client that closes with an unterminated line: its reply, and the hint again.
    assert_eq!(common::exchange(server.tcp[0], b"hello"), b"HELLO");
    server.terminate();
    let log = server.logs();
    let hint = "unterminated line: no newline received; is the client expecting --framing raw?";
    let hints: Vec<_> = log.lines().filter(|l| l.contains(hint)).collect();
    assert_eq!(hints.len(), 2, "once per connection:\n{log}");
    assert!(hints.iter().all(|l| l.contains(" INFO ")), "{log}");
    assert!(hints[0].contains("idle timeout"), "{log}");
}

#[test]
fn raw_framing_serves_the_lectures_three_clients() {
    // What `--lecture` sets up, on free ports: raw framing, two TCP listeners, UDP.
    let server = ServerProc::start(&[
        "--framing",
        "raw",
        "--tcp",
        "127.0.0.1:0",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
    ]);
    assert_eq!(python_client(server.tcp[0]), b"HELLO");
    // The Java TCP client: writeBytes(sentence + '\n'), then readLine().
    let s = connect(server.tcp[1]);
    (&s).write_all("straße\n".as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "STRASSE\n");
    // The Java UDP client: one datagram, one reply of exactly the transform's length.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(LIMIT)).unwrap();
    u.send_to(b"hello", server.udp[0]).unwrap();
    let mut buf = [0u8; 1024];
    let n = u.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HELLO");
}

#[test]
fn lecture_preset_binds_the_lectures_ports_with_raw_framing() {
    let out = upcase(&["serve", "--lecture", "--tcp", "127.0.0.1:0"], b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "--lecture sets the addresses itself"
    );
    let out = upcase(&["serve", "--lecture", "--framing", "lines"], b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "--lecture sets the framing itself"
    );
    // The fixed ports may be taken on this machine; then there is nothing more to check here.
    let (child, lines) = start_raw(&["serve", "--lecture"], 3, "info");
    if lines.len() < 3 {
        let (_, log) = stop(child);
        assert!(log.contains("in use"), "{log}");
        eprintln!("skipped: the lecture's ports are in use");
        return;
    }
    assert_eq!(
        lines,
        [
            "listening tcp 127.0.0.1:65432",
            "listening tcp 127.0.0.1:6789",
            "listening udp 127.0.0.1:9876",
        ]
    );
    let (status, log) = stop(child);
    assert!(status.success(), "{log}");
    assert!(log.contains("framing=raw"), "{log}");
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = upcase(&["completions", shell], b"");
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("upcase"), "{shell}");
        assert!(script.contains("lecture"), "{shell}: flags are completed");
    }
    let out = upcase(&["manpage"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(man.contains(".TH upcase 1"), "{man}");
    assert!(man.contains("\\-\\-framing"), "{man}");
}

#[test]
fn every_man_page_that_upcase_1_lists_is_written_and_send_has_its_options_and_exit_codes() {
    let dir = std::env::temp_dir().join(format!("upcase-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A directory that does not exist yet, two levels deep: it is created.
    let man1 = dir.join("share").join("man1");
    let out = upcase(&["manpage", "--dir", man1.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let page = |name: &str| std::fs::read_to_string(man1.join(name));
    let main = page("upcase.1").expect("upcase.1");
    // upcase(1) on stdout is the same page.
    assert_eq!(upcase(&["manpage"], b"").stdout, main.as_bytes());
    let mut listed: Vec<&str> = main
        .split("upcase\\-")
        .skip(1)
        .filter_map(|s| s.split_once("(1)").map(|(name, _)| name))
        .collect();
    listed.sort();
    listed.dedup();
    assert!(
        listed.contains(&"send") && listed.contains(&"serve"),
        "{listed:?}"
    );
    for name in &listed {
        let file = format!("upcase-{name}.1");
        assert!(
            page(&file).is_ok(),
            "upcase(1) lists {file}, which was not written"
        );
    }
    // stdout names each page written.
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.lines().count(), listed.len() + 1, "{printed}");
    let send = page("upcase-send.1").unwrap();
    for option in ["\\-\\-addr", "\\-\\-udp", "\\-\\-timeout"] {
        assert!(
            send.contains(option),
            "{option} missing from upcase-send(1)"
        );
    }
    for code in 0..=4 {
        assert!(
            send.contains(&format!("\n  {code}  ")),
            "exit status {code} missing: {send}"
        );
    }
    let serve = page("upcase-serve.1").unwrap();
    assert!(serve.contains("\\-\\-max\\-line"), "{serve}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_line_too_long_for_a_datagram_names_the_limit_and_suggests_tcp() {
    // Nothing needs to answer: the line never leaves.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let limit = upcase_std::MAX_UDP_PAYLOAD;
    let word = "x".repeat(limit + 1);
    let fits = "y".repeat(limit);
    let stdin = format!("{fits}\n{word}\n");
    // A peer that answers the datagram that fits, so the stdin case reaches the long line.
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        silent.set_read_timeout(Some(LIMIT)).unwrap();
        let (n, from) = silent.recv_from(&mut buf).unwrap();
        silent
            .send_to(&buf[..n].to_ascii_uppercase(), from)
            .unwrap();
        n
    });
    for (args, stdin) in [
        (vec!["send", "--udp", "--addr", &addr, &word], &b""[..]),
        (vec!["send", "--udp", "--addr", &addr], stdin.as_bytes()),
    ] {
        if stdin.is_empty()
            && common::skip_under_wine(
                "its first half: a Windows command line holds at most 32767 characters, not a 65508-byte word",
            )
        {
            continue;
        }
        let out = upcase(&args, stdin);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("a line of {} bytes", limit + 1)),
            "{err}"
        );
        assert!(err.contains(&format!("at most {limit} bytes")), "{err}");
        assert!(err.contains("over TCP (without --udp)"), "{err}");
        assert!(!err.contains("os error"), "{err}");
    }
    assert_eq!(
        echo.join().unwrap(),
        limit,
        "the line that fits went out whole"
    );
}

/// A server that reads every line until the client's half-close, answers only the first, and
/// then either closes (`close`) or holds the connection open without a word until `release`.
fn answers_one_line(
    close: bool,
) -> (
    String,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut request = Vec::new();
        s.read_to_end(&mut request).unwrap();
        assert_eq!(request, b"a\nb\n");
        s.write_all(b"A\n").unwrap();
        if !close {
            // Silent, connection open, until the test is done with the client.
            let _ = released.recv_timeout(LIMIT);
        }
    });
    (addr, release, server)
}

#[test]
fn a_server_that_answers_one_of_two_lines_is_described_as_it_behaved() {
    // It closes after the first reply: exit 1.
    let (addr, _release, server) = answers_one_line(true);
    let out = upcase(&["send", "--addr", &addr, "--timeout", "5"], b"a\nb\n");
    server.join().unwrap();
    let err = stderr(&out);
    assert_eq!(out.stdout, b"A\n", "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("1 of 2 replies arrived; the server closed the connection"),
        "{err}"
    );
    // It goes silent with the connection open: exit 4, after about two timeouts.
    let (addr, release, server) = answers_one_line(false);
    let started = Instant::now();
    let out = upcase(&["send", "--addr", &addr, "--timeout", "0.3"], b"a\nb\n");
    let took = started.elapsed();
    release.send(()).unwrap();
    server.join().unwrap();
    let err = stderr(&out);
    assert_eq!(out.stdout, b"A\n", "{err}");
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("1 of 2 replies arrived"), "{err}");
    assert!(
        err.contains("the server went silent (no reply for 0.3 s)"),
        "{err}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

/// `--io` picks the workers' driver, the log says which runs, and either one serves TCP and UDP
/// (`--io` beats `UPCASE_IO`, which the suite may set). A bad value is a usage error.
#[test]
fn io_flag_selects_the_driver_and_the_log_says_which() {
    if common::skip_under_wine("--io chooses between Linux's drivers; Windows has one") {
        return;
    }
    for (flag, says) in [
        ("epoll", "io driver: epoll (as configured)"),
        ("uring", "io driver: io_uring"),
    ] {
        let mut server =
            ServerProc::start(&["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--io", flag]);
        server.wait_for_log(says);
        server.wait_for_log(&format!("io=\"{flag}\""));
        let tcp = format!("{}", server.tcp[0]);
        let udp = format!("{}", server.udp[0]);
        let out = upcase(&["send", "--addr", &tcp, &format!("over {flag}")], b"");
        assert_eq!(
            out.stdout,
            format!("OVER {}\n", flag.to_uppercase()).as_bytes()
        );
        let out = upcase(&["send", "--udp", "--addr", &udp, "datagram"], b"");
        assert_eq!(out.stdout, b"DATAGRAM\n", "{flag}");
        assert!(server.terminate().success());
        let counters = server.stop_counters();
        assert_eq!((counters["lines"], counters["datagrams"]), (1, 1), "{flag}");
    }
    let out = upcase(&["serve", "--io", "kqueue"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auto, uring, epoll"));
}
