//! The lecture's Java UDP server, ported: one reply datagram per request, on port 9876. Unlike
//! the lecture's, the reply has exactly the transform's length (no NUL padding, no stale bytes).
//!
//! Run: `cargo run --example udp_server`, then `cargo run --example udp_client -- hello`.

use upcase_std::{Server, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig {
        tcp: vec![],
        udp: vec!["127.0.0.1:9876".into()],
        ..ServerConfig::default()
    };
    let server = Server::bind(config)?;
    println!("listening udp {}", server.udp_addrs()[0]);
    server.run();
    Ok(())
}
