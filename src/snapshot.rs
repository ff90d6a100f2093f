//! The immutable set of targets that discovery publishes and every
//! connection reads, and the lock-free backend pick.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rand::Rng;
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
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::Awsvpc => "awsvpc",
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
}

/// A task that discovery found but does not route to, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The task ARN (or whatever identifies the item).
    pub task_arn: String,
    /// Why it is left out.
    pub reason: String,
    /// True when the reason is unusable API data (worth a warning), false
    /// when the task is simply not eligible (stopping, other revision).
    #[serde(skip)]
    pub bad_data: bool,
}

/// An immutable view of the targets, built by one discovery round.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Every target, sorted by listen port then address.
    pub targets: Vec<Target>,
    /// Every task left out, with the reason.
    pub skipped: Vec<Skipped>,
    /// Backend addresses per listen port: what the accept path reads.
    #[serde(skip)]
    by_port: BTreeMap<u16, Box<[SocketAddr]>>,
}

impl Snapshot {
    /// Builds a snapshot from targets and skipped tasks.
    pub fn new(mut targets: Vec<Target>, skipped: Vec<Skipped>) -> Self {
        targets.sort_by(|a, b| {
            (a.listen_port, a.address, &a.task_id).cmp(&(b.listen_port, b.address, &b.task_id))
        });
        targets.dedup_by(|a, b| a.listen_port == b.listen_port && a.address == b.address);
        let mut by_port: BTreeMap<u16, Vec<SocketAddr>> = BTreeMap::new();
        for t in &targets {
            by_port.entry(t.listen_port).or_default().push(t.address);
        }
        let by_port = by_port
            .into_iter()
            .map(|(port, addrs)| (port, addrs.into_boxed_slice()))
            .collect();
        Snapshot {
            targets,
            skipped,
            by_port,
        }
    }

    /// The listen ports that have at least one backend.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.by_port.keys().copied()
    }

    /// The backend addresses for a listen port (empty when none).
    pub fn backends(&self, port: u16) -> &[SocketAddr] {
        self.by_port.get(&port).map_or(&[], |b| b)
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
}

impl Default for Store {
    fn default() -> Self {
        Store {
            current: ArcSwap::from_pointee(Snapshot::default()),
            version: watch::Sender::new(0),
            published_at: Mutex::new(None),
        }
    }
}

impl Store {
    /// The current snapshot: a lock-free load.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Replaces the snapshot and wakes whoever follows it.
    pub fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
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

    /// A receiver that changes on every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Backends that recently failed to connect, left out of picks for a while.
///
/// Writes happen only on connect failures; the pick path reads an atomic
/// count and takes the lock only while some backend is ejected.
#[derive(Debug, Default)]
pub struct Ejections {
    until: Mutex<HashMap<SocketAddr, Instant>>,
    count: AtomicUsize,
}

impl Ejections {
    /// Leaves `addr` out of picks for `period`.
    pub fn eject(&self, addr: SocketAddr, period: Duration) {
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        until.retain(|_, t| *t > now);
        until.insert(addr, now + period);
        self.count.store(until.len(), Ordering::Release);
    }

    /// Puts `addr` back after it accepted a connection.
    pub fn restore(&self, addr: SocketAddr) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.remove(&addr);
        self.count.store(until.len(), Ordering::Release);
    }

    /// Whether `addr` is currently left out.
    pub fn is_ejected(&self, addr: SocketAddr) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.get(&addr).is_some_and(|t| *t > Instant::now())
    }
}

/// Picks a backend uniformly at random among those not yet `tried`,
/// preferring ones that are not ejected; ejected ones are a last resort, so
/// a client fails only when every backend has been tried.
///
/// Synchronous on purpose: no guard or RNG is held across an `.await`.
pub fn pick(
    backends: &[SocketAddr],
    tried: &[SocketAddr],
    ejections: &Ejections,
) -> Option<SocketAddr> {
    let untried = |a: &&SocketAddr| !tried.contains(a);
    let mut rng = rand::rng();
    // The common case: nothing tried, nothing ejected: one random draw.
    if tried.is_empty() && ejections.count.load(Ordering::Acquire) == 0 {
        if backends.is_empty() {
            return None;
        }
        return Some(backends[rng.random_range(0..backends.len())]);
    }
    let healthy = |a: &&SocketAddr| untried(a) && !ejections.is_ejected(**a);
    let n = backends.iter().filter(healthy).count();
    if n > 0 {
        return backends
            .iter()
            .filter(healthy)
            .nth(rng.random_range(0..n))
            .copied();
    }
    let n = backends.iter().filter(untried).count();
    if n == 0 {
        return None;
    }
    backends
        .iter()
        .filter(untried)
        .nth(rng.random_range(0..n))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, i], 80))
    }

    #[test]
    fn pick_is_uniform_and_skips_tried() {
        let backends = [addr(1), addr(2), addr(3)];
        let ej = Ejections::default();
        let mut seen = HashMap::new();
        for _ in 0..3000 {
            *seen.entry(pick(&backends, &[], &ej).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|n| *n > 800), "{seen:?}");
        for _ in 0..100 {
            let p = pick(&backends, &[addr(1), addr(3)], &ej).unwrap();
            assert_eq!(p, addr(2));
        }
        assert_eq!(pick(&backends, &backends, &ej), None);
        assert_eq!(pick(&[], &[], &ej), None);
    }

    #[test]
    fn ejected_backends_are_a_last_resort() {
        let backends = [addr(1), addr(2)];
        let ej = Ejections::default();
        ej.eject(addr(1), Duration::from_secs(60));
        for _ in 0..100 {
            assert_eq!(pick(&backends, &[], &ej), Some(addr(2)));
        }
        // With the healthy one tried, the ejected one is still given a chance.
        assert_eq!(pick(&backends, &[addr(2)], &ej), Some(addr(1)));
        ej.restore(addr(1));
        assert!(!ej.is_ejected(addr(1)));
        ej.eject(addr(1), Duration::ZERO);
        assert!(!ej.is_ejected(addr(1)));
    }

    #[test]
    fn snapshot_groups_by_port() {
        let t = |port, i| Target {
            listen_port: port,
            container_port: port,
            address: addr(i),
            task_id: format!("t{i}"),
            task_arn: format!("arn:t{i}"),
            task_definition: "web:1".into(),
            network_mode: NetworkMode::Bridge,
            health: "UNKNOWN".into(),
            host: "ci".into(),
        };
        let s = Snapshot::new(vec![t(443, 2), t(80, 2), t(80, 1)], vec![]);
        assert_eq!(s.ports().collect::<Vec<_>>(), vec![80, 443]);
        assert_eq!(s.backends(80), &[addr(1), addr(2)]);
        assert!(s.backends(8080).is_empty());
    }
}
