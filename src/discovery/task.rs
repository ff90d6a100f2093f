//! What a task's targets need besides the task itself, fetched once and
//! cached (`Fetcher`, shared by a discovery round and a one-task
//! lookup), and `kite attach`'s lookup of ONE task by id or ARN
//! ([`TaskLookup`]), which lists nothing and so needs no family or service.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::Result;
use aws_sdk_ecs::types::Task;
use tracing::debug;

use super::build::{self, Fetched, HostAddrs, TaskDef, Want};
use super::{ec2, ecs};
use crate::config::{arn, IpFamily, PortMaps};
use crate::snapshot::{NetworkMode, Snapshot};

/// Why one task could not be described.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ECS does not know the task in this cluster (a wrong id or cluster,
    /// or a task stopped long enough ago that ECS forgot it).
    #[error(
        "task {} not found in cluster {cluster} ({reason})",
        arn::last_segment(task)
    )]
    NotFound {
        /// The id or ARN asked for.
        task: String,
        /// The cluster asked.
        cluster: String,
        /// ECS's failure reason, `MISSING` when it gave none.
        reason: String,
    },
    /// An ECS or EC2 call failed.
    #[error("{0:#}")]
    Api(anyhow::Error),
}

/// ONE task and what its targets need, by the same calls and caches as a
/// discovery round: `kite attach`.
#[derive(Debug)]
pub struct TaskLookup {
    fetcher: Fetcher,
    cluster: String,
    public: bool,
}

impl TaskLookup {
    /// A lookup in `cluster` (name or ARN) with empty caches; `public`
    /// routes to public addresses, as `--public` does.
    pub fn new(
        ecs: aws_sdk_ecs::Client,
        ec2: aws_sdk_ec2::Client,
        cluster: String,
        public: bool,
    ) -> Self {
        TaskLookup {
            fetcher: Fetcher::new(ecs, ec2),
            cluster,
            public,
        }
    }

    /// The cluster looked in.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Describes the task by ARN or id (one DescribeTasks call) and fetches
    /// what [`TaskLookup::build_task`] needs.
    pub async fn describe_task(&mut self, task: &str) -> Result<Task, Error> {
        let (tasks, failures) =
            ecs::describe_tasks(&self.fetcher.ecs, &self.cluster, &[task.to_owned()])
                .await
                .map_err(Error::Api)?;
        let Some(found) = tasks.into_iter().next() else {
            let reason = failures
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("MISSING");
            return Err(Error::NotFound {
                task: task.to_owned(),
                cluster: self.cluster.clone(),
                reason: reason.to_owned(),
            });
        };
        self.fetcher
            .fill(&self.cluster, self.public, &[&found])
            .await
            .map_err(Error::Api)?;
        Ok(found)
    }

    /// The cached task definition of `task` (after [`TaskLookup::describe_task`]).
    pub fn task_def(&self, task: &Task) -> Option<&TaskDef> {
        self.fetcher.task_def(task)
    }

    /// Builds the targets of one task's `container` by the same rules as a
    /// round (every revision, no port maps).
    pub fn build_task(&self, task: &Task, container: &str) -> Snapshot {
        let want = Want {
            container,
            public: self.public,
            ip_family: IpFamily::Auto,
            revision: None,
            port_maps: &PortMaps::default(),
        };
        build::build_snapshot(&want, self.fetcher.fetched(&[task]))
    }

    /// The EC2 addresses of the instance `task` runs on, whatever its
    /// network mode (awsvpc tasks on EC2 too): where its Docker daemon is.
    /// None for tasks without a container instance (Fargate) or when ECS or
    /// EC2 no longer know the instance.
    pub async fn instance_addrs(&mut self, task: &Task) -> Result<Option<HostAddrs>> {
        let Some(ci) = task.container_instance_arn() else {
            return Ok(None);
        };
        let f = &self.fetcher;
        if let Some(addrs) = f.hosts.get(ci) {
            return Ok(Some(addrs.clone()));
        }
        let (ids, _) = ecs::container_instance_ids(&f.ecs, &self.cluster, &[ci.to_owned()]).await?;
        let Some((_, instance_id)) = ids.into_iter().next() else {
            return Ok(None);
        };
        let mut ips = ec2::instance_ips(&f.ec2, std::slice::from_ref(&instance_id)).await?;
        Ok(ips.remove(&instance_id))
    }
}

