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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_sdk_ecs::types::Task;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::{PortMaps, Selector};
use crate::metrics::Metrics;
use crate::snapshot::{NetworkMode, Snapshot, Store};
use build::{Fetched, HostAddrs, TaskDef, Want};

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
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
    query: Query,
    task_defs: HashMap<String, TaskDef>,
    hosts: HashMap<String, HostAddrs>,
    eni_public_ips: HashMap<String, Option<String>>,
    /// Skip reasons already warned about, so each is logged once.
    warned: HashSet<(String, String)>,
    metrics: Arc<Metrics>,
}

impl Discovery {
    /// A discovery with empty caches, using already-built SDK clients.
    pub fn new(ecs: aws_sdk_ecs::Client, ec2: aws_sdk_ec2::Client, query: Query) -> Self {
        Discovery {
            ecs,
            ec2,
            query,
            task_defs: HashMap::new(),
            hosts: HashMap::new(),
            eni_public_ips: HashMap::new(),
            warned: HashSet::new(),
            metrics: Arc::default(),
        }
    }

    /// Records rounds and target counts in `metrics` (the SDK clients
    /// count the API calls themselves, see [`crate::aws::CallCounter`]).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// What this discovery looks for.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// One round: fetch what is needed and build a snapshot. An error means
    /// the round failed as a whole (the caller keeps the last good snapshot).
    pub async fn round(&mut self) -> Result<Snapshot> {
        let q = &self.query;
        let arns = ecs::list_tasks(&self.ecs, &q.cluster, &q.selector).await?;
        let (tasks, failures) = ecs::describe_tasks(&self.ecs, &q.cluster, &arns).await?;
        for f in &failures {
            debug!(arn = f.arn(), reason = f.reason(), "DescribeTasks failure");
        }
        self.fill_task_defs(&tasks).await?;
        self.fill_hosts(&tasks).await?;
        if self.query.public {
            self.fill_enis(&tasks).await?;
        }
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
        let fetched = Fetched {
            tasks,
            task_defs: &self.task_defs,
            hosts: &self.hosts,
            eni_public_ips: &self.eni_public_ips,
        };
        let snapshot = build::build_snapshot(&want, fetched);
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

    /// Describes the task definitions not cached yet; drops the ones no task
    /// uses any more.
    async fn fill_task_defs(&mut self, tasks: &[Task]) -> Result<()> {
        let used: HashSet<&str> = tasks
            .iter()
            .filter_map(|t| t.task_definition_arn())
            .collect();
        self.task_defs.retain(|arn, _| used.contains(arn.as_str()));
        for arn in used {
            if self.task_defs.contains_key(arn) {
                continue;
            }
            let fargate = tasks.iter().any(|t| {
                t.task_definition_arn() == Some(arn)
                    && t.launch_type().is_some_and(|l| l.as_str() == "FARGATE")
            });
            // A rejected ARN stays uncached: its tasks are skipped with a
            // warning, and it is asked for again next round.
            if let Some(td) = ecs::describe_task_definition(&self.ecs, arn).await? {
                let td = TaskDef::from_api(&td, fargate);
                self.task_defs.insert(arn.to_owned(), td);
            }
        }
        Ok(())
    }

    /// Resolves the instance addresses of the container instances that
    /// bridge and host tasks run on and that are not cached yet.
    async fn fill_hosts(&mut self, tasks: &[Task]) -> Result<()> {
        let used: BTreeSet<&str> = tasks
            .iter()
            .filter(|t| self.mode_of(t).is_some_and(|m| m != NetworkMode::Awsvpc))
            .filter_map(|t| t.container_instance_arn())
            .collect();
        self.hosts.retain(|arn, _| used.contains(arn.as_str()));
        let missing: Vec<String> = used
            .into_iter()
            .filter(|arn| !self.hosts.contains_key(*arn))
            .map(str::to_owned)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let cluster = &self.query.cluster;
        let (ids, failures) = ecs::container_instance_ids(&self.ecs, cluster, &missing).await?;
        for f in &failures {
            debug!(
                arn = f.arn(),
                reason = f.reason(),
                "DescribeContainerInstances failure"
            );
        }
        let instance_ids: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
        let ips = ec2::instance_ips(&self.ec2, &instance_ids).await?;
        for (ci, instance_id) in ids {
            // An instance EC2 did not return stays uncached and is asked
            // for again next round; its tasks are skipped meanwhile.
            if let Some((private_ip, public_ip)) = ips.get(&instance_id).cloned() {
                let addrs = HostAddrs {
                    instance_id,
                    private_ip,
                    public_ip,
                };
                self.hosts.insert(ci, addrs);
            }
        }
        Ok(())
    }

    /// Looks up the public IPs of awsvpc task ENIs not cached yet.
    async fn fill_enis(&mut self, tasks: &[Task]) -> Result<()> {
        let used: BTreeSet<String> = tasks
            .iter()
            .filter(|t| self.mode_of(t) == Some(NetworkMode::Awsvpc))
            .filter_map(build::eni_id)
            .collect();
        self.eni_public_ips.retain(|id, _| used.contains(id));
        let missing: Vec<String> = used
            .into_iter()
            .filter(|id| !self.eni_public_ips.contains_key(id))
            .collect();
        if !missing.is_empty() {
            let ips = ec2::eni_public_ips(&self.ec2, &missing).await?;
            self.eni_public_ips.extend(ips);
        }
        Ok(())
    }

    /// `kite attach`: describes ONE task by ARN or id (one DescribeTasks
    /// call) and fetches what [`Discovery::build_task`] needs, through the
    /// same calls and caches as a round. `Ok(Err(reason))` when ECS does not
    /// know the task.
    pub async fn describe_task(&mut self, task: &str) -> Result<Result<Task, String>> {
        let (tasks, failures) =
            ecs::describe_tasks(&self.ecs, &self.query.cluster, &[task.to_owned()]).await?;
        let Some(found) = tasks.into_iter().next() else {
            let reason = failures
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("MISSING");
            return Ok(Err(reason.to_owned()));
        };
        let one = std::slice::from_ref(&found);
        self.fill_task_defs(one).await?;
        self.fill_hosts(one).await?;
        if self.query.public {
            self.fill_enis(one).await?;
        }
        Ok(Ok(found))
    }

    /// The cached task definition of `task` (after [`Discovery::describe_task`]).
    pub fn task_def(&self, task: &Task) -> Option<&TaskDef> {
        self.task_defs.get(task.task_definition_arn()?)
    }

    /// Builds the targets of one task's `container` by the same rules as a
    /// round (every revision; `--public` and port maps from the query).
    pub fn build_task(&self, task: &Task, container: &str) -> Snapshot {
        let want = Want {
            container,
            public: self.query.public,
            revision: None,
            port_maps: &self.query.port_maps,
        };
        let fetched = Fetched {
            tasks: std::slice::from_ref(task),
            task_defs: &self.task_defs,
            hosts: &self.hosts,
            eni_public_ips: &self.eni_public_ips,
        };
        build::build_snapshot(&want, fetched)
    }

    /// The EC2 addresses of the instance `task` runs on, whatever its
    /// network mode (awsvpc tasks on EC2 too): where its Docker daemon is.
    /// None for tasks without a container instance (Fargate) or when ECS or
    /// EC2 no longer know the instance.
    pub async fn instance_addrs(&mut self, task: &Task) -> Result<Option<HostAddrs>> {
        let Some(ci) = task.container_instance_arn() else {
            return Ok(None);
        };
        if let Some(addrs) = self.hosts.get(ci) {
            return Ok(Some(addrs.clone()));
        }
        let cluster = &self.query.cluster;
        let (ids, _) = ecs::container_instance_ids(&self.ecs, cluster, &[ci.to_owned()]).await?;
        let Some((_, instance_id)) = ids.into_iter().next() else {
            return Ok(None);
        };
        let ips = ec2::instance_ips(&self.ec2, std::slice::from_ref(&instance_id)).await?;
        Ok(ips
            .get(&instance_id)
            .cloned()
            .map(|(private_ip, public_ip)| HostAddrs {
                instance_id,
                private_ip,
                public_ip,
            }))
    }

    fn mode_of(&self, task: &Task) -> Option<NetworkMode> {
        let td = self.task_defs.get(task.task_definition_arn()?)?;
        td.network_mode.clone().ok()
    }
}

/// How often discovery runs, and how it backs off after errors.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The period between good rounds; each wait adds up to as much again
    /// in jitter, so a fleet of kites does not call ECS in step.
    pub refresh: Duration,
    /// The longest wait after repeated errors.
    pub max_backoff: Duration,
}

