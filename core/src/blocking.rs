//! Blocking drivers over `embedded_io::{Read, Write}`: a UART, a `std` socket through
//! `embedded-io-adapters`, or anything else that blocks.
//!
//! They are thin loops around [`Session`] and [`LineFramer`]; all protocol logic lives there.

crate::drivers::drivers!(embedded_io, [], []);
