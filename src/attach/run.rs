//! `kite attach --run`: a new task of a task definition, started with
//! RunTask (the attached container's command and environment overridden,
//! network and placement as asked) and stopped when the attach ends,
//! unless `--keep`.
//!
//! The task definition is read first (DescribeTaskDefinition): which
//! container to attach to, and whether RunTask needs subnets, are decided
//! before anything is started.

use anyhow::{bail, Context, Result};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    KeyValuePair, LaunchType, NetworkConfiguration, NetworkMode, PlacementConstraint,
    PlacementConstraintType, TaskDefinition, TaskOverride,
};

use crate::config::FamilyArg;

/// A new task to start and attach to.
#[derive(Clone, Debug)]
pub struct Run {
    /// The task definition family, optionally one revision.
    pub taskdef: FamilyArg,
    /// The task's startedBy.
    pub started_by: String,
    /// Leave the task running when the attach ends (`--keep`).
    pub keep: bool,
    /// The attached container's command (the words after `--`); empty:
    /// the task definition's.
    pub command: Vec<String>,
    /// Environment variables for the attached container (`--env`).
    pub env: Vec<(String, String)>,
    /// awsvpc networking (`--subnets`, `--security-groups`,
    /// `--assign-public-ip`).
    pub network: Option<Awsvpc>,
    /// `--launch-type` or `--capacity-provider`; neither: the cluster's
    /// default capacity provider strategy, else EC2.
    pub launch: Option<Launch>,
    /// `memberOf` placement constraints (`--placement-constraint`).
    pub constraints: Vec<String>,
}

/// The awsvpc configuration RunTask gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Awsvpc {
    /// Subnet ids.
    pub subnets: Vec<String>,
    /// Security group ids.
    pub security_groups: Vec<String>,
    /// Give the task ENI a public IP.
    pub assign_public_ip: bool,
}

/// Where the task runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `--launch-type EC2`.
    Ec2,
    /// `--launch-type FARGATE`.
    Fargate,
    /// `--capacity-provider NAME`.
    CapacityProvider(String),
}

/// A task [`Run::start`] started.
#[derive(Clone, Debug)]
pub struct Started {
    /// Its ARN.
    pub arn: String,
    /// The container attached to.
    pub container: String,
    /// It runs on Fargate (no Docker daemon to attach through).
    pub fargate: bool,
    /// Where the container's logs go, when its task definition says.
    pub logs: Option<String>,
}

/// A mistake in the flags that only the task definition shows (a container
/// it lacks, awsvpc without `--subnets`): the binary exits 2 with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

impl Run {
    /// `family[:revision]`, as RunTask takes it.
    pub fn taskdef_name(&self) -> String {
        match self.taskdef.revision {
            Some(rev) => format!("{}:{rev}", self.taskdef.name),
            None => self.taskdef.name.clone(),
        }
    }

    /// Reads the task definition, checks the flags against it, and starts
    /// the task, with the container to attach to (`container`, or the only
    /// one). [`Usage`] when the flags do not fit the task definition;
    /// nothing is started then.
    pub async fn start(
        &self,
        ecs: &aws_sdk_ecs::Client,
        cluster: &str,
        container: Option<&str>,
    ) -> Result<Started> {
        let name = self.taskdef_name();
        let td = ecs
            .describe_task_definition()
            .task_definition(&name)
            .send()
            .await
            .with_context(|| format!("DescribeTaskDefinition of {name}"))?;
        let td = td.task_definition().with_context(|| {
            format!("DescribeTaskDefinition of {name} answered no task definition")
        })?;
        let container = self.check(td, container)?;
        let (arn, fargate) = self.run_task(ecs, cluster, &container).await?;
        let logs = (td.container_definitions().iter())
            .find(|c| c.name() == Some(&container))
            .and_then(|c| logs_of(c, &arn));
        Ok(Started {
            arn,
            container,
            fargate,
            logs,
        })
    }

    /// The container to attach to, and whether the network flags fit.
    fn check(&self, td: &TaskDefinition, container: Option<&str>) -> Result<String, Usage> {
        let revision = format!("{}:{}", td.family().unwrap_or("?"), td.revision());
        let names: Vec<&str> = (td.container_definitions().iter())
            .filter_map(|c| c.name())
            .collect();
        let container = match (container, names.as_slice()) {
            (Some(c), _) if names.contains(&c) => c.to_owned(),
            (Some(c), _) => {
                return Err(Usage(format!(
                    "--container {c}: task definition {revision} has no such container \
                     (it has {})",
                    names.join(", ")
                )))
            }
            (None, [only]) => (*only).to_owned(),
            (None, _) => {
                return Err(Usage(format!(
                    "task definition {revision} has several containers ({}): \
                     pick one with --container",
                    names.join(", ")
                )))
            }
        };
        if td.network_mode() == Some(&NetworkMode::Awsvpc) && self.network.is_none() {
            return Err(Usage(format!(
                "task definition {revision} uses awsvpc networking: RunTask needs \
                 --subnets (and --security-groups, or the VPC's default group)"
            )));
        }
        Ok(container)
    }

