//! Waiting for a task to be RUNNING, and saying why when it never will be.

use std::time::Duration;

use anyhow::{bail, Result};
use aws_sdk_ecs::types::Task;
use tokio_util::sync::CancellationToken;

use super::run::Started;
use crate::config::arn::last_segment;
use crate::discovery::{task, TaskLookup};

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
    lookup: &mut TaskLookup,
    task_ref: &str,
    wait: Wait,
    cancel: &CancellationToken,
) -> Result<Task> {
    let cluster = lookup.cluster().to_owned();
    let deadline = tokio::time::Instant::now() + wait.limit;
    let mut shown = String::new();
    loop {
        let (task, id) = describe_showing(lookup, task_ref, &mut shown).await?;
        let last = task.last_status().unwrap_or("(none)").to_owned();
        let desired = task.desired_status().unwrap_or("(none)");
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

/// Describes the task and its id, printing its last status on stderr when
/// it is not `shown` (then `shown` is updated). An unknown task is an error
/// that says what to check.
async fn describe_showing(
    lookup: &mut TaskLookup,
    task_ref: &str,
    shown: &mut String,
) -> Result<(Task, String)> {
    let task = match lookup.describe_task(task_ref).await {
        Ok(task) => task,
        Err(err @ task::Error::NotFound { .. }) => bail!(
            "{err}: check the id and --cluster (ECS forgets stopped tasks after about an hour)"
        ),
        Err(task::Error::Api(err)) => return Err(err),
    };
    let id = last_segment(task.task_arn().unwrap_or(task_ref)).to_owned();
    let last = task.last_status().unwrap_or("(none)");
    if last != shown {
        eprintln!("kite: task {id} is {last}");
        *shown = last.to_owned();
    }
    Ok((task, id))
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

/// A `--run --docker` of a Fargate task, which has no Docker daemon kite
/// can reach: waits (every `poll`, until `cancel`) for the task to stop,
/// prints why, the container's exit code and where its logs are, and
/// returns that exit code.
pub(super) async fn fargate_run(
    lookup: &mut TaskLookup,
    started: &Started,
    poll: Duration,
    cancel: &CancellationToken,
) -> Result<i32> {
    let id = last_segment(&started.arn).to_owned();
    eprintln!(
        "kite: task {id} runs on Fargate, which has no Docker daemon to attach through: \
         waiting for it to stop"
    );
    let mut shown = String::new();
    let task = loop {
        let (task, _) = describe_showing(lookup, &started.arn, &mut shown).await?;
        if task.last_status() == Some("STOPPED") {
            break task;
        }
        tokio::select! {
            _ = cancel.cancelled() => bail!("interrupted while waiting for task {id} to stop"),
            _ = tokio::time::sleep(poll) => {}
        }
    };
    let code = (task.containers().iter())
        .find(|c| c.name() == Some(&started.container))
        .and_then(|c| c.exit_code());
    eprintln!("kite: {}", stopped_message(&task, &id));
    if let Some(logs) = &started.logs {
        eprintln!(
            "kite: the output of container {} is in {logs}",
            started.container
        );
    }
    match code {
        Some(code) => Ok(code),
        None => bail!(
            "container {} of task {id} has no exit code (it may never have started)",
            started.container
        ),
    }
}
