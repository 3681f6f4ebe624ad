//! `upcase send`: a client that prints every reply as it arrived, in order.

use crate::args::{MAX_LINE_LIMIT, SendArgs};
use std::io::{BufRead, IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use upcase_std::{
    ClientError, ErrorReply, MAX_UDP_PAYLOAD, RequestError, TcpClient, UdpClient, defaults,
};

/// `upcase send`'s exit status when a reply was an error line from the server.
const EXIT_ERROR_REPLY: u8 = 3;
/// `upcase send`'s exit status when a connect or a reply timed out.
const EXIT_TIMEOUT: u8 = 4;
/// The longest reply `send` accepts: a line of the longest `--max-line` a server can be given,
/// tripled. Allocated as zeroed memory, so only what replies use is ever touched.
const MAX_REPLY: usize = 3 * MAX_LINE_LIMIT as usize;

/// Why `upcase send` stopped before every line was answered: its exit status and its words.
struct Stop {
    code: u8,
    message: String,
}

impl Stop {
    fn failure(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

/// Where `send` prints the replies: stdout, one line per reply, error replies included.
struct Replies<'a> {
    out: std::io::StdoutLock<'a>,
    interactive: bool,
    /// Replies printed, error replies included.
    count: usize,
    /// Of those, error replies.
    errors: usize,
    /// The first error reply, its bytes as they arrived (without the `\n`).
    first_error: Option<Vec<u8>>,
    /// Whether one of them was `error: line too long`, which has a hint of its own.
    line_too_long: bool,
}

impl Replies<'_> {
    fn print(&mut self, line: &[u8]) -> std::result::Result<(), Stop> {
        let mut write = || -> std::io::Result<()> {
            self.out.write_all(line)?;
            self.out.write_all(b"\n")?;
            if self.interactive {
                self.out.flush()?;
            }
            Ok(())
        };
        write().map_err(|e| Stop::failure(format!("writing stdout: {e}")))?;
        self.count += 1;
        Ok(())
    }

    /// An error reply goes to stdout as the server sent it, in its place among the replies:
    /// its bytes, never a rendering of them.
    fn print_error(&mut self, e: ErrorReply) -> std::result::Result<(), Stop> {
        let line = e.reply().strip_suffix(b"\n").unwrap_or(e.reply());
        self.print(line)?;
        self.errors += 1;
        self.first_error.get_or_insert_with(|| line.to_vec());
        self.line_too_long |= e == ErrorReply::LineTooLong;
        Ok(())
    }

    /// "1 of 2 replies arrived" when `sent` lines were sent.
    fn arrived(&self, sent: usize) -> String {
        match self.count {
            1 if sent == 1 => "the reply arrived".to_owned(),
            n => format!("{n} of {sent} replies arrived"),
        }
    }
}

/// `upcase send`: the exit status is 0, 1, 3 or 4 as `SEND_AFTER_HELP` says (clap exits 2).
pub(crate) fn send(args: SendArgs) -> ExitCode {
    let mut replies = Replies {
        out: std::io::stdout().lock(),
        interactive: std::io::stdout().is_terminal(),
        count: 0,
        errors: 0,
        first_error: None,
        line_too_long: false,
    };
    let stop = send_all(&args, &mut replies)
        .and_then(|()| {
            replies
                .out
                .flush()
                .map_err(|e| Stop::failure(format!("writing stdout: {e}")))
        })
        .err();
    if let Some(first) = &replies.first_error {
        let first = String::from_utf8_lossy(first);
        match (replies.errors, replies.count) {
            (_, 1) => eprintln!("upcase: the server's reply was an error line ({first})"),
            (1, of) => eprintln!("upcase: 1 of {of} replies was an error line ({first})"),
            (n, of) => {
                eprintln!("upcase: {n} of {of} replies were error lines (the first: {first})")
            }
        }
        if replies.line_too_long {
            eprintln!(
                "upcase: a line was longer than the server's limit, its --max-line (upcase \
                 serve's default: {} bytes); start the server with a larger --max-line",
                defaults::MAX_LINE
            );
        }
    }
    match stop {
        Some(stop) => {
            eprintln!("upcase: {}", stop.message);
            ExitCode::from(stop.code)
        }
        None if replies.errors > 0 => ExitCode::from(EXIT_ERROR_REPLY),
        None => ExitCode::SUCCESS,
    }
}

/// The exit status and the words for a client error talking to `addr`.
fn client_stop(addr: &str, udp: bool, timeout: Duration, e: &ClientError) -> Stop {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, TimedOut};
    let io_kind = match e {
        ClientError::Connect(io) | ClientError::Request(RequestError::Io(io)) => Some(io.kind()),
        _ => None,
    };
    let timed_out = matches!(e, ClientError::TimedOut) || io_kind == Some(TimedOut);
    let hint = match (io_kind, udp) {
        (Some(ConnectionRefused), false) => {
            "; nothing listens on TCP there (for a UDP server, add --udp)".to_owned()
        }
        // Windows reports a UDP port with nothing listening as a reset.
        (Some(ConnectionRefused | ConnectionReset), true) => {
            "; nothing listens on UDP there".to_owned()
        }
        _ if timed_out && udp => format!(
            " ({} s; the datagram or its reply was lost, or the server dropped it)",
            timeout.as_secs_f64()
        ),
        _ if timed_out => format!(" ({} s)", timeout.as_secs_f64()),
        _ => String::new(),
    };
    Stop {
        code: if timed_out { EXIT_TIMEOUT } else { 1 },
        message: format!("{addr}: {e}{hint}"),
    }
}

