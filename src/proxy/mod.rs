//! The proxy: listeners that follow the snapshot's ports, and one task per
//! connection that picks a backend, connects with failover and splices.

mod conn;
pub mod net;
pub mod splice;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::metrics::Metrics;
use crate::snapshot::{Ejections, Store};

/// How long a backend that refused or timed out stays out of picks.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

/// The first pause after a failed accept (EMFILE and friends); it doubles
/// up to [`ACCEPT_BACKOFF_MAX`] so a full file table never busy-loops.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a connection beyond `--max-connections` waits for a slot
/// before it is refused.
pub const ADMIT_WAIT: Duration = Duration::from_millis(250);

/// Proxy settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The address every listener binds.
    pub listen_addr: IpAddr,
    /// Connect timeout per backend attempt.
    pub connect_timeout: Duration,
    /// The most client connections served at once.
    pub max_connections: usize,
    /// Close connections with no traffic either way for this long.
    pub idle_timeout: Option<Duration>,
    /// Where connections are counted.
    pub metrics: Arc<Metrics>,
    /// The runtimes that accept and serve connections, each with its own
    /// listener on every port (see [`net::Listener::bind_on`]); a
    /// connection stays on the runtime that accepted it. Empty: one
    /// listener per port, on the runtime [`serve`] runs on.
    pub runtimes: Vec<Handle>,
}

impl Settings {
    /// Settings with the defaults of `kite proxy` for everything but the
    /// listen address: connect timeout 3 s, no idle timeout, connections
    /// limited by [`default_max_connections`].
    pub fn new(listen_addr: IpAddr) -> Settings {
        Settings {
            listen_addr,
            connect_timeout: Duration::from_secs(3),
            max_connections: default_max_connections(),
            idle_timeout: None,
            metrics: Arc::default(),
            runtimes: Vec::new(),
        }
    }
}

/// The file descriptors one proxied connection holds: the client and
/// backend sockets, and two pipes of two ends each for splice(2).
pub const FDS_PER_CONNECTION: u64 = 6;

/// Descriptors kept for everything else: listeners, the runtime, the AWS
/// clients' connections, logs.
const FDS_RESERVED: u64 = 64;

/// The connection limit the open-file limit allows: what is left after a
/// reserve, divided by the descriptors each connection holds.
pub fn default_max_connections() -> usize {
    max_connections_for(open_file_limit())
}

/// The connection limit for an open-file limit of `nofile`.
pub fn max_connections_for(nofile: u64) -> usize {
    let n = nofile.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION;
    usize::try_from(n.max(1)).unwrap_or(usize::MAX)
}

/// The soft limit on open files (RLIMIT_NOFILE), or 1024 if unknown.
#[allow(unsafe_code)]
pub fn open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            return lim.rlim_cur;
        }
    }
    1024
}

/// Threads that each drive a single-threaded runtime, for
/// [`Settings::runtimes`]: a connection is served start to end by the thread
/// whose listener accepted it, so its wake-ups never cross threads. The
/// threads stop when this is dropped; tasks still on them are dropped with
/// their runtime, which closes their sockets.
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

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) ejections: Ejections,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) metrics: Arc<Metrics>,
    /// One permit per connection that may be served at once.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_connections: usize,
    /// Whether connections are being refused now, so the refusal is
    /// logged when it starts and when it ends rather than per connection.
    pub(crate) refusing: std::sync::atomic::AtomicBool,
    /// The proxy threads ([`Settings::runtimes`]), in listener order.
    threads: Vec<ProxyThread>,
    /// Where connection tasks are counted, so that shutdown waits for
    /// them: those of moved connections too.
    tracker: TaskTracker,
}

impl Shared {
    fn new(settings: &Settings, store: Arc<Store>, tracker: TaskTracker) -> Shared {
        let slots = settings.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Shared {
            store,
            ejections: Ejections::default(),
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            metrics: settings.metrics.clone(),
            slots: Arc::new(Semaphore::new(slots)),
            max_connections: slots,
            refusing: Default::default(),
            threads: (settings.runtimes.iter().enumerate())
                .map(|(i, runtime)| ProxyThread::new(i, runtime.clone(), &settings.metrics))
                .collect(),
            tracker,
        }
    }
}

/// A proxy thread, as the accept loops see it.
#[derive(Debug)]
struct ProxyThread {
    runtime: Handle,
    load: Arc<ThreadLoad>,
}