    /// RunTask: one task, with the overrides, network and placement asked.
    /// Its ARN, and whether it runs on Fargate.
    async fn run_task(
        &self,
        ecs: &aws_sdk_ecs::Client,
        cluster: &str,
        container: &str,
    ) -> Result<(String, bool)> {
        let taskdef = self.taskdef_name();
        let mut req = ecs
            .run_task()
            .cluster(cluster)
            .task_definition(&taskdef)
            .started_by(&self.started_by)
            .count(1)
            .set_overrides(self.overrides(container))
            .set_network_configuration(self.network.as_ref().map(network));
        req = match &self.launch {
            Some(Launch::Ec2) => req.launch_type(LaunchType::Ec2),
            Some(Launch::Fargate) => req.launch_type(LaunchType::Fargate),
            Some(Launch::CapacityProvider(name)) => req.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(name)
                    .weight(1)
                    .build()
                    .context("capacity provider strategy")?,
            ),
            None => req,
        };
        for expression in &self.constraints {
            req = req.placement_constraints(
                PlacementConstraint::builder()
                    .r#type(PlacementConstraintType::MemberOf)
                    .expression(expression)
                    .build(),
            );
        }
        let out = req
            .send()
            .await
            .with_context(|| format!("RunTask of {taskdef} in cluster {cluster}"))?;
        if let Some(task) = out.tasks().first() {
            if let Some(arn) = task.task_arn() {
                let fargate = task.launch_type() == Some(&LaunchType::Fargate);
                return Ok((arn.to_owned(), fargate));
            }
        }
        let reasons: Vec<String> = (out.failures().iter())
            .map(|f| {
                let detail = f.detail().map(|d| format!(": {d}")).unwrap_or_default();
                format!("{}{detail}", f.reason().unwrap_or("no reason given"))
            })
            .collect();
        bail!(
            "RunTask of {taskdef} in cluster {cluster} started no task: {}",
            if reasons.is_empty() {
                "ECS gave no reason".to_owned()
            } else {
                reasons.join("; ")
            }
        )
    }

    /// The attached container's command and environment, when given.
    fn overrides(&self, container: &str) -> Option<TaskOverride> {
        if self.command.is_empty() && self.env.is_empty() {
            return None;
        }
        let env = (self.env.iter())
            .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
            .collect();
        let command = (!self.command.is_empty()).then(|| self.command.clone());
        let container = ContainerOverride::builder()
            .name(container)
            .set_command(command)
            .set_environment(Some(env).filter(|e: &Vec<_>| !e.is_empty()))
            .build();
        Some(
            TaskOverride::builder()
                .container_overrides(container)
                .build(),
        )
    }
}

/// Where a container's logs go: the CloudWatch Logs group and stream of
/// the awslogs driver, else the driver's name.
fn logs_of(c: &aws_sdk_ecs::types::ContainerDefinition, arn: &str) -> Option<String> {
    let config = c.log_configuration()?;
    let driver = config.log_driver().as_str();
    let options = config.options();
    let option = |k: &str| options.and_then(|o| o.get(k)).map(String::as_str);
    if driver != "awslogs" {
        return Some(format!("the {driver} log driver"));
    }
    let group = option("awslogs-group").unwrap_or("?");
    let region = option("awslogs-region").map_or(String::new(), |r| format!(", region {r}"));
    let id = crate::config::arn::last_segment(arn);
    let stream = match option("awslogs-stream-prefix") {
        Some(prefix) => format!(", stream {prefix}/{}/{id}", c.name().unwrap_or("?")),
        None => String::new(),
    };
    Some(format!("CloudWatch Logs group {group}{stream}{region}"))
}

fn network(awsvpc: &Awsvpc) -> NetworkConfiguration {
    let public = if awsvpc.assign_public_ip {
        AssignPublicIp::Enabled
    } else {
        AssignPublicIp::Disabled
    };
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(awsvpc.subnets.clone()))
        .set_security_groups(Some(awsvpc.security_groups.clone()).filter(|g| !g.is_empty()))
        .assign_public_ip(public)
        .build();
    NetworkConfiguration::builder()
        .set_awsvpc_configuration(vpc.ok())
        .build()
}

/// StopTask, with kite's reason.
pub async fn stop_task(ecs: &aws_sdk_ecs::Client, cluster: &str, arn: &str) -> Result<()> {
    ecs.stop_task()
        .cluster(cluster)
        .task(arn)
        .reason("kite attach ended")
        .send()
        .await
        .with_context(|| format!("StopTask of {arn}"))?;
    Ok(())
}
