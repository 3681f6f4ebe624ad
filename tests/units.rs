//! The systemd units in `dist/`: `systemd-analyze verify` accepts them, and their numbers match
//! the server's (the connection cap and the descriptor limit, the drain and the stop timeout, the
//! sockets and upcase's defaults).

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use upcase_std::defaults;

fn unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every value of `key=` in `text`, in order (comments and sections skipped).
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .collect()
}

fn value<'a>(text: &'a str, key: &str) -> &'a str {
    match values(text, key)[..] {
        [v] => v,
        ref other => panic!("{key}= set {} times: {other:?}", other.len()),
    }
}

/// The value of `--flag N` in the service's `ExecStart=`.
fn exec_flag(service: &str, flag: &str) -> u64 {
    let exec = value(service, "ExecStart");
    let mut words = exec.split_whitespace();
    words
        .find(|w| *w == flag)
        .unwrap_or_else(|| panic!("{flag} not in {exec}"));
    words.next().unwrap().parse().unwrap()
}

fn seconds(v: &str) -> Duration {
    Duration::from_secs(v.trim_end_matches('s').parse().unwrap())
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    // `verify` checks that ExecStart's program exists: the units as shipped, with the binary
    // under test in place of /usr/local/bin/upcase.
    let dir = std::env::temp_dir().join(format!("upcase-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let service = unit("upcase.service");
    assert!(
        service.contains("ExecStart=/usr/local/bin/upcase "),
        "{service}"
    );
    let service = service.replace("/usr/local/bin/upcase", env!("CARGO_BIN_EXE_upcase"));
    std::fs::write(dir.join("upcase.service"), service).unwrap();
    std::fs::write(dir.join("upcase.socket"), unit("upcase.socket")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "upcase.socket", "upcase.service"])
        .current_dir(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // Unknown keys and bad values are warnings with status 0: none is allowed.
    assert_eq!(
        said.trim(),
        "",
        "systemd-analyze verify had something to say"
    );
}

#[test]
fn the_units_numbers_match_the_servers() {
    let (socket, service) = (unit("upcase.socket"), unit("upcase.service"));
    // A descriptor per connection, and room for listeners, event loops and stdio.
    let conns = exec_flag(&service, "--max-conns");
    let nofile: u64 = value(&service, "LimitNOFILE").parse().unwrap();
    assert!(
        nofile >= conns + 64,
        "LimitNOFILE={nofile} for {conns} connections"
    );
    assert!(
        nofile <= conns + 1024,
        "LimitNOFILE={nofile} far above the cap {conns}"
    );
    // The stop timeout outlasts the drain, so systemd's SIGKILL never cuts a drain short.
    let drain = Duration::from_secs(exec_flag(&service, "--drain-timeout"));
    let stop = seconds(value(&service, "TimeoutStopSec"));
    assert!(stop > drain, "TimeoutStopSec={stop:?}, drain {drain:?}");
    assert_eq!(value(&service, "KillSignal"), "SIGTERM");
    assert_eq!(value(&service, "Type"), "notify");
    // The hardening the README promises.
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ] {
        assert_eq!(value(&service, key), want, "{key}");
    }
    // The sockets are upcase's defaults, and one process gets them all.
    assert_eq!(values(&socket, "ListenStream"), [defaults::TCP]);
    assert_eq!(values(&socket, "ListenDatagram"), [defaults::UDP]);
    assert_eq!(value(&socket, "Backlog"), defaults::BACKLOG.to_string());
    assert!(values(&socket, "Accept").iter().all(|a| *a == "no"));
}
