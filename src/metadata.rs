//! Self-discovery from inside an ECS task: which cluster, task and
//! container kite runs in, for `kite whoami` and for the defaults of
//! `--cluster` and the AWS region.
//!
//! The task metadata endpoint (v4, else v3) answers first. Where neither is
//! set, the container id comes from `/proc/self/cgroup` (or `cpuset`) and the
//! ECS agent's introspection API names its task. Every HTTP call is bounded
//! by [`TIMEOUT`], so a kite outside ECS never hangs here.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod agent;
mod defaults;
mod parse;
#[cfg(test)]
mod tests;

use agent::from_agent;
pub use defaults::{defaults, Defaults};
pub use parse::{container_id_from_cgroup, region_from_az};
use parse::{region, string_or_number};

/// The longest any one metadata or introspection request may take: both
/// are local to the host, so an answer is quick or never comes.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The environment variable the ECS agent sets for the v4 endpoint.
pub const ENV_V4: &str = "ECS_CONTAINER_METADATA_URI_V4";
/// The environment variable the ECS agent sets for the v3 endpoint.
pub const ENV_V3: &str = "ECS_CONTAINER_METADATA_URI";

/// The ECS agent's introspection API as seen from a bridge-mode container.
pub const DEFAULT_AGENT_URI: &str = "http://172.17.0.1:51678";

/// Where the answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The task metadata endpoint v4.
    MetadataV4,
    /// The task metadata endpoint v3.
    MetadataV3,
    /// The container id from the cgroup files, then the ECS agent's
    /// introspection API.
    Introspection,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::MetadataV4 => "metadata-v4",
            Source::MetadataV3 => "metadata-v3",
            Source::Introspection => "introspection",
        })
    }
}

/// The task and container kite runs in. Any field may be unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Whoami {
    /// The cluster: a bare name (EC2) or an ARN (Fargate).
    pub cluster: Option<String>,
    /// The task ARN.
    pub task_arn: Option<String>,
    /// The task definition family.
    pub family: Option<String>,
    /// The task definition revision.
    pub revision: Option<String>,
    /// The availability zone (Fargate, and recent agents on EC2).
    pub availability_zone: Option<String>,
    /// The region, from the task ARN or else the availability zone.
    pub region: Option<String>,
    /// The Docker container id.
    pub container_id: Option<String>,
    /// The container's name in the task definition.
    pub container_name: Option<String>,
    /// `EC2`, `FARGATE` or `EXTERNAL`.
    pub launch_type: Option<String>,
    /// The container instance (EC2 only).
    pub container_instance_arn: Option<String>,
    /// Which way it was found; `None` only in [`Whoami::default`].
    pub source: Option<Source>,
}

impl Whoami {
    /// `key  value` lines, the values aligned; `-` where unknown.
    pub fn text(&self) -> String {
        let taskdef = match (&self.family, &self.revision) {
            (Some(f), Some(r)) => Some(format!("{f}:{r}")),
            (Some(f), None) => Some(f.clone()),
            _ => None,
        };
        let rows = [
            ("cluster", self.cluster.clone()),
            ("task", self.task_arn.clone()),
            ("task definition", taskdef),
            ("availability zone", self.availability_zone.clone()),
            ("region", self.region.clone()),
            ("container id", self.container_id.clone()),
            ("container name", self.container_name.clone()),
            ("launch type", self.launch_type.clone()),
            ("source", self.source.map(|s| s.to_string())),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {}\n", v.as_deref().unwrap_or("-")))
            .collect()
    }
}

/// The task metadata endpoints, as the ECS agent passes them in the
/// environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// `ECS_CONTAINER_METADATA_URI_V4`.
    pub v4: Option<String>,
    /// `ECS_CONTAINER_METADATA_URI`.
    pub v3: Option<String>,
}

impl Endpoints {
    /// The endpoints from environment variables looked up by `var` (the
    /// binary passes `std::env::var`); empty values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Endpoints {
        let get = |name| var(name).filter(|v| !v.trim().is_empty());
        Endpoints {
            v4: get(ENV_V4),
            v3: get(ENV_V3),
        }
    }

    /// Whether either endpoint is set.
    pub fn is_set(&self) -> bool {
        self.v4.is_some() || self.v3.is_some()
    }
}

/// Where to look when no metadata endpoint is set.
#[derive(Clone, Debug)]
pub struct Fallbacks {
    /// The ECS agent's introspection API (`http://HOST:51678`).
    pub agent_uri: String,
    /// Files whose cgroup paths end in the container id.
    pub cgroup_paths: Vec<PathBuf>,
}

