//! `kite attach`: resolve ONE task through the same discovery code as `kite
//! proxy`, wait until it is RUNNING, then attach to it: a TCP connection on
//! stdin/stdout ([`tcp::stdio`]), a local port forward ([`tcp::listen`]), or
//! the container's own stdio through Docker ([`docker::attach`]).
//!
//! With `--run`, the task is started first (RunTask) and stopped when the
//! attach ends, as the Empire RFC proposes for attached runs.

pub mod docker;
mod session;
mod stdio;
pub mod task_ref;
pub mod tcp;
pub mod term;
pub mod tls;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_ecs::types::Task;
use tokio_util::sync::CancellationToken;

use crate::cli::AttachArgs;
use crate::config::{PortMaps, Selector};
use crate::discovery::build::TaskDef;
use crate::discovery::{Discovery, Query};
use crate::snapshot::{Snapshot, Target};

pub use docker::{parse_docker_host, DockerHost};
pub use task_ref::{parse_task_ref, TaskRef};
pub use term::{parse_detach_keys, DetachKeys};

/// The cluster to use: `--cluster`, else the one in a new-format ARN; `None`
/// when neither says (the caller then asks the task metadata, else uses
/// `default`). An error (a usage error) when `--cluster` and the ARN
/// disagree. Also checks the flag combinations clap cannot express.
pub fn cluster(args: &AttachArgs) -> Result<Option<String>, String> {
    if args.keep && args.run.is_none() {
        return Err("--keep only applies with --run (a task kite started)".into());
    }
    if args.port.is_some() && args.docker {
        return Err(
            "--port does not apply to --docker (it attaches to the container's stdio)".into(),
        );
    }
    let from_arn = args.task.as_ref().and_then(|t| t.cluster.clone());
    match (&args.cluster, from_arn) {
        (Some(flag), Some(arn)) => {
            let name = flag.rsplit('/').next().unwrap_or(flag);
            if name != arn {
                return Err(format!(
                    "--cluster {flag} does not match the cluster in the task ARN ({arn}); \
                     leave --cluster out or give the task's id"
                ));
            }
            Ok(Some(flag.clone()))
        }
        (Some(flag), None) => Ok(Some(flag.clone())),
        (None, Some(arn)) => Ok(Some(arn)),
        (None, None) => Ok(None),
    }
}

/// Runs `kite attach`; returns the exit code (the container's, with
/// `--docker`). `cluster` comes from [`cluster`].
pub async fn run(
    args: AttachArgs,
    cluster: String,
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
    cancel: CancellationToken,
) -> Result<i32> {
    let query = Query {
        cluster: cluster.clone(),
        // attach never lists tasks: the selector is not used.
        selector: Selector::Service(String::new()),
        container: args.name.clone().unwrap_or_default(),
        public: args.public,
        port_maps: PortMaps::default(),
    };
    let mut discovery = Discovery::new(ecs.clone(), ec2, query);
    let Some(taskdef) = &args.run else {
        let task = args.task.as_ref().context("--task or --run is required")?;
        return attach(&mut discovery, task.lookup(), &args, &cancel).await;
    };
    let taskdef = match taskdef.revision {
        Some(rev) => format!("{}:{rev}", taskdef.name),
        None => taskdef.name.clone(),
    };
    let arn = run_task(&ecs, &cluster, &taskdef, &args.started_by).await?;
    let id = short_id(&arn);
    eprintln!("kite: started task {id} of {taskdef} in cluster {cluster}");
    let result = attach(&mut discovery, &arn, &args, &cancel).await;
    if args.keep {
        eprintln!("kite: task {id} keeps running (--keep)");
    } else {
        match stop_task(&ecs, &cluster, &arn).await {
            Ok(()) => eprintln!("kite: stopped task {id}"),
            Err(err) => eprintln!("kite: could not stop task {id}: {err:#}"),
        }
    }
    result
}

