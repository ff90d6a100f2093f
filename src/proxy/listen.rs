//! Accepting: a listener per port of the snapshot (one per proxy thread),
//! following the ports as they come and go, and an accept loop on each that
//! places every connection on a thread and spawns its task.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::threads::{least_loaded, Placed};
use super::{conn, net, Settings, Shared};
use crate::snapshot::Store;

/// The first pause after a failed accept (EMFILE and friends); it doubles
/// up to [`ACCEPT_BACKOFF_MAX`] so a full file table never busy-loops.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
mod tests;
