//! Discovery: the only writer of the snapshot.
//!
//! A round lists the tasks, describes them, fills the caches for what it has
//! not seen before (task definitions by ARN, instance addresses by container
//! instance, public IPs by ENI), and builds a snapshot with the pure
//! [`build::build_snapshot`]. In steady state a round costs one ListTasks and
//! one DescribeTasks per 100 tasks, nothing more.

pub mod build;
pub mod ec2;
pub mod ecs;
mod schedule;
pub mod task;

pub use schedule::{log_changes, run, Schedule, Source};
pub use task::TaskLookup;

use std::collections::HashSet;

use anyhow::Result;
use aws_sdk_ecs::types::Task;
use tracing::{debug, warn};

use crate::config::{PortMaps, Selector};
use crate::snapshot::Snapshot;
use build::Want;
use task::Fetcher;

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
    /// Listen port per container port.
    pub port_maps: PortMaps,
}

/// The discovery state: SDK clients, the query and the caches.
#[derive(Debug)]
pub struct Discovery {
    fetcher: Fetcher,
    query: Query,
    /// Skip reasons already warned about, so each is logged once.
    warned: HashSet<(String, String)>,
}

impl Discovery {
    /// A discovery with empty caches, using already-built SDK clients.
    pub fn new(ecs: aws_sdk_ecs::Client, ec2: aws_sdk_ec2::Client, query: Query) -> Self {
        Discovery {
            fetcher: Fetcher::new(ecs, ec2),
            query,
            warned: HashSet::new(),
        }
    }

    /// What this discovery looks for.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// One round: fetch what is needed and build a snapshot. An error means
    /// the round failed as a whole (the caller keeps the last good snapshot).
    pub async fn round(&mut self) -> Result<Snapshot> {
        let q = &self.query;
        let ecs = &self.fetcher.ecs;
        let arns = ecs::list_tasks(ecs, &q.cluster, &q.selector).await?;
        let (tasks, failures) = ecs::describe_tasks(ecs, &q.cluster, &arns).await?;
        for f in &failures {
            debug!(arn = f.arn(), reason = f.reason(), "DescribeTasks failure");
        }
        self.fetcher.fill(&q.cluster, q.public, &tasks).await?;
        Ok(self.build(&tasks))
    }

    /// Builds the snapshot from `tasks` and the caches, warning once per new
    /// problem with the API data.
    fn build(&mut self, tasks: &[Task]) -> Snapshot {
        let revision = match &self.query.selector {
            Selector::Family { revision, .. } => *revision,
            Selector::Service(_) => None,
        };
        let want = Want {
            container: &self.query.container,
            public: self.query.public,
            revision,
            port_maps: &self.query.port_maps,
        };
        let snapshot = build::build_snapshot(&want, self.fetcher.fetched(tasks));
        let mut still = HashSet::new();
        for s in snapshot.skipped.iter().filter(|s| s.bad_data) {
            let key = (s.task_arn.clone(), s.reason.clone());
            if !self.warned.contains(&key) {
                warn!(task = %s.task_arn, reason = %s.reason, "skipping task");
            }
            still.insert(key);
        }
        self.warned = still;
        snapshot
    }
}
