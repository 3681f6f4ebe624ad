//! The lecture's Python TCP client, ported: send the command-line argument and print the reply.
//!
//! Run: `cargo run -p upcase-std --example tcp_client -- "hello, world"` against a running server.

use std::time::Duration;
use upcase_std::TcpClient;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let input = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let mut client = TcpClient::connect("127.0.0.1:65432", Duration::from_secs(5))?;
    let reply = client.request(input.as_bytes())?;
    println!("Received {:?}", String::from_utf8_lossy(reply));
    Ok(())
}
