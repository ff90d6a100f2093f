//! kite's metrics: what the admin endpoint serves at `/metrics`.
//!
//! One [`Metrics`] value is made at start-up and shared by discovery, the
//! proxy and the admin endpoint; there is no global registry and no global
//! metric. The hot path touches only atomics: each listener looks its
//! per-port counters up once ([`Metrics::port`]) and every connection on
//! it uses those handles. The splice's per-thread pipe pools, which no
//! connection owns, count their pipes in [`Metrics::pipes_pooled`], handed
//! to them by the connections that use them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod register;

/// Labels of the per-listen-port metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabel {
    /// The port kite listens on.
    pub port: u16,
}

/// Labels of the per-backend metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// The backend's `ip:port`.
    pub backend: String,
}

/// Labels of the per-proxy-thread metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThreadLabel {
    /// The proxy thread's number (`kite-proxy-N`).
    pub thread: u16,
}

/// Proxy thread `thread`'s gauge of `family`.
fn of_thread(family: &Family<ThreadLabel, Gauge>, thread: usize) -> Gauge {
    let thread = u16::try_from(thread).unwrap_or(u16::MAX);
    family.get_or_create_owned(&ThreadLabel { thread })
}

/// Labels of the connections counted by zone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabel {
    /// `same`: the backend is in kite's own zone; `other`: it is not.
    pub zone: &'static str,
}

/// Labels of the AWS API call counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// The API operation, e.g. `ListTasks`.
    pub operation: String,
}

/// Every metric kite exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    accepted: Family<PortLabel, Counter>,
    active: Family<PortLabel, Gauge>,
    failed: Family<PortLabel, Counter>,
    refused: Family<PortLabel, Counter>,
    idle_closed: Family<PortLabel, Counter>,
    bytes_to_backend: Family<PortLabel, Counter>,
    bytes_to_client: Family<PortLabel, Counter>,
    connect_failures: Family<BackendLabel, Counter>,
    ejections: Family<BackendLabel, Counter>,
    accept_errors: Counter,
    rounds: Counter,
    round_errors: Counter,
    throttles: Family<OperationLabel, Counter>,
    /// Every throttled attempt, for discovery's pace (not exported).
    throttled_attempts: Counter,
    discovery_period: Gauge<f64, std::sync::atomic::AtomicU64>,
    round_duration: Histogram,
    api_calls: Family<OperationLabel, Counter>,
    targets: Family<PortLabel, Gauge>,
    /// Every port `targets` has a series for.
    target_ports: Mutex<BTreeSet<u16>>,
    snapshot_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    runtime_tasks: Gauge,
    pipes_pooled: Gauge,
    thread_connections: Family<ThreadLabel, Gauge>,
    thread_streams: Family<ThreadLabel, Gauge>,
    thread_persistent: Family<ThreadLabel, Gauge>,
    connections_moved: Counter,
    connections_by_zone: Family<ZoneLabel, Counter>,
    backend_open: Family<BackendLabel, Gauge>,
}

/// The connections sent to kite's own zone and to the others, counted
/// once per connection that reached a backend.
#[derive(Clone, Debug)]
pub struct ZoneCounters {
    same: Counter,
    other: Counter,
}

