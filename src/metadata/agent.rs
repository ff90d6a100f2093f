//! The ECS agent's introspection API (port 51678 on the host): the task of
//! a Docker container id, and the container instance's cluster.

use anyhow::Result;
use serde::Deserialize;

use super::parse::{region, string_or_number};
use super::{get_json, Source, Whoami};
use crate::config::arn;

/// `GET /v1/tasks?dockerid=ID`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AgentTask {
    arn: Option<String>,
    family: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    version: Option<String>,
    containers: Vec<AgentContainer>,
}

/// A container of an [`AgentTask`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AgentContainer {
    docker_id: Option<String>,
    name: Option<String>,
}

/// `GET /v1/metadata`: the container instance.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AgentMetadata {
    cluster: Option<String>,
    container_instance_arn: Option<String>,
}

/// The task of container `id` from the agent; its cluster from the
/// agent's own metadata, or else the task ARN.
pub(super) async fn from_agent(agent_uri: &str, id: &str) -> Result<Whoami> {
    let agent = agent_uri.trim_end_matches('/');
    let (task, instance) = tokio::join!(
        get_json::<AgentTask>(format!("{agent}/v1/tasks?dockerid={id}")),
        get_json::<AgentMetadata>(format!("{agent}/v1/metadata")),
    );
    let task = task?;
    let instance = instance.unwrap_or_default();
    let container = task
        .containers
        .iter()
        .find(|c| c.docker_id.as_deref() == Some(id));
    let mut w = Whoami {
        cluster: instance
            .cluster
            .or_else(|| arn::task_cluster(task.arn.as_deref()?)),
        task_arn: task.arn,
        family: task.family,
        revision: task.version,
        container_id: Some(id.to_owned()),
        container_name: container.and_then(|c| c.name.clone()),
        launch_type: Some("EC2".to_owned()),
        container_instance_arn: instance.container_instance_arn,
        source: Some(Source::Introspection),
        ..Whoami::default()
    };
    w.region = region(&w);
    Ok(w)
}
