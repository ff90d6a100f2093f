//! Zero-copy splice of two TCP streams, both ways, honouring half-close.
//!
//! On Linux each direction moves bytes socket → pipe → socket with
//! splice(2), so the payload never passes through user space. A direction
//! holds a pipe only while bytes move: it takes one from a per-thread pool
//! when its socket turns readable and gives it back, empty, when the socket
//! has nothing more for now, so idle connections cost two sockets and no
//! pipe. When no pipe can be had (out of descriptors, say) that burst is
//! copied through a buffer; elsewhere than Linux,
//! [`tokio::io::copy_bidirectional`] does the whole job.
//!
//! This is the one module of kite allowed to use `unsafe`: it calls pipe2(2),
//! fcntl(2), splice(2), recv(2), write(2) and shutdown(2) directly.
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;

/// When a connection last moved a byte, for `--idle-timeout`.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte moved either way.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Notes that bytes moved just now.
    pub fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// How long no byte has moved either way.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

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

/// Moves bytes both ways between `a` (the client) and `b` (the backend)
/// until both directions have ended; returns the bytes moved a → b and
/// b → a, which are also added to `meter` as they move.
///
/// End of stream from one side shuts down writing on the other, and the
/// other direction goes on until it ends too. The first error of either
/// direction (a reset, a broken pipe) ends the splice and is returned; the
/// caller then drops both sockets.
///
/// splice(2) into a socket whose peer has gone raises SIGPIPE. Rust programs
/// ignore SIGPIPE unless told otherwise, so that surfaces as an `EPIPE` error.
pub async fn splice_bidirectional(
    a: &mut TcpStream,
    b: &mut TcpStream,
    meter: Meter<'_>,
) -> io::Result<(u64, u64)> {
    #[cfg(target_os = "linux")]
    return linux::splice_both(a, b, meter).await;
    #[cfg(not(target_os = "linux"))]
    return portable::copy_both(a, b, meter).await;
}

/// Elsewhere than Linux: copying through a buffer is slower but just as
/// correct.
#[cfg(not(target_os = "linux"))]
mod portable {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;

    use super::Meter;

    /// Both ways with [`tokio::io::copy_bidirectional`], metered.
    pub(super) async fn copy_both(
        a: &mut TcpStream,
        b: &mut TcpStream,
        meter: Meter<'_>,
    ) -> io::Result<(u64, u64)> {
        let mut a = Metered {
            inner: a,
            counter: meter.a_to_b,
            meter,
        };
        let mut b = Metered {
            inner: b,
            counter: meter.b_to_a,
            meter,
        };
        tokio::io::copy_bidirectional(&mut a, &mut b).await
    }

    /// A stream that reports the bytes read from it to a meter (the copy
    /// fallback's counterpart of the splice loop's own counting).
    struct Metered<'a, 'm> {
        inner: &'a mut TcpStream,
        counter: &'m Counter,
        meter: Meter<'m>,
    }

