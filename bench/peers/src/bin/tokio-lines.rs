//! The tokio baseline: tokio's multi-threaded runtime, `tokio_util::codec::LinesCodec` framing,
//! `str::to_uppercase`, one task per connection; and a UDP task per socket.
//!
//! `tokio-lines TCP_ADDR UDP_ADDR` prints `listening tcp ADDR` and `listening udp ADDR`.

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::codec::{Framed, LinesCodec};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let tcp = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let udp = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(tcp).await?;
    let socket = UdpSocket::bind(udp).await?;
    println!("listening tcp {}", listener.local_addr()?);
    println!("listening udp {}", socket.local_addr()?);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let reply = String::from_utf8_lossy(&buf[..n]).to_uppercase();
            let _ = socket.send_to(reply.as_bytes(), peer).await;
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(8192));
            while let Some(Ok(line)) = lines.next().await {
                if lines.send(line.to_uppercase()).await.is_err() {
                    break;
                }
            }
        });
    }
}
