//! Baseline servers live in src/bin.
