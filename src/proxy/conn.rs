//! One client connection: wait for a slot, pick a backend, connect with
//! failover, splice.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn};

use super::net::Socket;
use super::splice::{self, Activity, Meter};
use super::{Load, Shared, ADMIT_WAIT, EJECT_FOR};
use crate::metrics::PortMetrics;
use crate::snapshot;

/// Serves one client until both directions are done, counted in `load`
/// meanwhile. Errors are logged here: they never reach the accept loop.
///
/// (`load` is a parameter rather than held by a wrapping future: a future
/// that holds another and awaits it has room for it twice, which would
/// add over a kilobyte to every connection.)
pub(crate) async fn handle(
    client: Socket,
    port: u16,
    load: Option<Load>,
    shared: Arc<Shared>,
    counters: Arc<PortMetrics>,
) {
    let _load = load;
    let Some(_slot) = admit(&shared, &counters).await else {
        return; // dropping `client` closes it
    };
    counters.active.inc();
    serve(&client, port, &shared, &counters).await;
    counters.active.dec();
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

async fn serve(client: &Socket, port: u16, shared: &Shared, counters: &PortMetrics) {
    let started = Instant::now();
    // On Linux the client's socket has TCP_NODELAY from its listener.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = client.set_nodelay(true);
    let (backend, addr) = match connect(port, shared).await {
        Ok(connected) => connected,
        Err(err) => {
            counters.failed.inc();
            warn!("closing client connection: {err:#}");
            return;
        }
    };
    debug!(backend = %addr, "open");
    let activity = Activity::default();
    let meter = Meter {
        a_to_b: &counters.bytes_to_backend,
        b_to_a: &counters.bytes_to_client,
        activity: &activity,
    };
    let spliced = splice::splice_bidirectional(client, &backend, meter);
    let result = match shared.idle_timeout {
        None => spliced.await.map(Some),
        Some(limit) => tokio::select! {
            r = spliced => r.map(Some),
            () = idle(&activity, limit) => Ok(None),
        },
    };
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(Some((up, down))) => {
            debug!(backend = %addr, bytes_up = up, bytes_down = down, ms, "close")
        }
        Ok(None) => {
            counters.idle_closed.inc();
            debug!(backend = %addr, ms, idle_timeout = ?shared.idle_timeout, "closed: idle");
        }
        Err(err) => debug!(backend = %addr, ms, "closed with error: {err}"),
    }
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

/// Connects to a random backend of `port`, trying the others in turn when
/// one fails; a failed backend is ejected for [`EJECT_FOR`].
async fn connect(port: u16, shared: &Shared) -> Result<(Socket, SocketAddr)> {
    let mut tried: Vec<SocketAddr> = Vec::new();
    loop {
        // Load, pick and copy the address out: no guard lives across an await.
        let picked = {
            let snapshot = shared.store.load();
            snapshot::pick(snapshot.backends(port), &tried, &shared.ejections)
        };
        let Some(addr) = picked else {
            if tried.is_empty() {
                bail!("no backend for port {port}");
            }
            bail!("all {} backends for port {port} failed", tried.len());
        };
        match tokio::time::timeout(shared.connect_timeout, Socket::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                shared.ejections.restore(addr);
                return Ok((stream, addr));
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
