//! Zero-copy splice of two TCP streams, both ways, honouring half-close.
//!
//! Small exchanges (a request, an answer) go through a buffer each thread
//! shares among its connections: one read(2) and one write(2) per message.
//! On Linux a direction that streams moves its bytes socket → pipe →
//! socket with splice(2) instead, so the payload never passes through user
//! space (what HAProxy calls splice-auto). A direction holds a pipe only
//! while a stream moves: it takes one from a per-thread pool and gives it
//! back empty once the burst is over, so idle connections cost two sockets
//! and no pipe or buffer. When no pipe can be had (out of descriptors, say)
//! every burst goes through the buffer.
//!
//! It calls pipe2(2), fcntl(2) and splice(2) directly, which takes
//! `unsafe`.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, ErrorKind, Read};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::io::unix::AsyncFdReadyGuard;
use tokio::io::Interest;

use super::net::{Socket, READ_INTEREST};

/// When a connection last moved a byte, for `--idle-timeout`.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte moved either way.
    last_ms: AtomicU64,
    /// `last_ms` when [`Activity::persistent_check_due`] last said yes.
    checked_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            checked_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Notes that bytes moved just now.
    pub fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Whether bytes moved [`PERSISTENT_AFTER`] or more after it was made
    /// (a connection that goes on exchanging, not a short one), and as
    /// long again since this last said yes: a persistent connection looks
    /// at every thread's counts once per [`PERSISTENT_AFTER`] of traffic
    /// at most, not at every small exchange.
    pub fn persistent_check_due(&self) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        let checked = self.checked_ms.load(Ordering::Relaxed);
        if last < checked + PERSISTENT_AFTER.as_millis() as u64 {
            return false;
        }
        self.checked_ms.store(last, Ordering::Relaxed);
        true
    }

    /// How long since it was made.
    pub fn age(&self) -> Duration {
        self.start.elapsed()
    }

    /// How long no byte has moved either way.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// How long a connection must go on moving bytes to count as persistent
/// ([`Activity::persistent_check_due`]): far beyond a request on a
/// connection of its own, well within the life of a keep-alive one.
pub const PERSISTENT_AFTER: Duration = Duration::from_millis(100);

/// Where a splice reports the bytes it moves, as it moves them.
#[derive(Clone, Copy, Debug)]
pub struct Meter<'a> {
    /// Bytes moved a → b.
    pub a_to_b: &'a Counter,
    /// Bytes moved b → a.
    pub b_to_a: &'a Counter,
    /// Touched whenever bytes move.
    pub activity: &'a Activity,
}

impl Meter<'_> {
    fn moved(&self, counter: &Counter, n: usize) {
        counter.inc_by(n as u64);
        self.activity.touch();
    }
}

/// The buffer small exchanges go through: one per thread, reused by every
/// connection. A read that fills it means a stream, which goes through a
/// pipe from then on (on Linux).
const BUFFER_SIZE: usize = 16 * 1024;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Moves bytes both ways between `a` (the client) and `b` (the backend)
/// until both directions have ended; returns the bytes moved a → b and
/// b → a, which are also added to `meter` as they move.
///
/// End of stream from one side shuts down writing on the other, and the
/// other direction goes on until it ends too. Its end is passed on by the
/// caller, which drops both sockets once the splice returns: closing a
/// socket whose input has ended sends the same FIN as shutdown(2), so the
/// last direction to end skips that call (one system call fewer for every
/// connection). The first error of either direction (a reset, a broken
/// pipe) ends the splice and is returned; the caller then drops both
/// sockets too.
///
/// Writes use MSG_NOSIGNAL; splice(2) into a socket whose peer has gone
/// raises SIGPIPE, which Rust programs ignore unless told otherwise, so
/// both surface as an `EPIPE` error.
pub async fn splice_bidirectional(
    a: &Socket,
    b: &Socket,
    meter: Meter<'_>,
) -> io::Result<(u64, u64)> {
    let mut progress = Progress::default();
    splice_resumable(a, b, meter, &mut progress, &|_| false).await?;
    Ok(progress.moved())
}

/// How far a splice has come: enough to go on with it from where it
/// stopped, on this thread or another (see [`splice_resumable`]).
#[derive(Debug, Default)]
pub struct Progress {
    /// a → b.
    up: Way,
    /// b → a.
    down: Way,
}

impl Progress {
    /// The bytes moved a → b and b → a so far.
    pub fn moved(&self) -> (u64, u64) {
        let moved = |way: &Way| way.moved.load(Ordering::Relaxed);
        (moved(&self.up), moved(&self.down))
    }
}

/// One direction of a splice, as it stood when it last had nothing in hand
/// (see [`one_way`]). All of it is set and read by the one task that runs
/// both directions: Relaxed suffices, which costs no more than plain
/// fields.
#[derive(Debug, Default)]
struct Way {
    moved: AtomicU64,
    /// Its last read filled the buffer: the next burst takes a pipe.
    streaming: AtomicBool,
    ended: AtomicBool,
    /// Whether it waits for its source to become readable with nothing in
    /// hand (no pipe, no bytes held back), so that it may stop right there
    /// and go on later from its `Way` alone. Kept up to date as it runs.
    resting: AtomicBool,
}

