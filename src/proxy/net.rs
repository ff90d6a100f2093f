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
use tokio::runtime::Handle;

/// The queue of connections not yet accepted, per listening socket (what
/// tokio and mio use).
const LISTEN_BACKLOG: i32 = 1024;

/// What a [`Socket`] is registered for: reading, writing, and on Linux
/// urgent data.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const INTEREST: Interest = Interest::READABLE
    .add(Interest::WRITABLE)
    .add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE);

/// What a read waits for: bytes, end of stream, an error, or urgent data.
/// (An error is always reported by epoll; asking for it here only makes
/// it show in the readiness a read sees, which tells a reset from a FIN.)
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const READ_INTEREST: Interest = Interest::READABLE
    .add(Interest::PRIORITY)
    .add(Interest::ERROR);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const READ_INTEREST: Interest = Interest::READABLE.add(Interest::ERROR);

/// A connected TCP socket, non-blocking and registered with the runtime.
#[derive(Debug)]
pub struct Socket {
    pub(crate) fd: AsyncFd<mio::net::TcpStream>,
}

/// Registers a mio socket with the runtime for `interest`. tokio has no
/// safe way (since 1.51.6 its safe constructors of `AsyncFd` are
/// deprecated as unsound: they cannot know that the descriptor stays open).
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
        // A connection set up makes the socket plainly writable (EPOLLOUT);
        // one that failed reports an error or a hang-up as well, and its
        // pending error says why. Only then is the error asked for, which
        // saves a getsockopt(2) per connection.
        let ready = socket.fd.writable().await?.ready();
        if !ready.is_writable() || ready.is_write_closed() || ready.is_error() {
            if let Some(err) = socket.fd.get_ref().take_error()? {
                return Err(err);
            }
        }
        Ok(socket)
    }

    /// Registers an accepted stream with `runtime`, whose thread then
    /// serves it.
    pub(crate) fn adopt(stream: mio::net::TcpStream, runtime: &Handle) -> io::Result<Socket> {
        let _enter = runtime.enter();
        Socket::register(stream)
    }

    /// Takes the socket off its runtime (one epoll_ctl(2) call), for
    /// [`Socket::adopt`] by another.
    pub(crate) fn detach(self) -> mio::net::TcpStream {
        self.fd.into_inner()
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

    /// The address of this end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// Writes all of `buf` (a few bytes of kite's own, such as a PROXY
    /// protocol header, before the relay starts).
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        while !buf.is_empty() {
            let n = (self.fd)
                .async_io(Interest::WRITABLE, |mut s| s.write(buf))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
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
        Listener::listen(bound_socket(addr, false)?)
    }

    /// Binds one listening socket on `addr` for each runtime in `runtimes`,
    /// each registered with its runtime. With more than one they share the
    /// port through SO_REUSEPORT: the kernel hands each new connection to
    /// one of them by its addresses, so a connection stays on the thread
    /// that accepted it. With none, one listener on the current runtime.
    /// Port 0 picks one free port for them all.
    ///
    /// SO_REUSEPORT would also let these sockets join the group of another
    /// process of the same user already listening on `addr` (a second kite,
    /// say), silently splitting its connections; so a plain bind first
    /// checks that the port is free, and a taken port fails with
    /// `AddrInUse` as a single listener would.
    pub fn bind_on(addr: SocketAddr, runtimes: &[Handle]) -> io::Result<Vec<Listener>> {
        if runtimes.len() <= 1 {
            let socket = bound_socket(addr, false)?;
            let _enter = runtimes.first().map(Handle::enter);
            return Listener::listen(socket).map(|listener| vec![listener]);
        }
        // Bound but not listening, this one takes no connection of its own;
        // it also settles port 0 to one port for the whole group.
        let addr = {
            let probe = bound_socket(addr, false)?;
            let local = probe.local_addr()?.as_socket();
            local.ok_or_else(|| io::Error::other("bound to a non-IP address"))?
        };
        let sockets = runtimes
            .iter()
            .map(|_| bound_socket(addr, true))
            .collect::<io::Result<Vec<_>>>()?;
        sockets
            .into_iter()
            .zip(runtimes)
            .map(|(socket, runtime)| {
                let _enter = runtime.enter();
                Listener::listen(socket)
            })
            .collect()
    }

    /// Listens on a bound socket, registered with the current runtime.
    fn listen(socket: socket2::Socket) -> io::Result<Listener> {
        socket.listen(LISTEN_BACKLOG)?;
        let listener = mio::net::TcpListener::from_std(socket.into());
        Ok(Listener {
            fd: register(listener, Interest::READABLE)?,
        })
    }

    /// The next connection: accept4(2) makes it non-blocking at once.
    pub async fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        let (stream, peer) = self.accept_stream().await?;
        Ok((Socket::register(stream)?, peer))
    }

    /// The next connection, not yet registered with a runtime: see
    /// [`Socket::adopt`].
    pub(crate) async fn accept_stream(&self) -> io::Result<(mio::net::TcpStream, SocketAddr)> {
        self.fd
            .async_io(Interest::READABLE, |listener| listener.accept())
            .await
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }
}

