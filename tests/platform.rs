//! Compiles and runs the unit tests of `src/platform.rs`, the program's platform seam, until
//! `main.rs` declares it (`mod platform;`); then this file goes, since the tests run with the
//! binary's own. (Integration tests see the package's dependencies, so the module builds here.)
#![allow(dead_code, reason = "main.rs, not these tests, will call the seam")]

#[path = "../src/platform.rs"]
mod platform;
