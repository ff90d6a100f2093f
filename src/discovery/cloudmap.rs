//! AWS Cloud Map as a source of targets: the instances of one Cloud Map
//! service, read through its data plane, which is budgeted for fleets
//! (about 3,000 DiscoverInstancesRevision and 1,000 DiscoverInstances calls
//! a second per account, where ECS's read APIs allow about 20).
//!
//! A steady round costs one DiscoverInstancesRevision call. DiscoverInstances
//! follows only on the first round, when the revision changed (an instance
//! registered or deregistered), and once per `--health-refresh`: a change
//! of health does not change the revision, so that is how an instance that
//! turns unhealthy leaves. Each instance becomes targets in the pure
//! [`build::build_snapshot`].

pub mod build;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Result};
use aws_sdk_servicediscovery::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_servicediscovery::types::{HealthStatusFilter, HttpInstanceSummary};
use aws_sdk_servicediscovery::Client;
use tokio::time::Instant;
use tracing::debug;

use super::{warn_new_skips, HEALTH_REFRESH};
use crate::config::{IpFamily, PortMaps};
use crate::snapshot::Snapshot;

/// DiscoverInstances has no pages: it answers at most this many instances,
/// and at most 100 unless asked for more.
pub const MAX_RESULTS: i32 = 1000;

/// What to discover in Cloud Map: `--cloud-map NAMESPACE/SERVICE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The namespace name (e.g. `internal.example`).
    pub namespace: String,
    /// The service name in it.
    pub service: String,
    /// Which address of an instance that has both an IPv4 and an IPv6 one.
    pub ip_family: IpFamily,
    /// Listen port per instance port; for instances registered without a
    /// port (A records only), the ports to reach them on.
    pub port_maps: PortMaps,
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)
    }
}

/// The Cloud Map source: its client, the query, and the instances of the
/// last DiscoverInstances with the revision they are at.
#[derive(Debug)]
pub struct CloudMap {
    client: Client,
    query: Query,
    health_refresh: Duration,
    /// The revision `instances` are at; `None` before the first answer.
    revision: Option<i64>,
    /// When `instances` were fetched.
    fetched_at: Option<Instant>,
    instances: Vec<HttpInstanceSummary>,
    /// Skip reasons already warned about, so each is logged once.
    warned: HashSet<(String, String)>,
}

impl CloudMap {
    /// A source for `query` that lists the instances again at least every
    /// [`HEALTH_REFRESH`].
    pub fn new(client: Client, query: Query) -> Self {
        CloudMap {
            client,
            query,
            health_refresh: HEALTH_REFRESH,
            revision: None,
            fetched_at: None,
            instances: Vec::new(),
            warned: HashSet::new(),
        }
    }

    /// Lists the instances again at least every `health_refresh` instead:
    /// how soon an instance that turns unhealthy stops getting connections.
    pub fn health_refresh(mut self, health_refresh: Duration) -> Self {
        self.health_refresh = health_refresh;
        self
    }

    /// What this source looks for.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// One round: the revision, then the instances when they may have
    /// changed, and the snapshot built from them. An error means the round
    /// failed as a whole (the caller keeps the last good snapshot).
    pub async fn round(&mut self) -> Result<Snapshot> {
        let revision = self.discover_revision().await?;
        let now = Instant::now();
        let stale = self
            .fetched_at
            .is_none_or(|at| now.duration_since(at) >= self.health_refresh);
        if stale || self.revision != Some(revision) {
            let (instances, answered) = self.discover_instances().await?;
            debug!(
                instances = instances.len(),
                revision = answered.unwrap_or(revision),
                "DiscoverInstances"
            );
            self.instances = instances;
            // The answer's own revision, when it has one: an instance
            // registered between the two calls is then not fetched twice.
            self.revision = Some(answered.unwrap_or(revision));
            self.fetched_at = Some(now);
        }
        let snapshot = build::build_snapshot(&self.query, &self.instances);
        warn_new_skips(&mut self.warned, &snapshot.skipped, "skipping instance");
        Ok(snapshot)
    }

    /// DiscoverInstancesRevision: the service's revision, which changes
    /// when an instance is registered or deregistered (compared for
    /// change only: it need not grow).
    async fn discover_revision(&self) -> Result<i64> {
        let q = &self.query;
        let out = (self.client.discover_instances_revision())
            .namespace_name(&q.namespace)
            .service_name(&q.service)
            .send()
            .await
            .map_err(|err| explain(err, "DiscoverInstancesRevision", q))?;
        out.instances_revision()
            .ok_or_else(|| anyhow!("DiscoverInstancesRevision for {q} answered no revision"))
    }

    /// DiscoverInstances of the healthy instances (every one, up to
    /// [`MAX_RESULTS`]), with the revision the answer is at.
    async fn discover_instances(&self) -> Result<(Vec<HttpInstanceSummary>, Option<i64>)> {
        let q = &self.query;
        let out = (self.client.discover_instances())
            .namespace_name(&q.namespace)
            .service_name(&q.service)
            .health_status(HealthStatusFilter::Healthy)
            .max_results(MAX_RESULTS)
            .send()
            .await
            .map_err(|err| explain(err, "DiscoverInstances", q))?;
        let revision = out.instances_revision();
        Ok((out.instances.unwrap_or_default(), revision))
    }
}

/// The error of a Cloud Map call, saying what to fix when the namespace or
/// the service does not exist.
fn explain<E, R>(err: SdkError<E, R>, operation: &str, q: &Query) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let (ns, svc) = (&q.namespace, &q.service);
    let hint = match err.code() {
        Some("NamespaceNotFound") => format!(
            "AWS Cloud Map has no namespace '{ns}' (--cloud-map {q}): check its name, \
             and that kite runs in the namespace's region"
        ),
        Some("ServiceNotFound") => format!(
            "AWS Cloud Map has no service '{svc}' in namespace '{ns}' (--cloud-map {q}): \
             check its name"
        ),
        _ => format!("{operation} for {q}"),
    };
    anyhow::Error::new(err).context(hint)
}

impl super::Source for CloudMap {
    fn round(&mut self, _between: Duration) -> impl Future<Output = Result<Snapshot>> + Send {
        CloudMap::round(self)
    }

    fn describe(&self) -> String {
        format!("cloud map {}", self.query)
    }
}
