//! The immutable set of targets that discovery publishes and every
//! connection reads, each port's [`Backends`] (kite's own zone first, with
//! their [`Load`]s), and the lock-free backend pick ([`Policy`]).

mod backends;
mod pick;
mod table;

pub use backends::{Backends, Load, Opened};
pub use pick::{Ejections, Policy};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

/// How a task's network is set up, which decides where its ports are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Docker bridge: ports are the host ports of `networkBindings`.
    Bridge,
    /// Host networking: the container port is the host port.
    Host,
    /// The task's own ENI (EC2 or Fargate): the container port on its IP.
    Awsvpc,
    /// An AWS Cloud Map instance: the address and port its attributes give.
    #[serde(rename = "cloudmap")]
    CloudMap,
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::Awsvpc => "awsvpc",
            NetworkMode::CloudMap => "cloudmap",
        })
    }
}

/// One reachable port of one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The port kite listens on for it.
    pub listen_port: u16,
    /// The port inside the container.
    pub container_port: u16,
    /// Where to connect.
    pub address: SocketAddr,
    /// The task id (last segment of the ARN).
    pub task_id: String,
    /// The task ARN.
    pub task_arn: String,
    /// `family:revision` of the task definition.
    pub task_definition: String,
    /// The task's network mode.
    pub network_mode: NetworkMode,
    /// The container's health status (`HEALTHY`, `UNKNOWN`).
    pub health: String,
    /// The container instance id, or the ENI id for awsvpc tasks.
    pub host: String,
    /// The task's availability zone, when known.
    pub zone: Option<String>,
}

/// A task that discovery found but does not route to, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The task ARN (or whatever identifies the item).
    pub task_arn: String,
    /// Why it is left out.
    pub reason: String,
    /// What kind of reason it is.
    #[serde(skip)]
    pub kind: SkipKind,
}

/// The kinds of reasons a task is left out, as far as discovery cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipKind {
    /// Not a target yet, and may be one at its next describe: the task or
    /// its container is not RUNNING yet, or the container is UNHEALTHY.
    /// Discovery describes such a task again every round.
    Settling,
    /// Not eligible, and no describe will change that (draining, another
    /// revision).
    Ineligible,
    /// The API data is unusable (worth a warning).
    BadData,
}

/// An immutable view of the targets, built by one discovery round.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Every target, sorted by listen port then address.
    pub targets: Vec<Target>,
    /// Every task left out, with the reason.
    pub skipped: Vec<Skipped>,
    /// The backends per listen port: what the accept path reads.
    #[serde(skip)]
    by_port: BTreeMap<u16, Backends>,
}

impl Snapshot {
    /// Builds a snapshot from targets and skipped tasks. (Its backends know
    /// no zone and have loads of their own until [`Store::publish`]
    /// arranges them.)
    pub fn new(mut targets: Vec<Target>, skipped: Vec<Skipped>) -> Self {
        targets.sort_by(|a, b| {
            (a.listen_port, a.address, &a.task_id).cmp(&(b.listen_port, b.address, &b.task_id))
        });
        targets.dedup_by(|a, b| a.listen_port == b.listen_port && a.address == b.address);
        let mut snapshot = Snapshot {
            targets,
            skipped,
            by_port: BTreeMap::new(),
        };
        snapshot.arrange(None, &mut HashMap::new());
        snapshot
    }

    /// Sets out each port's backends: those in `zone` first, each with its
    /// load from `loads` (where a new address gets one).
    fn arrange(&mut self, zone: Option<&str>, loads: &mut HashMap<SocketAddr, Load>) {
        let mut by_port: BTreeMap<u16, Vec<&Target>> = BTreeMap::new();
        for t in &self.targets {
            by_port.entry(t.listen_port).or_default().push(t);
        }
        self.by_port = by_port
            .into_iter()
            .map(|(port, targets)| (port, Backends::new(&targets, zone, loads)))
            .collect();
    }

    /// The listen ports that have at least one backend.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.by_port.keys().copied()
    }

    /// The backend addresses for a listen port (empty when none), kite's
    /// own zone's first.
    pub fn backends(&self, port: u16) -> &[SocketAddr] {
        self.by_port.get(&port).map_or(&[], Backends::addrs)
    }

    /// The backends of a listen port, for a pick.
    pub fn port(&self, port: u16) -> Option<&Backends> {
        self.by_port.get(&port)
    }
}

/// Where discovery publishes snapshots and readers find the latest one.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    /// Bumped on every publish, so listeners can follow the ports.
    version: watch::Sender<u64>,
    /// When the last snapshot was published (a good discovery round).
    published_at: Mutex<Option<Instant>>,
    /// kite's own zone, whose backends each port lists first.
    zone: Mutex<Option<String>>,
    /// Why the last discovery round failed, until a good one.
    failure: Mutex<Option<String>>,
    /// The load of every backend address that is listed, or still has
    /// connections open: the next snapshots take theirs from here.
    loads: Mutex<HashMap<SocketAddr, Load>>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            current: ArcSwap::from_pointee(Snapshot::default()),
            version: watch::Sender::new(0),
            published_at: Mutex::new(None),
            zone: Mutex::new(None),
            failure: Mutex::new(None),
            loads: Mutex::new(HashMap::new()),
        }
    }
}

impl Store {
    /// The current snapshot: a lock-free load.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Sets kite's own zone: from the next publish on, each port lists
    /// the backends in it first.
    pub fn set_zone(&self, zone: Option<String>) {
        *self.zone.lock().unwrap_or_else(|e| e.into_inner()) = zone;
    }

    /// kite's own zone, if known.
    pub fn zone(&self) -> Option<String> {
        self.zone.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the snapshot and wakes whoever follows it. Its backends are
    /// set out for kite's zone first, and keep the loads they had.
    pub fn publish(&self, mut snapshot: Snapshot) -> Arc<Snapshot> {
        {
            let zone = self.zone();
            let mut loads = self.loads.lock().unwrap_or_else(|e| e.into_inner());
            snapshot.arrange(zone.as_deref(), &mut loads);
            let listed: std::collections::HashSet<SocketAddr> =
                snapshot.targets.iter().map(|t| t.address).collect();
            loads.retain(|addr, load| listed.contains(addr) || load.get() > 0);
        }
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let old = self.current.swap(Arc::new(snapshot));
        *self.published_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.version.send_modify(|v| *v += 1);
        old
    }

    /// How long ago the last snapshot was published; `None` before the
    /// first good discovery round.
    pub fn age(&self) -> Option<Duration> {
        let at = *self.published_at.lock().unwrap_or_else(|e| e.into_inner());
        at.map(|t| t.elapsed())
    }

    /// Records why a discovery round failed (the snapshot stays), for
    /// `/readyz` to tell; the next publish clears it.
    pub fn fail(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// Why the last discovery round failed, when it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A receiver that changes on every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests;
