//! Clients for library users: [`TcpClient`] (pipelining-capable) and [`UdpClient`].

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;
use upcase_core::{ErrorReply, LineFramer, RequestError, blocking};

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The address could not be resolved, or no address accepted the connection in time.
    Connect(io::Error),
    /// No reply within the timeout.
    TimedOut,
    /// A protocol-level failure of the request, or a transport error (see [`RequestError`]).
    Request(RequestError<io::Error>),
}

impl ClientError {
    fn from_request(e: RequestError<io::Error>) -> Self {
        match e {
            RequestError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Self::TimedOut
            }
            e => Self::Request(e),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::TimedOut => f.write_str("timed out waiting for the reply"),
            Self::Request(RequestError::Io(e)) => write!(f, "network error: {e}"),
            Self::Request(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) | Self::Request(RequestError::Io(e)) => Some(e),
            Self::Request(e) => Some(e),
            Self::TimedOut => None,
        }
    }
}

/// The embedded-io view of a client stream: std's error, `WouldBlock` kept for the timeout check.
struct Stream<'a>(&'a TcpStream);

impl embedded_io::ErrorType for Stream<'_> {
    type Error = io::Error;
}
impl embedded_io::Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut self.0, buf)
    }
}
impl embedded_io::Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut self.0, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TCP client of the `lines` framing.
///
/// Memory: a reply buffer of `max_reply + 1` bytes, allocated once. Every call blocks for at
/// most the timeout given to [`connect`](Self::connect) per read or write.
///
/// # Example
///
/// An error reply from the server is an error of the request,
/// [`RequestError::Rejected`], and the connection goes on:
///
/// ```
/// use std::time::Duration;
/// use upcase_std::{ClientError, ErrorReply, RequestError};
/// use upcase_std::{Server, ServerConfig, TcpClient};
///
/// let config = ServerConfig::new().tcp(["127.0.0.1:0"]).no_udp().max_line(8);
/// let server = Server::bind(config)?;
/// let (addr, stop) = (server.tcp_addrs()[0], server.shutdown_handle());
/// let running = std::thread::spawn(move || server.run());
///
/// let mut client = TcpClient::connect(addr, Duration::from_secs(5))?;
/// assert_eq!(client.request(b"short")?, b"SHORT");
/// match client.request(b"far too long") {
///     Err(ClientError::Request(RequestError::Rejected(e))) => {
///         assert_eq!(e, ErrorReply::LineTooLong)
///     }
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(client.request(b"again")?, b"AGAIN");
///
/// drop(client);
/// stop.shutdown();
/// assert_eq!(running.join().unwrap()?.overlong, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TcpClient {
    stream: TcpStream,
    replies: LineFramer<Vec<u8>>,
}

impl TcpClient {
    /// Connects to the first address of `addr` that accepts within `timeout`, and uses `timeout`
    /// for every later read and write. Replies may be up to 3 × 8192 bytes long (an 8192-byte
    /// line that triples); use [`with_max_reply`](Self::with_max_reply) for more.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] when no address could be reached.
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Self, ClientError> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addr.to_socket_addrs().map_err(ClientError::Connect)? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    let setup = || -> io::Result<()> {
                        stream.set_read_timeout(Some(timeout))?;
                        stream.set_write_timeout(Some(timeout))?;
                        stream.set_nodelay(true)
                    };
                    setup().map_err(ClientError::Connect)?;
                    return Ok(Self {
                        stream,
                        replies: LineFramer::new(vec![0u8; 3 * 8192 + 1]),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(ClientError::Connect(last))
    }

    /// Replaces the reply buffer so replies of up to `max_reply` bytes are accepted.
    pub fn with_max_reply(mut self, max_reply: usize) -> Self {
        self.replies = LineFramer::new(vec![0u8; max_reply.saturating_add(1)]);
        self
    }

    /// The server's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// Sends `line` and returns its reply (without `\n`).
    ///
    /// # Errors
    ///
    /// As [`RequestError`], or [`ClientError::TimedOut`].
    pub fn request(&mut self, line: &[u8]) -> Result<&[u8], ClientError> {
        let mut io = Stream(&self.stream);
        if let Err(e) = blocking::send_line(&mut io, line) {
            // A server that refused the connection has sent its reason before closing: a
            // failed send shows that reason rather than the broken pipe.
            if let RequestError::Io(_) = e
                && let Err(RequestError::Rejected(why)) =
                    blocking::recv_line(&mut io, &mut self.replies)
            {
                return Err(ClientError::Request(RequestError::Rejected(why)));
            }
            return Err(ClientError::from_request(e));
        }
        blocking::recv_line(&mut io, &mut self.replies).map_err(ClientError::from_request)
    }

    /// Splits the client into a sending half and a receiving half that can run on two threads,
    /// for pipelining: send many lines, read the replies as they come, in order.
    pub fn split(&mut self) -> (TcpSender<'_>, TcpReceiver<'_>) {
        (
            TcpSender(&self.stream),
            TcpReceiver {
                stream: &self.stream,
                replies: &mut self.replies,
            },
        )
    }
}

/// The sending half of a [`TcpClient`], from [`TcpClient::split`].
pub struct TcpSender<'a>(&'a TcpStream);

