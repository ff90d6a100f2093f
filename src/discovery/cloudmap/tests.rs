use std::collections::HashMap;

use aws_sdk_servicediscovery::types::{HealthStatus, HttpInstanceSummary};

use super::build::build_snapshot;
use super::Query;
use crate::config::{IpFamily, PortMap, PortMaps};
use crate::snapshot::{NetworkMode, SkipKind};

fn query(maps: &[(u16, u16)]) -> Query {
    let maps = maps
        .iter()
        .map(|&(local, container)| PortMap { local, container })
        .collect();
    Query {
        namespace: "internal".into(),
        service: "web".into(),
        ip_family: IpFamily::Auto,
        port_maps: PortMaps::new(maps).unwrap(),
    }
}

fn instance(id: &str, attrs: &[(&str, &str)]) -> HttpInstanceSummary {
    let attributes: HashMap<String, String> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HttpInstanceSummary::builder()
        .instance_id(id)
        .namespace_name("internal")
        .service_name("web")
        .health_status(HealthStatus::Healthy)
        .set_attributes(Some(attributes))
        .build()
}

#[test]
fn an_ecs_registered_instance_is_a_target() {
    let i = instance(
        "0123abcd",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.1.7"),
            ("AWS_INSTANCE_PORT", "8080"),
            ("AVAILABILITY_ZONE", "us-east-1b"),
            ("ECS_TASK_DEFINITION_FAMILY", "web-app"),
        ],
    );
    let s = build_snapshot(&query(&[]), &[i]);
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    let t = &s.targets[0];
    assert_eq!(t.listen_port, 8080);
    assert_eq!(t.address, "10.0.1.7:8080".parse().unwrap());
    assert_eq!(t.task_id, "0123abcd");
    assert_eq!(t.task_arn, "internal/web/0123abcd");
    assert_eq!(t.task_definition, "web-app");
    assert_eq!(t.network_mode, NetworkMode::CloudMap);
    assert_eq!(t.health, "HEALTHY");
    assert_eq!(t.zone.as_deref(), Some("us-east-1b"));
}

#[test]
fn addresses_by_ip_family() {
    let both = [
        ("AWS_INSTANCE_IPV4", "10.0.1.7"),
        ("AWS_INSTANCE_IPV6", "2600:1f18::7"),
        ("AWS_INSTANCE_PORT", "80"),
    ];
    let v6_only = [
        ("AWS_INSTANCE_IPV6", "2600:1f18::8"),
        ("AWS_INSTANCE_PORT", "80"),
    ];
    let instances = [instance("both", &both), instance("v6", &v6_only)];
    let addrs = |family| {
        let q = Query {
            ip_family: family,
            ..query(&[])
        };
        let s = build_snapshot(&q, &instances);
        let a: Vec<String> = s.targets.iter().map(|t| t.address.to_string()).collect();
        (a, s.skipped.len())
    };
    let auto = addrs(IpFamily::Auto);
    assert_eq!(auto.0, ["10.0.1.7:80", "[2600:1f18::8]:80"]);
    assert_eq!(addrs(IpFamily::Ipv4), (vec!["10.0.1.7:80".to_owned()], 1));
    let v6 = addrs(IpFamily::Ipv6).0;
    assert_eq!(v6, ["[2600:1f18::7]:80", "[2600:1f18::8]:80"]);
}

#[test]
fn port_maps_listen_elsewhere_and_give_a_records_their_ports() {
    let srv = instance(
        "srv",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.1"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    );
    let a = instance("a", &[("AWS_INSTANCE_IPV4", "10.0.0.2")]);
    let s = build_snapshot(
        &query(&[(8080, 80), (5433, 5432)]),
        &[srv.clone(), a.clone()],
    );
    let got: Vec<(u16, String)> = (s.targets.iter())
        .map(|t| (t.listen_port, t.address.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (5433, "10.0.0.2:5432".to_owned()),
            (8080, "10.0.0.1:80".to_owned()),
            (8080, "10.0.0.2:80".to_owned()),
        ]
    );
    // Without --port-map, the A record is left out, and the reason names
    // the fix.
    let s = build_snapshot(&query(&[]), &[srv, a]);
    assert_eq!(s.targets.len(), 1);
    assert_eq!(s.skipped[0].task_arn, "internal/web/a");
    assert_eq!(s.skipped[0].kind, SkipKind::BadData);
    assert!(
        s.skipped[0].reason.contains("--port-map LOCAL:PORT"),
        "{:?}",
        s.skipped
    );
}

#[test]
fn unusable_instances_are_skipped_with_the_reason() {
    let cases = [
        (
            vec![("AWS_INSTANCE_PORT", "80")],
            "neither AWS_INSTANCE_IPV4 nor AWS_INSTANCE_IPV6",
        ),
        (
            vec![("AWS_INSTANCE_IPV4", "ten"), ("AWS_INSTANCE_PORT", "80")],
            "AWS_INSTANCE_IPV4 'ten' is not an IPv4 address",
        ),
        (
            vec![
                ("AWS_INSTANCE_IPV4", "10.0.0.1"),
                ("AWS_INSTANCE_PORT", "0"),
            ],
            "AWS_INSTANCE_PORT '0' is not a port number",
        ),
    ];
    for (attrs, reason) in cases {
        let good = instance(
            "good",
            &[
                ("AWS_INSTANCE_IPV4", "10.0.0.9"),
                ("AWS_INSTANCE_PORT", "80"),
            ],
        );
        let s = build_snapshot(&query(&[]), &[instance("bad", &attrs), good]);
        assert_eq!(s.targets.len(), 1, "one bad instance spoils no other");
        assert_eq!(s.skipped.len(), 1);
        assert!(s.skipped[0].reason.contains(reason), "{:?}", s.skipped);
    }
    let mut sick = instance(
        "sick",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.1"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    );
    sick.health_status = Some(HealthStatus::Unhealthy);
    let s = build_snapshot(&query(&[]), &[sick]);
    assert!(s.targets.is_empty());
    assert_eq!(s.skipped[0].kind, SkipKind::Settling);
}
