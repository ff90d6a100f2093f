//! Building a snapshot from what the APIs returned: pure, no I/O.
//!
//! Every task either becomes targets or lands in `skipped` with a reason;
//! unusable data in one task never affects the others.

use std::collections::HashMap;
use std::net::SocketAddr;

use aws_sdk_ecs::types::{Container, Task};

mod address;

pub use address::eni_id;
use address::{eni_ip, instance_ip};

use crate::config::{IpFamily, PortMaps};
use crate::snapshot::{NetworkMode, SkipKind, Skipped, Snapshot, Target};

/// What kite needs of a task definition; cached by ARN (they are immutable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskDef {
    /// `family:revision`.
    pub name: String,
    /// The revision number.
    pub revision: u32,
    /// The network mode, or the raw value when kite does not support it.
    pub network_mode: Result<NetworkMode, String>,
    /// TCP port mappings per container name: (containerPort, hostPort).
    pub ports: HashMap<String, Vec<(u16, Option<u16>)>>,
}

impl TaskDef {
    /// Extracts what kite needs from a DescribeTaskDefinition answer.
    pub fn from_api(td: &aws_sdk_ecs::types::TaskDefinition, fargate_default: bool) -> Self {
        use aws_sdk_ecs::types::NetworkMode as M;
        let network_mode = match td.network_mode() {
            Some(M::Bridge) => Ok(NetworkMode::Bridge),
            Some(M::Host) => Ok(NetworkMode::Host),
            Some(M::Awsvpc) => Ok(NetworkMode::Awsvpc),
            // Absent means bridge on EC2; Fargate only runs awsvpc.
            None if fargate_default => Ok(NetworkMode::Awsvpc),
            None => Ok(NetworkMode::Bridge),
            Some(other) => Err(other.as_str().to_owned()),
        };
        let ports = td
            .container_definitions()
            .iter()
            .map(|c| {
                let tcp = c
                    .port_mappings()
                    .iter()
                    .filter(|p| p.protocol().is_none_or(|p| p.as_str() == "tcp"))
                    .filter_map(|p| {
                        let cp = port(p.container_port())?;
                        Some((cp, port(p.host_port())))
                    })
                    .collect();
                (c.name().unwrap_or_default().to_owned(), tcp)
            })
            .collect();
        TaskDef {
            name: format!("{}:{}", td.family().unwrap_or("?"), td.revision()),
            revision: u32::try_from(td.revision()).unwrap_or(0),
            network_mode,
            ports,
        }
    }
}

/// A valid TCP port number, or None for absent, 0 or out of range.
fn port(p: Option<i32>) -> Option<u16> {
    p.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
}

/// The addresses of a container instance's EC2 instance, as EC2 gave them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAddrs {
    /// The EC2 instance id.
    pub instance_id: String,
    /// Its private IPv4 address.
    pub private_ip: Option<String>,
    /// Its public IPv4 address, when it has one.
    pub public_ip: Option<String>,
    /// Its (primary) IPv6 address, when it has one.
    pub ipv6: Option<String>,
}

/// What the round is looking for.
#[derive(Clone, Debug)]
pub struct Want<'a> {
    /// The container whose ports to reach.
    pub container: &'a str,
    /// Route to public addresses.
    pub public: bool,
    /// Which address of a task with both an IPv4 and an IPv6 one.
    pub ip_family: IpFamily,
    /// Only this task definition revision, when set.
    pub revision: Option<u32>,
    /// Listen port per container port.
    pub port_maps: &'a PortMaps,
}

/// Everything a round fetched, keyed as the caches keep it.
#[derive(Clone, Copy, Debug)]
pub struct Fetched<'a> {
    /// The tasks, as DescribeTasks last described them.
    pub tasks: &'a [&'a Task],
    /// Task definitions by ARN.
    pub task_defs: &'a HashMap<String, TaskDef>,
    /// Host addresses by container instance ARN.
    pub hosts: &'a HashMap<String, HostAddrs>,
    /// Public IP by ENI id (None: the ENI has no public IP).
    pub eni_public_ips: &'a HashMap<String, Option<String>>,
}

/// Builds the snapshot: the targets of every eligible task, and every other
/// task with the reason it is left out.
pub fn build_snapshot(want: &Want<'_>, fetched: Fetched<'_>) -> Snapshot {
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    for task in fetched.tasks {
        let arn = task.task_arn().unwrap_or("(task without taskArn)");
        match task_targets(want, fetched, task) {
            Ok(mut t) => targets.append(&mut t),
            Err(Skip { reason, kind }) => skipped.push(Skipped {
                task_arn: arn.to_owned(),
                reason,
                kind,
            }),
        }
    }
    Snapshot::new(targets, skipped)
}

/// Why a task is left out.
struct Skip {
    reason: String,
    kind: SkipKind,
}

/// The task is not a target yet (starting, unhealthy).
fn settling(reason: String) -> Skip {
    let kind = SkipKind::Settling;
    Skip { reason, kind }
}

