//! `upcase-bench`: the load generator of upcase servers (README.md). Exit status: 0 when every
//! reply was verified, 1 when something failed (the reason on stderr), 2 for bad arguments.

mod bench;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = bench::BenchArgs::parse();
    match bench::run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // Nothing was measured: an argument the run could not start with.
        Err(e) => {
            eprintln!("upcase-bench: {e}");
            ExitCode::from(2)
        }
    }
}