/// Asks the metadata endpoints (v4, then v3); an error names what failed.
/// Never looks anywhere else: use it only when [`Endpoints::is_set`].
pub async fn from_endpoints(endpoints: &Endpoints) -> Result<Whoami> {
    let mut errors = Vec::new();
    for (base, source) in [
        (&endpoints.v4, Source::MetadataV4),
        (&endpoints.v3, Source::MetadataV3),
    ] {
        let Some(base) = base else { continue };
        match from_endpoint(base, source).await {
            Ok(w) => return Ok(w),
            Err(err) => errors.push(format!("{source}: {err:#}")),
        }
    }
    if errors.is_empty() {
        bail!("neither {ENV_V4} nor {ENV_V3} is set");
    }
    Err(anyhow!("{}", errors.join("; ")))
}

/// Finds the task kite runs in: the metadata endpoints when set, else the
/// cgroup files and the agent's introspection API. The error is one line
/// naming every source tried.
pub async fn whoami(endpoints: &Endpoints, fallbacks: &Fallbacks) -> Result<Whoami> {
    let mut tried = Vec::new();
    if endpoints.is_set() {
        match from_endpoints(endpoints).await {
            Ok(w) => return Ok(w),
            Err(err) => tried.push(format!("{err:#}")),
        }
    } else {
        tried.push(format!("{ENV_V4} and {ENV_V3} (unset)"));
    }
    let files = fallbacks
        .cgroup_paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let Some(id) = fallbacks
        .cgroup_paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|text| container_id_from_cgroup(&text))
    else {
        tried.push(format!("a container id in {files} (none found)"));
        bail!("no ECS metadata found; tried {}", tried.join("; "));
    };
    match from_agent(&fallbacks.agent_uri, &id).await {
        Ok(w) => Ok(w),
        Err(err) => {
            tried.push(format!(
                "the ECS agent's introspection API for container {id} (from {files}): {err:#}"
            ));
            bail!("no ECS metadata found; tried {}", tried.join("; "))
        }
    }
}

// === the task metadata endpoint ===

/// A container in the metadata endpoint's answers.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ContainerMetadata {
    docker_id: Option<String>,
    name: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

/// `GET {base}/task`, the fields kite uses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TaskMetadata {
    cluster: Option<String>,
    #[serde(rename = "TaskARN")]
    task_arn: Option<String>,
    family: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    revision: Option<String>,
    availability_zone: Option<String>,
    launch_type: Option<String>,
    #[serde(rename = "ContainerInstanceARN")]
    container_instance_arn: Option<String>,
}

/// Both answers of one endpoint, merged: the task's fields first, the
/// container's labels where the task answer lacks them.
async fn from_endpoint(base: &str, source: Source) -> Result<Whoami> {
    let base = base.trim_end_matches('/');
    let (container, task) = tokio::join!(
        get_json::<ContainerMetadata>(base.to_owned()),
        get_json::<TaskMetadata>(format!("{base}/task")),
    );
    let (container, task) = match (container, task) {
        (Err(err), Err(_)) => return Err(err),
        (c, t) => (c.unwrap_or_default(), t.unwrap_or_default()),
    };
    let labels = container.labels.unwrap_or_default();
    let label = |key: &str| labels.get(key).cloned();
    let mut w = Whoami {
        cluster: task.cluster.or_else(|| label("com.amazonaws.ecs.cluster")),
        task_arn: task
            .task_arn
            .or_else(|| label("com.amazonaws.ecs.task-arn")),
        family: task
            .family
            .or_else(|| label("com.amazonaws.ecs.task-definition-family")),
        revision: task
            .revision
            .or_else(|| label("com.amazonaws.ecs.task-definition-version")),
        availability_zone: task.availability_zone,
        region: None,
        container_id: container.docker_id,
        container_name: container
            .name
            .or_else(|| label("com.amazonaws.ecs.container-name")),
        launch_type: task.launch_type,
        container_instance_arn: task.container_instance_arn,
        source: Some(source),
    };
    w.region = region(&w);
    Ok(w)
}

// === HTTP ===

/// One plain-HTTP GET, bounded by [`TIMEOUT`], its body read as JSON.
async fn get_json<T: DeserializeOwned>(url: String) -> Result<T> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("{url}: not a URL"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let fetch = async {
        let resp = client.get(uri).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow!("GET {url}: no answer within {TIMEOUT:?}"))?
        .with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {url}: not the expected JSON"))
}
