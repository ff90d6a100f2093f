//! One client connection: wait for a slot, pick a backend, connect with
//! failover, splice; and, when it streams or goes on exchanging on a proxy
//! thread that serves two such connections more than another, move there.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn, Instrument};

use super::header::Header;
use super::net::Socket;
use super::splice::{self, Activity, Meter, Pipes, Progress, Stop};
use super::threads::{Kind, Placed};
use super::{Shared, ADMIT_WAIT, EJECT_FOR};
use crate::metrics::PortMetrics;
use crate::snapshot::Opened;

/// An accepted client connection, and what serving it takes.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) client: Socket,
    pub(crate) port: u16,
    /// The proxy thread that serves it, if any.
    pub(crate) placed: Option<Placed>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) counters: Arc<PortMetrics>,
}

/// A connection's link to its backend, once it has one.
#[derive(Debug)]
struct Link {
    backend: Socket,
    addr: SocketAddr,
    activity: Activity,
    progress: Progress,
    _open: Open,
    /// Counted in the backend's load (what least-conn compares).
    _load: Opened,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    /// Serves the client until both directions are done, or until it moves
    /// to another proxy thread: a task there serves the rest. Errors are
    /// logged here: they never reach the accept loop.
    ///
    /// (Everything lives in `self` and in locals that are borrowed, never
    /// moved, while the connection is served: a future has room for
    /// whatever it moves as well as for where it moved it.)
    pub(crate) async fn serve(self) {
        let Some(slot) = admit(&self.shared, &self.counters).await else {
            return; // dropping `client` closes it
        };
        let open = Open::new(&self.counters);
        let activity = Activity::default();
        // On Linux the client's socket has TCP_NODELAY from its listener.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = self.client.set_nodelay(true);
        let (backend, addr, load) = match connect(&self.client, self.port, &self.shared).await {
            Ok(connected) => connected,
            Err(err) => {
                self.counters.failed.inc();
                warn!("closing client connection: {err:#}");
                return;
            }
        };
        debug!(backend = %addr, "open");
        activity.touch(); // idle from now on, not from before the connect
        let mut link = Link {
            backend,
            addr,
            activity,
            progress: Progress::default(),
            _open: open,
            _load: load,
            _slot: slot,
        };
        if let Some(to) = self.relay(&mut link).await {
            self.move_to(link, to);
        }
    }

    /// Splices until both directions are done (then logs the close), or
    /// until, between two exchanges, its thread turns out to serve two
    /// connections of its kind (streams, or persistent connections) more
    /// than another: then it returns that thread.
    async fn relay(&self, link: &mut Link) -> Option<usize> {
        // Whichever thread this runs on, its pipe pool counts in ours.
        splice::count_pipes_in(self.shared.metrics.pipes_pooled());
        let activity = &link.activity;
        let park = |streaming: bool| {
            let kind = if streaming {
                Kind::Stream
            } else if activity.persistent_check_due() {
                Kind::Persistent
            } else {
                return false; // short-lived so far, or asked just now
            };
            self.placed
                .as_ref()
                .is_some_and(|p| p.should_move(&self.shared, kind))
        };
        let spliced = splice::splice_resumable(
            &self.client,
            &link.backend,
            Meter {
                a_to_b: &self.counters.bytes_to_backend,
                b_to_a: &self.counters.bytes_to_client,
                activity,
            },
            Pipes::Pooled,
            &mut link.progress,
            &park,
        );
        let result = match self.shared.idle_timeout {
            None => spliced.await.map(Some),
            Some(limit) => tokio::select! {
                r = spliced => r.map(Some),
                () = idle(&link.activity, limit) => Ok(None),
            },
        };
        let (addr, ms) = (link.addr, link.activity.age().as_millis() as u64);
        match result {
            Ok(Some(Stop::Parked)) => return self.placed.as_ref().map(Placed::moving_to),
            Ok(Some(Stop::Done)) => {
                let (up, down) = link.progress.moved();
                debug!(backend = %addr, bytes_up = up, bytes_down = down, ms, "close")
            }
            Ok(None) => {
                self.counters.idle_closed.inc();
                let idle_timeout = self.shared.idle_timeout;
                debug!(backend = %addr, ms, ?idle_timeout, "closed: idle");
            }
            Err(err) => debug!(backend = %addr, ms, "closed with error: {err}"),
        }
        None
    }