    impl AsyncRead for Metered<'_, '_> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let before = buf.filled().len();
            let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
            let n = buf.filled().len() - before;
            if n > 0 {
                this.meter.moved(this.counter, n);
            }
            polled
        }
    }

    impl AsyncWrite for Metered<'_, '_> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{self, ErrorKind};
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::ptr;

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::Meter;

    /// The size each pipe is asked for. More than the 64 KiB default means
    /// fewer system calls per byte; if the kernel refuses (`pipe-max-size`,
    /// or the per-user pipe memory limit), the default size works too.
    const PIPE_SIZE: usize = 256 * 1024;

    /// MOVE is only a hint; NONBLOCK keeps the pipe side from blocking (the
    /// sockets are non-blocking already, as tokio made them).
    const FLAGS: libc::c_uint = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;

    /// Pipes kept per thread for the next burst, so a keep-alive exchange
    /// costs no pipe2(2) and close(2) calls. Idle pipes hold no pages, only
    /// their two descriptors.
    const POOL_MAX: usize = 16;

    /// What a burst without a pipe copies through, allocated per burst.
    const COPY_CHUNK: usize = 16 * 1024;

    #[cfg(test)]
    tokio::task_local! {
        /// While set, pipe creation fails as if with EMFILE, so tests can
        /// drive the copy fallback through the public function.
        pub(super) static FAIL_PIPES: ();
    }

    /// The pipes this thread keeps; counted in `kite_pipes_pooled`.
    struct Pool(Vec<Pipe>);

    impl Drop for Pool {
        fn drop(&mut self) {
            crate::metrics::PIPES_POOLED.dec_by(self.0.len() as i64);
        }
    }

    thread_local! {
        static POOL: std::cell::RefCell<Pool> = const { std::cell::RefCell::new(Pool(Vec::new())) };
    }

    /// A pipe from this thread's pool, or a new one (which fails when
    /// descriptors or pipe memory run out).
    pub(super) fn take_pipe() -> io::Result<Pipe> {
        #[cfg(test)]
        if FAIL_PIPES.try_with(|_| ()).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
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
    fn give_back(pipe: Pipe) {
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.0.len() < POOL_MAX {
                pool.0.push(pipe);
                crate::metrics::PIPES_POOLED.inc();
            }
        });
    }

    /// Moves bytes both ways; see `splice_bidirectional`. Both directions
    /// only need `&TcpStream`, since readiness and `try_io` take `&self`.
    pub(super) async fn splice_both(
        a: &TcpStream,
        b: &TcpStream,
        meter: Meter<'_>,
    ) -> io::Result<(u64, u64)> {
        // try_join returns at the first error, dropping the other half.
        tokio::try_join!(
            one_way(a, b, |n| meter.moved(meter.a_to_b, n)),
            one_way(b, a, |n| meter.moved(meter.b_to_a, n))
        )
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

    /// Moves `from` → `to` until `from` reaches end of stream, then shuts
    /// down writing on `to` so its peer sees the end too. Returns the bytes
    /// moved.
    ///
    /// While no bytes come, the direction holds neither a pipe nor a buffer:
    /// it takes a pipe when `from` turns readable, moves bytes for as long
    /// as they keep coming, and gives the emptied pipe back. Without a pipe
    /// to be had (out of descriptors) the burst is copied through a buffer.
    async fn one_way(
        from: &TcpStream,
        to: &TcpStream,
        moved_now: impl Fn(usize),
    ) -> io::Result<u64> {
        let mut moved = 0;
        loop {
            from.ready(Interest::READABLE).await?;
            let (bytes, ended) = match take_pipe() {
                Ok(pipe) => {
                    // An error may leave bytes in the pipe: it is then
                    // dropped (closed), never pooled.
                    let burst = burst_through(&pipe, from, to, &moved_now).await?;
                    give_back(pipe);
                    burst
                }
                Err(_) => burst_copied(from, to, &moved_now).await?,
            };
            moved += bytes;
            if ended {
                break;
            }
        }
        shutdown_write(to)?;
        Ok(moved)
    }

    /// Moves what `from` has through `pipe` until it has nothing more for
    /// now (the pipe is then empty) or ends: (bytes moved, end of stream).
    async fn burst_through(
        pipe: &Pipe,
        from: &TcpStream,
        to: &TcpStream,
        moved_now: &impl Fn(usize),
    ) -> io::Result<(u64, bool)> {
        let mut moved = 0;
        loop {
            // The pipe is empty here, and must be: splice(2) from a socket
            // into a pipe says EAGAIN both when the socket has nothing to
            // read and when the pipe is full. Only with an empty pipe does
            // EAGAIN surely mean "socket not readable", which is what lets
            // try_io clear the socket's read readiness. Clearing it while
            // the socket still held data would wait for an edge that never
            // comes, and the direction would stall.
            match from.try_io(Interest::READABLE, || fill(from, pipe)) {
                Ok(0) => return Ok((moved, true)),
                Ok(n) => {
                    drain(pipe, to, n).await?;
                    moved += n as u64;
                    moved_now(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok((moved, false)),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The same as [`burst_through`] without a pipe: read into a buffer
    /// that lives for this burst only, and write it out.
    async fn burst_copied(
        from: &TcpStream,
        to: &TcpStream,
        moved_now: &impl Fn(usize),
    ) -> io::Result<(u64, bool)> {
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut moved = 0;
        loop {
            let n = match from.try_read(&mut buf) {
                Ok(0) => return Ok((moved, true)),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok((moved, false)),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut written = 0;
            while written < n {
                to.writable().await?;
                match to.try_write(&buf[written..n]) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(w) => written += w,
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(e) => return Err(e),
                }
            }
            moved += n as u64;
            moved_now(n);
        }
    }

    /// Fills the empty `pipe` from `from`; 0 means end of stream.
    ///
    /// splice(2) stops at TCP urgent data and says EAGAIN there, or 0 once a
    /// FIN has come, although bytes wait behind the mark. So whenever splice
    /// finds nothing, recv(2) asks for one byte: past a mark it skips the
    /// urgent byte (dropped, as the copy fallback drops it) and returns the
    /// next one, which goes into the pipe so that splice can carry on.
    /// Without urgent data, recv only confirms what splice said, at the cost
    /// of one system call per wait.
    fn fill(from: &TcpStream, pipe: &Pipe) -> io::Result<usize> {
        match splice(from.as_fd(), pipe.write.as_fd(), PIPE_SIZE) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            moved => return moved,
        }
        let mut byte = 0u8;
        // SAFETY: the descriptor is open (borrowed from a live TcpStream)
        // and `byte` is one writable byte that outlives the call.
        let got = unsafe { libc::recv(from.as_raw_fd(), ptr::addr_of_mut!(byte).cast(), 1, 0) };
        if counted(got)? == 0 {
            return Ok(0);
        }
        // SAFETY: the descriptor is open and `byte` is one readable byte. The
        // pipe is empty, so this write can neither block nor fall short.
        counted(unsafe { libc::write(pipe.write.as_raw_fd(), ptr::addr_of!(byte).cast(), 1) })
    }

    /// Moves all `len` bytes held in `pipe` into `to`. The pipe is never
    /// empty while this writes, so EAGAIN means `to`'s send buffer is full.
    async fn drain(pipe: &Pipe, to: &TcpStream, mut len: usize) -> io::Result<()> {
        while len > 0 {
            let n = when_ready(to, Interest::WRITABLE, || {
                splice(pipe.read.as_fd(), to.as_fd(), len)
            })
            .await?;
            if n == 0 {
                // Cannot happen with bytes in the pipe; never spin on it.
                return Err(ErrorKind::WriteZero.into());
            }
            len -= n;
        }
        Ok(())
    }

    /// Runs `op` once `stream` is ready for `interest`, and again after each
    /// new readiness for as long as it says EAGAIN. Inside `try_io`, an EAGAIN
    /// clears tokio's readiness, so the next wait sleeps until epoll reports
    /// a change rather than spinning.
    async fn when_ready(
        stream: &TcpStream,
        interest: Interest,
        mut op: impl FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            stream.ready(interest).await?;
            match stream.try_io(interest, &mut op) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                done => return done,
            }
        }
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
        counted(n)
    }

    /// A system call's byte count, or when negative the error in errno.
    fn counted(n: isize) -> io::Result<usize> {
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Half-closes `stream`: its peer reads end of stream, while the other
    /// direction stays open.
    fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
        // SAFETY: the descriptor is borrowed from a live TcpStream, so it is
        // open; shutdown(2) touches no memory.
        if unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
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
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;
    use tokio::time::{sleep, timeout};

    use super::*;

    /// A bound on anything that should finish; reaching it means a hang
    /// (generous: shared 2-core machines run these tests under heavy load).
    const LIMIT: Duration = Duration::from_secs(120);

    /// Which path the relay under test takes.
    #[derive(Clone, Copy, Debug)]
    enum Via {
        /// The splice(2) path, failing the test if pipes cannot be made.
        Splice,
        /// `splice_bidirectional` as callers see it.
        Public,
        /// `splice_bidirectional` with pipe creation failing: the fallback.
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
        let (client, mut a) = socket_pair().await;
        let (mut b, backend) = socket_pair().await;
        let task = tokio::spawn(async move { relay(via, &mut a, &mut b).await });
        Relay {
            client,
            backend,
            task,
        }
    }

    /// Relays a ⇄ b the `via` way; when it ends well, checks that the
    /// meter saw exactly the bytes the relay reports.
    async fn relay(via: Via, a: &mut TcpStream, b: &mut TcpStream) -> io::Result<(u64, u64)> {
        let (up, down, activity) = (Counter::default(), Counter::default(), Activity::default());
        let meter = Meter {
            a_to_b: &up,
            b_to_a: &down,
            activity: &activity,
        };
        let moved = match via {
            #[cfg(target_os = "linux")]
            Via::Splice => {
                drop(linux::take_pipe().expect("pipes"));
                linux::splice_both(a, b, meter).await
            }
            #[cfg(target_os = "linux")]
            Via::Copy => {
                let forced = async {
                    assert!(linux::take_pipe().is_err(), "the fallback is not forced");
                    splice_bidirectional(a, b, meter).await
                };
                linux::FAIL_PIPES.scope((), forced).await
            }
            _ => splice_bidirectional(a, b, meter).await,
        }?;
        assert_eq!((up.get(), down.get()), moved, "{via:?}: metered bytes");
        Ok(moved)
    }

    /// Runs a test body, failing it if it takes longer than [`LIMIT`].
    async fn bounded(body: impl Future<Output = ()>) {
        timeout(LIMIT, body).await.expect("test hangs");
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
        bounded(half_close(Via::Splice)).await;
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
            .map(|(up, down)| tokio::spawn(exchange(Via::Splice, up, down)))
            .collect();
        bounded(async {
            for connection in connections {
                connection.await.unwrap();
            }
        })
        .await;
    }

    /// Sends one byte of TCP urgent (out-of-band) data.
    #[cfg(target_os = "linux")]
    fn send_urgent(stream: &TcpStream) {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open and the buffer is one readable byte.
        let n = unsafe { libc::send(stream.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(n, 1, "{}", io::Error::last_os_error());
    }

    /// splice(2) stops at urgent data; the bytes behind it must still come
    /// through, whether or not a FIN follows them. The urgent byte itself is
    /// dropped, as a plain read drops it. (The copy fallback is not tested
    /// here: tokio takes a read cut short by the mark for a drained socket
    /// and may wait for more data before reading on.)
    #[cfg(target_os = "linux")]
    async fn urgent_data(via: Via) {
        let Relay {
            mut client,
            mut backend,
            task,
        } = start(via).await;
        client.write_all(b"ab").await.unwrap();
        send_urgent(&client);
        client.write_all(b"cd").await.unwrap();
        let mut got = [0; 4];
        backend.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcd", "{via:?}");

        client.write_all(b"ef").await.unwrap();
        send_urgent(&client);
        client.write_all(b"gh").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"efgh", "{via:?}");
        drop(backend);
        assert_eq!(finish(task).await.unwrap(), (8, 0), "{via:?}");
    }

    #[cfg(target_os = "linux")] // elsewhere it would test the fallback
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn urgent_data_neither_stalls_nor_truncates() {
        bounded(urgent_data(Via::Splice)).await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backend_reset_ends_the_splice() {
        for via in [Via::Splice, Via::Copy] {
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
                let mut a = TcpStream::from_std(a).unwrap();
                let mut b = TcpStream::from_std(b).unwrap();
                let before = thread_cpu_time();
                let moved = relay(Via::Splice, &mut a, &mut b).await;
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
