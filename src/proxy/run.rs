//! `kite proxy` as one call: the proxy threads, discovery, the admin
//! endpoint, the listeners, and the drain on shutdown.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::limits::{lower_this_threads_priority, raise_open_file_limit};
use super::{default_threads, max_connections_for, serve, Settings, Threads};
use crate::aws::Clients;
use crate::config::{Balance, ProxyProtocol};
use crate::discovery::{self, Schedule, Select};
use crate::metrics::Metrics;
use crate::ops;
use crate::snapshot::{Policy, Store};

/// How much lower than the proxy threads' the control thread's priority is
/// (a nice value step; 10 gives it about a tenth of a core the proxy
/// threads want, which still finishes a 5,000-task round within seconds).
const CONTROL_NICE: i32 = 10;

/// What `kite proxy` is asked to do, parsed and validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// What to discover: an ECS family's or service's tasks (the cluster
    /// already resolved), or a Cloud Map service's instances.
    pub source: Select,
    /// The address every listener binds.
    pub listen_addr: IpAddr,
    /// Discovery period, before jitter.
    pub refresh: Duration,
    /// How long a task's description is trusted before a round describes
    /// it again (with Cloud Map: how long its list of healthy instances is).
    pub health_refresh: Duration,
    /// The longest period between discovery rounds after repeated errors
    /// or while AWS throttles (never shorter than six refreshes).
    pub max_backoff: Duration,
    /// Connect timeout per backend attempt.
    pub connect_timeout: Duration,
    /// How long open connections may finish after the shutdown trigger.
    pub drain_timeout: Duration,
    /// Where to serve `/healthz`, `/readyz`, `/metrics` and `/targets`.
    pub admin_addr: Option<SocketAddr>,
    /// `/readyz` is not ready once the last good round is older.
    pub stale_after: Duration,
    /// The most client connections served at once; `None`: what the
    /// open-file limit allows.
    pub max_connections: Option<usize>,
    /// Close connections with no traffic either way for this long.
    pub idle_timeout: Option<Duration>,
    /// Proxy threads.
    pub threads: usize,
    /// The PROXY protocol header sent to every backend first (off: `None`).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// How a connection picks among its port's backends.
    pub balance: Balance,
    /// kite's own availability zone, when known.
    pub zone: Option<String>,
    /// Prefer the backends in kite's own zone.
    pub zone_affinity: bool,
    /// ... while at least this many of them are usable.
    pub zone_min_targets: usize,
}

impl Config {
    /// The defaults of `kite proxy` for `source` (an ECS
    /// [`discovery::Query`] or a [`discovery::cloudmap::Query`]), listening
    /// on `listen_addr`.
    pub fn new(source: impl Into<Select>, listen_addr: IpAddr) -> Config {
        Config {
            source: source.into(),
            listen_addr,
            refresh: Duration::from_secs(5),
            health_refresh: discovery::HEALTH_REFRESH,
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(25),
            admin_addr: None,
            stale_after: Duration::from_secs(300),
            max_connections: None,
            idle_timeout: None,
            threads: default_threads(),
            proxy_protocol: None,
            balance: Balance::Random,
            zone: None,
            zone_affinity: false,
            zone_min_targets: 2,
        }
    }
}

/// What the proxy shares with its caller, who may keep a clone: the
/// snapshot discovery publishes, and the metrics.
#[derive(Clone, Debug, Default)]
pub struct Handles {
    /// The targets.
    pub store: Arc<Store>,
    /// kite's metrics.
    pub metrics: Arc<Metrics>,
}

/// Runs `kite proxy` until `shutdown` resolves, then stops accepting and
/// returns once the open connections have finished, or `drain_timeout`
/// has passed (the connections left are then closed). Every call of
/// `clients` is counted in the metrics ([`Clients::counted`]).
pub async fn run(
    config: Config,
    clients: Clients,
    handles: Handles,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    // The proxy threads start first, at the priority of the caller; this
    // thread (discovery, the admin endpoint, and the blocking threads its
    // runtime starts later) then steps back, so that a discovery round
    // waits for the data path rather than the reverse.
    let threads = Threads::start(config.threads).context("cannot start the proxy threads")?;
    lower_this_threads_priority(CONTROL_NICE);
    let nofile = raise_open_file_limit();
    let Handles { store, metrics } = handles;
    let zone_affinity = config.zone_affinity && config.zone.is_some();
    if config.zone_affinity && !zone_affinity {
        warn!(
            "--zone-affinity: kite does not know its own zone (no --zone, and no \
               AvailabilityZone from the task metadata endpoint), so it picks from every \
               zone; set --zone to the zone kite runs in"
        );
    }
    // Before the first round: each port lists the own zone's backends first.
    store.set_zone(config.zone.clone());
    let zone = config.zone.as_deref().unwrap_or("unknown");
    match &config.source {
        Select::Ecs(query) => {
            info!(cluster = %query.cluster, selector = %query.selector, container = %query.container,
                  public = query.public, zone, "starting")
        }
        Select::CloudMap(query) => info!(cloud_map = %query, zone, "starting"),
    }
    let cancel = CancellationToken::new();
    // The admin endpoint answers until the drain ends, so /metrics shows
    // the drain.
    let _stop_admin = match config.admin_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--admin-addr {addr}: cannot listen"))?;
            info!(%addr, "admin endpoint: /healthz /readyz /metrics /targets");
            let admin = ops::Admin {
                store: store.clone(),
                metrics: metrics.clone(),
                stale_after: config.stale_after,
                runtimes: threads.runtimes().to_vec(),
            };
            let stop = CancellationToken::new();
            let serving = ops::serve(listener, admin, stop.clone());
            tokio::spawn(async move {
                if let Err(err) = serving.await {
                    warn!("{err:#}");
                }
            });
            Some(stop.drop_guard())
        }
        None => None,
    };
    let schedule = Schedule {
        refresh: config.refresh,
        max_backoff: config.max_backoff.max(config.refresh * 6),
    };
    let clients = clients.counted(&metrics);
    let source = config.source.source(clients, config.health_refresh);
    tokio::spawn(discovery::run(
        source,
        store.clone(),
        metrics.clone(),
        schedule,
        cancel.clone(),
    ));
    let settings = Settings {
        listen_addr: config.listen_addr,
        connect_timeout: config.connect_timeout,
        max_connections: (config.max_connections).unwrap_or_else(|| max_connections_for(nofile)),
        idle_timeout: config.idle_timeout,
        policy: Policy {
            balance: config.balance,
            zone_affinity: zone_affinity.then_some(config.zone_min_targets),
        },
        proxy_protocol: config.proxy_protocol,
        metrics,
        runtimes: threads.runtimes().to_vec(),
    };
    let tracker = TaskTracker::new();
    let serving = tokio::spawn(serve(settings, store, tracker.clone(), cancel.clone()));
    shutdown.await;
    info!("shutting down: no new connections, draining open ones");
    cancel.cancel();
    let _ = serving.await;
    tracker.close();
    let drain = config.drain_timeout;
    tokio::select! {
        _ = tracker.wait() => info!("all connections closed"),
        _ = tokio::time::sleep(drain) => {
            warn!(open = tracker.len(), "--drain-timeout {drain:?} reached: closing the remaining connections");
        }
    }
    // Dropping the threads drops the connections left on them.
    drop(threads);
    Ok(())
}
