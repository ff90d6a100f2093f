//! Every metric kite exports, with its name and help text: what
//! `/metrics` lists.

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::Metrics;

impl Metrics {
    /// All metrics at zero, registered under the `kite_` prefix.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("kite"),
            accepted: Family::default(),
            active: Family::default(),
            failed: Family::default(),
            refused: Family::default(),
            idle_closed: Family::default(),
            bytes_to_backend: Family::default(),
            bytes_to_client: Family::default(),
            connect_failures: Family::default(),
            ejections: Family::default(),
            accept_errors: Counter::default(),
            rounds: Counter::default(),
            round_errors: Counter::default(),
            throttles: Family::default(),
            throttled_attempts: Counter::default(),
            discovery_period: Gauge::default(),
            // 1 ms to about 65 s.
            round_duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            api_calls: Family::default(),
            targets: Family::default(),
            target_ports: Mutex::default(),
            snapshot_age: Gauge::default(),
            runtime_tasks: Gauge::default(),
            pipes_pooled: Gauge::default(),
            thread_connections: Family::default(),
            thread_streams: Family::default(),
            thread_persistent: Family::default(),
            connections_moved: Counter::default(),
            connections_by_zone: Family::default(),
            backend_open: Family::default(),
        };
        m.register()
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "connections_accepted",
            "Client connections accepted",
            self.accepted.clone(),
        );
        r.register(
            "connections_active",
            "Client connections open now",
            self.active.clone(),
        );
        r.register(
            "connections_failed",
            "Client connections closed because every backend failed (or none existed)",
            self.failed.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections refused at --max-connections",
            self.refused.clone(),
        );
        r.register(
            "connections_idle_closed",
            "Connections closed after --idle-timeout without traffic",
            self.idle_closed.clone(),
        );
        r.register(
            "bytes_to_backend",
            "Bytes moved from clients to backends",
            self.bytes_to_backend.clone(),
        );
        r.register(
            "bytes_to_client",
            "Bytes moved from backends to clients",
            self.bytes_to_client.clone(),
        );
        r.register(
            "backend_connect_failures",
            "Failed connection attempts per backend",
            self.connect_failures.clone(),
        );
        r.register(
            "backend_ejections",
            "Times a backend was left out of picks after a failure",
            self.ejections.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accept calls (EMFILE and the like)",
            self.accept_errors.clone(),
        );
        r.register(
            "discovery_rounds",
            "Discovery rounds run",
            self.rounds.clone(),
        );
        r.register(
            "discovery_errors",
            "Discovery rounds that failed (the last good targets were kept)",
            self.round_errors.clone(),
        );
        r.register(
            "aws_api_throttled",
            "AWS API calls answered with a throttling error, per operation",
            self.throttles.clone(),
        );
        r.register(
            "discovery_period_seconds",
            "The discovery period in use, before jitter: --refresh, widened while AWS throttles",
            self.discovery_period.clone(),
        );
        r.register(
            "discovery_round_duration_seconds",
            "Duration of discovery rounds",
            self.round_duration.clone(),
        );
        r.register(
            "aws_api_calls",
            "AWS API calls (HTTP attempts, retries included), per operation",
            self.api_calls.clone(),
        );
        r.register(
            "targets",
            "Backends per listen port in the current snapshot",
            self.targets.clone(),
        );
        r.register(
            "snapshot_age_seconds",
            "Seconds since the last good discovery round (-1 before the first)",
            self.snapshot_age.clone(),
        );
        r.register(
            "pipes_pooled",
            "Pipes kept for reuse by the splice (two descriptors each)",
            self.pipes_pooled.clone(),
        );
        r.register(
            "runtime_tasks",
            "Tasks alive in kite's async runtime",
            self.runtime_tasks.clone(),
        );
        r.register(
            "thread_connections",
            "Client connections each proxy thread serves now",
            self.thread_connections.clone(),
        );
        r.register(
            "thread_streams",
            "Client connections each proxy thread serves that have streamed (a read filled the buffer)",
            self.thread_streams.clone(),
        );
        r.register(
            "thread_persistent",
            "Client connections each proxy thread serves that go on exchanging past their first 100 ms without streaming",
            self.thread_persistent.clone(),
        );
        r.register(
            "connections_moved",
            "Connections moved to a proxy thread with fewer of their kind (streams, or persistent connections)",
            self.connections_moved.clone(),
        );
        r.register(
            "connections_by_zone",
            "Client connections that reached a backend in kite's own zone (same) or in another (other), when kite knows its zone",
            self.connections_by_zone.clone(),
        );
        r.register(
            "backend_connections_open",
            "Connections open through this kite to each backend of the current targets (what --balance least-conn compares)",
            self.backend_open.clone(),
        );
        self
    }
}