impl ZoneCounters {
    /// A connection reached a backend in kite's own zone (`local`), or
    /// one in another zone.
    pub fn connected(&self, local: bool) {
        if local { &self.same } else { &self.other }.inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The counters of one listen port, looked up once per listener.
#[derive(Clone, Debug)]
pub struct PortMetrics {
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections open now.
    pub active: Gauge,
    /// Connections closed because no backend could be reached.
    pub failed: Counter,
    /// Connections refused at `--max-connections`.
    pub refused: Counter,
    /// Connections closed by `--idle-timeout`.
    pub idle_closed: Counter,
    /// Bytes client → backend.
    pub bytes_to_backend: Counter,
    /// Bytes backend → client.
    pub bytes_to_client: Counter,
}

impl Metrics {
    /// The gauge of the connections proxy thread `thread` serves.
    pub fn thread_connections(&self, thread: usize) -> Gauge {
        of_thread(&self.thread_connections, thread)
    }

    /// The gauge of the connections proxy thread `thread` serves that have
    /// streamed.
    pub fn thread_streams(&self, thread: usize) -> Gauge {
        of_thread(&self.thread_streams, thread)
    }

    /// The gauge of the persistent connections proxy thread `thread`
    /// serves: still exchanging past their first 100 ms, without streaming.
    pub fn thread_persistent(&self, thread: usize) -> Gauge {
        of_thread(&self.thread_persistent, thread)
    }

    /// The gauge of the pipes the splice keeps for reuse, over all proxy
    /// threads (`kite_pipes_pooled`): each thread's pool counts its own in
    /// it (see [`crate::proxy::splice::count_pipes_in`]).
    pub fn pipes_pooled(&self) -> &Gauge {
        &self.pipes_pooled
    }

    /// The counters of connections by zone (for when kite knows its own).
    pub fn zones(&self) -> ZoneCounters {
        let of = |zone| {
            self.connections_by_zone
                .get_or_create_owned(&ZoneLabel { zone })
        };
        ZoneCounters {
            same: of("same"),
            other: of("other"),
        }
    }

    /// Sets the connections open to each backend (as the current snapshot
    /// counts them for least-conn); backends not listed lose their series.
    pub fn set_backend_open(&self, open: impl IntoIterator<Item = (SocketAddr, usize)>) {
        self.backend_open.clear();
        for (backend, n) in open {
            let backend = backend.to_string();
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.backend_open
                .get_or_create(&BackendLabel { backend })
                .set(n);
        }
    }

    /// Counts a connection moved to another proxy thread.
    pub fn connection_moved(&self) {
        self.connections_moved.inc();
    }

    /// The handles of one listen port's counters.
    pub fn port(&self, port: u16) -> PortMetrics {
        let l = PortLabel { port };
        PortMetrics {
            accepted: self.accepted.get_or_create_owned(&l),
            active: self.active.get_or_create_owned(&l),
            failed: self.failed.get_or_create_owned(&l),
            refused: self.refused.get_or_create_owned(&l),
            idle_closed: self.idle_closed.get_or_create_owned(&l),
            bytes_to_backend: self.bytes_to_backend.get_or_create_owned(&l),
            bytes_to_client: self.bytes_to_client.get_or_create_owned(&l),
        }
    }

    /// A failed connection attempt to `backend`, which is then ejected.
    pub fn backend_failed(&self, backend: SocketAddr) {
        let l = BackendLabel {
            backend: backend.to_string(),
        };
        self.connect_failures.get_or_create(&l).inc();
        self.ejections.get_or_create(&l).inc();
    }

    /// A failed accept(2).
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// One AWS API call (one HTTP attempt), and whether AWS throttled it.
    pub fn api_call(&self, operation: &str, throttled: bool) {
        let l = OperationLabel {
            operation: operation.to_owned(),
        };
        self.api_calls.get_or_create(&l).inc();
        if throttled {
            self.throttles.get_or_create(&l).inc();
            self.throttled_attempts.inc();
        }
    }

    /// AWS API calls throttled so far, every operation together.
    pub fn throttled_attempts(&self) -> u64 {
        self.throttled_attempts.get()
    }

    /// The discovery period now in use.
    pub fn set_discovery_period(&self, period: Duration) {
        self.discovery_period.set(period.as_secs_f64());
    }

    /// A finished discovery round: how long it took, and whether it failed.
    pub fn round(&self, took: Duration, failed: bool) {
        self.rounds.inc();
        self.round_duration.observe(took.as_secs_f64());
        if failed {
            self.round_errors.inc();
        }
    }

    /// Sets the per-port target counts of a new snapshot; a port that had
    /// targets before and has none now reads 0.
    pub fn set_targets(&self, counts: &BTreeMap<u16, usize>) {
        let mut known = self.target_ports.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(counts.keys().copied());
        for port in known.iter() {
            let n = counts.get(port).copied().unwrap_or(0);
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.targets
                .get_or_create(&PortLabel { port: *port })
                .set(n);
        }
    }

    /// The text exposition, with the gauges that are read at scrape time
    /// (snapshot age, runtime tasks) brought up to date.
    pub fn render(&self, snapshot_age: Option<Duration>, runtime_tasks: usize) -> String {
        self.snapshot_age
            .set(snapshot_age.map_or(-1.0, |a| a.as_secs_f64()));
        self.runtime_tasks
            .set(i64::try_from(runtime_tasks).unwrap_or(i64::MAX));
        let mut out = String::new();
        if text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; say so rather than panic.
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}
