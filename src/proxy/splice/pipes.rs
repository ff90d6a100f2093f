//! The pipe path (Linux): pipes for splice(2), a per-thread pool of them,
//! and the burst that moves a stream socket → pipe → socket.

use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};

use prometheus_client::metrics::gauge::Gauge;
use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};

use super::{Pipes, Socket};

/// The size each pipe is asked for. More than the 64 KiB default means
/// fewer system calls per byte; if the kernel refuses (`pipe-max-size`,
/// or the per-user pipe memory limit), the default size works too.
const PIPE_SIZE: usize = 256 * 1024;

/// MOVE is only a hint; NONBLOCK keeps the pipe side from blocking (the
/// sockets are non-blocking already).
const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Pipes kept per thread for the next burst, so a stream costs no
/// pipe2(2) and close(2) calls. Idle pipes hold no pages, only their
/// two descriptors.
const POOL_MAX: usize = 16;

/// The pipes this thread keeps, and the gauge they are counted in
/// (`kite_pipes_pooled`): the last one [`count_pipes_in`] named on this
/// thread. Threads outlive connections, and one process may run several
/// proxies (tests do), so the pool follows the gauge it is handed rather
/// than the first it saw.
struct Pool {
    pipes: Vec<Pipe>,
    counted_in: Option<Gauge>,
}

impl Pool {
    /// Counts this pool's pipes in `gauge` from now on: they leave the
    /// gauge they were counted in before, if another.
    fn count_in(&mut self, gauge: &Gauge) {
        let same = |counted: &Gauge| std::ptr::eq(counted.inner(), gauge.inner());
        if self.counted_in.as_ref().is_some_and(same) {
            return;
        }
        let n = self.pipes.len() as i64;
        if let Some(before) = self.counted_in.replace(gauge.clone()) {
            before.dec_by(n);
        }
        gauge.inc_by(n);
    }

    fn pop(&mut self) -> Option<Pipe> {
        let pipe = self.pipes.pop()?;
        if let Some(gauge) = &self.counted_in {
            gauge.dec();
        }
        Some(pipe)
    }

    /// Keeps `pipe` unless the pool is full (then it is closed).
    fn push(&mut self, pipe: Pipe) {
        if self.pipes.len() < POOL_MAX {
            self.pipes.push(pipe);
            if let Some(gauge) = &self.counted_in {
                gauge.inc();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(gauge) = &self.counted_in {
            gauge.dec_by(self.pipes.len() as i64);
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            pipes: Vec::new(),
            counted_in: None,
        })
    };
}

/// Counts the pipes this thread's pool keeps in `gauge` from now on (the
/// proxy's `kite_pipes_pooled`), moving those it holds from the gauge
/// they were counted in. A connection's task calls it before it splices,
/// on whichever thread it runs. The pool of a thread where it is never
/// called (`kite attach`, which has no metrics) is counted nowhere.
pub fn count_pipes_in(gauge: &Gauge) {
    let _ = POOL.try_with(|pool| pool.borrow_mut().count_in(gauge));
}

impl Pipes {
    /// A pipe from this thread's pool, or a new one (which fails when
    /// descriptors or pipe memory run out); with [`Pipes::Never`], an
    /// error as if descriptors had run out.
    pub(super) fn take(self) -> io::Result<Pipe> {
        if self == Pipes::Never {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let pooled = POOL.try_with(|pool| pool.borrow_mut().pop()).ok().flatten();
        match pooled {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(),
        }
    }

    /// Gives an empty pipe back to this thread's pool (or closes it when
    /// the pool is full).
    pub(super) fn give_back(self, pipe: Pipe) {
        if self == Pipes::Pooled {
            let _ = POOL.try_with(|pool| pool.borrow_mut().push(pipe));
        }
    }
}

/// A non-blocking pipe: the kernel-side buffer of one direction.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // A refusal is fine (see PIPE_SIZE).
        let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
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
        match splice_once(from.fd.as_fd(), &pipe.write, PIPE_SIZE) {
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
        match ready.try_io(|to| splice_once(&pipe.read, to.as_fd(), len)) {
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
fn splice_once(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    Ok(splice(from, None, to, None, len, FLAGS)?)
}
