//! The lecture's Java UDP client, ported: read a line from stdin (or take the arguments), send
//! it as one datagram to port 9876, print the reply.
//!
//! Run: `echo hello | cargo run -p upcase-std --example udp_client` against a running server.

use std::time::Duration;
use upcase_std::UdpClient;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sentence = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    if sentence.is_empty() {
        std::io::stdin().read_line(&mut sentence)?;
        sentence.truncate(sentence.trim_end_matches(['\r', '\n']).len());
    }
    let mut client = UdpClient::connect("127.0.0.1:9876", Duration::from_secs(5))?;
    let reply = client.request(sentence.as_bytes())?;
    println!("FROM SERVER: {}", String::from_utf8_lossy(reply));
    Ok(())
}
