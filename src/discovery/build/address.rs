//! Where a task is reached: the address of its EC2 instance (bridge and
//! host modes) or of its ENI (awsvpc), by `--public` and `--ip-family`.

use std::net::IpAddr;

use aws_sdk_ecs::types::{Container, Task};

use super::{bad, ineligible, Fetched, Skip, Want};
use crate::config::IpFamily;

/// Bridge and host mode: the IP of the container instance's EC2 instance,
/// and the container instance's id.
pub(super) fn instance_ip(
    want: &Want<'_>,
    f: Fetched<'_>,
    task: &Task,
) -> Result<(IpAddr, String), Skip> {
    let ci = task
        .container_instance_arn()
        .ok_or_else(|| bad("no containerInstanceArn".into()))?;
    let host = f
        .hosts
        .get(ci)
        .ok_or_else(|| bad(format!("container instance {ci} is unavailable")))?;
    let owner = format!("instance {}", host.instance_id);
    let ip = if want.public && want.ip_family != IpFamily::Ipv6 {
        (host.public_ip.as_deref()).ok_or_else(|| bad(format!("{owner} has no public IP")))?
    } else {
        // An IPv6 address is public as well as private.
        let v4 = host.private_ip.as_deref();
        pick_family(
            want.ip_family,
            v4,
            host.ipv6.as_deref(),
            &owner,
            "private IP",
        )?
    };
    let ci_id = crate::config::arn::last_segment(ci).to_owned();
    Ok((parse_ip(ip, &host.instance_id)?, ci_id))
}

/// awsvpc mode: the task ENI's private IPv4 or IPv6 address, or its public
/// IP from DescribeNetworkInterfaces; and the ENI's id.
pub(super) fn eni_ip(
    want: &Want<'_>,
    f: Fetched<'_>,
    task: &Task,
    container: &Container,
) -> Result<(IpAddr, String), Skip> {
    let eni_id = eni_id(task).unwrap_or_else(|| "the task ENI".to_owned());
    if want.public && want.ip_family != IpFamily::Ipv6 {
        let public = f
            .eni_public_ips
            .get(&eni_id)
            .ok_or_else(|| bad(format!("network interface {eni_id} is unavailable")))?
            .as_deref()
            .ok_or_else(|| bad(format!("network interface {eni_id} has no public IP")))?;
        return Ok((parse_ip(public, &eni_id)?, eni_id));
    }
    let interfaces = container.network_interfaces();
    let v4 = (interfaces.iter().find_map(|n| n.private_ipv4_address()))
        .or_else(|| eni_detail(task, "privateIPv4Address"));
    let v6 = (interfaces.iter().find_map(|n| n.ipv6_address()))
        .or_else(|| eni_detail(task, "ipv6Address"));
    let ip = pick_family(
        want.ip_family,
        v4,
        v6,
        "awsvpc task",
        "private IPv4 address",
    )?;
    Ok((parse_ip(ip, &eni_id)?, eni_id))
}

/// The address of `owner` that `family` asks for, from its IPv4 (`v4`,
/// called `v4_name`) and IPv6 ones: `auto` takes IPv4 where there is one.
fn pick_family<'a>(
    family: IpFamily,
    v4: Option<&'a str>,
    v6: Option<&'a str>,
    owner: &str,
    v4_name: &str,
) -> Result<&'a str, Skip> {
    match family {
        IpFamily::Auto => (v4.or(v6)).ok_or_else(|| bad(format!("{owner} has no {v4_name}"))),
        IpFamily::Ipv4 => match (v4, v6) {
            (Some(ip), _) => Ok(ip),
            (None, Some(_)) => Err(ineligible(format!(
                "{owner} has an IPv6 address only, and --ip-family is ipv4"
            ))),
            (None, None) => Err(bad(format!("{owner} has no {v4_name}"))),
        },
        IpFamily::Ipv6 => match (v6, v4) {
            (Some(ip), _) => Ok(ip),
            (None, Some(_)) => Err(ineligible(format!(
                "{owner} has no IPv6 address, and --ip-family is ipv6"
            ))),
            (None, None) => Err(bad(format!("{owner} has no IP address"))),
        },
    }
}

/// The task's ENI id, from its ElasticNetworkInterface attachment.
pub fn eni_id(task: &Task) -> Option<String> {
    eni_detail(task, "networkInterfaceId").map(str::to_owned)
}

fn eni_detail<'t>(task: &'t Task, key: &str) -> Option<&'t str> {
    task.attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|kv| kv.name() == Some(key))
        .and_then(|kv| kv.value())
}

fn parse_ip(ip: &str, owner: &str) -> Result<IpAddr, Skip> {
    ip.parse()
        .map_err(|_| bad(format!("{owner} has an unparsable IP address '{ip}'")))
}
