//! The proxy threads, and where connections go among them: at accept, by
//! how many connections each thread serves; later, by how many of the
//! connection's [`Kind`] (streams, persistent connections) each serves.

use std::io;
use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::metrics::Metrics;

/// Threads that each drive a single-threaded runtime, for
/// [`Settings::runtimes`](super::Settings::runtimes): a connection is
/// served start to end by the thread whose listener accepted it, so its
/// wake-ups never cross threads. The threads stop when this is dropped;
/// tasks still on them are dropped with their runtime, which closes their
/// sockets.
#[derive(Debug)]
pub struct Threads {
    handles: Vec<Handle>,
    _stop: tokio_util::sync::DropGuard,
}

impl Threads {
    /// Starts `n` threads, named `kite-proxy-0` and on.
    pub fn start(n: usize) -> io::Result<Threads> {
        let stop = CancellationToken::new();
        let guard = stop.clone().drop_guard();
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("kite-proxy-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled_owned()))?;
        }
        Ok(Threads {
            handles,
            _stop: guard,
        })
    }

    /// The threads' runtimes.
    pub fn runtimes(&self) -> &[Handle] {
        &self.handles
    }
}

/// The proxy threads to start by default: one per CPU this process may
/// use (which counts a container's CPU quota), or 1 if unknown.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A proxy thread, as the accept loops see it.
#[derive(Debug)]
pub(super) struct ProxyThread {
    pub(super) runtime: Handle,
    pub(super) load: Arc<ThreadLoad>,
}

impl ProxyThread {
    /// Proxy thread `i`, on `runtime`, counted in `metrics`.
    pub(super) fn new(i: usize, runtime: Handle, metrics: &Metrics) -> ProxyThread {
        ProxyThread {
            runtime,
            load: Arc::new(ThreadLoad {
                connections: metrics.thread_connections(i),
                streams: metrics.thread_streams(i),
                persistent: metrics.thread_persistent(i),
            }),
        }
    }
}

/// What a proxy thread serves now.
#[derive(Debug)]
pub(super) struct ThreadLoad {
    /// Client connections (`kite_thread_connections`).
    pub(super) connections: Gauge,
    /// Those of them that have streamed (`kite_thread_streams`).
    streams: Gauge,
    /// Those of them that are persistent (`kite_thread_persistent`).
    persistent: Gauge,
}

impl ThreadLoad {
    /// The gauge that counts connections of `kind` (plain ones have none).
    fn of(&self, kind: Kind) -> Option<&Gauge> {
        match kind {
            Kind::Plain => None,
            Kind::Persistent => Some(&self.persistent),
            Kind::Stream => Some(&self.streams),
        }
    }
}

/// What a connection counts as on its proxy thread, besides a connection.
/// Each kind is evened out among the threads on its own ([`fewest`]); a
/// connection only ever goes up this list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Kind {
    /// New, short-lived, or quiet.
    Plain,
    /// Goes on exchanging past its first 100 ms, without streaming (an
    /// HTTP keep-alive connection, say).
    Persistent,
    /// Has streamed (a read filled the buffer).
    Stream,
}

impl Kind {
    fn from_u8(kind: u8) -> Kind {
        match kind {
            0 => Kind::Plain,
            1 => Kind::Persistent,
            _ => Kind::Stream,
        }
    }
}

/// A connection counted on its proxy thread until it is dropped: among the
/// connections the thread serves, and among those of its [`Kind`]. (Small:
/// every connection holds one.)
#[derive(Debug)]
pub(crate) struct Placed {
    /// (`--threads` is a u16.)
    thread: u16,
    /// Where it should move, once [`Placed::should_move`] says so.
    to: AtomicU16,
    /// Its [`Kind`]. (Only the connection's own task sets it.)
    kind: AtomicU8,
    load: Arc<ThreadLoad>,
}

impl Placed {
    pub(super) fn new(thread: usize, on: &ProxyThread) -> Placed {
        on.load.connections.inc();
        Placed {
            thread: u16::try_from(thread).unwrap_or(u16::MAX),
            to: AtomicU16::new(0),
            kind: AtomicU8::new(Kind::Plain as u8),
            load: on.load.clone(),
        }
    }

