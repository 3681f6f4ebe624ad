#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(unix))]
compile_error!(
    "upcase-std supports Unix-like systems only: its servers use epoll or kqueue (through mio) \
     and Unix socket options"
);

mod client;
mod config;
mod conn;
mod net;
mod server;
mod shared;
mod transform;
mod udp;
mod worker;

pub use client::{ClientError, TcpClient, TcpReceiver, TcpSender, UdpClient};
pub use config::{
    Addresses, ConfigError, Keepalive, Limits, MAX_UDP_PAYLOAD, Runtime, ServerConfig,
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
