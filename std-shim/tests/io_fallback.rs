//! Where io_uring cannot run: `Io::Auto` serves over epoll, and `Io::Uring` is an error that says
//! why. Built with the `_uring-unavailable` test seam, whose probe fails as under
//! `kernel.io_uring_disabled=2` (`scripts/ci.sh` runs it so); without the seam, the probe is
//! the kernel's and only the first test runs (`tests/drivers.rs` runs `Io::Uring` itself).
#![cfg(target_os = "linux")]

mod common;

use common::{Running, config, exchange};
use upcase_std::Io;

#[test]
fn auto_serves_whatever_the_kernel_allows() {
    let server = Running::start(config(true, false).io(Io::Auto));
    assert_eq!(exchange(server.tcp(), b"auto\n"), b"AUTO\n");
    assert_eq!(server.stop().lines, 1);
}

#[cfg(feature = "_uring-unavailable")]
#[test]
fn uring_where_it_cannot_run_is_an_unsupported_error_that_says_why() {
    let server = upcase_std::Server::bind(config(true, false).io(Io::Uring)).unwrap();
    let e = server.run().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("io_uring") && text.contains("cannot set up a ring"),
        "{text}"
    );
}
