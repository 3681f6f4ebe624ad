//! The embassy-net recipe of `core/README.md` ("On a network stack"), compiled for a thumb
//! target so the snippet there cannot rot: `cargo build --target thumbv7em-none-eabihf` in this
//! folder. Nothing here runs; a firmware spawns `serve_tcp` once per client it serves at once.

#![no_std]

use embassy_net::{Stack, tcp::TcpSocket};
use upcase_core::{LineFramer, Session, Uppercase, asynch};

/// One client at a time on `port`: accept, serve until the session is done, close, repeat.
/// Spawn it N times (each with its own buffers) to serve N clients at once.
pub async fn serve_tcp(stack: Stack<'_>, port: u16) -> ! {
    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
    let mut line = [0u8; 257]; // lines of up to 256 bytes
    let mut staging = [0u8; 64]; // replies are batched here before each write
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
        if socket.accept(port).await.is_err() {
            continue;
        }
        let mut session = Session::lines(LineFramer::new(&mut line[..]), Uppercase::new());
        // Until the peer's EOF has been answered, or the connection fails.
        let _ = asynch::serve(&mut socket, &mut session, &mut staging).await;
        socket.close();
        let _ = socket.flush().await; // the last replies and the FIN, acknowledged
    }
}