/// The task is not eligible (stopping, other revision).
fn ineligible(reason: String) -> Skip {
    let kind = SkipKind::Ineligible;
    Skip { reason, kind }
}

/// The API data for the task is unusable.
fn bad(reason: String) -> Skip {
    let kind = SkipKind::BadData;
    Skip { reason, kind }
}

fn task_targets(want: &Want<'_>, f: Fetched<'_>, task: &Task) -> Result<Vec<Target>, Skip> {
    let arn = task.task_arn().ok_or_else(|| bad("no taskArn".into()))?;
    let last = task.last_status().unwrap_or("(none)");
    let desired = task.desired_status().unwrap_or("(none)");
    if last != "RUNNING" {
        return Err(settling(format!("lastStatus is {last}")));
    }
    if desired != "RUNNING" {
        return Err(ineligible(format!("desiredStatus is {desired} (draining)")));
    }
    let td_arn = task
        .task_definition_arn()
        .ok_or_else(|| bad("no taskDefinitionArn".into()))?;
    let td = f
        .task_defs
        .get(td_arn)
        .ok_or_else(|| bad(format!("task definition {td_arn} is unavailable")))?;
    if let Some(rev) = want.revision.filter(|r| *r != td.revision) {
        return Err(ineligible(format!("revision {} is not {rev}", td.revision)));
    }
    let container = task
        .containers()
        .iter()
        .find(|c| c.name() == Some(want.container))
        .ok_or_else(|| bad(format!("no container named '{}'", want.container)))?;
    match container.last_status() {
        Some("RUNNING") => {}
        other => {
            let status = other.unwrap_or("(none)");
            return Err(settling(format!("container is {status}")));
        }
    }
    let health = container
        .health_status()
        .map_or("UNKNOWN", |h| h.as_str())
        .to_owned();
    if health == "UNHEALTHY" {
        return Err(settling("container is UNHEALTHY".into()));
    }
    let mode = td
        .network_mode
        .clone()
        .map_err(|m| bad(format!("network mode '{m}' is not supported")))?;
    let (ip, host, ports) = match mode {
        NetworkMode::Bridge => {
            let (ip, host) = instance_ip(want, f, task)?;
            (ip, host, bridge_ports(container)?)
        }
        NetworkMode::Host => {
            let (ip, host) = instance_ip(want, f, task)?;
            let ports = td_ports(td, want.container)?
                .iter()
                .map(|(cp, hp)| (*cp, hp.unwrap_or(*cp)))
                .collect();
            (ip, host, ports)
        }
        NetworkMode::Awsvpc => {
            let (ip, eni) = eni_ip(want, f, task, container)?;
            let ports = td_ports(td, want.container)?
                .iter()
                .map(|(cp, _)| (*cp, *cp))
                .collect();
            (ip, eni, ports)
        }
        // No task definition has it: Cloud Map's instances never get here.
        NetworkMode::CloudMap => return Err(bad("network mode 'cloudmap' is not ECS's".into())),
    };
    if ports.is_empty() {
        return Err(bad(format!(
            "container '{}' exposes no TCP port",
            want.container
        )));
    }
    let task_id = crate::config::arn::last_segment(arn).to_owned();
    let zone = task.availability_zone().map(str::to_owned);
    Ok(ports
        .into_iter()
        .map(|(container_port, reach_port)| Target {
            listen_port: want.port_maps.listen_port(container_port),
            container_port,
            address: SocketAddr::new(ip, reach_port),
            task_id: task_id.clone(),
            task_arn: arn.to_owned(),
            task_definition: td.name.clone(),
            network_mode: mode,
            health: health.clone(),
            host: host.clone(),
            zone: zone.clone(),
        })
        .collect())
}

/// The container's TCP port mappings from the task definition.
fn td_ports<'t>(td: &'t TaskDef, container: &str) -> Result<&'t [(u16, Option<u16>)], Skip> {
    td.ports.get(container).map(Vec::as_slice).ok_or_else(|| {
        bad(format!(
            "task definition {} has no container '{container}'",
            td.name
        ))
    })
}

/// Bridge mode: (containerPort, hostPort) from the container's TCP network
/// bindings. ECS lists each binding twice, for 0.0.0.0 and for `::`; the
/// duplicates collapse on the container port.
fn bridge_ports(container: &Container) -> Result<Vec<(u16, u16)>, Skip> {
    let mut ports: Vec<(u16, u16)> = Vec::new();
    for b in container.network_bindings() {
        if b.protocol().is_some_and(|p| p.as_str() != "tcp") {
            continue;
        }
        let (Some(cp), Some(hp)) = (port(b.container_port()), port(b.host_port())) else {
            return Err(bad(format!(
                "network binding {:?}->{:?} has no valid port",
                b.container_port(),
                b.host_port()
            )));
        };
        if !ports.iter().any(|(c, _)| *c == cp) {
            ports.push((cp, hp));
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests;