/// RunTask: one task of `taskdef`; its ARN.
async fn run_task(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    taskdef: &str,
    started_by: &str,
) -> Result<String> {
    let out = ecs
        .run_task()
        .cluster(cluster)
        .task_definition(taskdef)
        .started_by(started_by)
        .count(1)
        .send()
        .await
        .with_context(|| format!("RunTask of {taskdef} in cluster {cluster}"))?;
    if let Some(arn) = out.tasks().first().and_then(|t| t.task_arn()) {
        return Ok(arn.to_owned());
    }
    let reasons: Vec<String> = out
        .failures()
        .iter()
        .map(|f| format!("{} ({})", f.reason().unwrap_or("?"), f.arn().unwrap_or("?")))
        .collect();
    bail!(
        "RunTask of {taskdef} in cluster {cluster} started no task: {}",
        if reasons.is_empty() {
            "no reason given".to_owned()
        } else {
            reasons.join("; ")
        }
    )
}

async fn stop_task(ecs: &aws_sdk_ecs::Client, cluster: &str, arn: &str) -> Result<()> {
    ecs.stop_task()
        .cluster(cluster)
        .task(arn)
        .reason("kite attach ended")
        .send()
        .await
        .with_context(|| format!("StopTask of {arn}"))?;
    Ok(())
}

/// Waits for the task, resolves it, and attaches in the chosen mode.
async fn attach(
    discovery: &mut Discovery,
    lookup: &str,
    args: &AttachArgs,
    cancel: &CancellationToken,
) -> Result<i32> {
    let wait = Wait {
        limit: args.wait,
        poll: args.poll,
    };
    let task = wait_running(discovery, lookup, wait, cancel).await?;
    let id = short_id(task.task_arn().unwrap_or(lookup));
    let td = discovery.task_def(&task).with_context(|| {
        format!(
            "the task definition of task {id} ({}) cannot be described",
            task.task_definition_arn().unwrap_or("none")
        )
    })?;
    let container = choose_container(td, &task, args.name.as_deref(), args.docker)?;
    if args.docker {
        let cluster = discovery.query().cluster.clone();
        let spec = docker::spec(discovery, &task, &container, &cluster, args).await?;
        return docker::attach(spec, cancel).await;
    }
    let snapshot = discovery.build_task(&task, &container);
    let target = choose_target(&snapshot, id, &container, args.port)?;
    match args.listen {
        Some(addr) => tcp::listen(addr, &target, args.connect_timeout, cancel).await?,
        None => tcp::stdio(&target, args.connect_timeout, cancel).await?,
    }
    Ok(0)
}

/// The last segment of a task ARN.
pub fn short_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// How long to wait for RUNNING, and how often to ask.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    /// The bound (`--wait`).
    pub limit: Duration,
    /// Between DescribeTasks calls (`--poll`).
    pub poll: Duration,
}

/// Waits until the task's last and desired status are RUNNING, printing
/// each status it passes through on stderr. Fails at once when the task is
/// unknown, stopped or stopping, and when `wait.limit` passes.
pub async fn wait_running(
    discovery: &mut Discovery,
    lookup: &str,
    wait: Wait,
    cancel: &CancellationToken,
) -> Result<Task> {
    let cluster = discovery.query().cluster.clone();
    let deadline = tokio::time::Instant::now() + wait.limit;
    let mut shown = String::new();
    loop {
        let task = match discovery.describe_task(lookup).await? {
            Ok(task) => task,
            Err(reason) => bail!(
                "task {} not found in cluster {cluster} ({reason}): check the id and --cluster \
                 (ECS forgets stopped tasks after about an hour)",
                short_id(lookup)
            ),
        };
        let id = short_id(task.task_arn().unwrap_or(lookup)).to_owned();
        let last = task.last_status().unwrap_or("(none)").to_owned();
        let desired = task.desired_status().unwrap_or("(none)");
        if last != shown {
            eprintln!("kite: task {id} is {last}");
            shown = last.clone();
        }
        if last == "STOPPED" || desired == "STOPPED" {
            bail!("{}", stopped_message(&task, &id));
        }
        if last == "RUNNING" && desired == "RUNNING" {
            return Ok(task);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            bail!(
                "task {id} is still {last} after {:?} (--wait); it may lack resources in \
                 cluster {cluster}, or its image may be slow to pull",
                wait.limit
            );
        }
        tokio::select! {
            _ = cancel.cancelled() => bail!("interrupted while waiting for task {id}"),
            _ = tokio::time::sleep(wait.poll.min(deadline - now)) => {}
        }
    }
}

