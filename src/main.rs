//! The `upcase` command line (the std-shim issue turns this placeholder into the CLI).

fn main() {}
