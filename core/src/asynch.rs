//! Async drivers over `embedded_io_async::{Read, Write}` (feature `async`), for Embassy and
//! other executors. Same behaviour and guarantees as [`crate::blocking`]; each call is a future
//! that holds the same state the blocking call keeps on its stack.

crate::drivers::drivers!(embedded_io_async, [async], [.await]);
