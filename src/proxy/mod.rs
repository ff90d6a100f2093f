//! The proxy: listeners that follow the snapshot's ports, and one task per
//! connection that picks a backend, connects with failover and splices.
//!
//! - `listen`: binding the snapshot's ports and accepting ([`serve`]).
//! - `threads`: the proxy threads ([`Threads`]) and where connections go
//!   among them.
//! - `conn`: one connection, from admission to close, moving between
//!   threads; `header`: the PROXY protocol header it may send first.
//! - [`splice`]: the byte relay; [`net`]: the sockets it works on.
//! - [`limits`]: the descriptor budget behind `--max-connections`, the
//!   open-file limit, the control thread's priority.
//! - `run`: `kite proxy` as one call ([`run()`]).

mod conn;
mod header;
pub mod limits;
mod listen;
pub mod net;
mod run;
pub mod splice;
mod threads;

pub use limits::{max_connections_for, FDS_PER_CONNECTION};
pub use listen::serve;
pub use run::{run, Config, Handles};
pub use threads::{default_threads, Threads};

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::ProxyProtocol;
use crate::metrics::{Metrics, ZoneCounters};
use crate::snapshot::{Ejections, Policy, Store};
use threads::ProxyThread;

/// How long a backend that refused or timed out stays out of picks.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

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
    /// How each connection picks its backend among its port's.
    pub policy: Policy,
    /// The PROXY protocol header sent to backends first, if any.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Where connections are counted.
    pub metrics: Arc<Metrics>,
    /// The runtimes that accept and serve connections, each with its own
    /// listener on every port (see [`net::Listener::bind_on`]); a
    /// connection stays on the runtime that accepted it. Empty: one
    /// listener per port, on the runtime [`serve`] runs on.
    pub runtimes: Vec<Handle>,
}

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) policy: Policy,
    pub(crate) proxy_protocol: Option<ProxyProtocol>,
    /// Connections counted by zone, when kite knows its own.
    pub(crate) zones: Option<ZoneCounters>,
    pub(crate) ejections: Ejections,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) metrics: Arc<Metrics>,
    /// One permit per connection that may be served at once.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_connections: usize,
    /// Whether connections are being refused now, so the refusal is
    /// logged when it starts and when it ends rather than per connection.
    pub(crate) refusing: AtomicBool,
    /// The proxy threads ([`Settings::runtimes`]), in listener order.
    threads: Vec<ProxyThread>,
    /// Where connection tasks are counted, so that shutdown waits for
    /// them: those of moved connections too.
    tracker: TaskTracker,
}

impl Shared {
    fn new(settings: &Settings, store: Arc<Store>, tracker: TaskTracker) -> Shared {
        let slots = settings.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let zones = store.zone().map(|_| settings.metrics.zones());
        Shared {
            store,
            policy: settings.policy,
            proxy_protocol: settings.proxy_protocol,
            zones,
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