    /// Goes on serving on proxy thread `to`: both sockets leave this
    /// thread's runtime for that one's, and a task there takes over.
    fn move_to(mut self, link: Link, to: usize) {
        let shared = self.shared.clone();
        let thread = &shared.threads[to];
        let (client, backend) = (self.client.detach(), link.backend.detach());
        let adopted = Socket::adopt(client, &thread.runtime)
            .and_then(|client| Ok((client, Socket::adopt(backend, &thread.runtime)?)));
        let (client, backend) = match adopted {
            Ok(sockets) => sockets,
            Err(err) => {
                // Both sockets are closed by now: the connection is lost.
                warn!(thread = to, "cannot move a connection, closing it: {err}");
                return;
            }
        };
        let kind = self.placed.take().map_or(Kind::Plain, |p| p.kind()); // uncounted there
        let placed = Placed::new(to, thread);
        placed.count_as(kind); // as it was where it came from
        let conn = Conn {
            client,
            placed: Some(placed),
            ..self
        };
        let link = Link { backend, ..link };
        shared.metrics.connection_moved();
        debug!(
            thread = to,
            ?kind,
            "moved to a thread with fewer of its kind"
        );
        let task = resume(conn, link).instrument(tracing::Span::current());
        shared.tracker.spawn_on(task, &thread.runtime);
    }
}

/// The rest of a moved connection, as a task of its own. (Its type is
/// named, unlike [`Conn::serve`]'s: a future cannot spawn one of its own
/// type.)
fn resume(conn: Conn, mut link: Link) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        if let Some(to) = conn.relay(&mut link).await {
            conn.move_to(link, to);
        }
    })
}

/// A connection counted in `kite_connections_active` until it is dropped.
#[derive(Debug)]
struct Open(Gauge);

impl Open {
    fn new(counters: &PortMetrics) -> Open {
        counters.active.inc();
        Open(counters.active.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A slot under `--max-connections`, waiting up to [`ADMIT_WAIT`] for one;
/// `None` means the connection is refused (and counted). Refusals are
/// logged when they start and when they stop, not once per connection.
async fn admit(shared: &Shared, counters: &PortMetrics) -> Option<OwnedSemaphorePermit> {
    let slots = shared.slots.clone();
    let permit = match slots.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => match tokio::time::timeout(ADMIT_WAIT, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        },
    };
    match &permit {
        Some(_) => {
            if shared.refusing.swap(false, Ordering::Relaxed) {
                info!("accepting connections again");
            }
        }
        None => {
            counters.refused.inc();
            if !shared.refusing.swap(true, Ordering::Relaxed) {
                warn!(
                    max_connections = shared.max_connections,
                    "refusing connections: --max-connections reached \
                     (raise it, or the open-file limit it is derived from)"
                );
            }
        }
    }
    permit
}

/// Returns once no byte has moved either way for `limit`.
async fn idle(activity: &Activity, limit: Duration) {
    loop {
        let idle = activity.idle_for();
        if idle >= limit {
            return;
        }
        tokio::time::sleep(limit - idle).await;
    }
}

/// Connects to a backend of `port` picked by the policy, trying the others
/// in turn when one fails; a failed backend is ejected for [`EJECT_FOR`].
/// With `--proxy-protocol`, the header telling `client`'s addresses is
/// the first thing sent: a backend that cannot take it counts as failed.
/// The connection counts in the backend's load from its pick on.
async fn connect(
    client: &Socket,
    port: u16,
    shared: &Shared,
) -> Result<(Socket, SocketAddr, Opened)> {
    let header = match shared.proxy_protocol {
        Some(version) => {
            let gone = "the client left before a backend was picked";
            let source = client.peer_addr().context(gone)?;
            let destination = client.local_addr().context(gone)?;
            Some(Header::new(version, source, destination))
        }
        None => None,
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    loop {
        // Load, pick and copy out: no guard lives across an await.
        let picked = {
            let snapshot = shared.store.load();
            snapshot.port(port).and_then(|backends| {
                let i = (shared.policy).pick(backends, &tried, &shared.ejections)?;
                let local = i < backends.local();
                Some((backends.addrs()[i], backends.load(i).open(), local))
            })
        };
        let Some((addr, load, local)) = picked else {
            if tried.is_empty() {
                bail!("no backend for port {port}");
            }
            bail!("all {} backends for port {port} failed", tried.len());
        };
        match tokio::time::timeout(shared.connect_timeout, Socket::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let sent = match &header {
                    Some(header) => stream.write_all(header.as_bytes()).await,
                    None => Ok(()),
                };
                match sent {
                    Ok(()) => {
                        shared.ejections.restore(addr);
                        if let Some(zones) = &shared.zones {
                            zones.connected(local);
                        }
                        return Ok((stream, addr, load));
                    }
                    Err(err) => warn!(backend = %addr,
                        "cannot send the PROXY protocol header, trying another backend: {err}"),
                }
            }
            Ok(Err(err)) if is_out_of_descriptors(&err) => {
                // Our shortage, not the backend's fault: no ejection.
                bail!("cannot connect to {addr}: {err} (kite is out of file descriptors: raise the open-file limit, or lower --max-connections)");
            }
            Ok(Err(err)) => warn!(backend = %addr, "connect failed, trying another backend: {err}"),
            Err(_) => warn!(backend = %addr, timeout = ?shared.connect_timeout,
                            "connect timed out, trying another backend"),
        }
        shared.metrics.backend_failed(addr);
        shared.ejections.eject(addr, EJECT_FOR);
        tried.push(addr);
    }
}

/// EMFILE, ENFILE: this process or the system has no descriptor left.
fn is_out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
