//! Building a snapshot from the instances DiscoverInstances returned: pure,
//! no I/O.
//!
//! Each instance's attributes give its address (`AWS_INSTANCE_IPV4`, else
//! `AWS_INSTANCE_IPV6`), its port (`AWS_INSTANCE_PORT`, registered with SRV
//! records only) and its zone (`AVAILABILITY_ZONE`). An instance without a
//! port is reached on the ports of `--port-map LOCAL:PORT`. Every instance
//! either becomes targets or lands in `skipped` with a reason.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use aws_sdk_servicediscovery::types::HttpInstanceSummary;

use super::Query;
use crate::config::IpFamily;
use crate::snapshot::{NetworkMode, SkipKind, Skipped, Snapshot, Target};

/// The attribute holding an instance's IPv4 address.
pub const IPV4: &str = "AWS_INSTANCE_IPV4";
/// The attribute holding an instance's IPv6 address.
pub const IPV6: &str = "AWS_INSTANCE_IPV6";
/// The attribute holding an instance's port (SRV records only).
pub const PORT: &str = "AWS_INSTANCE_PORT";
/// The attribute ECS sets to the task's availability zone.
pub const ZONE: &str = "AVAILABILITY_ZONE";
/// The attribute ECS sets to the task definition family.
pub const FAMILY: &str = "ECS_TASK_DEFINITION_FAMILY";

/// Builds the snapshot: the targets of every instance that has an address
/// and a port, and every other instance with the reason it is left out.
pub fn build_snapshot(query: &Query, instances: &[HttpInstanceSummary]) -> Snapshot {
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    for instance in instances {
        match instance_targets(query, instance) {
            Ok(t) => targets.extend(t),
            Err(skip) => skipped.push(skip),
        }
    }
    Snapshot::new(targets, skipped)
}

/// The targets of one instance, or why it has none.
fn instance_targets(query: &Query, instance: &HttpInstanceSummary) -> Result<Vec<Target>, Skipped> {
    let id = instance.instance_id().unwrap_or("(no id)");
    let name = format!("{query}/{id}");
    let skip = |kind, reason: String| Skipped {
        task_arn: name.clone(),
        reason,
        kind,
    };
    let empty = HashMap::new();
    let attrs = instance.attributes().unwrap_or(&empty);
    let health = instance.health_status().map_or("UNKNOWN", |h| h.as_str());
    // DiscoverInstances was asked for healthy ones; an answer that says
    // otherwise is not routed to.
    if health == "UNHEALTHY" {
        return Err(skip(SkipKind::Settling, "instance is UNHEALTHY".into()));
    }
    let ip = address(attrs, query.ip_family).map_err(|r| skip(SkipKind::BadData, r))?;
    let ports: Vec<(u16, u16)> = match attrs.get(PORT) {
        Some(p) => {
            let port = p.trim().parse::<u16>().ok().filter(|p| *p != 0);
            let port = port.ok_or_else(|| {
                skip(
                    SkipKind::BadData,
                    format!("{PORT} '{p}' is not a port number 1-65535"),
                )
            })?;
            vec![(query.port_maps.listen_port(port), port)]
        }
        // An A record only: the ports --port-map names.
        None => query
            .port_maps
            .iter()
            .map(|m| (m.local, m.container))
            .collect(),
    };
    if ports.is_empty() {
        return Err(skip(
            SkipKind::BadData,
            format!(
                "no {PORT} attribute (registered with an A record only): \
                 give kite its port with --port-map LOCAL:PORT"
            ),
        ));
    }
    let zone = attrs.get(ZONE).cloned();
    let definition = attrs.get(FAMILY).unwrap_or(&query.service);
    Ok(ports
        .into_iter()
        .map(|(listen_port, port)| Target {
            listen_port,
            container_port: port,
            address: SocketAddr::new(ip, port),
            task_id: id.to_owned(),
            task_arn: name.clone(),
            task_definition: definition.clone(),
            network_mode: NetworkMode::CloudMap,
            health: health.to_owned(),
            host: query.to_string(),
            zone: zone.clone(),
        })
        .collect())
}

/// The address to reach an instance on, by `--ip-family`, or why it has
/// none.
fn address(attrs: &HashMap<String, String>, family: IpFamily) -> Result<IpAddr, String> {
    let parse = |name: &str, want_v4: bool| -> Option<Result<IpAddr, String>> {
        let raw = attrs.get(name)?;
        let ip = raw
            .trim()
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| ip.is_ipv4() == want_v4);
        let kind = if want_v4 { "IPv4" } else { "IPv6" };
        Some(ip.ok_or_else(|| format!("{name} '{raw}' is not an {kind} address")))
    };
    let found = match family {
        IpFamily::Auto => parse(IPV4, true).or_else(|| parse(IPV6, false)),
        IpFamily::Ipv4 => parse(IPV4, true),
        IpFamily::Ipv6 => parse(IPV6, false),
    };
    found.unwrap_or_else(|| {
        Err(match family {
            IpFamily::Auto => format!("no address: neither {IPV4} nor {IPV6} is set"),
            IpFamily::Ipv4 => format!("no {IPV4} attribute (--ip-family ipv4)"),
            IpFamily::Ipv6 => format!("no {IPV6} attribute (--ip-family ipv6)"),
        })
    })
}
