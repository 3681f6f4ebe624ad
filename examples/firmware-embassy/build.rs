//! Links a real image for the target in use. The QEMU image (thumbv7m-none-eabi) gets
//! `qemu/memory.x` (the LM3S6965) and `qemu/device.x`, copied to OUT_DIR (they are not in the
//! package's root, where the linker would find them first for the board image too); the board image gets embassy-stm32's
//! generated `memory.x` (feature `memory-x`) and defmt's `defmt.x`. Both pass `-Tlink.x`: a
//! build without it links a 0-byte image without complaint.

use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let board = env::var_os("CARGO_FEATURE_BOARD_NUCLEO_F429ZI").is_some();
    println!("cargo:rerun-if-changed=qemu/memory.x");
    println!("cargo:rerun-if-changed=qemu/device.x");
    if board {
        assert!(
            target == "thumbv7em-none-eabihf",
            "feature board-nucleo-f429zi builds for the STM32F429 (Cortex-M4F): pass \
             --target thumbv7em-none-eabihf, not {target:?}"
        );
        println!("cargo:rustc-link-arg=-Tlink.x");
        println!("cargo:rustc-link-arg=-Tdefmt.x");
        return;
    }
    assert!(
        target == "thumbv7m-none-eabi",
        "the QEMU image is built for the LM3S6965 (Cortex-M3), not {target:?}: run cargo from \
         examples/firmware-embassy (its .cargo/config.toml sets the target), or add \
         --features board-nucleo-f429zi --target thumbv7em-none-eabihf for the board"
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("qemu/memory.x")).expect("write memory.x");
    fs::write(out.join("device.x"), include_bytes!("qemu/device.x")).expect("write device.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=-Tlink.x");
}
