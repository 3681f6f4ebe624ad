//! upcase over embassy-net: the protocol core serves TCP and UDP from embassy tasks.
//!
//! - Under QEMU (the default build, `thumbv7m-none-eabi`): an emulated LM3S6965 (Cortex-M3)
//!   and its Stellaris Ethernet MAC, through this crate's own `embassy-net-driver` (`mac.rs`)
//!   and embassy-time driver (`hw/qemu.rs`), over the register-level MAC driver
//!   shared with `examples/firmware-net` (`examples/lm3s6965`). `cargo run --release` boots it.
//! - On a NUCLEO-F429ZI (feature `board-nucleo-f429zi`, `thumbv7em-none-eabihf`): the
//!   STM32F429's Ethernet MAC and LAN8742 PHY through embassy-stm32 (`nucleo.rs`).
//!
//! The application, tasks, sizes and timeouts, is the same on both (`app.rs`). No heap: every
//! buffer is a static or lives in a task's static storage.

#![no_std]
#![no_main]
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod app;
mod diag;
#[allow(unsafe_code)]
mod hw;

#[cfg(not(feature = "board-nucleo-f429zi"))]
mod mac;
#[cfg(not(feature = "board-nucleo-f429zi"))]
mod qemu;

#[cfg(feature = "board-nucleo-f429zi")]
mod nucleo;

/// The image's name, at the start of its ready line (`NAME: serving tcp ...`).
pub const NAME: &str = "upcase-firmware-embassy";
