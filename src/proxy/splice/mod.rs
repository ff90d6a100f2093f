//! Zero-copy splice of two TCP streams, both ways, honouring half-close.
//!
//! Small exchanges (a request, an answer) go through a buffer each thread
//! shares among its connections: one read(2) and one write(2) per message
//! (`copy`). On Linux a direction that streams moves its bytes socket →
//! pipe → socket with splice(2) instead, so the payload never passes
//! through user space (what HAProxy calls splice-auto; `pipes`). A
//! direction holds a pipe only while a stream moves: it takes one from a
//! per-thread pool and gives it back empty once the burst is over, so idle
//! connections cost two sockets and no pipe or buffer. When no pipe can be
//! had (out of descriptors, say) every burst goes through the buffer.
//!
//! rustix wraps pipe2(2), fcntl(2) and splice(2): no `unsafe` here.

mod activity;
mod copy;
#[cfg(target_os = "linux")]
mod pipes;

pub use activity::{Activity, Meter, PERSISTENT_AFTER};
#[cfg(target_os = "linux")]
pub use pipes::count_pipes_in;

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;

use super::net::{Socket, READ_INTEREST};
use copy::{forward, shutdown_write, write_all, Forwarded, BUFFER_SIZE};

/// Where a splice's streams get their pipes (on Linux; elsewhere every
/// byte goes through the buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipes {
    /// From the pool of the thread the splice runs on, which keeps the
    /// pipes given back empty for the next stream (counted where
    /// [`count_pipes_in`] says).
    Pooled,
    /// None: every byte goes through the buffer, as when no pipe can be
    /// had.
    Never,
}

/// Counts the pipes this thread's pool keeps in `gauge` from now on
/// (nothing to count where there is no splice(2)).
#[cfg(not(target_os = "linux"))]
pub fn count_pipes_in(_gauge: &prometheus_client::metrics::gauge::Gauge) {}

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
    splice_resumable(a, b, meter, Pipes::Pooled, &mut progress, &|_| false).await?;
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
///
/// Streams take their pipes from `pipes`.
pub async fn splice_resumable(
    a: &Socket,
    b: &Socket,
    meter: Meter<'_>,
    pipes: Pipes,
    progress: &mut Progress,
    park: &(impl Fn(bool) -> bool + Sync),
) -> io::Result<Stop> {
    let p = &*progress;
    let mut up_done = p.up.ended.load(Ordering::Relaxed);
    let mut down_done = p.down.ended.load(Ordering::Relaxed);
    let mut a_to_b = pin!(one_way(a, b, (&p.up, &p.down), (pipes, park), |n| {
        meter.moved(meter.a_to_b, n)
    }));
    let mut b_to_a = pin!(one_way(b, a, (&p.down, &p.up), (pipes, park), |n| {
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
/// Its bursts take their pipes from `pipes`, and give them back there.
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
    (pipes, park): (Pipes, &(impl Fn(bool) -> bool + Sync)),
    moved_now: impl Fn(usize),
) -> io::Result<Stop> {
    #[cfg(not(target_os = "linux"))]
    let _ = pipes; // no splice(2): every byte goes through the buffer
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
            if let Ok(pipe) = pipes.take() {
                // An error may leave bytes in the pipe: it is then
                // dropped (closed), never pooled.
                let burst = pipes::burst_through(&pipe, from, to, &moved_now).await?;
                pipes.give_back(pipe);
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

#[cfg(test)]
mod tests;
