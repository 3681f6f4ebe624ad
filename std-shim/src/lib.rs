#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
mod config;
mod net;
mod reactor;
mod server;

pub use client::{ClientError, Receiver, Sender, TcpClient, UdpClient};
pub use config::{Keepalive, MAX_UDP_PAYLOAD, ServerConfig, TransformFactory};
pub use net::BindError;
pub use server::{Server, ShutdownHandle, Stats};
pub use upcase_core::{ByteMap, ErrorReply, Framing, Progress, RequestError, Transform, Uppercase};
