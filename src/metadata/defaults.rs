//! The defaults of `--cluster`, the AWS region and `--zone`, from the task
//! kite runs in.

use tracing::{info, warn};

use super::{from_endpoints, Endpoints};

/// What kite defaults to when run without `--cluster` or an AWS region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// `--cluster`, else the task's own cluster, else `default`.
    pub cluster: String,
    /// The task's region, for when the AWS configuration names none.
    pub region: Option<String>,
    /// The task's availability zone, when it was asked for.
    pub zone: Option<String>,
}

/// Resolves the cluster, the fallback region, and with `want_zone` the
/// task's zone. The task metadata endpoint is asked only when one is set
/// and the cluster, the region (`region_configured`: whether the
/// environment names one) or a wanted zone is missing, so runs outside ECS
/// are unchanged.
pub async fn defaults(
    cluster: Option<String>,
    endpoints: &Endpoints,
    region_configured: bool,
    want_zone: bool,
) -> Defaults {
    let missing = cluster.is_none() || !region_configured || want_zone;
    let task = if endpoints.is_set() && missing {
        match from_endpoints(endpoints).await {
            Ok(task) => Some(task),
            Err(err) => {
                warn!("the task metadata endpoint did not answer, so no defaults from it: {err:#}");
                None
            }
        }
    } else {
        None
    };
    let cluster = match (cluster, task.as_ref().and_then(|t| t.cluster.clone())) {
        (Some(flag), _) => flag,
        (None, Some(own)) => {
            info!(cluster = %own, "no --cluster: using the task's own, from the task metadata endpoint");
            own
        }
        (None, None) => {
            info!("no --cluster: using `default`");
            "default".to_owned()
        }
    };
    let zone = task.as_ref().and_then(|t| t.availability_zone.clone());
    let zone = zone.filter(|_| want_zone);
    Defaults {
        cluster,
        region: task.and_then(|t| t.region),
        zone,
    }
}