/// The SDK clients and the caches of what never changes for a task: task
/// definitions by ARN, instance addresses by container instance, public
/// IPs by ENI.
#[derive(Debug)]
pub(super) struct Fetcher {
    pub(super) ecs: aws_sdk_ecs::Client,
    pub(super) ec2: aws_sdk_ec2::Client,
    task_defs: HashMap<String, TaskDef>,
    hosts: HashMap<String, HostAddrs>,
    eni_public_ips: HashMap<String, Option<String>>,
}

impl Fetcher {
    /// Empty caches, using already-built SDK clients.
    pub(super) fn new(ecs: aws_sdk_ecs::Client, ec2: aws_sdk_ec2::Client) -> Self {
        Fetcher {
            ecs,
            ec2,
            task_defs: HashMap::new(),
            hosts: HashMap::new(),
            eni_public_ips: HashMap::new(),
        }
    }

    /// Fetches what `tasks` need and the caches lack (ENI public IPs only
    /// when `public`), and drops what no task in `tasks` uses any more.
    pub(super) async fn fill(
        &mut self,
        cluster: &str,
        public: bool,
        tasks: &[&Task],
    ) -> Result<()> {
        self.fill_task_defs(tasks).await?;
        self.fill_hosts(cluster, tasks).await?;
        if public {
            self.fill_enis(tasks).await?;
        }
        Ok(())
    }

    /// `tasks` with the cached data, for [`build::build_snapshot`].
    pub(super) fn fetched<'a>(&'a self, tasks: &'a [&'a Task]) -> Fetched<'a> {
        Fetched {
            tasks,
            task_defs: &self.task_defs,
            hosts: &self.hosts,
            eni_public_ips: &self.eni_public_ips,
        }
    }

    /// The cached task definition of `task`.
    pub(super) fn task_def(&self, task: &Task) -> Option<&TaskDef> {
        self.task_defs.get(task.task_definition_arn()?)
    }

    /// Describes the task definitions not cached yet; drops the ones no task
    /// uses any more.
    async fn fill_task_defs(&mut self, tasks: &[&Task]) -> Result<()> {
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
    async fn fill_hosts(&mut self, cluster: &str, tasks: &[&Task]) -> Result<()> {
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
        let (ids, failures) = ecs::container_instance_ids(&self.ecs, cluster, &missing).await?;
        for f in &failures {
            debug!(
                arn = f.arn(),
                reason = f.reason(),
                "DescribeContainerInstances failure"
            );
        }
        let instance_ids: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
        let mut ips = ec2::instance_ips(&self.ec2, &instance_ids).await?;
        for (ci, instance_id) in ids {
            // An instance EC2 did not return stays uncached and is asked
            // for again next round; its tasks are skipped meanwhile.
            if let Some(addrs) = ips.remove(&instance_id) {
                self.hosts.insert(ci, addrs);
            }
        }
        Ok(())
    }

    /// Looks up the public IPs of awsvpc task ENIs not cached yet.
    async fn fill_enis(&mut self, tasks: &[&Task]) -> Result<()> {
        let used: BTreeSet<String> = tasks
            .iter()
            .filter(|t| self.mode_of(t) == Some(NetworkMode::Awsvpc))
            .filter_map(|t| build::eni_id(t))
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

    fn mode_of(&self, task: &Task) -> Option<NetworkMode> {
        self.task_def(task)?.network_mode.clone().ok()
    }
}
