//! Accepted connections, each with a handle that closes it from outside whatever the server
//! is waiting for on it (`bounds` closes a connection that leaves an answer unread), and the
//! bytes its answers hold.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// One accepted connection: the bytes its answers hold, and a way to close it.
pub struct Connection {
    pub(super) remote: Option<SocketAddr>,
    /// Bytes of its answers not yet handed to the transport (changed under the ledger's lock).
    pub(super) held: AtomicUsize,
    /// A second handle on the socket: shutting it down ends the connection, whatever the
    /// server's side of it is waiting for.
    closer: Option<std::net::TcpStream>,
    closed: AtomicBool,
}

impl Connection {
    pub(super) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(closer) = &self.closer
            && let Err(err) = closer.shutdown(std::net::Shutdown::Both)
        {
            tracing::debug!(error = %err, "cannot shut a connection down");
        }
    }

    /// A connection with no socket behind it (closing it only marks it closed).
    #[cfg(test)]
    pub(super) fn detached() -> Arc<Connection> {
        Arc::new(Connection {
            remote: None,
            held: AtomicUsize::new(0),
            closer: None,
            closed: AtomicBool::new(false),
        })
    }

    /// Whether this replica closed it for leaving an answer unread.
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// What a call knows of its connection (in its request's extensions).
#[derive(Clone)]
pub struct ConnectionInfo {
    pub(super) connection: Arc<Connection>,
}

impl ConnectionInfo {
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.connection.remote
    }
}

/// An accepted TCP connection, with Nagle's algorithm off and a handle to close it.
pub struct Accepted {
    stream: TcpStream,
    connection: Arc<Connection>,
}

impl Accepted {
    pub fn new(stream: TcpStream) -> Accepted {
        // A response's trailers go out in a write of their own: with Nagle's algorithm on
        // they waited for the client's delayed ACK (about 40 ms per call).
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot turn Nagle's algorithm off on a connection");
        }
        let closer = {
            use std::os::fd::AsFd;
            stream
                .as_fd()
                .try_clone_to_owned()
                .map(std::net::TcpStream::from)
                .inspect_err(|err| tracing::debug!(error = %err, "cannot keep a handle to close a connection"))
                .ok()
        };
        let connection = Arc::new(Connection {
            remote: stream.peer_addr().ok(),
            held: Default::default(),
            closer,
            closed: AtomicBool::new(false),
        });
        Accepted { stream, connection }
    }
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            connection: self.connection.clone(),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
