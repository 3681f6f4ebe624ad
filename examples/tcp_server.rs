//! The lecture's Python TCP server, ported: listen on 127.0.0.1:65432 and answer each line in
//! uppercase. Unlike the lecture's, it serves many clients at once, frames lines, and stops
//! gracefully on Ctrl-C when run through `upcase serve`; this is the library view of it.
//!
//! Run: `cargo run --example tcp_server`, then `cargo run --example tcp_client -- hello`.

use upcase_std::{Server, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig {
        tcp: vec!["127.0.0.1:65432".into()],
        udp: vec![],
        ..ServerConfig::default()
    };
    let server = Server::bind(config)?;
    println!("listening tcp {}", server.tcp_addrs()[0]);
    server.run();
    Ok(())
}
