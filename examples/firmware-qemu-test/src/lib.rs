//! Empty: this package exists for its `tests/qemu.rs`.
