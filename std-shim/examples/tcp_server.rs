//! The lecture's Python TCP server, ported: listen on 127.0.0.1:65432 and answer each line in
//! uppercase. Unlike the lecture's, it serves many clients at once and frames lines; `upcase serve` is
//! the same server with signal handling and every option on the command line.
//!
//! Run: `cargo run -p upcase-std --example tcp_server`, then `cargo run -p upcase-std --example tcp_client -- hello`.

use upcase_std::{Server, ServerConfig, defaults};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig::new().tcp([defaults::TCP]).no_udp();
    let server = Server::bind(config)?;
    println!("listening tcp {}", server.tcp_addrs()[0]);
    // Serves until the process is stopped (`upcase serve` adds the signal handling).
    server.run()?;
    Ok(())
}
