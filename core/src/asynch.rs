//! Async drivers over `embedded_io_async::{Read, Write}` (the traits of `embedded-io-async` 0.7;
//! feature `async`), for Embassy and other executors. Same behaviour and guarantees as
//! [`crate::blocking`]; each call is a future that holds the same state the blocking call keeps
//! on its stack. The crate documentation shows `asynch::serve` on an embassy-net socket.

crate::drivers::drivers!(embedded_io_async, [async], [.await]);