impl TcpSender<'_> {
    /// Sends one line (a `\n` is appended). Does not wait for the reply.
    ///
    /// # Errors
    ///
    /// [`RequestError::Newline`] if `line` contains `\n`, or a transport error.
    pub fn send_line(&mut self, line: &[u8]) -> Result<(), ClientError> {
        blocking::send_line(&mut Stream(self.0), line).map_err(ClientError::from_request)
    }

    /// Closes the sending side (a half-close). The server answers what it has and then
    /// closes; the receiving half still gets every reply.
    pub fn finish(self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

/// The receiving half of a [`TcpClient`], from [`TcpClient::split`].
pub struct TcpReceiver<'a> {
    stream: &'a TcpStream,
    replies: &'a mut LineFramer<Vec<u8>>,
}

impl TcpReceiver<'_> {
    /// The next reply line, without its `\n`.
    ///
    /// # Errors
    ///
    /// [`RequestError::UnexpectedEof`] once the server has closed, an error reply as
    /// [`RequestError::Rejected`], or [`ClientError::TimedOut`].
    pub fn recv_line(&mut self) -> Result<&[u8], ClientError> {
        blocking::recv_line(&mut Stream(self.stream), self.replies)
            .map_err(ClientError::from_request)
    }
}

/// A UDP client: one datagram out, one datagram back.
///
/// Memory: a 64 KiB receive buffer, allocated once.
///
/// # Example
///
/// A lost request, or one the server drops, is a timeout: UDP has no error reply.
///
/// ```
/// use std::time::Duration;
/// use upcase_std::{ClientError, UdpClient};
///
/// // A socket that never answers.
/// let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let mut client = UdpClient::connect(silent.local_addr()?, Duration::from_millis(50))?;
/// assert!(matches!(client.request(b"hello"), Err(ClientError::TimedOut)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct UdpClient {
    socket: UdpSocket,
    buf: Vec<u8>,
}

impl UdpClient {
    /// Binds an ephemeral local port of the right address family and connects it to the first
    /// address of `addr`, so only that server's datagrams are received. `timeout` bounds each
    /// [`request`](Self::request).
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] when the address cannot be resolved or the socket set up.
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Self, ClientError> {
        let addr = addr
            .to_socket_addrs()
            .map_err(ClientError::Connect)?
            .next()
            .ok_or_else(|| {
                ClientError::Connect(io::Error::new(io::ErrorKind::NotFound, "no address"))
            })?;
        let local: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|e| ClientError::Connect(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let setup = || -> io::Result<UdpSocket> {
            let socket = UdpSocket::bind(local)?;
            socket.connect(addr)?;
            socket.set_read_timeout(Some(timeout))?;
            Ok(socket)
        };
        let socket = setup().map_err(ClientError::Connect)?;
        Ok(Self {
            socket,
            buf: vec![0u8; 65536],
        })
    }

    /// Sends `payload` as one datagram and returns the reply datagram.
    ///
    /// A reply is read as [`TcpClient::request`] reads a line ([`PROTOCOL.md`](upcase_core::spec)
    /// §2.3): a reply that equals an error line is [`RequestError::Rejected`], so the same
    /// request gets the same reading over both transports. An uppercase server never sends one
    /// over UDP; only a custom transform's reply can equal one.
    ///
    /// # Errors
    ///
    /// [`ClientError::TimedOut`] when no reply comes in time: the request or its reply was lost,
    /// or the server dropped it (see [`PROTOCOL.md`](upcase_core::spec) §3);
    /// [`RequestError::Rejected`] as above.
    pub fn request(&mut self, payload: &[u8]) -> Result<&[u8], ClientError> {
        let io_err = |e: io::Error| ClientError::from_request(RequestError::Io(e));
        self.socket.send(payload).map_err(io_err)?;
        let n = self.socket.recv(&mut self.buf).map_err(io_err)?;
        let reply = &self.buf[..n];
        match ErrorReply::parse(reply) {
            Some(e) => Err(ClientError::Request(RequestError::Rejected(e))),
            None => Ok(reply),
        }
    }
}
