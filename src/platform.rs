//! The program's platform seam: what `upcase serve` asks of its operating system beyond sockets
//! (those are `upcase-std`'s, which never changes the process). Each item has one contract on
//! every system and says what it maps to on each.
//!
//! `main.rs` should call these instead of `rlimit`, `/proc` and `signal_hook` directly:
//! `prepare_process` calls [`raise_socket_limit`] and [`backlog_cap`], and `install_signals`
//! waits on [`StopRequests`]. (`docs/platforms.md`, "Porting status", lists the call sites.)

use std::io;

/// Raises the process's limit on open sockets as far as the system lets an unprivileged
/// process: on Unix, the soft `RLIMIT_NOFILE` up to the hard one (every connection holds a file
/// descriptor). Returns the limit in force afterwards, or `None` where no such per-process limit
/// exists (Windows: sockets are kernel handles, bounded by memory only).
///
/// # Errors
///
/// What `getrlimit`/`setrlimit` say.
pub(crate) fn raise_socket_limit() -> io::Result<Option<u64>> {
    imp::raise_socket_limit()
}

/// The system's cap on a listen backlog, where it can be read without privileges: Linux's
/// `net.core.somaxconn` (from `/proc`). `None` elsewhere (macOS and FreeBSD keep it in the
/// `kern.ipc.somaxconn` sysctl; Windows documents no fixed cap) or when it cannot be read.
pub(crate) fn backlog_cap() -> Option<u32> {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|t| t.trim().parse().ok())
    } else {
        None
    }
}

/// A request from the system or the user to stop the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StopRequest {
    name: &'static str,
    number: i32,
}

impl StopRequest {
    /// The request's usual name: `SIGINT` or `SIGTERM` on Unix; `Ctrl-C`, `Ctrl-Break`,
    /// `console closed`, `logoff` or `shutdown` on Windows.
    pub(crate) fn name(self) -> &'static str {
        self.name
    }

    /// The status a process stopped at once by this request exits with: 128 + the signal's
    /// number on Unix (130 for `SIGINT`, 143 for `SIGTERM`). On Windows, 128 + the number of the
    /// C runtime's signal for it: 130 for Ctrl-C (`SIGINT`), 149 for Ctrl-Break (`SIGBREAK`),
    /// 143 for a closed console, a logoff or a shutdown (`SIGTERM`: the system ends the process).
    /// Always in 129..=255, so it fits an exit status.
    pub(crate) fn exit_code(self) -> u8 {
        u8::try_from(128 + self.number).unwrap_or(u8::MAX)
    }
}

/// The stop requests of the process, from the moment [`install`](Self::install) returns: on Unix
/// `SIGINT` (Ctrl-C) and `SIGTERM`; on Windows Ctrl-C, Ctrl-Break, the console window closing,
/// logoff and shutdown. Each is then a [`StopRequest`] returned by [`wait`](Self::wait), and no
/// longer the system's default action (ending the process at once).
///
/// On Windows, the system ends the process about 5 s after a console close, logoff or shutdown
/// request whatever the program does (and only then, since this handler does not return): the
/// drain gets those 5 s.
pub(crate) struct StopRequests(imp::Requests);

impl StopRequests {
    /// Installs the handlers. Call it once per process, before binding the sockets, so that
    /// no request in between ends the process unannounced.
    ///
    /// # Errors
    ///
    /// When the system refuses the handler (`sigaction`, `SetConsoleCtrlHandler`), or on
    /// Windows when called a second time.
    pub(crate) fn install() -> io::Result<Self> {
        imp::Requests::install().map(Self)
    }

    /// Blocks until the next stop request and returns it, in order of arrival. `None` only if
    /// the requests can no longer arrive.
    pub(crate) fn wait(&mut self) -> Option<StopRequest> {
        self.0.wait()
    }
}

#[cfg(unix)]
mod imp {
    use super::StopRequest;
    use signal_hook::consts::{SIGINT, SIGTERM};
    use std::io;