/// Why a task stopped (or is stopping): its stoppedReason, and the exit
/// code or reason of each container that has one.
fn stopped_message(task: &Task, id: &str) -> String {
    let verb = if task.last_status() == Some("STOPPED") {
        "has stopped"
    } else {
        "is stopping"
    };
    let mut msg = format!(
        "task {id} {verb}: {}",
        task.stopped_reason().unwrap_or("no reason given")
    );
    for c in task.containers() {
        let name = c.name().unwrap_or("?");
        match (c.exit_code(), c.reason()) {
            (Some(code), Some(r)) => {
                msg.push_str(&format!("; container {name} exited {code}: {r}"))
            }
            (Some(code), None) => msg.push_str(&format!("; container {name} exited {code}")),
            (None, Some(r)) => msg.push_str(&format!("; container {name}: {r}")),
            (None, None) => {}
        }
    }
    msg
}

/// The container to attach to: `--name` when given (it must exist), else
/// the one container with TCP ports; with `--docker`, also the only
/// container of a single-container task.
pub fn choose_container(
    td: &TaskDef,
    task: &Task,
    name: Option<&str>,
    docker: bool,
) -> Result<String> {
    let id = short_id(task.task_arn().unwrap_or("?"));
    let names: Vec<&str> = task.containers().iter().filter_map(|c| c.name()).collect();
    if let Some(name) = name {
        if names.contains(&name) {
            return Ok(name.to_owned());
        }
        bail!(
            "task {id} has no container named '{name}' (its containers: {})",
            names.join(", ")
        );
    }
    if docker && names.len() == 1 {
        return Ok(names[0].to_owned());
    }
    let with_ports: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| td.ports.get(*n).is_some_and(|p| !p.is_empty()))
        .collect();
    match with_ports[..] {
        [one] => Ok(one.to_owned()),
        [] => bail!(
            "no container of task {id} exposes a TCP port (its containers: {}): choose one with \
             --name{}",
            names.join(", "),
            if docker { "" } else { " and use --docker" }
        ),
        _ => bail!(
            "task {id} has several containers with ports ({}): choose one with --name",
            with_ports.join(", ")
        ),
    }
}

/// The target for `--port` (a container port), or the container's only one.
pub fn choose_target(
    snapshot: &Snapshot,
    id: &str,
    container: &str,
    port: Option<u16>,
) -> Result<Target> {
    if snapshot.targets.is_empty() {
        let reason = snapshot
            .skipped
            .first()
            .map_or("no reason given", |s| s.reason.as_str());
        bail!("cannot reach container {container} of task {id}: {reason}");
    }
    let ports: Vec<String> = snapshot
        .targets
        .iter()
        .map(|t| t.container_port.to_string())
        .collect();
    let found = match port {
        Some(p) => snapshot.targets.iter().find(|t| t.container_port == p),
        None if snapshot.targets.len() == 1 => snapshot.targets.first(),
        None => bail!(
            "container {container} of task {id} exposes several ports ({}): choose one with --port",
            ports.join(", ")
        ),
    };
    found.cloned().with_context(|| {
        format!(
            "container {container} of task {id} does not expose port {} (it exposes {})",
            port.unwrap_or_default(),
            ports.join(", ")
        )
    })
}

#[cfg(test)]
mod tests;
