//! The naive baseline: a thread per connection, `BufReader::read_line`, `str::to_uppercase`,
//! one `write_all` per reply. Lines must be UTF-8 (invalid ones end the connection).
//!
//! `naive TCP_ADDR` prints `listening tcp ADDR` when ready, like `upcase serve`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        writer.write_all(line.to_uppercase().as_bytes())?;
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(addr)?;
    println!("listening tcp {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || serve(stream));
    }
    Ok(())
}
