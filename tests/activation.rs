//! `upcase serve` under a service manager: sockets passed by `systemd-socket-activate` (TCP with
//! `-l`, UDP with `-d`, both by nesting two of them), a clear error for a socket that does not
//! fit, and the readiness protocol (`READY=1`, `STATUS=`, `STOPPING=1`) to a Unix datagram socket
//! standing in for the manager.
#![cfg(unix)]

mod common;

use common::LIMIT;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::Instant;
use upcase_std::{TcpClient, UdpClient};
const ACTIVATE: &str = "systemd-socket-activate";
/// Why none of this runs against `upcase.exe` under Wine.
const ACTIVATION_IS_SYSTEMDS: &str =
    "socket activation (LISTEN_FDS) and readiness (NOTIFY_SOCKET) are systemd's: Unix only";

/// A process whose stdout and stderr lines arrive on channels; killed on drop.
struct Proc {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line taken so far, for failure messages.
    log: Vec<String>,
}

fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = common::spawn_piped(&mut cmd, "info");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
            log: Vec::new(),
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    fn wait_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no {needle:?} on stderr ({e}):\n{}", self.log.join("\n")),
            }
        }
    }

    /// The next stdout line, bounded.
    fn stdout_line(&mut self) -> String {
        match self.stdout.recv_timeout(LIMIT) {
            Ok(line) => line,
            Err(e) => panic!("no stdout line ({e}):\n{}", self.log.join("\n")),
        }
    }

    /// Waits (bounded) for the exit, and returns it with the rest of stderr.
    fn wait(&mut self) -> (ExitStatus, String) {
        let Some(status) = common::wait_within(&mut self.child, LIMIT) else {
            panic!("did not exit:\n{}", self.log.join("\n"));
        };
        // The pipe ends with the process: the reader thread sends what is left, then hangs up.
        while let Ok(line) = self.stderr.recv_timeout(LIMIT) {
            self.log.push(line);
        }
        (status, self.log.join("\n"))
    }

    /// Sends `SIGTERM` ([`common::signal`]), then [`wait`](Self::wait)s.
    fn terminate(&mut self) -> (ExitStatus, String) {
        common::signal(self.child.id(), "TERM");
        self.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address on 127.0.0.1 whose port nothing holds now ([`common::free_port`]), and the same
/// as the argument of `systemd-socket-activate -l` (which cannot report the port it got for
/// port 0).
fn free_listen_addr() -> (SocketAddr, String) {
    let addr: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    (addr, addr.to_string())
}

fn upcase() -> &'static str {
    env!("CARGO_BIN_EXE_upcase")
}

/// `systemd-socket-activate` waits for the first connection or datagram before it starts the
/// service; each test makes that first contact itself.
fn activate(args: &[&str]) -> Proc {
    let mut cmd = Command::new(ACTIVATE);
    cmd.args(args);
    Proc::spawn(cmd)
}

/// The `listening` line `upcase serve` prints for each socket it serves.
fn listening(p: &mut Proc) -> (String, SocketAddr) {
    let line = p.stdout_line();
    let mut words = line.split(' ');
    assert_eq!(words.next(), Some("listening"), "{line}");
    let kind = words.next().unwrap().to_owned();
    (kind, words.next().unwrap().parse().unwrap())
}

#[test]
fn an_inherited_tcp_socket_is_served_and_nothing_else_is_bound() {
    if common::skip_under_wine(ACTIVATION_IS_SYSTEMDS) {
        return;
    }
    let (addr, l) = free_listen_addr();
    let mut p = activate(&["-l", &l, "--fdname=web", "--", upcase(), "serve"]);
    p.wait_stderr(&format!("Listening on {l}"));
    // The first connection starts the service; it waits in the backlog meanwhile.
    let mut client = TcpClient::connect(addr, LIMIT).unwrap();
    // Exactly one socket, the inherited one: not the default addresses too.
    assert_eq!(listening(&mut p), ("tcp".to_owned(), addr));
    let described = p.wait_stderr("inherited socket");
    assert!(described.contains("fd=3 name=web tcp"), "{described}");
    assert_eq!(client.request("straße".as_bytes()).unwrap(), b"STRASSE");
    drop(client);
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("tcp=[127.0.0.1:") && log.contains("udp=[]"),
        "{log}"
    );
    assert!(log.contains("lines=1"), "{log}");
}

#[test]
fn an_inherited_udp_socket_is_served() {
    if common::skip_under_wine(ACTIVATION_IS_SYSTEMDS) {
        return;
    }
    let (addr, l) = free_listen_addr();
    let mut p = activate(&["-d", "-l", &l, "--", upcase()]);
    p.wait_stderr(&format!("Listening on {l}"));
    // The first datagram starts the service, which then answers it from the socket's queue.
    let mut client = UdpClient::connect(addr, LIMIT).unwrap();
    assert_eq!(client.request(b"datagram").unwrap(), b"DATAGRAM");
    assert_eq!(listening(&mut p), ("udp".to_owned(), addr));
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("tcp=[] udp=[127.0.0.1:"), "{log}");
    assert!(log.contains("datagrams=1"), "{log}");
}

