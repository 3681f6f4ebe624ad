//! The careful std baseline: a thread per connection, a 64 KiB `BufReader` with
//! `read_until(b'\n')` (memchr inside), `str::to_uppercase` on each valid UTF-8 run with every
//! other byte verbatim (lossless, as PROTOCOL.md §1), and a 64 KiB `BufWriter` flushed only when
//! the reader has nothing buffered, so pipelined replies leave in few writes.
//!
//! `careful TCP_ADDR` prints `listening tcp ADDR` when ready, like `upcase serve`.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return writer.flush();
        }
        for chunk in line.utf8_chunks() {
            writer.write_all(chunk.valid().to_uppercase().as_bytes())?;
            writer.write_all(chunk.invalid())?;
        }
        // The next read would wait for the peer: send what is ready first.
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
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
