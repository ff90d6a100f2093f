//! The ECS calls of a discovery round: thin, paginated and batched at the
//! API limits.

use anyhow::{Context, Result};
use aws_sdk_ecs::types::{DesiredStatus, Failure, Task};
use aws_sdk_ecs::Client;
use tracing::warn;

use crate::config::Selector;

/// ListTasks and DescribeTasks take at most 100 items per call.
pub const ECS_BATCH: usize = 100;

/// The ARNs of the tasks of a family or service whose desired status is
/// RUNNING, each once: one ListTasks call per 100 tasks.
pub async fn list_tasks(ecs: &Client, cluster: &str, selector: &Selector) -> Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut next = None;
    loop {
        let mut req = ecs
            .list_tasks()
            .cluster(cluster)
            .desired_status(DesiredStatus::Running)
            .max_results(ECS_BATCH as i32)
            .set_next_token(next.take());
        req = match selector {
            Selector::Family { name, .. } => req.family(name),
            Selector::Service(name) => req.service_name(name),
        };
        let out = req
            .send()
            .await
            .with_context(|| format!("ListTasks for {selector} in cluster {cluster}"))?;
        arns.extend(out.task_arns().iter().cloned());
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_owned()),
            _ => {
                // A task on two pages (the list changed between them)
                // comes once.
                let mut seen = std::collections::HashSet::new();
                arns.retain(|arn| seen.insert(arn.clone()));
                return Ok(arns);
            }
        }
    }
}

/// DescribeTasks in batches of 100. Per-item failures (a task that is gone
/// by now) are returned beside the tasks, not as an error.
pub async fn describe_tasks(
    ecs: &Client,
    cluster: &str,
    arns: &[String],
) -> Result<(Vec<Task>, Vec<Failure>)> {
    let mut tasks = Vec::with_capacity(arns.len());
    let mut failures = Vec::new();
    for batch in arns.chunks(ECS_BATCH) {
        let out = ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(batch.to_vec()))
            .send()
            .await
            .with_context(|| {
                format!(
                    "DescribeTasks of {} tasks in cluster {cluster}",
                    batch.len()
                )
            })?;
        tasks.extend(out.tasks().iter().cloned());
        failures.extend(out.failures().iter().cloned());
    }
    Ok((tasks, failures))
}

/// One task definition by ARN. `Ok(None)` when ECS rejects that ARN (a
/// client error about this one item): its tasks are skipped, and the round
/// goes on.
pub async fn describe_task_definition(
    ecs: &Client,
    arn: &str,
) -> Result<Option<aws_sdk_ecs::types::TaskDefinition>> {
    use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
    match ecs
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
    {
        Ok(out) => Ok(out.task_definition().cloned()),
        Err(SdkError::ServiceError(e))
            if e.err().is_client_exception() || e.err().is_invalid_parameter_exception() =>
        {
            warn!(
                task_definition = arn,
                code = e.err().code(),
                "cannot describe task definition: {}",
                e.err().message().unwrap_or("no message")
            );
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("DescribeTaskDefinition of {arn}")),
    }
}

/// The EC2 instance id of each container instance, in batches of 100.
/// Container instances ECS reports as failures are left out of the answer.
pub async fn container_instance_ids(
    ecs: &Client,
    cluster: &str,
    arns: &[String],
) -> Result<(Vec<(String, String)>, Vec<Failure>)> {
    let mut found = Vec::with_capacity(arns.len());
    let mut failures = Vec::new();
    for batch in arns.chunks(ECS_BATCH) {
        let out = ecs
            .describe_container_instances()
            .cluster(cluster)
            .set_container_instances(Some(batch.to_vec()))
            .send()
            .await
            .with_context(|| {
                format!(
                    "DescribeContainerInstances of {} instances in cluster {cluster}",
                    batch.len()
                )
            })?;
        for ci in out.container_instances() {
            if let (Some(arn), Some(id)) = (ci.container_instance_arn(), ci.ec2_instance_id()) {
                found.push((arn.to_owned(), id.to_owned()));
            }
        }
        failures.extend(out.failures().iter().cloned());
    }
    Ok((found, failures))
}
