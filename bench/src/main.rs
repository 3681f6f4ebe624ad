//! `upcase-bench`: the load generator of upcase servers. See `bench.rs`.

mod bench;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = bench::BenchArgs::parse();
    match bench::run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("upcase-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
