//! The proxy: listeners that follow the snapshot's ports, and one task per
//! connection that picks a backend, connects with failover and splices.

mod conn;
pub mod splice;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::snapshot::{Ejections, Store};

/// How long a backend that refused or timed out stays out of picks.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

/// The first pause after a failed accept (EMFILE and friends); it doubles
/// up to [`ACCEPT_BACKOFF_MAX`] so a full file table never busy-loops.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Proxy settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The address every listener binds.
    pub listen_addr: IpAddr,
    /// Connect timeout per backend attempt.
    pub connect_timeout: Duration,
}

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) ejections: Ejections,
    pub(crate) connect_timeout: Duration,
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
    let shared = Arc::new(Shared {
        store: store.clone(),
        ejections: Ejections::default(),
        connect_timeout: settings.connect_timeout,
    });
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
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                info!(%addr, "listening");
                let stop = cancel.child_token();
                listeners.insert(port, stop.clone());
                let task = accept_loop(listener, port, shared.clone(), tracker.clone(), stop);
                tracker.spawn(task);
            }
            Err(err) => warn!(%addr, "cannot listen, will retry after the next round: {err}"),
        }
    }
}

/// Accepts connections on one port until `stop`.
async fn accept_loop(
    listener: TcpListener,
    port: u16,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let span = tracing::debug_span!("conn", port, client.addr = %peer);
                tracker.spawn(conn::handle(client, port, shared.clone()).instrument(span));
            }
            Err(err) if is_transient_accept_error(&err) => debug!(port, "accept: {err}"),
            Err(err) => {
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

/// Errors about one connection that died before we accepted it.
fn is_transient_accept_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
