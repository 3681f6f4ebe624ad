//! Puts `memory.x` on the linker's path and passes `-Tlink.x`, so a build started from any
//! folder links a real image (a missing `-Tlink.x` links a 0-byte image without complaint).

use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    assert!(
        target.starts_with("thumbv7"),
        "upcase-firmware-net is built for a Cortex-M3 or later, not {target:?}: run cargo from \
         examples/firmware-net (its .cargo/config.toml sets the target) or pass --target"
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    fs::write(out.join("device.x"), include_bytes!("device.x")).expect("write device.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=device.x");
    println!("cargo:rustc-link-arg=-Tlink.x");
    if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo:rustc-link-arg=-Tdefmt.x");
    }
}
