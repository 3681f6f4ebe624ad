//! A server with your own "secret" `prepareReply`, as in the lecture's programs: here, ROT13 on TCP port
//! 65433. Any type implementing `upcase_std::Transform` works; `ByteMap` wraps a byte function.
//!
//! Run: `cargo run -p upcase-std --example custom_transform`, then
//! `cargo run -- send --addr 127.0.0.1:65433 hello` prints `uryyb`.

use upcase_std::{ByteMap, Server, ServerConfig};

/// The secret function: ROT13 on ASCII letters, every other byte unchanged.
fn prepare_reply(b: u8) -> u8 {
    match b {
        b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
        b'A'..=b'Z' => (b - b'A' + 13) % 26 + b'A',
        _ => b,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig::new()
        .tcp(["127.0.0.1:65433"])
        .no_udp()
        .transform(|| Box::new(ByteMap(prepare_reply)));
    let server = Server::bind(config)?;
    println!("listening tcp {}", server.tcp_addrs()[0]);
    // Serves until the process is stopped (`upcase serve` adds the signal handling).
    server.run()?;
    Ok(())
}
