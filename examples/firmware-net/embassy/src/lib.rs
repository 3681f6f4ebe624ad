//! The embassy-net recipe of `core/README.md` ("On a network stack"), compiled for a thumb
//! target so the snippet there cannot rot: `cargo build --target thumbv7em-none-eabihf` in this
//! folder. Nothing here runs; a firmware spawns `serve_tcp` once per client it serves at once.

#![no_std]

use embassy_net::{Stack, tcp::TcpSocket};
use embassy_time::{Instant, Timer};
use upcase_core::{LineFramer, Session, Timeouts, Uppercase, asynch};

/// The session's clock: embassy-time's, in milliseconds.
pub struct EmbassyClock;

impl asynch::Clock for EmbassyClock {
    fn now_ms(&self) -> u64 {
        Instant::now().as_millis()
    }
    async fn sleep_until(&self, at_ms: u64) {
        Timer::at(Instant::from_millis(at_ms)).await
    }
}

/// One client at a time on `port`: accept, serve until the session closes, close, repeat.
/// Spawn it N times (each with its own buffers) to serve N clients at once.
pub async fn serve_tcp(stack: Stack<'_>, port: u16) -> ! {
    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
    let mut line = [0u8; 257]; // lines of up to 256 bytes
    let mut staging = [0u8; 64]; // replies are batched here before each write
    // The core's timers: a silent peer is closed after 60 s, one that reads nothing after 30 s.
    // smoltcp lingers after the FIN by itself, so the session does not.
    let timeouts = Timeouts::NONE.idle_ms(60_000).write_stall_ms(30_000);
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
        if socket.accept(port).await.is_err() {
            continue;
        }
        let mut session = Session::lines(LineFramer::new(&mut line[..]), Uppercase::new())
            .with_timeouts(timeouts);
        // Until the session closes (EOF answered, a timeout), or the connection fails.
        let _ = asynch::serve_timed(&mut socket, &mut session, &mut staging, &EmbassyClock).await;
        socket.close();
        let _ = socket.flush().await; // the last replies and the FIN, acknowledged
    }
}
