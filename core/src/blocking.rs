//! Blocking drivers over `embedded_io::{Read, Write}` (the traits of `embedded-io` 0.7, which
//! this crate depends on): a UART, a `std` socket through `embedded-io-adapters`, or anything
//! else that blocks.
//!
//! They are thin loops around [`Session`] and [`LineFramer`]; all protocol logic lives there.
//!
//! # On `std`
//!
//! The `embedded-io-adapters` crate (0.7, feature `std`) makes any `std::io::Read + Write` a
//! transport, with `std::io::Error` as its error:
//!
//! ```
//! use embedded_io_adapters::std::FromStd;
//! use std::io::{Read, Write};
//! use std::net::{Shutdown, TcpListener, TcpStream};
//! use upcase_core::{LineFramer, Session, Uppercase, blocking};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
//!     let mut stream = TcpStream::connect(addr)?;
//!     stream.write_all(b"hello\nworld\n")?;
//!     stream.shutdown(Shutdown::Write)?;
//!     let mut replies = Vec::new();
//!     stream.read_to_end(&mut replies)?;
//!     Ok(replies)
//! });
//!
//! // One connection, served on this thread until the client's end of stream is answered.
//! let (stream, _) = listener.accept()?;
//! let mut session = Session::lines(LineFramer::<[u8; 1025]>::new_array(), Uppercase::new());
//! blocking::serve(&mut FromStd::new(stream), &mut session, &mut [0u8; 512])?;
//! assert_eq!(client.join().unwrap()?, b"HELLO\nWORLD\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! That is a thread per connection. `upcase-std` does it otherwise: its server drives
//! [`Session`] itself over non-blocking sockets, many connections per thread, and its clients
//! wrap a `TcpStream` in an adapter of their own, like `FromStd` but keeping `WouldBlock`, so a
//! read timeout is told apart from other errors.

crate::drivers::drivers!(embedded_io, [], []);