/// A non-blocking TCP socket bound to `addr`, with SO_REUSEADDR (as tokio's
/// and mio's listeners have) and, if `shared`, SO_REUSEPORT.
///
/// It also has TCP_NODELAY, which on Linux the connections it accepts
/// inherit: set once here, it costs no setsockopt(2) per connection.
fn bound_socket(addr: SocketAddr, shared: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
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
        // Inherited from the listener, which the proxy relies on.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert!(server.0.fd.get_ref().nodelay().unwrap());

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
            let n = socket2::SockRef::from(client.fd.get_ref()).send_out_of_band(b"!");
            assert_eq!(n.unwrap(), 1);
            let ready = server.fd.ready(Interest::PRIORITY).await.unwrap();
            assert!(ready.ready().is_priority());
        }
    }

    /// Listeners on two proxy threads share one port: connections land on
    /// both, each accepted on the thread its listener belongs to.
    #[tokio::test]
    async fn a_port_shared_by_threads_spreads_its_connections() {
        let threads = crate::proxy::Threads::start(2).unwrap();
        let group = Listener::bind_on("127.0.0.1:0".parse().unwrap(), threads.runtimes()).unwrap();
        assert_eq!(group.len(), 2);
        let addr = group[0].local_addr().unwrap();
        assert_eq!(group[1].local_addr().unwrap(), addr);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, (listener, runtime)) in group.into_iter().zip(threads.runtimes()).enumerate() {
            let tx = tx.clone();
            runtime.spawn(async move {
                loop {
                    let (_socket, _) = listener.accept().await.unwrap();
                    let thread = std::thread::current().name().map(str::to_owned);
                    tx.send((i, thread)).unwrap();
                }
            });
        }
        let mut clients = Vec::new();
        let mut on = [0; 2];
        for _ in 0..64 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            let (i, thread) = rx.recv().await.unwrap();
            assert_eq!(thread.as_deref(), Some(format!("kite-proxy-{i}").as_str()));
            on[i] += 1;
        }
        // 64 connections all hashed to one listener: one chance in 2^63.
        assert!(on[0] > 0 && on[1] > 0, "connections per listener: {on:?}");
    }

    /// A port already taken, by a plain listener or by another group, is
    /// refused to a new group instead of joined.
    #[tokio::test]
    async fn a_shared_port_is_not_joined_by_a_second_group() {
        let threads = crate::proxy::Threads::start(2).unwrap();
        let first = Listener::bind_on("127.0.0.1:0".parse().unwrap(), threads.runtimes()).unwrap();
        let addr = first[0].local_addr().unwrap();
        let err = Listener::bind_on(addr, threads.runtimes()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");

        let plain = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = plain.local_addr().unwrap();
        let err = Listener::bind_on(addr, threads.runtimes()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        // And with no runtimes given, one listener as before.
        let err = Listener::bind_on(addr, &[]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(plain);
        assert_eq!(Listener::bind_on(addr, &[]).unwrap().len(), 1);
    }
}