    pub(super) fn raise_socket_limit() -> io::Result<Option<u64>> {
        rlimit::increase_nofile_limit(u64::MAX).map(Some)
    }

    pub(crate) struct Requests(signal_hook::iterator::Signals);

    impl Requests {
        pub(super) fn install() -> io::Result<Self> {
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map(Self)
        }

        pub(super) fn wait(&mut self) -> Option<StopRequest> {
            let number = self.0.forever().next()?;
            let name = if number == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            Some(StopRequest { name, number })
        }
    }
}

#[cfg(windows)]
mod imp {
    use super::StopRequest;
    use std::io;
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use windows_sys::Win32::System::Console::{
        CTRL_BREAK_EVENT, CTRL_C_EVENT, CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT,
        SetConsoleCtrlHandler,
    };
    use windows_sys::core::BOOL;

    pub(super) fn raise_socket_limit() -> io::Result<Option<u64>> {
        Ok(None)
    }

    /// Where the console handler, which Windows calls on a thread of its own, sends each event.
    static EVENTS: Mutex<Option<Sender<u32>>> = Mutex::new(None);

    extern "system" fn on_console_event(event: u32) -> BOOL {
        let sent = EVENTS
            .lock()
            .ok()
            .and_then(|events| events.as_ref()?.send(event).ok())
            .is_some();
        if !sent {
            return 0; // not ours to handle: the next handler, or the default (exit)
        }
        if matches!(
            event,
            CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT
        ) {
            // Windows ends the process as soon as this returns: hold it here while the drain
            // runs. The process ends when main returns, or when the system's time is up.
            loop {
                std::thread::park();
            }
        }
        1
    }

    pub(crate) struct Requests(Receiver<u32>);

    impl Requests {
        pub(super) fn install() -> io::Result<Self> {
            let (tx, rx) = channel();
            {
                let mut events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
                if events.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the console handler is already installed",
                    ));
                }
                *events = Some(tx);
            }
            #[allow(unsafe_code)]
            // SAFETY: `on_console_event` is a function of the right signature for the whole life
            // of the process, and touches only the `EVENTS` static, behind its mutex.
            let added = unsafe { SetConsoleCtrlHandler(Some(on_console_event), 1) };
            if added == 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Self(rx))
        }

        pub(super) fn wait(&mut self) -> Option<StopRequest> {
            let (name, number) = match self.0.recv().ok()? {
                CTRL_C_EVENT => ("Ctrl-C", 2),
                CTRL_BREAK_EVENT => ("Ctrl-Break", 21),
                CTRL_CLOSE_EVENT => ("console closed", 15),
                CTRL_LOGOFF_EVENT => ("logoff", 15),
                CTRL_SHUTDOWN_EVENT => ("shutdown", 15),
                _ => ("console event", 15),
            };
            Some(StopRequest { name, number })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_signal_and_fit_a_status() {
        for (number, code) in [(2, 130), (15, 143), (21, 149), (127, 255), (200, 255)] {
            let r = StopRequest { name: "x", number };
            assert_eq!(r.exit_code(), code);
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_socket_limit_becomes_the_hard_limit() {
        let limit = raise_socket_limit().unwrap().unwrap();
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(limit, soft);
        // macOS also caps it at kern.maxfilesperproc, below an unlimited hard limit.
        if cfg!(target_os = "linux") {
            assert_eq!(soft, hard);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_reports_a_backlog_cap() {
        let cap = backlog_cap().expect("net.core.somaxconn");
        assert!(cap > 0);
    }

    /// Each signal arrives as its request, in order, instead of ending the test process.
    #[cfg(unix)]
    #[test]
    fn sigint_and_sigterm_become_stop_requests() {
        let mut requests = StopRequests::install().unwrap();
        for (signal, name, code) in [
            (signal_hook::consts::SIGTERM, "SIGTERM", 143),
            (signal_hook::consts::SIGINT, "SIGINT", 130),
        ] {
            signal_hook::low_level::raise(signal).unwrap();
            let got = requests.wait().unwrap();
            assert_eq!((got.name(), got.exit_code()), (name, code));
        }
    }
}