impl Schedule {
    /// The wait before the next round, after `errors` consecutive failures.
    pub fn next_wait(&self, errors: u32) -> Duration {
        let base = if errors == 0 {
            self.refresh
        } else {
            let factor = 2u32.saturating_pow(errors.min(16));
            self.refresh.saturating_mul(factor).min(self.max_backoff)
        };
        base + base.mul_f64(rand::rng().random_range(0.0..1.0))
    }
}

/// Runs discovery rounds until `cancel`: publishes each good round, keeps
/// the last good snapshot through failed ones, and logs target changes.
pub async fn run(
    mut discovery: Discovery,
    store: Arc<Store>,
    schedule: Schedule,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("discovery", cluster = %discovery.query.cluster);
    async move {
        let mut errors = 0u32;
        loop {
            let started = Instant::now();
            let round = discovery.round().await;
            discovery.metrics.round(started.elapsed(), round.is_err());
            match round {
                Ok(snapshot) => {
                    if errors > 0 {
                        info!(after_errors = errors, "discovery recovered");
                    }
                    errors = 0;
                    debug!(
                        targets = snapshot.targets.len(),
                        skipped = snapshot.skipped.len(),
                        took_ms = started.elapsed().as_millis() as u64,
                        "discovery round"
                    );
                    let counts: BTreeMap<u16, usize> = snapshot
                        .ports()
                        .map(|port| (port, snapshot.backends(port).len()))
                        .collect();
                    discovery.metrics.set_targets(&counts);
                    let old = store.publish(snapshot);
                    log_changes(&old, &store.load());
                }
                Err(err) => {
                    errors = errors.saturating_add(1);
                    warn!(
                        errors,
                        "discovery round failed, keeping the last targets: {err:#}"
                    );
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(schedule.next_wait(errors)) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Logs each added and removed target once, at info.
pub fn log_changes(old: &Snapshot, new: &Snapshot) {
    let key = |t: &crate::snapshot::Target| (t.listen_port, t.address, t.task_id.clone());
    let before: HashSet<_> = old.targets.iter().map(key).collect();
    let after: HashSet<_> = new.targets.iter().map(key).collect();
    for t in new.targets.iter().filter(|t| !before.contains(&key(t))) {
        info!(port = t.listen_port, backend = %t.address, task = %t.task_id,
              taskdef = %t.task_definition, "target added");
    }
    for t in old.targets.iter().filter(|t| !after.contains(&key(t))) {
        info!(port = t.listen_port, backend = %t.address, task = %t.task_id, "target removed");
    }
}