    /// Whether the connection, found to be at least of `kind` while it has
    /// nothing in flight, should move to another of the `shared` proxy
    /// threads: one with two fewer of its kind ([`fewest`]). It is counted
    /// as that kind from then on.
    pub(crate) fn should_move(&self, shared: &Shared, kind: Kind) -> bool {
        self.count_as(kind);
        let kind = self.kind(); // a stream stays one
        let me = usize::from(self.thread);
        let counts = shared
            .threads
            .iter()
            .map(|t| t.load.of(kind).map_or(0, Gauge::get));
        let to = fewest(counts, me);
        // `to` is `me` or a thread's index: a u16 as `me` is.
        self.to.store(to as u16, Ordering::Relaxed);
        to != me
    }

    /// The thread [`Placed::should_move`] last named.
    pub(crate) fn moving_to(&self) -> usize {
        usize::from(self.to.load(Ordering::Relaxed))
    }

    pub(crate) fn kind(&self) -> Kind {
        Kind::from_u8(self.kind.load(Ordering::Relaxed))
    }

    /// Counts the connection as `kind` on its thread, unless it counts as
    /// a kind further up already.
    pub(crate) fn count_as(&self, kind: Kind) {
        let was = self.kind();
        if kind <= was {
            return;
        }
        self.kind.store(kind as u8, Ordering::Relaxed);
        if let Some(gauge) = self.load.of(was) {
            gauge.dec();
        }
        if let Some(gauge) = self.load.of(kind) {
            gauge.inc();
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.load.connections.dec();
        if let Some(gauge) = self.load.of(self.kind()) {
            gauge.dec();
        }
    }
}

/// Where a connection accepted on thread `me` is served, given how many
/// connections each thread serves: by the thread with the fewest, when that
/// is at least four fewer than `me` has, or two fewer and at most half as
/// many; else by `me`. The kernel spreads connections among the threads'
/// listeners by their addresses, which can pile a few long ones (bulk
/// streams) on one thread: two against none, three against one. Moving a
/// connection costs a wake-up of the other thread, and with many short
/// connections the counts differ by a few all the time, so only a real
/// imbalance moves one: 9 against 7 or 7 against 4 does not, and no
/// thread ends up with more than four over another.
pub(super) fn least_loaded(loads: impl IntoIterator<Item = i64>, me: usize) -> usize {
    match mine_and_least(loads, me) {
        Some((mine, (i, least))) if least + 3 < mine || (least + 1 < mine && 2 * least <= mine) => {
            i
        }
        _ => me,
    }
}

/// Of per-thread `loads`, thread `me`'s, and the least with its thread (the
/// first of equals); `None` if `me` is not among them.
fn mine_and_least(loads: impl IntoIterator<Item = i64>, me: usize) -> Option<(i64, (usize, i64))> {
    let mut mine = None;
    let mut least: Option<(usize, i64)> = None;
    for (i, load) in loads.into_iter().enumerate() {
        if i == me {
            mine = Some(load);
        }
        if least.is_none_or(|(_, l)| load < l) {
            least = Some((i, load));
        }
    }
    Some((mine?, least?))
}

/// Where a connection on thread `me`, between two exchanges, is served,
/// given how many connections of its [`Kind`] each thread serves (itself
/// counted): by the thread with the fewest, when that has at least two
/// fewer; else by `me`.
///
/// The spread of connections at accept cannot tell a stream from a control
/// connection that stays quiet (iperf3 has one, FTP too), so streams can
/// pile up on one thread while another idles; and it leaves the threads up
/// to four connections apart (see [`least_loaded`]), which for keep-alive
/// connections that each carry a request at a time means one thread
/// answers more of them, later. Moving one costs four epoll_ctl(2) calls
/// and a wake-up. A move leaves both threads within one of each other, and
/// moves nothing else of the kind, so nothing moves back; a connection
/// moves again only once closes or newly counted connections tip the
/// counts two apart anew (32 keep-alive connections turning persistent
/// one by one took 13 to 24 moves in all, by hand).
fn fewest(counts: impl IntoIterator<Item = i64>, me: usize) -> usize {
    match mine_and_least(counts, me) {
        Some((mine, (i, least))) if least + 1 < mine => i,
        _ => me,
    }
}

#[cfg(test)]
mod tests;
