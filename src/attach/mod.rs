//! `kite attach`: resolve ONE task through the same discovery code as `kite
//! proxy` ([`crate::discovery::TaskLookup`]), wait until it is RUNNING
//! ([`wait_running`]), then attach to it: a TCP connection on
//! stdin/stdout ([`tcp::stdio`]), a local port forward ([`tcp::listen`]), or
//! the container's own stdio through Docker ([`docker::attach`]).
//!
//! With `--run`, the task is started first ([`run::Run`]: RunTask, with the
//! command, environment, network and placement asked) and stopped when the
//! attach ends, as the Empire RFC proposes for attached runs.
//!
//! The binary turns the flags into [`Options`] (`cli::AttachArgs::options`);
//! nothing here knows clap.

mod daemon;
pub mod docker;
mod interrupts;
pub mod run;
mod session;
mod stdio;
pub mod tcp;
pub mod term;
pub mod tls;
mod wait;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_ecs::types::Task;

use crate::config::arn::last_segment;
use crate::config::TaskRef;
use crate::discovery::build::TaskDef;
use crate::discovery::TaskLookup;
use crate::snapshot::{Snapshot, Target};

pub use interrupts::{Interrupts, Sig};
pub use run::{Run, Usage};
pub use wait::{wait_running, Wait};

/// What `kite attach` does, checked: the binary builds it from the flags
/// (`cli::AttachArgs::options`).
#[derive(Clone, Debug)]
pub struct Options {
    /// The cluster asked for: `--cluster`, else the one in a new-format task
    /// ARN; `None` when neither says (the caller then asks the task
    /// metadata, else uses `default`).
    pub cluster: Option<String>,
    /// Which task.
    pub task: Which,
    /// The container (`--name`); may be left out when exactly one container
    /// of the task exposes ports.
    pub container: Option<String>,
    /// Reach the task, or its instance's Docker daemon, through public IPs.
    pub public: bool,
    /// How long to wait for RUNNING, and how often to ask.
    pub wait: Wait,
    /// How long the container port (or the Docker daemon) may take to
    /// accept a connection.
    pub connect_timeout: Duration,
    /// How to attach.
    pub mode: Mode,
}

/// The task to attach to.
#[derive(Clone, Debug)]
pub enum Which {
    /// A task that exists (`--task`).
    Existing(TaskRef),
    /// A new task of a task definition (`--run`).
    Run(Run),
}

/// How to attach.
#[derive(Clone, Debug)]
pub enum Mode {
    /// A TCP connection to a container port: on stdin/stdout, or one for
    /// each connection accepted on `listen`.
    Tcp {
        /// The container port (`--port`); may be left out when the
        /// container exposes exactly one.
        port: Option<u16>,
        /// The local address to forward (`--listen`).
        listen: Option<SocketAddr>,
    },
    /// The container's own stdio through the Docker daemon on its host.
    Docker(docker::Options),
}

/// Runs `kite attach`; returns the exit code (the container's, with
/// `--docker`). `cluster` is [`Options::cluster`] resolved.
pub async fn run(
    options: Options,
    cluster: String,
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
    interrupts: Interrupts,
) -> Result<i32> {
    let mut lookup = TaskLookup::new(ecs.clone(), ec2, cluster.clone(), options.public);
    let run = match &options.task {
        Which::Existing(task) => {
            return attach(&mut lookup, task.lookup(), &options, &interrupts).await
        }
        Which::Run(run) => run,
    };
    let started = run
        .start(&ecs, &cluster, options.container.as_deref())
        .await?;
    let arn = started.arn.clone();
    let id = last_segment(&arn).to_owned();
    let taskdef = run.taskdef_name();
    eprintln!("kite: started task {id} of {taskdef} in cluster {cluster}");
    let options = Options {
        container: Some(started.container.clone()),
        ..options.clone()
    };
    let result = if started.fargate && matches!(options.mode, Mode::Docker(_)) {
        wait::fargate_run(&mut lookup, &started, options.wait.poll, &interrupts.cancel).await
    } else {
        attach(&mut lookup, &arn, &options, &interrupts).await
    };
    if run.keep {
        eprintln!("kite: task {id} keeps running (--keep)");
    } else if stopped_by_itself(&mut lookup, &arn).await {
        eprintln!("kite: task {id} stopped by itself");
    } else {
        match run::stop_task(&ecs, &cluster, &arn).await {
            Ok(()) => eprintln!("kite: stopped task {id}"),
            Err(err) => eprintln!("kite: could not stop task {id}: {err:#}"),
        }
    }
    result
}

/// Whether ECS already stops the task (its essential container exited).
async fn stopped_by_itself(lookup: &mut TaskLookup, arn: &str) -> bool {
    lookup
        .describe_task(arn)
        .await
        .is_ok_and(|t| t.desired_status() == Some("STOPPED") || t.last_status() == Some("STOPPED"))
}

/// Waits for the task, resolves it, and attaches in the chosen mode.
async fn attach(
    lookup: &mut TaskLookup,
    task_ref: &str,
    options: &Options,
    interrupts: &Interrupts,
) -> Result<i32> {
    let cancel = &interrupts.cancel;
    let task = wait_running(lookup, task_ref, options.wait, cancel).await?;
    let id = last_segment(task.task_arn().unwrap_or(task_ref));
    let td = lookup.task_def(&task).with_context(|| {
        format!(
            "the task definition of task {id} ({}) cannot be described",
            task.task_definition_arn().unwrap_or("none")
        )
    })?;
    let docker = matches!(options.mode, Mode::Docker(_));
    let container = choose_container(td, &task, options.container.as_deref(), docker)?;
    let (port, listen) = match &options.mode {
        Mode::Docker(opts) => {
            let reach = docker::Reach {
                public: options.public,
                connect_timeout: options.connect_timeout,
                from_start: matches!(options.task, Which::Run(_)),
            };
            let spec = docker::spec(lookup, &task, &container, reach, opts).await?;
            return docker::attach(spec, interrupts).await;
        }
        Mode::Tcp { port, listen } => (*port, *listen),
    };
    let snapshot = lookup.build_task(&task, &container);
    let target = choose_target(&snapshot, id, &container, port)?;
    match listen {
        Some(addr) => tcp::listen(addr, &target, options.connect_timeout, cancel).await?,
        None => tcp::stdio(&target, options.connect_timeout, cancel).await?,
    }
    Ok(0)
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
    let id = last_segment(task.task_arn().unwrap_or("?"));
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
