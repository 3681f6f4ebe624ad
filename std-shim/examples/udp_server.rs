//! The lecture's Java UDP server, ported: one reply datagram per request, on port 9876. Unlike
//! the lecture's, the reply has exactly the transform's length (no NUL padding, no stale bytes).
//!
//! Run: `cargo run -p upcase-std --example udp_server`, then `cargo run -p upcase-std --example udp_client -- hello`.

use upcase_std::{Server, ServerConfig, defaults};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig::new().no_tcp().udp([defaults::UDP]);
    let server = Server::bind(config)?;
    println!("listening udp {}", server.udp_addrs()[0]);
    // Serves until the process is stopped (`upcase serve` adds the signal handling).
    server.run()?;
    Ok(())
}
