//! The proxy's own TCP sockets: listeners and connections registered with
//! the runtime for urgent data as well as for reading and writing.
//!
//! tokio's `TcpStream` waits for reading and writing only. The splice loop
//! also needs to know when TCP urgent data has come (epoll's `EPOLLPRI`):
//! a read cuts short at the urgent mark, so only without urgent data may a
//! short read be taken for a drained socket, which saves the read that
//! would otherwise say EAGAIN after every message. These types register
//! mio's sockets with that interest from the start, so accepting and
//! connecting cost the same system calls as tokio's.

use std::io;
use std::net::SocketAddr;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// What a [`Socket`] is registered for: reading, writing, and on Linux
/// urgent data.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const INTEREST: Interest = Interest::READABLE
    .add(Interest::WRITABLE)
    .add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE);

/// What a read waits for: bytes, end of stream, or urgent data.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const READ_INTEREST: Interest = Interest::READABLE.add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const READ_INTEREST: Interest = Interest::READABLE;

/// A connected TCP socket, non-blocking and registered with the runtime.
#[derive(Debug)]
pub struct Socket {
    pub(crate) fd: AsyncFd<mio::net::TcpStream>,
}

/// Registers a mio socket with the runtime for `interest`.
#[allow(unsafe_code)]
fn register<T: std::os::fd::AsRawFd>(io: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: mio's sockets own their descriptor: it stays open, and
    // as_raw_fd() returns it, for as long as the socket lives, which is as
    // long as the AsyncFd that takes it over.
    unsafe { AsyncFd::register_with_interest(io, interest) }.map_err(io::Error::from)
}

impl Socket {
    fn register(stream: mio::net::TcpStream) -> io::Result<Socket> {
        Ok(Socket {
            fd: register(stream, INTEREST)?,
        })
    }

    /// Connects to `addr`: one socket(2), one connect(2), then a wait for
    /// the connection to be set up (or refused).
    pub async fn connect(addr: SocketAddr) -> io::Result<Socket> {
        let socket = Socket::register(mio::net::TcpStream::connect(addr)?)?;
        // Writable means connected, or failed: the pending error tells.
        let _ready = socket.fd.writable().await?;
        if let Some(err) = socket.fd.get_ref().take_error()? {
            return Err(err);
        }
        Ok(socket)
    }

    /// Takes over a tokio stream (`kite attach --listen`, tests): it is
    /// registered anew, which costs two epoll_ctl(2) calls.
    pub fn from_tokio(stream: tokio::net::TcpStream) -> io::Result<Socket> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(true)?;
        Socket::register(mio::net::TcpStream::from_std(stream))
    }

    /// Sets TCP_NODELAY: small writes leave at once.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.fd.get_ref().set_nodelay(nodelay)
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().peer_addr()
    }
}

/// A listening TCP socket whose accepted connections are [`Socket`]s.
#[derive(Debug)]
pub struct Listener {
    fd: AsyncFd<mio::net::TcpListener>,
}

impl Listener {
    /// Binds `addr` (with SO_REUSEADDR, as tokio's listeners do) and
    /// listens.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let listener = mio::net::TcpListener::bind(addr)?;
        Ok(Listener {
            fd: register(listener, Interest::READABLE)?,
        })
    }

    /// The next connection: accept4(2) makes it non-blocking at once.
    pub async fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        let (stream, peer) = self
            .fd
            .async_io(Interest::READABLE, |listener| listener.accept())
            .await?;
        Ok((Socket::register(stream)?, peer))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A listener accepts what a socket connects, and bytes cross.
    #[tokio::test]
    async fn connect_and_accept() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(Socket::connect(addr), listener.accept());
        let (client, server) = (connected.unwrap(), accepted.unwrap());
        assert_eq!(server.1, client.fd.get_ref().local_addr().unwrap());
        assert_eq!(client.peer_addr().unwrap(), addr);
        client.set_nodelay(true).unwrap();
        assert!(client.fd.get_ref().nodelay().unwrap());

        client.fd.get_ref().write_all(b"hi").unwrap();
        let mut got = [0; 2];
        let n = server
            .0
            .fd
            .async_io(Interest::READABLE, |mut s| s.read(&mut got))
            .await
            .unwrap();
        assert_eq!(&got[..n], &b"hi"[..n]);
    }

    /// Connecting where nothing listens fails with the refusal, not a hang
    /// and not a socket that only fails later.
    #[tokio::test]
    async fn refused_connection_is_an_error() {
        let addr = {
            let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            listener.local_addr().unwrap()
        };
        let err = Socket::connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }

    /// A tokio stream taken over keeps working, and waits for urgent data
    /// too (on Linux).
    #[tokio::test]
    async fn from_tokio_registers_for_urgent_data() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let client = Socket::from_tokio(client).unwrap();
        client.fd.get_ref().write_all(b"x").unwrap();
        let ready = server.fd.ready(READ_INTEREST).await.unwrap();
        assert!(ready.ready().is_readable());
        drop(ready);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::fd::AsRawFd;
            #[allow(unsafe_code)]
            // SAFETY: the descriptor is open and the buffer is one byte.
            let n = unsafe {
                libc::send(
                    client.fd.as_raw_fd(),
                    b"!".as_ptr().cast(),
                    1,
                    libc::MSG_OOB,
                )
            };
            assert_eq!(n, 1);
            let ready = server.fd.ready(Interest::PRIORITY).await.unwrap();
            assert!(ready.ready().is_priority());
        }
    }
}