/// Why [`splice_resumable`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Both directions have ended.
    Done,
    /// It stopped because `park` asked it to, with nothing in flight:
    /// both sockets may now move to another thread and the splice go on
    /// there with the same [`Progress`].
    Parked,
}

/// [`splice_bidirectional`] that can stop halfway and go on later, on
/// another thread even. Whenever a direction is between two bursts while
/// the other is at rest, it asks `park`, telling it whether the direction
/// streams (a read filled the buffer, where a small exchange would not);
/// on `true` the splice stops there, with no byte held in user space or in
/// a pipe, and returns [`Stop::Parked`]. `progress` then holds all it needs
/// to go on: called again with it, on the same sockets (registered anew
/// with another runtime, say), the splice resumes.
pub async fn splice_resumable(
    a: &Socket,
    b: &Socket,
    meter: Meter<'_>,
    progress: &mut Progress,
    park: &(impl Fn(bool) -> bool + Sync),
) -> io::Result<Stop> {
    let p = &*progress;
    let mut up_done = p.up.ended.load(Ordering::Relaxed);
    let mut down_done = p.down.ended.load(Ordering::Relaxed);
    let mut a_to_b = pin!(one_way(a, b, (&p.up, &p.down), park, |n| {
        meter.moved(meter.a_to_b, n)
    }));
    let mut b_to_a = pin!(one_way(b, a, (&p.down, &p.up), park, |n| {
        meter.moved(meter.b_to_a, n)
    }));
    // Both directions run in this one task, polled in turn; the first error
    // ends both, as does a park (which happens only while the other
    // direction rests, so dropping it loses nothing).
    std::future::poll_fn(|cx| {
        if !up_done {
            match a_to_b.as_mut().poll(cx)? {
                Poll::Ready(Stop::Done) => up_done = true,
                Poll::Ready(Stop::Parked) => return Poll::Ready(Ok(Stop::Parked)),
                Poll::Pending => {}
            }
        }
        if !down_done {
            match b_to_a.as_mut().poll(cx)? {
                Poll::Ready(Stop::Done) => down_done = true,
                Poll::Ready(Stop::Parked) => return Poll::Ready(Ok(Stop::Parked)),
                Poll::Pending => {}
            }
        }
        if up_done && down_done {
            Poll::Ready(Ok(Stop::Done))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Moves `from` → `to` until `from` reaches end of stream, then shuts down
/// writing on `to` so its peer sees the end too, unless the `other`
/// direction has ended already: then `to`'s input has ended, and the close
/// that follows the splice sends the FIN.
/// It goes on from where `way` stood, and leaves in it where it stands
/// when it returns.
///
/// Each wake-up starts with a read into this thread's buffer, written
/// straight out. A read that fills the buffer marks the direction as
/// streaming: its next bursts go through a pipe until one turns out small
/// again. While no bytes come, the direction holds neither a pipe nor a
/// buffer.
///
/// Between bursts, when the `other` direction rests, it asks `park`
/// (whether it streams), and returns [`Stop::Parked`] on `true` before it
/// waits again: nothing is in hand then.
///
/// Only a read decides that `from` is drained or has ended. splice(2) says
/// EAGAIN at TCP urgent data, and 0 there once a FIN has come, although
/// bytes wait behind the mark, while read(2) skips the urgent byte
/// (dropping it) and goes on; so a read follows every splice burst. A read
/// cut short means the socket is drained, unless urgent data has come
/// (epoll says so): then it is read again until EAGAIN.
async fn one_way(
    from: &Socket,
    to: &Socket,
    (way, other): (&Way, &Way),
    park: &(impl Fn(bool) -> bool + Sync),
    moved_now: impl Fn(usize),
) -> io::Result<Stop> {
    let mut moved = way.moved.load(Ordering::Relaxed);
    let mut streaming = way.streaming.load(Ordering::Relaxed);
    loop {
        // Nothing in hand here: all that going on takes is put in `way`,
        // since this direction may stop here, or be dropped while it waits
        // below (when the other one parks).
        way.moved.store(moved, Ordering::Relaxed);
        way.streaming.store(streaming, Ordering::Relaxed);
        if other.resting.load(Ordering::Relaxed) && park(streaming) {
            return Ok(Stop::Parked);
        }
        way.resting.store(true, Ordering::Relaxed);
        let ready = from.fd.ready(READ_INTEREST).await;
        way.resting.store(false, Ordering::Relaxed);
        let mut ready = ready?;
        #[cfg(target_os = "linux")]
        if std::mem::take(&mut streaming) {
            if let Ok(pipe) = pipes::take() {
                // An error may leave bytes in the pipe: it is then
                // dropped (closed), never pooled.
                let burst = pipes::burst_through(&pipe, from, to, &moved_now).await?;
                pipes::give_back(pipe);
                moved += burst;
                streaming = burst >= BUFFER_SIZE as u64;
                // A readiness seen after the burst, for the read below.
                ready = from.fd.ready(READ_INTEREST).await?;
            }
        }
        match forward(&mut ready, to)? {
            Forwarded::Drained => {}
            Forwarded::Ended => break,
            Forwarded::Bytes { n, rest, last } => {
                if let Some(rest) = rest {
                    write_all(to, &rest).await?;
                }
                moved += n as u64;
                moved_now(n);
                if last {
                    break;
                }
                streaming |= n == BUFFER_SIZE;
            }
        }
    }
    way.moved.store(moved, Ordering::Relaxed);
    way.ended.store(true, Ordering::Relaxed);
    way.resting.store(true, Ordering::Relaxed);
    if !other.ended.load(Ordering::Relaxed) {
        shutdown_write(to)?;
    }
    Ok(Stop::Done)
}

/// What one read of [`forward`] found.
enum Forwarded {
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
fn forward(
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
async fn write_all(to: &Socket, mut bytes: &[u8]) -> io::Result<()> {
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
fn shutdown_write(stream: &Socket) -> io::Result<()> {
    stream.fd.get_ref().shutdown(std::net::Shutdown::Write)
}

/// Pipes for splice(2): a per-thread pool, and the burst that moves a
/// stream socket → pipe → socket.
#[cfg(target_os = "linux")]
mod pipes {
    use std::cell::RefCell;
    use std::io::{self, ErrorKind};
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::ptr;

    use super::Socket;

    /// The size each pipe is asked for. More than the 64 KiB default means
    /// fewer system calls per byte; if the kernel refuses (`pipe-max-size`,
    /// or the per-user pipe memory limit), the default size works too.
    const PIPE_SIZE: usize = 256 * 1024;

    /// MOVE is only a hint; NONBLOCK keeps the pipe side from blocking (the
    /// sockets are non-blocking already).
    const FLAGS: libc::c_uint = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;

    /// Pipes kept per thread for the next burst, so a stream costs no
    /// pipe2(2) and close(2) calls. Idle pipes hold no pages, only their
    /// two descriptors.
    const POOL_MAX: usize = 16;

    #[cfg(test)]
    tokio::task_local! {
        /// While set, pipe creation fails as if with EMFILE, so tests can
        /// drive the buffer-only path through the public function.
        pub(super) static FAIL_PIPES: ();
        /// While set, counts the pipes taken, so tests can tell which
        /// path a burst took.
        pub(super) static PIPES_TAKEN: std::sync::Arc<std::sync::atomic::AtomicU64>;
    }

    /// The pipes this thread keeps; counted in `kite_pipes_pooled`.
    struct Pool(Vec<Pipe>);

    impl Drop for Pool {
        fn drop(&mut self) {
            crate::metrics::PIPES_POOLED.dec_by(self.0.len() as i64);
        }
    }

    thread_local! {
        static POOL: RefCell<Pool> = const { RefCell::new(Pool(Vec::new())) };
    }

    /// A pipe from this thread's pool, or a new one (which fails when
    /// descriptors or pipe memory run out).
    pub(super) fn take() -> io::Result<Pipe> {
        #[cfg(test)]
        if FAIL_PIPES.try_with(|_| ()).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        #[cfg(test)]
        let _ = PIPES_TAKEN.try_with(|n| n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let pooled = POOL
            .try_with(|pool| pool.borrow_mut().0.pop())
            .ok()
            .flatten();
        match pooled {
            Some(pipe) => {
                crate::metrics::PIPES_POOLED.dec();
                Ok(pipe)
            }
            None => Pipe::new(),
        }
    }

    /// Gives an empty pipe back to this thread's pool (or closes it when
    /// the pool is full).
    pub(super) fn give_back(pipe: Pipe) {
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.0.len() < POOL_MAX {
                pool.0.push(pipe);
                crate::metrics::PIPES_POOLED.inc();
            }
        });
    }

    /// A non-blocking pipe: the kernel-side buffer of one direction.
    pub(super) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        fn new() -> io::Result<Pipe> {
            let mut fds: [libc::c_int; 2] = [-1; 2];
            // SAFETY: `fds` is an array of two ints, as pipe2(2) requires.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and
            // nothing else owns them; OwnedFd closes them on drop.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // SAFETY: the descriptor is open, and F_SETPIPE_SZ takes an int
            // and touches no memory. A refusal is fine (see PIPE_SIZE).
            unsafe {
                libc::fcntl(
                    write.as_raw_fd(),
                    libc::F_SETPIPE_SZ,
                    PIPE_SIZE as libc::c_int,
                )
            };
            Ok(Pipe { read, write })
        }
    }

    /// Moves what `from` has through the empty `pipe` until splice(2)
    /// finds nothing more for now or reaches an end (the pipe is then
    /// empty): the bytes moved. It never clears `from`'s readiness, since
    /// only a read can tell what splice's EAGAIN or 0 meant (see
    /// `one_way`).
    pub(super) async fn burst_through(
        pipe: &Pipe,
        from: &Socket,
        to: &Socket,
        moved_now: &impl Fn(usize),
    ) -> io::Result<u64> {
        let mut moved = 0;
        loop {
            match splice(from.fd.as_fd(), pipe.write.as_fd(), PIPE_SIZE) {
                Ok(0) => return Ok(moved),
                Ok(n) => {
                    drain(pipe, to, n).await?;
                    moved += n as u64;
                    moved_now(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(moved),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves all `len` bytes held in `pipe` into `to`. The pipe is never
    /// empty while this writes, so EAGAIN means `to`'s send buffer is full,
    /// and clears its readiness: the next wait sleeps until epoll reports
    /// room.
    async fn drain(pipe: &Pipe, to: &Socket, mut len: usize) -> io::Result<()> {
        while len > 0 {
            let mut ready = to.fd.writable().await?;
            match ready.try_io(|to| splice(pipe.read.as_fd(), to.as_fd(), len)) {
                Ok(Ok(0)) => {
                    // Cannot happen with bytes in the pipe; never spin on it.
                    return Err(ErrorKind::WriteZero.into());
                }
                Ok(Ok(n)) => len -= n,
                Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// One splice(2) call moving at most `len` bytes. One end is always a
    /// pipe and the other a socket, so there are no offsets.
    fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        // SAFETY: both descriptors are borrowed, hence open for the whole
        // call; null offsets are what splice(2) takes for pipes and sockets,
        // and it reads or writes no memory of ours.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                ptr::null_mut(),
                to.as_raw_fd(),
                ptr::null_mut(),
                len,
                FLAGS,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use tokio::time::{sleep, timeout};

    use super::*;

    /// A bound on anything that should finish; reaching it means a hang
    /// (generous: shared 2-core machines run these tests under heavy load).
    const LIMIT: Duration = Duration::from_secs(120);

    /// Which path the relay under test takes.
    #[derive(Clone, Copy, Debug)]
    enum Via {
        /// `splice_bidirectional` as callers see it: streams take pipes.
        Public,
        /// `splice_bidirectional` with pipe creation failing: every byte
        /// goes through the buffer.
        Copy,
    }

    /// A client and a backend with a relay task between them:
    /// client ⇄ (a | relay | b) ⇄ backend, all on loopback.
    struct Relay {
        client: TcpStream,
        backend: TcpStream,
        task: JoinHandle<io::Result<(u64, u64)>>,
    }

    /// Two connected loopback sockets.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap());
        let (near, far) = tokio::join!(near, listener.accept());
        (near.unwrap(), far.unwrap().0)
    }

    async fn start(via: Via) -> Relay {
        let (client, a) = socket_pair().await;
        let (b, backend) = socket_pair().await;
        let task = tokio::spawn(relay(via, a, b));
        Relay {
            client,
            backend,
            task,
        }
    }

    /// Relays a ⇄ b the `via` way; when it ends well, checks that the
    /// meter saw exactly the bytes the relay reports.
    async fn relay(via: Via, a: TcpStream, b: TcpStream) -> io::Result<(u64, u64)> {
        let (a, b) = (Socket::from_tokio(a)?, Socket::from_tokio(b)?);
        let (a, b) = (&a, &b);
        let (up, down, activity) = (Counter::default(), Counter::default(), Activity::default());
        let meter = Meter {
            a_to_b: &up,
            b_to_a: &down,
            activity: &activity,
        };
        let moved = match via {
            #[cfg(target_os = "linux")]
            Via::Copy => {
                let forced = async {
                    assert!(pipes::take().is_err(), "the fallback is not forced");
                    splice_bidirectional(a, b, meter).await
                };
                pipes::FAIL_PIPES.scope((), forced).await
            }
            _ => splice_bidirectional(a, b, meter).await,
        }?;
        assert_eq!((up.get(), down.get()), moved, "{via:?}: metered bytes");
        Ok(moved)
    }

    /// Runs a test body, failing it if it takes longer than [`LIMIT`].
    async fn bounded(body: impl Future<Output = ()>) {
        bounded_value(body).await
    }

    /// The value of a test body, failing it if it takes longer than
    /// [`LIMIT`].
    async fn bounded_value<T>(body: impl Future<Output = T>) -> T {
        timeout(LIMIT, body).await.expect("test hangs")
    }

    /// Waits for the relay task, which must end within [`LIMIT`].
    async fn finish(task: JoinHandle<io::Result<(u64, u64)>>) -> io::Result<(u64, u64)> {
        timeout(LIMIT, task).await.expect("relay hangs").unwrap()
    }

    fn random_bytes(len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        rand::rng().fill_bytes(&mut bytes);
        bytes
    }

    /// `asker` sends a request and half-closes; `answerer` reads it to the
    /// end, and only then sends its answer and closes. Both must arrive
    /// intact.
    async fn ask(mut asker: TcpStream, mut answerer: TcpStream, request: Vec<u8>, answer: Vec<u8>) {
        let answering = tokio::spawn(async move {
            let mut got = Vec::new();
            // Returns only once the half-close has come through.
            answerer.read_to_end(&mut got).await.unwrap();
            answerer.write_all(&answer).await.unwrap();
            (got, answer)
        });
        asker.write_all(&request).await.unwrap();
        asker.shutdown().await.unwrap();
        let mut got = Vec::new();
        asker.read_to_end(&mut got).await.unwrap();
        let (request_got, answer) = answering.await.unwrap();
        assert!(request_got == request, "request corrupted");
        assert!(got == answer, "answer corrupted");
    }

    async fn half_close(via: Via) {
        let (request, answer) = (random_bytes(10_000), random_bytes(6 << 20));
        let (up, down) = (request.len() as u64, answer.len() as u64);

        // The client asks, as in HTTP/1.0.
        let r = start(via).await;
        ask(r.client, r.backend, request.clone(), answer.clone()).await;
        assert_eq!(finish(r.task).await.unwrap(), (up, down), "{via:?}");

        // The backend speaks first and half-closes; the client answers.
        let r = start(via).await;
        ask(r.backend, r.client, request, answer).await;
        assert_eq!(finish(r.task).await.unwrap(), (down, up), "{via:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_close_is_honoured_by_splice() {
        bounded(half_close(Via::Public)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_close_is_honoured_by_the_fallback() {
        bounded(half_close(Via::Copy)).await;
    }

    /// Sends `len` random bytes in random-sized writes, then half-closes;
    /// returns their digest.
    async fn send_random(mut to: impl AsyncWrite + Unpin, len: usize) -> [u8; 32] {
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let mut hash = Sha256::new();
        let mut chunk = vec![0; 128 << 10];
        let mut left = len;
        while left > 0 {
            let n = rng.random_range(1..=chunk.len()).min(left);
            rng.fill_bytes(&mut chunk[..n]);
            hash.update(&chunk[..n]);
            to.write_all(&chunk[..n]).await.unwrap();
            left -= n;
        }
        to.shutdown().await.unwrap();
        hash.finalize().into()
    }

    /// Reads to end of stream; returns the digest and the length.
    async fn receive_all(mut from: impl AsyncRead + Unpin) -> ([u8; 32], usize) {
        let mut hash = Sha256::new();
        let mut buf = vec![0; 64 << 10];
        let mut len = 0;
        loop {
            let n = from.read(&mut buf).await.unwrap();
            if n == 0 {
                return (hash.finalize().into(), len);
            }
            hash.update(&buf[..n]);
            len += n;
        }
    }

    /// Random payloads both ways at once; each side checks what it got.
    async fn exchange(via: Via, up: usize, down: usize) {
        let r = start(via).await;
        let (client_rx, client_tx) = r.client.into_split();
        let (backend_rx, backend_tx) = r.backend.into_split();
        let (sent_up, sent_down, got_up, got_down) = tokio::join!(
            send_random(client_tx, up),
            send_random(backend_tx, down),
            receive_all(backend_rx),
            receive_all(client_rx),
        );
        assert_eq!(got_up, (sent_up, up), "client → backend corrupted");
        assert_eq!(got_down, (sent_down, down), "backend → client corrupted");
        assert_eq!(finish(r.task).await.unwrap(), (up as u64, down as u64));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_connections_keep_their_bytes_intact() {
        let mut rng = rand::rng();
        let mut sizes: Vec<(usize, usize)> = (0..48)
            .map(|_| (rng.random_range(0..=4 << 20), rng.random_range(0..=4 << 20)))
            .collect();
        // Also the edges: nothing at all, and a single byte.
        sizes.extend([(0, 0), (1, 1)]);
        let connections: Vec<_> = sizes
            .into_iter()
            .map(|(up, down)| tokio::spawn(exchange(Via::Public, up, down)))
            .collect();
        bounded(async {
            for connection in connections {
                connection.await.unwrap();
            }
        })
        .await;
    }

    /// Sends one byte of TCP urgent (out-of-band) data, once the socket
    /// has room for it.
    #[cfg(target_os = "linux")]
    async fn send_urgent(stream: &TcpStream) {
        use std::os::fd::AsRawFd;
        loop {
            stream.writable().await.unwrap();
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                // SAFETY: the descriptor is open and the buffer is one
                // readable byte.
                let n = unsafe {
                    libc::send(stream.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB)
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(n)
            });
            match sent {
                Ok(n) => return assert_eq!(n, 1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("send MSG_OOB: {e}"),
            }
        }
    }

    /// splice(2) and read(2) both stop at urgent data; the bytes behind it
    /// must still come through, whether or not a FIN follows them. Each
    /// mark comes right behind 4 MiB, so the direction is streaming (through
    /// a pipe, but for the copy fallback) when it gets there. The urgent
    /// byte itself is dropped, as a plain read drops it.
    #[cfg(target_os = "linux")]
    async fn urgent_data(via: Via) {
        let Relay {
            mut client,
            mut backend,
            task,
        } = start(via).await;
        let mut up = 0;
        for (before, after, end) in [(b"ab", b"cd", false), (b"ef", b"gh", true)] {
            let stream = random_bytes(4 << 20);
            let sending = async {
                client.write_all(&stream).await.unwrap();
                client.write_all(before).await.unwrap();
                send_urgent(&client).await;
                client.write_all(after).await.unwrap();
                if end {
                    client.shutdown().await.unwrap();
                }
            };
            let mut expected = stream.clone();
            expected.extend_from_slice(before);
            expected.extend_from_slice(after);
            let receiving = async {
                let mut got = vec![0; expected.len()];
                backend.read_exact(&mut got).await.unwrap();
                if end {
                    assert_eq!(
                        backend.read(&mut [0; 1]).await.unwrap(),
                        0,
                        "{via:?}: no end"
                    );
                }
                got
            };
            let ((), got) = tokio::join!(sending, receiving);
            assert!(
                got == expected,
                "{via:?}: bytes around the mark lost or corrupted"
            );
            up += expected.len() as u64;
        }
        drop(backend);
        assert_eq!(finish(task).await.unwrap(), (up, 0), "{via:?}");
    }

    /// Urgent data already waiting when the relay starts: its first read
    /// stops at the mark with nothing more to come from the network, so
    /// only the urgent data's own readiness tells it to read on.
    #[cfg(target_os = "linux")]
    async fn urgent_data_waiting(via: Via) {
        let (mut client, a) = socket_pair().await;
        let (b, mut backend) = socket_pair().await;
        client.write_all(b"ab").await.unwrap();
        send_urgent(&client).await;
        client.write_all(b"cd").await.unwrap();
        sleep(Duration::from_millis(50)).await; // all of it in a's queue
        let task = tokio::spawn(relay(via, a, b));
        let mut got = [0; 4];
        backend.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcd", "{via:?}");
        drop((client, backend));
        let _ = finish(task).await;
    }

    #[cfg(target_os = "linux")] // elsewhere it would test the fallback
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn urgent_data_neither_stalls_nor_truncates() {
        bounded(urgent_data_waiting(Via::Public)).await;
        bounded(urgent_data_waiting(Via::Copy)).await;
        bounded(urgent_data(Via::Public)).await;
        bounded(urgent_data(Via::Copy)).await;
    }

    /// `n` requests of 1 KiB from `client`, each answered by `backend`
    /// with 1 KiB, through a relay; both checked.
    async fn small_exchanges(client: &mut TcpStream, backend: &mut TcpStream, n: usize) {
        let (request, answer) = (random_bytes(1024), random_bytes(1024));
        for _ in 0..n {
            client.write_all(&request).await.unwrap();
            let mut got = vec![0; request.len()];
            backend.read_exact(&mut got).await.unwrap();
            assert!(got == request, "request corrupted");
            backend.write_all(&answer).await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            assert!(got == answer, "answer corrupted");
        }
    }

    /// Request and answer of 1 KiB, a hundred times on one connection,
    /// then a 4 MiB stream: the small exchanges take no pipe (they go
    /// through the shared buffer), the stream does.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_exchanges_take_no_pipe_and_streams_do() {
        let (mut client, a) = socket_pair().await;
        let (b, mut backend) = socket_pair().await;
        let taken = std::sync::Arc::new(AtomicU64::new(0));
        let counted = pipes::PIPES_TAKEN.scope(taken.clone(), relay(Via::Public, a, b));
        let task = tokio::spawn(counted);
        bounded(small_exchanges(&mut client, &mut backend, 100)).await;
        assert_eq!(
            taken.load(Ordering::Relaxed),
            0,
            "small exchanges took pipes"
        );
        // The same again, then the stream; the relay ends with both sides.
        bounded(async {
            client.write_all(&random_bytes(1024)).await.unwrap();
            client.write_all(&random_bytes(4 << 20)).await.unwrap();
            client.shutdown().await.unwrap();
            assert_eq!(receive_all(&mut backend).await.1, 1024 + (4 << 20));
            drop(backend);
        })
        .await;
        let moved = finish(task).await.unwrap();
        assert_eq!(moved, (101 * 1024 + (4 << 20), 100 * 1024));
        assert!(taken.load(Ordering::Relaxed) > 0, "the stream took no pipe");
    }

    /// Makes `stream` close with a reset (RST) when dropped.
    fn abort(stream: TcpStream) {
        stream.set_zero_linger().unwrap();
        drop(stream);
    }

    async fn reset_while_backend_sends(via: Via) {
        let Relay {
            mut client,
            mut backend,
            task,
        } = start(via).await;
        backend.write_all(&random_bytes(1 << 20)).await.unwrap();
        let mut first = [0; 1];
        client.read_exact(&mut first).await.unwrap(); // the transfer is under way
        abort(backend);
        // The client stays open and quiet: only the reset can end the relay.
        let started = Instant::now();
        assert!(finish(task).await.is_err(), "{via:?}: reset not reported");
        assert!(started.elapsed() < Duration::from_secs(5), "{via:?}: slow");
        // Dropping the relay's sockets ends the client's stream too.
        let _ = client.read_to_end(&mut Vec::new()).await;
    }

    async fn reset_while_client_sends(via: Via) {
        let Relay {
            client,
            mut backend,
            task,
        } = start(via).await;
        let (_client_rx, mut client_tx) = client.into_split();
        // The client keeps sending until its connection breaks.
        let sending = tokio::spawn(async move {
            let chunk = random_bytes(64 << 10);
            while client_tx.write_all(&chunk).await.is_ok() {}
        });
        let mut some = vec![0; 256 << 10];
        backend.read_exact(&mut some).await.unwrap();
        abort(backend);
        assert!(finish(task).await.is_err(), "{via:?}: reset not reported");
        sending.await.unwrap();
    }

    /// A tokio stream as a mio one, registered nowhere.
    fn unregistered(stream: TcpStream) -> mio::net::TcpStream {
        mio::net::TcpStream::from_std(stream.into_std().unwrap())
    }

    /// When the splice asks to park (given whether the direction streams).
    type Park = std::sync::Arc<dyn Fn(bool) -> bool + Send + Sync>;

    /// One leg of a relay that hops between runtimes: splices on the
    /// runtime it runs on, whose reactor its sockets are registered with,
    /// until done or parked, and hands everything back.
    async fn leg(
        a: Socket,
        b: Socket,
        mut progress: Progress,
        (up, down): (Counter, Counter),
        park: Park,
    ) -> (Socket, Socket, Progress, io::Result<Stop>) {
        let activity = Activity::default();
        let meter = Meter {
            a_to_b: &up,
            b_to_a: &down,
            activity: &activity,
        };
        let stop =
            splice_resumable(&a, &b, meter, &mut progress, &|streaming| park(streaming)).await;
        (a, b, progress, stop)
    }

    /// A relay between `a` and `b` that starts on the first of `runtimes`
    /// and, each time it parks, takes its sockets off that runtime and goes
    /// on on the next: what the proxy does when a connection moves to
    /// another thread. Returns the bytes moved each way and the moves.
    async fn hopping_relay(
        (a, b): (TcpStream, TcpStream),
        runtimes: Vec<tokio::runtime::Handle>,
        park: Park,
    ) -> io::Result<((u64, u64), usize)> {
        let (mut a, mut b) = (unregistered(a), unregistered(b));
        let (up, down) = (Counter::default(), Counter::default());
        let mut progress = Progress::default();
        for hop in 0.. {
            let runtime = &runtimes[hop % runtimes.len()];
            let (on_a, on_b) = (Socket::adopt(a, runtime)?, Socket::adopt(b, runtime)?);
            let counters = (up.clone(), down.clone());
            let running = runtime.spawn(leg(on_a, on_b, progress, counters, park.clone()));
            let (on_a, on_b, back, stop) = running.await.unwrap();
            progress = back;
            match stop? {
                Stop::Done => {
                    let moved = progress.moved();
                    assert_eq!((up.get(), down.get()), moved, "metered bytes");
                    return Ok((moved, hop));
                }
                Stop::Parked => (a, b) = (on_a.detach(), on_b.detach()),
            }
        }
        unreachable!()
    }

    /// A splice asks to park between small exchanges (as not streaming)
    /// and between the bursts of streams (as streaming), and a splice
    /// parked again and again goes on where it stopped on another thread,
    /// its sockets registered anew there, with every byte intact both ways
    /// and the half-closes passed on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parked_splice_goes_on_on_another_thread() {
        let (mut client, a) = socket_pair().await;
        let (b, mut backend) = socket_pair().await;
        let threads = crate::proxy::Threads::start(2).unwrap();
        // How often it was asked, not streaming and streaming.
        let asked = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let park: Park = {
            let asked = asked.clone();
            // Every third time it is asked either way, up to 10 moves
            // between small exchanges and 30 within streams.
            std::sync::Arc::new(move |streaming| {
                let n = asked[usize::from(streaming)].fetch_add(1, Ordering::Relaxed) + 1;
                n.is_multiple_of(3) && n <= if streaming { 90 } else { 30 }
            })
        };
        let asked_now = |streaming: bool| asked[usize::from(streaming)].load(Ordering::Relaxed);
        let runtimes = threads.runtimes().to_vec();
        let relay = tokio::spawn(hopping_relay((a, b), runtimes, park));

        bounded(small_exchanges(&mut client, &mut backend, 50)).await;
        assert_eq!(asked_now(true), 0, "small exchanges asked as streaming");
        assert!(
            asked_now(false) >= 30,
            "small exchanges asked {} times",
            asked_now(false)
        );

        let (up, down) = (24 << 20, 16 << 20);
        let (client_rx, client_tx) = client.into_split();
        let (backend_rx, backend_tx) = backend.into_split();
        let ((sent_up, sent_down, got_up, got_down), relayed) = bounded_value(async {
            let exchange = async {
                tokio::join!(
                    send_random(client_tx, up),
                    send_random(backend_tx, down),
                    receive_all(backend_rx),
                    receive_all(client_rx),
                )
            };
            tokio::join!(exchange, async { relay.await.unwrap() })
        })
        .await;
        assert_eq!(got_up, (sent_up, up), "client → backend corrupted");
        assert_eq!(got_down, (sent_down, down), "backend → client corrupted");
        let (moved, hops) = relayed.unwrap();
        assert_eq!(moved, (50 * 1024 + up as u64, 50 * 1024 + down as u64));
        eprintln!(
            "{hops} moves, asked {} times between small exchanges, {} within streams",
            asked_now(false),
            asked_now(true)
        );
        assert!(hops >= 15, "parked only {hops} times");
    }

    /// A connection is due to look at the threads' counts as persistent
    /// once bytes move 100 ms after it opened, then at most once per
    /// 100 ms of traffic: never twice in a row, nor while it is quiet.
    #[test]
    fn a_persistent_check_is_due_once_per_100_ms_of_traffic() {
        let activity = Activity::default();
        activity.touch();
        assert!(!activity.persistent_check_due(), "short-lived so far");
        std::thread::sleep(PERSISTENT_AFTER + Duration::from_millis(10));
        assert!(!activity.persistent_check_due(), "no bytes moved since");
        activity.touch();
        assert!(activity.persistent_check_due());
        activity.touch();
        assert!(!activity.persistent_check_due(), "due twice in a row");
        std::thread::sleep(PERSISTENT_AFTER + Duration::from_millis(10));
        activity.touch();
        assert!(activity.persistent_check_due());
    }

    /// The segments `stream` has received so far (TCP_INFO).
    #[cfg(target_os = "linux")]
    fn segments_in(stream: &TcpStream) -> u32 {
        use std::os::fd::AsRawFd;
        // SAFETY: tcp_info is plain integers, for which zeroes are valid;
        // the kernel writes at most `len` bytes of it.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
        info.tcpi_segs_in
    }

    /// Sends `bytes` and a FIN in one segment: MSG_MORE, then shutdown(2).
    #[cfg(target_os = "linux")]
    fn send_and_end(stream: &TcpStream, bytes: &[u8]) {
        let socket = socket2::SockRef::from(stream);
        let sent = socket.send_with_flags(bytes, libc::MSG_MORE).unwrap();
        assert_eq!(sent, bytes.len());
        socket.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// A server that closes after its answer (HTTP's `Connection: close`):
    /// the answer's last bytes and the FIN reach the client in one segment,
    /// not two, as HAProxy sends them.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_bytes_and_the_end_leave_in_one_segment() {
        bounded(async {
            for via in [Via::Public, Via::Copy] {
                let Relay {
                    mut client,
                    backend,
                    task,
                } = start(via).await;
                let answer = random_bytes(1000);
                let before = segments_in(&client);
                send_and_end(&backend, &answer);
                let mut got = Vec::new();
                client.read_to_end(&mut got).await.unwrap();
                assert!(got == answer, "{via:?}: answer corrupted");
                let segments = segments_in(&client) - before;
                assert_eq!(segments, 1, "{via:?}: the answer and its end came apart");
                drop(client);
                assert_eq!(finish(task).await.unwrap(), (0, 1000), "{via:?}");
            }
        })
        .await;
    }

    /// Bytes followed by a reset are not taken for an answer that ended:
    /// the relay reports the reset, although the client stays open and
    /// quiet. Both have come before the relay starts, so that it sees
    /// them together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_then_a_reset_are_no_end_of_stream() {
        bounded(async {
            for via in [Via::Public, Via::Copy] {
                let (mut client, a) = socket_pair().await;
                let (b, mut backend) = socket_pair().await;
                backend.write_all(&random_bytes(1000)).await.unwrap();
                abort(backend);
                while !b.ready(Interest::ERROR).await.unwrap().is_error() {}
                let task = tokio::spawn(relay(via, a, b));
                assert!(
                    finish(task).await.is_err(),
                    "{via:?}: reset taken for an end"
                );
                let _ = client.read_to_end(&mut Vec::new()).await;
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backend_reset_ends_the_splice() {
        for via in [Via::Public, Via::Copy] {
            bounded(reset_while_backend_sends(via)).await;
            bounded(reset_while_client_sends(via)).await;
        }
    }

    /// CPU time used so far by the calling thread.
    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// A relay that idles, stalls on a backend that does not read, and sits
    /// half-closed must sleep through all of it: a busy loop would burn
    /// about a second of CPU here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_costs_no_cpu() {
        const PAUSE: Duration = Duration::from_millis(400);
        let (mut client, a) = socket_pair().await;
        let (b, mut backend) = socket_pair().await;
        let (a, b) = (a.into_std().unwrap(), b.into_std().unwrap());
        // The relay gets a thread of its own, whose CPU time is its alone.
        let relay_thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let a = TcpStream::from_std(a).unwrap();
                let b = TcpStream::from_std(b).unwrap();
                let before = thread_cpu_time();
                let moved = relay(Via::Public, a, b).await;
                (moved, thread_cpu_time() - before)
            })
        });
        // More than all the socket buffers on the way can hold.
        let stalled = 32 << 20;

        bounded(async {
            sleep(PAUSE).await; // idle
            let sending = tokio::spawn(async move {
                client.write_all(&vec![7; stalled]).await.unwrap();
                client.shutdown().await.unwrap();
                client
            });
            sleep(PAUSE).await; // the backend does not read: the relay stalls
            assert_eq!(receive_all(&mut backend).await.1, stalled);
            let mut client = sending.await.unwrap();
            sleep(PAUSE).await; // half-closed, the other way still open
            backend.write_all(b"bye").await.unwrap();
            drop(backend);
            assert_eq!(receive_all(&mut client).await.1, 3);
        })
        .await;

        let join = tokio::task::spawn_blocking(move || relay_thread.join().unwrap());
        let (moved, cpu) = timeout(LIMIT, join).await.expect("relay hangs").unwrap();
        assert_eq!(moved.unwrap(), (stalled as u64, 3));
        assert!(
            cpu < Duration::from_millis(300),
            "relay used {cpu:?} of CPU"
        );
    }
}
