//! `upcase`: the uppercase service's command line. `upcase serve` runs the server (the default
//! when no subcommand is given); `upcase send` is a client.

#[cfg(unix)]
mod activation;
mod args;
#[cfg(unix)]
mod notify;
// Socket activation and readiness are systemd's; elsewhere neither exists.
#[cfg(not(unix))]
#[path = "unmanaged.rs"]
mod activation;
#[cfg(not(unix))]
use activation as notify;
mod platform;
mod send;
mod serve;

use args::{Cli, Command};
use clap::{CommandFactory, Parser};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Completions { shell }) => completions(shell),
        Some(Command::Manpage { dir }) => manpage(dir),
        Some(Command::Send(args)) => {
            init_logging();
            return send::send(args);
        }
        Some(Command::Serve(args)) => {
            init_logging();
            serve::serve(args)
        }
        None => {
            init_logging();
            serve::serve(cli.serve)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("upcase: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Logs to stderr, filtered by RUST_LOG (default `info`). A log line that cannot be written
/// (stderr closed, or a pipe nobody reads) is dropped: logging never stops the server.
fn init_logging() {
    struct Stderr;
    impl Write for Stderr {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = std::io::stderr().write_all(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (filter, bad) = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(f) => (f, None),
        Err(e) => (
            tracing_subscriber::EnvFilter::new("info"),
            std::env::var_os("RUST_LOG").map(|_| e),
        ),
    };
    tracing_subscriber::fmt()
        .with_writer(|| Stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    if let Some(e) = bad {
        tracing::warn!(error = %e, "RUST_LOG is not a valid filter; logging at info");
    }
}

fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    clap_complete::generate(shell, &mut Cli::command(), "upcase", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// upcase(1) on stdout, or every page (one per subcommand) into `dir`. No `help` subcommand:
/// it has no page of its own, so none is listed.
fn manpage(dir: Option<std::path::PathBuf>) -> Result<ExitCode> {
    let cmd = Cli::command().disable_help_subcommand(true);
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    clap_mangen::generate_to(cmd, &dir).map_err(|e| format!("writing {}: {e}", dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("upcase") && n.ends_with(".1"))
        })
        .collect();
    pages.sort();
    let mut out = std::io::stdout().lock();
    for page in pages {
        writeln!(out, "{}", page.display())?;
    }
    Ok(ExitCode::SUCCESS)
}