#[test]
fn inherited_tcp_and_udp_together_and_a_flag_adds_its_own() {
    if common::skip_under_wine(ACTIVATION_IS_SYSTEMDS) {
        return;
    }
    // The outer one passes the TCP socket through the inner one, which adds the UDP socket.
    let ((_, tl), (_, ul)) = (free_listen_addr(), free_listen_addr());
    let mut p = activate(&[
        "-l",
        &tl,
        "--",
        ACTIVATE,
        "-d",
        "-l",
        &ul,
        "--",
        upcase(),
        "serve",
        "--udp",
        "127.0.0.1:0",
    ]);
    p.wait_stderr(&format!("Listening on {tl}"));
    let tcp: SocketAddr = tl.parse().unwrap();
    let mut client = TcpClient::connect(tcp, LIMIT).unwrap();
    let mut served = vec![listening(&mut p), listening(&mut p), listening(&mut p)];
    served.sort();
    assert_eq!(served[0], ("tcp".to_owned(), tcp));
    let udp: Vec<SocketAddr> = served[1..].iter().map(|(_, a)| *a).collect();
    assert!(served[1..].iter().all(|(k, _)| k == "udp"), "{served:?}");
    assert!(udp.contains(&ul.parse().unwrap()), "{served:?}");
    assert_eq!(client.request(b"tcp").unwrap(), b"TCP");
    for addr in udp {
        let mut u = UdpClient::connect(addr, LIMIT).unwrap();
        assert_eq!(u.request(b"udp").unwrap(), b"UDP", "{addr}");
    }
    drop(client);
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn a_socket_that_does_not_fit_is_a_clear_error() {
    if common::skip_under_wine(ACTIVATION_IS_SYSTEMDS) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("upcase-activation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("unix.sock");
    let _ = std::fs::remove_file(&path);
    let path_text = path.to_str().unwrap();
    let mut p = activate(&["-l", path_text, "--", upcase(), "serve"]);
    p.wait_stderr(&format!("Listening on {path_text}"));
    let _first = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let (status, log) = p.wait();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("descriptor 3"), "{log}");
    assert!(log.contains("a Unix stream socket"), "{log}");
    assert!(log.contains("ListenStream="), "it says what fits: {log}");
}

#[test]
fn activation_variables_for_another_process_are_ignored_and_bad_ones_are_errors() {
    if common::skip_under_wine(ACTIVATION_IS_SYSTEMDS) {
        return;
    }
    // LISTEN_PID of another process: the flags' sockets are bound as usual.
    let mut cmd = Command::new(upcase());
    cmd.args(["serve", "--tcp", "127.0.0.1:0", "--no-udp"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1");
    let mut p = Proc::spawn(cmd);
    let (kind, addr) = listening(&mut p);
    assert_eq!(kind, "tcp");
    assert_ne!(addr.port(), 0);
    let (status, log) = p.terminate();
    assert!(status.success(), "{log}");
    // Ours, but not a number.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=many exec \"$0\" serve"])
        .arg(upcase());
    let (status, log) = Proc::spawn(cmd).wait();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("LISTEN_FDS=\"many\""), "{log}");
}

/// A Unix datagram socket standing in for the service manager, and the `NOTIFY_SOCKET` value
/// that names it.
fn manager(abstract_name: bool) -> (UnixDatagram, String, Option<std::path::PathBuf>) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let unique = format!("upcase-notify-{}-{n}", std::process::id());
    #[cfg(target_os = "linux")]
    if abstract_name {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(unique.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket.set_read_timeout(Some(LIMIT)).unwrap();
        return (socket, format!("@{unique}"), None);
    }
    assert!(!abstract_name, "abstract names are Linux's");
    let path = std::env::temp_dir().join(unique);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    let name = path.to_str().unwrap().to_owned();
    (socket, name, Some(path))
}

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the limit");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn readiness_protocol(abstract_name: bool) {
    if common::skip_under_wine(ACTIVATION_IS_SYSTEMDS) {
        return;
    }
    let (socket, name, path) = manager(abstract_name);
    let mut cmd = Command::new(upcase());
    cmd.args(["serve", "--tcp", "127.0.0.1:0", "--no-udp"])
        .env("NOTIFY_SOCKET", &name);
    let mut p = Proc::spawn(cmd);
    let (_, addr) = listening(&mut p);
    let ready = recv(&socket);
    let fields: Vec<&str> = ready.lines().collect();
    assert_eq!(fields[0], "READY=1", "{ready}");
    assert!(
        fields[1].starts_with("STATUS=serving: connections=0 "),
        "{ready}"
    );
    // Ready means served: a request is answered now.
    let mut client = TcpClient::connect(addr, LIMIT).unwrap();
    assert_eq!(client.request(b"one").unwrap(), b"ONE");
    drop(client);
    common::signal(p.child.id(), "TERM");
    // Periodic STATUS= lines may come first; STOPPING=1 comes with the drain, counters in it.
    let stopping = loop {
        let state = recv(&socket);
        assert!(!state.contains("READY=1"), "READY=1 twice: {state}");
        if state.contains("STOPPING=1") {
            break state;
        }
        assert!(state.starts_with("STATUS=serving: "), "{state}");
    };
    assert!(
        stopping.starts_with("STOPPING=1\nSTATUS=draining: "),
        "{stopping}"
    );
    assert!(stopping.contains("connections=1 "), "{stopping}");
    // The client holds its reply, but the drain's snapshot may not count it yet: a reply counts
    // once its worker has seen the kernel take it (on io_uring, when it reaps the send's
    // completion). The totals at the exit count it.
    assert!(
        stopping.contains(" lines=1 ") || stopping.contains(" lines=0 "),
        "{stopping}"
    );
    let (status, log) = p.wait();
    assert!(status.success(), "{log}");
    let totals = common::stop_counters(&log);
    assert_eq!((totals["lines"], totals["connections"]), (1, 1), "{log}");
    if let Some(path) = path {
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn readiness_goes_to_a_notify_socket_path() {
    readiness_protocol(false);
}

#[cfg(target_os = "linux")]
#[test]
fn readiness_goes_to_an_abstract_notify_socket() {
    readiness_protocol(true);
}