fn send_all(args: &SendArgs, replies: &mut Replies<'_>) -> std::result::Result<(), Stop> {
    let timeout = args.timeout;
    let addr = match (&args.addr, args.udp) {
        (Some(addr), _) => addr.clone(),
        (None, false) => defaults::TCP.to_owned(),
        (None, true) => defaults::UDP.to_owned(),
    };
    let target: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| Stop::failure(format!("cannot resolve {addr}: {e}")))?
        .collect();
    let fail = |e: ClientError| client_stop(&addr, args.udp, timeout, &e);

    if !args.text.is_empty() {
        let line = args.text.join(std::ffi::OsStr::new(" "));
        let line = line.as_encoded_bytes();
        if args.udp {
            fits_a_datagram(line)?;
            let mut client = UdpClient::connect(&target[..], timeout).map_err(fail)?;
            let reply = client.request(line).map_err(fail)?;
            return replies.print(reply);
        }
        if line.contains(&b'\n') {
            return Err(Stop {
                code: 2,
                message: "over TCP the words make one line, so they cannot contain a newline \
                          (send several lines on stdin)"
                    .to_owned(),
            });
        }
        let mut client = TcpClient::connect(&target[..], timeout)
            .map_err(fail)?
            .with_max_reply(MAX_REPLY);
        return match client.request(line) {
            Ok(reply) => replies.print(reply),
            Err(ClientError::Request(RequestError::Rejected(e))) => replies.print_error(e),
            Err(e) => Err(fail(e)),
        };
    }

    if args.udp {
        let mut client = UdpClient::connect(&target[..], timeout).map_err(fail)?;
        for line in std::io::stdin().lock().split(b'\n') {
            let line = line.map_err(|e| Stop::failure(format!("reading stdin: {e}")))?;
            fits_a_datagram(&line)?;
            replies.print(client.request(&line).map_err(fail)?)?;
        }
        return Ok(());
    }

    // TCP, pipelined: a thread sends stdin as fast as it comes while replies are read here. It
    // is not joined when the server closes first: it may be waiting for stdin (a terminal), and
    // the process ends without it. So the client lives as long as the process.
    let client = TcpClient::connect(&target[..], timeout)
        .map_err(fail)?
        .with_max_reply(MAX_REPLY);
    let client: &'static mut TcpClient = Box::leak(Box::new(client));
    let (mut tx, mut rx) = client.split();
    let sent = Arc::new(AtomicUsize::new(0));
    // Set just before the half-close: the server closes after it unless it closes first.
    let finishing = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (sent, finishing, addr) = (sent.clone(), finishing.clone(), addr.clone());
        move || -> std::result::Result<(), Stop> {
            for line in std::io::stdin().lock().split(b'\n') {
                let line = line.map_err(|e| Stop::failure(format!("reading stdin: {e}")))?;
                tx.send_line(&line)
                    .map_err(|e| client_stop(&addr, false, timeout, &e))?;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            finishing.store(true, Ordering::SeqCst);
            tx.finish()
                .map_err(|e| Stop::failure(format!("{addr}: network error: {e}")))
        }
    });
    // The reply count when a read last timed out with a line outstanding: a second timeout with
    // no reply in between means that line is overdue by at least `timeout`.
    let mut overdue_at = None;
    loop {
        match rx.recv_line() {
            Ok(reply) => replies.print(reply)?,
            Err(ClientError::Request(RequestError::Rejected(e))) => replies.print_error(e)?,
            Err(ClientError::Request(RequestError::UnexpectedEof)) => break,
            Err(ClientError::TimedOut) => {
                if sent.load(Ordering::SeqCst) <= replies.count {
                    overdue_at = None; // every line is answered: waiting for stdin, not the server
                } else if overdue_at == Some(replies.count) {
                    let sent = sent.load(Ordering::SeqCst);
                    return Err(Stop {
                        code: EXIT_TIMEOUT,
                        message: format!(
                            "{addr}: timed out: {}, then the server went silent (no reply for \
                             {} s)",
                            replies.arrived(sent),
                            timeout.as_secs_f64()
                        ),
                    });
                } else {
                    overdue_at = Some(replies.count);
                }
                continue;
            }
            Err(e) => {
                let mut stop = fail(e);
                let arrived = replies.arrived(sent.load(Ordering::SeqCst));
                stop.message = format!("{arrived}; then {}", stop.message);
                return Err(stop);
            }
        }
        overdue_at = None;
    }
    let early = if finishing.load(Ordering::SeqCst) {
        writer
            .join()
            .map_err(|_| Stop::failure("the stdin thread panicked"))??;
        let sent = sent.load(Ordering::SeqCst);
        (replies.count < sent).then(|| {
            format!(
                "{}; the server closed the connection",
                replies.arrived(sent)
            )
        })
    } else {
        Some(format!(
            "{} {} arrived, then the server closed the connection before all of stdin was sent",
            replies.count,
            if replies.count == 1 {
                "reply"
            } else {
                "replies"
            }
        ))
    };
    match early {
        // A refusal or a shutdown said why in an error reply.
        Some(what) => Err(Stop {
            code: if replies.errors > 0 {
                EXIT_ERROR_REPLY
            } else {
                1
            },
            message: format!("{addr}: {what}"),
        }),
        None => Ok(()),
    }
}

/// A line for `--udp` must fit in one datagram: say so, and what to do, before the system
/// refuses it with "Message too long".
fn fits_a_datagram(line: &[u8]) -> std::result::Result<(), Stop> {
    if line.len() <= MAX_UDP_PAYLOAD {
        return Ok(());
    }
    Err(Stop::failure(format!(
        "a line of {} bytes does not fit in one UDP datagram (at most {MAX_UDP_PAYLOAD} bytes); \
         send it over TCP (without --udp)",
        line.len()
    )))
}