impl ProxyThread {
    /// Proxy thread `i`, on `runtime`, counted in `metrics`.
    fn new(i: usize, runtime: Handle, metrics: &Metrics) -> ProxyThread {
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
struct ThreadLoad {
    /// Client connections (`kite_thread_connections`).
    connections: Gauge,
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
    fn new(thread: usize, on: &ProxyThread) -> Placed {
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
fn least_loaded(loads: impl IntoIterator<Item = i64>, me: usize) -> usize {
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

/// Serves until `cancel`: binds a listener for each port of the snapshot,
/// stops accepting on ports that disappear (their open connections go on),
/// and spawns a task per connection onto `tracker`.
pub async fn serve(
    settings: Settings,
    store: Arc<Store>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let shared = Arc::new(Shared::new(&settings, store.clone(), tracker.clone()));
    info!(max_connections = shared.max_connections, "connection limit");
    let mut listeners: HashMap<u16, CancellationToken> = HashMap::new();
    let mut changes = store.subscribe();
    loop {
        reconcile(&settings, &shared, &tracker, &cancel, &mut listeners).await;
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    for stop in listeners.values() {
        stop.cancel();
    }
}

/// Binds the snapshot's new ports and stops the vanished ones. A port that
/// cannot be bound is logged and tried again after the next round.
async fn reconcile(
    settings: &Settings,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    listeners: &mut HashMap<u16, CancellationToken>,
) {
    let ports: Vec<u16> = shared.store.load().ports().collect();
    listeners.retain(|port, stop| {
        let keep = ports.contains(port);
        if !keep {
            info!(
                port,
                "port gone from the targets: no longer accepting on it"
            );
            stop.cancel();
        }
        keep
    });
    for port in ports {
        if listeners.contains_key(&port) {
            continue;
        }
        let addr = SocketAddr::new(settings.listen_addr, port);
        match net::Listener::bind_on(addr, &settings.runtimes) {
            Ok(group) => {
                info!(%addr, sockets = group.len(), "listening");
                let stop = cancel.child_token();
                listeners.insert(port, stop.clone());
                for (i, listener) in group.into_iter().enumerate() {
                    let runtime = settings.runtimes.get(i);
                    let me = runtime.map(|_| i);
                    let task = accept_loop(
                        listener,
                        port,
                        me,
                        shared.clone(),
                        tracker.clone(),
                        stop.clone(),
                    );
                    match runtime {
                        Some(runtime) => drop(tracker.spawn_on(task, runtime)),
                        None => drop(tracker.spawn(task)),
                    }
                }
            }
            Err(err) => warn!(%addr, "cannot listen, will retry after the next round: {err}"),
        }
    }
}

/// Accepts connections on one port until `stop`; `me` is the proxy thread
/// it runs on, if any.
async fn accept_loop(
    listener: net::Listener,
    port: u16,
    me: Option<usize>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let counters = Arc::new(shared.metrics.port(port));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept_stream() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                counters.accepted.inc();
                let thread = me.map(|me| {
                    let loads = shared.threads.iter().map(|t| t.load.connections.get());
                    least_loaded(loads, me)
                });
                let runtime =
                    thread.map_or_else(Handle::current, |i| shared.threads[i].runtime.clone());
                let client = match net::Socket::adopt(stream, &runtime) {
                    Ok(client) => client,
                    Err(err) => {
                        warn!(port, "cannot register an accepted connection: {err}");
                        continue;
                    }
                };
                let conn = conn::Conn {
                    client,
                    port,
                    placed: thread.map(|i| Placed::new(i, &shared.threads[i])),
                    shared: shared.clone(),
                    counters: counters.clone(),
                };
                let task = connection_task(conn, peer);
                tracker.spawn_on(task, &runtime);
            }
            Err(err) if is_transient_accept_error(&err) => debug!(port, "accept: {err}"),
            Err(err) => {
                shared.metrics.accept_error();
                warn!(port, "accept failed, pausing {backoff:?}: {err}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// The task that serves one accepted connection, in a span that names it.
fn connection_task(
    conn: conn::Conn,
    peer: SocketAddr,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let span = tracing::debug_span!("conn", port = conn.port, client = %peer);
    conn.serve().instrument(span)
}

/// Errors about one connection that died before we accepted it.
fn is_transient_accept_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// About 1.8 KB in a debug build; held twice, a task would be over 3 KB.
    const CONNECTION_TASK_MAX: usize = 2048;

    /// A connection's task, which every open connection holds, stays small:
    /// a future that holds another and awaits it doubles in size.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let listener = net::Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(net::Socket::connect(addr), listener.accept());
        let (client, peer) = accepted.unwrap();
        let settings = Settings::new(addr.ip());
        let shared = Arc::new(Shared::new(&settings, Arc::default(), TaskTracker::new()));
        let counters = Arc::new(shared.metrics.port(addr.port()));
        let thread = ProxyThread::new(0, Handle::current(), &shared.metrics);
        let conn = conn::Conn {
            client,
            port: addr.port(),
            placed: Some(Placed::new(0, &thread)),
            shared: shared.clone(),
            counters,
        };
        let task = connection_task(conn, peer);
        let size = std::mem::size_of_val(&task);
        eprintln!("a connection's task: {size} bytes");
        assert!(size <= CONNECTION_TASK_MAX, "{size} bytes");
    }

    /// A connection stays where the kernel put it unless another thread
    /// serves at least four fewer, or two fewer and at most half as many:
    /// then it goes to the least loaded one.
    #[test]
    fn connections_move_only_to_even_out_an_imbalance() {
        assert_eq!(least_loaded([0, 0], 0), 0);
        assert_eq!(least_loaded([1, 0], 0), 0);
        assert_eq!(least_loaded([2, 0], 0), 1);
        assert_eq!(least_loaded([2, 1], 0), 0);
        assert_eq!(least_loaded([3, 1], 0), 1);
        assert_eq!(least_loaded([5, 4, 1], 0), 2);
        assert_eq!(least_loaded([5, 1, 4], 2), 1);
        assert_eq!(least_loaded([0, 9, 9], 1), 0);
        assert_eq!(least_loaded([7], 0), 0);
        assert_eq!(least_loaded([4, 2], 0), 1);
        assert_eq!(least_loaded([5, 3], 0), 0);
        assert_eq!(least_loaded([9, 7], 0), 0);
        assert_eq!(least_loaded([12, 6], 0), 1);
        assert_eq!(least_loaded([12, 7], 0), 1);
        assert_eq!(least_loaded([12, 9], 0), 0);
        assert_eq!(least_loaded([7, 4], 0), 0);
        assert_eq!(least_loaded([8, 4], 0), 1);
        assert_eq!(least_loaded([9, 5], 0), 1);
    }

    /// A connection moves to the thread with the fewest of its kind when
    /// that serves at least two fewer, itself counted where it is: so no
    /// move can be undone by the next.
    #[test]
    fn connections_move_only_from_two_over() {
        assert_eq!(fewest([1, 0], 0), 0);
        assert_eq!(fewest([2, 0], 0), 1);
        assert_eq!(fewest([2, 1], 0), 0);
        assert_eq!(fewest([3, 1], 0), 1);
        assert_eq!(fewest([0, 2], 1), 0);
        assert_eq!(fewest([2, 2, 0], 1), 2);
        assert_eq!(fewest([2, 1, 2], 0), 0);
        assert_eq!(fewest([5], 0), 0);
        // After any move the two are within one of each other or the
        // mover's count is still the higher: it never wants back.
        for mine in 1..8 {
            for other in 0..8 {
                if fewest([mine, other], 0) == 1 {
                    assert_eq!(fewest([mine - 1, other + 1], 1), 1);
                }
            }
        }
    }

    /// A connection counts as one kind at a time, only ever further up,
    /// and uncounts itself when dropped.
    #[tokio::test]
    async fn a_connection_counts_as_one_kind_at_a_time() {
        let metrics = Metrics::new();
        let thread = ProxyThread::new(0, Handle::current(), &metrics);
        let counts = || {
            let load = &thread.load;
            (
                load.connections.get(),
                load.persistent.get(),
                load.streams.get(),
            )
        };
        let placed = Placed::new(0, &thread);
        assert_eq!((placed.kind(), counts()), (Kind::Plain, (1, 0, 0)));
        placed.count_as(Kind::Persistent);
        placed.count_as(Kind::Persistent);
        assert_eq!((placed.kind(), counts()), (Kind::Persistent, (1, 1, 0)));
        placed.count_as(Kind::Stream);
        placed.count_as(Kind::Persistent);
        placed.count_as(Kind::Plain);
        assert_eq!((placed.kind(), counts()), (Kind::Stream, (1, 0, 1)));
        let persistent = Placed::new(0, &thread);
        persistent.count_as(Kind::Persistent);
        assert_eq!(counts(), (2, 1, 1));
        drop(placed);
        assert_eq!(counts(), (1, 1, 0));
        drop(persistent);
        assert_eq!(counts(), (0, 0, 0));
    }
}
