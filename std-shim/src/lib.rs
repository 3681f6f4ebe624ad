#![doc = include_str!("../README.md")]
// No unsafe code, but on Windows one `setsockopt` that socket2 does not wrap (sys/windows.rs),
// and on Linux the io_uring driver's ring (uring/ring.rs): each a module-level allow.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod config;
mod conn;
mod net;
mod server;
mod shared;
mod sys;
mod transform;
mod udp;
#[cfg(target_os = "linux")]
mod uring;
mod worker;

pub use client::{ClientError, TcpClient, TcpReceiver, TcpSender, UdpClient};
pub use config::{
    Addresses, ConfigError, Io, Keepalive, Limits, MAX_UDP_PAYLOAD, Runtime, ServerConfig,
    SocketOptions, TransformFactory, defaults,
};
pub use net::BindError;
pub use server::{CountersHandle, Server, ServerEvent, ShutdownHandle};
pub use shared::{ServerCounters, UdpDrops};
pub use upcase_core::{
    ByteMap, DropReason, ErrorReply, Framing, GuardConfig, Progress, RequestError, Transform,
    Uppercase,
};

// `SECURITY.md` of the repository (a symbolic link in this crate's folder, so that the packaged
// crate carries it too): the server's promises against hostile peers, included so that the docs
// can link to it. The protocol itself is `upcase_core::spec`.
#[doc = include_str!("../SECURITY.md")]
pub mod security {}
