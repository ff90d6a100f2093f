//! The EC2 calls of a discovery round: instance and ENI addresses.

use std::collections::HashMap;

use anyhow::{Context, Result};
use aws_sdk_ec2::types::Filter;
use aws_sdk_ec2::Client;

use super::build::HostAddrs;

/// Instance and ENI ids per DescribeInstances / DescribeNetworkInterfaces
/// call; well under EC2's limit of 200 values per filter.
pub const EC2_BATCH: usize = 100;

/// The ids go in a filter rather than as `InstanceIds`: with ids, one
/// instance terminated meanwhile fails the whole call (`NotFound`); a filter
/// just leaves it out, and its tasks are skipped.
fn id_filter(name: &str, ids: &[String]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(ids.to_vec()))
        .build()
}

/// The addresses of each EC2 instance, by instance id.
pub async fn instance_ips(ec2: &Client, ids: &[String]) -> Result<HashMap<String, HostAddrs>> {
    let mut ips = HashMap::with_capacity(ids.len());
    for batch in ids.chunks(EC2_BATCH) {
        let out = ec2
            .describe_instances()
            .filters(id_filter("instance-id", batch))
            .send()
            .await
            .with_context(|| format!("DescribeInstances of {}", batch.join(",")))?;
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            if let Some(id) = i.instance_id() {
                let addrs = HostAddrs {
                    instance_id: id.to_owned(),
                    private_ip: i.private_ip_address().map(str::to_owned),
                    public_ip: i.public_ip_address().map(str::to_owned),
                    ipv6: i.ipv6_address().map(str::to_owned),
                };
                ips.insert(id.to_owned(), addrs);
            }
        }
    }
    Ok(ips)
}

/// The public IP of each ENI (None when it has none), by ENI id.
pub async fn eni_public_ips(
    ec2: &Client,
    ids: &[String],
) -> Result<HashMap<String, Option<String>>> {
    let mut ips = HashMap::with_capacity(ids.len());
    for batch in ids.chunks(EC2_BATCH) {
        let out = ec2
            .describe_network_interfaces()
            .filters(id_filter("network-interface-id", batch))
            .send()
            .await
            .with_context(|| format!("DescribeNetworkInterfaces of {}", batch.join(",")))?;
        for eni in out.network_interfaces() {
            if let Some(id) = eni.network_interface_id() {
                let public = eni
                    .association()
                    .and_then(|a| a.public_ip())
                    .map(str::to_owned);
                ips.insert(id.to_owned(), public);
            }
        }
    }
    Ok(ips)
}
