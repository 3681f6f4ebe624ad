#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Unit tests use std (proptest, Vec, String); the library itself never does.
#[cfg(test)]
extern crate std;

mod datagram;
mod drivers;
mod drop;
mod error;
mod framer;
mod guard;
mod protocol;
mod responder;
mod session;
mod transform;
mod unicode;

pub mod blocking;

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub mod asynch;

// `PROTOCOL.md` of the repository (a symbolic link in this crate's folder, so that the packaged
// crate carries it too): the normative protocol, included so that the docs can link to it.
#[doc = include_str!("../PROTOCOL.md")]
pub mod spec {}

#[cfg(test)]
mod testio;

pub use datagram::{DatagramError, transform_datagram};
pub use drop::DropReason;
pub use error::{RequestError, ServeError};
pub use framer::{Frame, LineFramer};
pub use guard::{GuardConfig, LoopGuard};
pub use protocol::{ERROR_PREFIX, ErrorReply, Framing};
pub use responder::Responder;
pub use session::{CloseReason, Closing, Counters, ReplyEnd, ReplyKind, Session, Timeouts};
pub use transform::{ByteMap, MAX_CARRY, MAX_CHAR_EXPANSION, Progress, Transform, Uppercase};
