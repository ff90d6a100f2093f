//! Discovery: the only writer of the snapshot.
//!
//! A round lists the tasks, describes those that need it (`known.rs`: new
//! ones, starting ones, and the others once per health refresh), fills the
//! caches for what it has not seen before (task definitions by ARN,
//! instance addresses by container instance, public IPs by ENI), and builds
//! a snapshot with the pure [`build::build_snapshot`]. In steady state a
//! round costs one ListTasks per 100 tasks and its share of the
//! re-describes: 1.2 calls per round on average at 100 tasks, at most 64
//! at 5,000.
//!
//! AWS Cloud Map is the other source ([`cloudmap`]): one
//! DiscoverInstancesRevision call per steady round. [`Select`] chooses
//! between the two.

pub mod build;
pub mod cloudmap;
pub mod ec2;
pub mod ecs;
mod known;
mod schedule;
mod select;
pub mod task;

pub use schedule::{log_changes, run, Pace, Schedule, Source};
pub use select::{Select, Sources};
pub use task::TaskLookup;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use aws_sdk_ecs::types::Task;
use tracing::{debug, warn};

use crate::config::{IpFamily, PortMaps, Selector};
use crate::snapshot::{SkipKind, Skipped, Snapshot};
use build::Want;
use known::Known;
use task::Fetcher;

/// How long a task's description is trusted by default (`--health-refresh`).
pub const HEALTH_REFRESH: Duration = Duration::from_secs(30);

/// What to discover.
#[derive(Clone, Debug)]
pub struct Query {
    /// The cluster name or ARN.
    pub cluster: String,
    /// The family or service.
    pub selector: Selector,
    /// The container whose ports to reach.
    pub container: String,
    /// Route to public addresses.
    pub public: bool,
    /// Which address of a task with both an IPv4 and an IPv6 one.
    pub ip_family: IpFamily,
    /// Listen port per container port.
    pub port_maps: PortMaps,
}

/// The discovery state: SDK clients, the query and the caches.
#[derive(Debug)]
pub struct Discovery {
    fetcher: Fetcher,
    query: Query,
    known: Known,
    /// Skip reasons already warned about, so each is logged once.
    warned: HashSet<(String, String)>,
}

impl Discovery {
    /// A discovery with empty caches, using already-built SDK clients,
    /// that describes a known task again every [`HEALTH_REFRESH`].
    pub fn new(ecs: aws_sdk_ecs::Client, ec2: aws_sdk_ec2::Client, query: Query) -> Self {
        Discovery {
            fetcher: Fetcher::new(ecs, ec2),
            query,
            known: Known::new(HEALTH_REFRESH),
            warned: HashSet::new(),
        }
    }

    /// Describes a known task again every `health_refresh` instead: how
    /// soon a container that turns UNHEALTHY stops getting connections,
    /// against DescribeTasks calls.
    pub fn health_refresh(mut self, health_refresh: Duration) -> Self {
        self.known = Known::new(health_refresh);
        self
    }

    /// What this discovery looks for.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// One round: fetch what is needed and build a snapshot, when rounds
    /// come `between` apart on average (a round's share of the re-describes
    /// depends on it). An error means the round failed as a whole (the
    /// caller keeps the last good snapshot).
    pub async fn round(&mut self, between: Duration) -> Result<Snapshot> {
        let q = &self.query;
        let ecs = &self.fetcher.ecs;
        let listed = ecs::list_tasks(ecs, &q.cluster, &q.selector).await?;
        let now = tokio::time::Instant::now();
        let plan = self.known.plan(&listed, now, between);
        if !plan.is_empty() {
            let (described, failures) = ecs::describe_tasks(ecs, &q.cluster, &plan).await?;
            for f in &failures {
                debug!(arn = f.arn(), reason = f.reason(), "DescribeTasks failure");
            }
            self.known.record(described, now);
        }
        let tasks = self.known.tasks(&listed);
        self.fetcher.fill(&q.cluster, q.public, &tasks).await?;
        let snapshot = Self::build(&self.query, &mut self.warned, &self.fetcher, &tasks);
        self.known.settle(&snapshot.skipped);
        Ok(snapshot)
    }

    /// Builds the snapshot from `tasks` and the caches, warning once per new
    /// problem with the API data.
    fn build(
        query: &Query,
        warned: &mut HashSet<(String, String)>,
        fetcher: &Fetcher,
        tasks: &[&Task],
    ) -> Snapshot {
        let revision = match &query.selector {
            Selector::Family { revision, .. } => *revision,
            Selector::Service(_) => None,
        };
        let want = Want {
            container: &query.container,
            public: query.public,
            ip_family: query.ip_family,
            revision,
            port_maps: &query.port_maps,
        };
        let snapshot = build::build_snapshot(&want, fetcher.fetched(tasks));
        warn_new_skips(warned, &snapshot.skipped, "skipping task");
        snapshot
    }
}

/// Warns once about each item left out for unusable data (`message`, e.g.
/// "skipping task"); `warned` holds those still left out, warned about
/// already, so an item that comes back with the same problem warns again.
fn warn_new_skips(warned: &mut HashSet<(String, String)>, skipped: &[Skipped], message: &str) {
    let mut still = HashSet::new();
    for s in skipped.iter().filter(|s| s.kind == SkipKind::BadData) {
        let key = (s.task_arn.clone(), s.reason.clone());
        if !warned.contains(&key) {
            warn!(task = %s.task_arn, reason = %s.reason, "{message}");
        }
        still.insert(key);
    }
    *warned = still;
}
