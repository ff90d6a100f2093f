//! The buffer path: one read(2) into a buffer the thread's connections
//! share, and one send(2) out, per message; and the half-close that passes
//! an end of stream on.

use std::cell::RefCell;
use std::io::{self, ErrorKind, Read};

use tokio::io::unix::AsyncFdReadyGuard;
use tokio::io::Interest;

use super::Socket;

/// The buffer small exchanges go through: one per thread, reused by every
/// connection. A read that fills it means a stream, which goes through a
/// pipe from then on (on Linux).
pub(super) const BUFFER_SIZE: usize = 16 * 1024;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What one read of [`forward`] found.
pub(super) enum Forwarded {
    /// Nothing more to read now; the readiness is cleared.
    Drained,
    /// End of stream.
    Ended,
    /// `n` bytes read and written, but for `rest`, which `to` could not
    /// take yet. When `last`, they were the last of the stream: its end
    /// came with them.
    Bytes {
        n: usize,
        rest: Option<Vec<u8>>,
        last: bool,
    },
}

/// Reads once from the socket behind `ready` into this thread's buffer and
/// writes what came to `to` as far as it takes it now; the rest is copied
/// out of the buffer (which the next connection on this thread reuses), so
/// only a connection whose peer is slow holds memory of its own.
///
/// A read cut short on a socket whose peer's FIN had come before it (and
/// no reset, no urgent data) took the last bytes of the stream: the kernel
/// takes a FIN in only once every byte before it is in. Those bytes are
/// then the `last`, and go out with MSG_MORE, so that the FIN the caller
/// sends next leaves in the same segment, as HAProxy's does: one TCP
/// segment fewer for every connection whose server closes after its
/// answer (HTTP's `Connection: close`), and no read(2) to learn the end.
pub(super) fn forward(
    ready: &mut AsyncFdReadyGuard<'_, mio::net::TcpStream>,
    to: &Socket,
) -> io::Result<Forwarded> {
    let urgent = urgent_data(ready);
    // Seen before the read, as it must be: `clear_ready` forgets it.
    let fin_came = ended_cleanly(ready);
    BUFFER.with_borrow_mut(|buf| {
        if buf.is_empty() {
            buf.resize(BUFFER_SIZE, 0);
        }
        let n = loop {
            let mut stream = ready.get_inner();
            match stream.read(buf) {
                Ok(0) => return Ok(Forwarded::Ended),
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    ready.clear_ready();
                    return Ok(Forwarded::Drained);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        let drained = n < buf.len() && !urgent;
        if drained {
            // Drained: the next wait sleeps until epoll reports more. The
            // readiness cleared is the one seen before the read, so bytes
            // that came since have raised a newer one, which stays.
            ready.clear_ready();
        }
        let last = drained && fin_came;
        let written = write_now(to, &buf[..n], last)?;
        let rest = (written < n).then(|| buf[written..n].to_vec());
        Ok(Forwarded::Bytes { n, rest, last })
    })
}

/// Whether urgent data may wait behind a read cut short. Where epoll cannot
/// tell, always.
fn urgent_data(ready: &AsyncFdReadyGuard<'_, mio::net::TcpStream>) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return ready.ready().is_priority();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return true;
}

/// Whether the peer of the socket behind `ready` had ended its stream with
/// a FIN (not a reset) when the readiness was seen. The closed state
/// outlives `clear_ready`; an error is reported alongside a reset.
fn ended_cleanly(ready: &AsyncFdReadyGuard<'_, mio::net::TcpStream>) -> bool {
    let seen = ready.ready();
    seen.is_read_closed() && !seen.is_error()
}

/// Writes as much of `bytes` to `to` as it takes now, without waiting:
/// send(2) while the runtime knows `to` to be writable, until EAGAIN
/// (which clears that) or all is written. Returns the bytes written.
///
/// With `more` (on Linux), the bytes are held back, as by MSG_MORE, until
/// the shutdown or close that the caller makes next, whose FIN then leaves
/// with them.
fn write_now(to: &Socket, bytes: &[u8], more: bool) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        let rest = &bytes[written..];
        match to.fd.try_io(Interest::WRITABLE, |s| send(s, rest, more)) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// send(2) with MSG_NOSIGNAL (as std's writes), and MSG_MORE when `more`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send(stream: &mio::net::TcpStream, bytes: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    socket2::SockRef::from(stream).send_with_flags(bytes, flags)
}

/// A plain write: no MSG_MORE here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send(mut stream: &mio::net::TcpStream, bytes: &[u8], _more: bool) -> io::Result<usize> {
    use std::io::Write;
    stream.write(bytes)
}

/// Writes all of `bytes` to `to`, waiting for room as needed.
pub(super) async fn write_all(to: &Socket, mut bytes: &[u8]) -> io::Result<()> {
    loop {
        bytes = &bytes[write_now(to, bytes, false)?..];
        if bytes.is_empty() {
            return Ok(());
        }
        // The guard is dropped at once: write_now clears the readiness
        // itself when the socket is full.
        drop(to.fd.writable().await?);
    }
}

/// Half-closes `stream`: its peer reads end of stream, while the other
/// direction stays open.
pub(super) fn shutdown_write(stream: &Socket) -> io::Result<()> {
    stream.fd.get_ref().shutdown(std::net::Shutdown::Write)
}
