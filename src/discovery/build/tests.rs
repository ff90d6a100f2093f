//! Table-driven tests of `build_snapshot`: one fixture cluster, many cases.

use std::collections::HashMap;

use aws_sdk_ecs::types::{
    Attachment, Container, HealthStatus, KeyValuePair, NetworkBinding, NetworkInterface, Task,
    TransportProtocol,
};

use super::*;
use crate::config::{IpFamily, PortMap, PortMaps};

const TD_BRIDGE: &str = "arn:aws:ecs:us-east-1:1:task-definition/web:3";
const TD_BRIDGE_OLD: &str = "arn:aws:ecs:us-east-1:1:task-definition/web:2";
const TD_HOST: &str = "arn:aws:ecs:us-east-1:1:task-definition/web-host:1";
const TD_VPC: &str = "arn:aws:ecs:us-east-1:1:task-definition/web-vpc:1";
const TD_NAT: &str = "arn:aws:ecs:us-east-1:1:task-definition/web-nat:1";
const CI: &str = "arn:aws:ecs:us-east-1:1:container-instance/default/ci1";
const CI_NO_PUBLIC: &str = "arn:aws:ecs:us-east-1:1:container-instance/default/ci2";
const CI_V6: &str = "arn:aws:ecs:us-east-1:1:container-instance/default/ci3";

fn td(
    name: &str,
    revision: u32,
    mode: Result<NetworkMode, String>,
    ports: &[(u16, Option<u16>)],
) -> TaskDef {
    TaskDef {
        name: format!("{name}:{revision}"),
        revision,
        network_mode: mode,
        ports: HashMap::from([("web".to_owned(), ports.to_vec())]),
    }
}

struct Fixture {
    task_defs: HashMap<String, TaskDef>,
    hosts: HashMap<String, HostAddrs>,
    enis: HashMap<String, Option<String>>,
}

fn fixture() -> Fixture {
    let task_defs = HashMap::from([
        (
            TD_BRIDGE.to_owned(),
            td("web", 3, Ok(NetworkMode::Bridge), &[(80, None)]),
        ),
        (
            TD_BRIDGE_OLD.to_owned(),
            td("web", 2, Ok(NetworkMode::Bridge), &[(80, None)]),
        ),
        (
            TD_HOST.to_owned(),
            td(
                "web-host",
                1,
                Ok(NetworkMode::Host),
                &[(8080, None), (9090, Some(9091))],
            ),
        ),
        (
            TD_VPC.to_owned(),
            td(
                "web-vpc",
                1,
                Ok(NetworkMode::Awsvpc),
                &[(80, None), (443, None)],
            ),
        ),
        (
            TD_NAT.to_owned(),
            td("web-nat", 1, Err("nat".into()), &[(80, None)]),
        ),
    ]);
    let host = |id: &str, private: &str, public: Option<&str>| HostAddrs {
        instance_id: id.into(),
        private_ip: Some(private.into()),
        public_ip: public.map(Into::into),
        ipv6: None,
    };
    let hosts = HashMap::from([
        (CI.to_owned(), host("i-1", "10.0.0.1", Some("54.0.0.1"))),
        (CI_NO_PUBLIC.to_owned(), host("i-2", "10.0.0.2", None)),
        (
            CI_V6.to_owned(),
            HostAddrs {
                ipv6: Some("2001:db8::3".into()),
                ..host("i-3", "10.0.0.3", None)
            },
        ),
    ]);
    let enis = HashMap::from([
        ("eni-1".to_owned(), Some("54.0.0.9".to_owned())),
        ("eni-2".to_owned(), None),
    ]);
    Fixture {
        task_defs,
        hosts,
        enis,
    }
}

fn binding(ip: &str, cp: i32, hp: i32) -> NetworkBinding {
    NetworkBinding::builder()
        .bind_ip(ip)
        .container_port(cp)
        .host_port(hp)
        .protocol(TransportProtocol::Tcp)
        .build()
}

fn container() -> aws_sdk_ecs::types::builders::ContainerBuilder {
    Container::builder().name("web").last_status("RUNNING")
}

fn task(id: &str, td: &str) -> aws_sdk_ecs::types::builders::TaskBuilder {
    Task::builder()
        .task_arn(format!("arn:aws:ecs:us-east-1:1:task/default/{id}"))
        .task_definition_arn(td)
        .last_status("RUNNING")
        .desired_status("RUNNING")
        .container_instance_arn(CI)
}

/// The task with container 'web' as it is before ports and addresses are added.
fn bare(task: aws_sdk_ecs::types::builders::TaskBuilder) -> Task {
    task.containers(container().build()).build()
}

fn bridge(id: &str) -> Task {
    task(id, TD_BRIDGE)
        .containers(
            container()
                .network_bindings(binding("0.0.0.0", 80, 32768))
                .network_bindings(binding("::", 80, 32768))
                .build(),
        )
        .build()
}

fn eni_attachment(eni: &str, ip: &str) -> Attachment {
    let kv = |k: &str, v: &str| KeyValuePair::builder().name(k).value(v).build();
    Attachment::builder()
        .r#type("ElasticNetworkInterface")
        .details(kv("networkInterfaceId", eni))
        .details(kv("privateIPv4Address", ip))
        .build()
}

fn awsvpc(id: &str, eni: &str) -> Task {
    task(id, TD_VPC)
        .set_container_instance_arn(None)
        .attachments(eni_attachment(eni, "10.1.0.5"))
        .containers(
            container()
                .network_interfaces(
                    NetworkInterface::builder()
                        .private_ipv4_address("10.1.0.5")
                        .build(),
                )
                .build(),
        )
        .build()
}

/// Builds with the fixture and returns (targets as "port->addr", skip reasons).
fn run(
    tasks: &[Task],
    public: bool,
    revision: Option<u32>,
    maps: Vec<PortMap>,
) -> (Vec<String>, Vec<String>) {
    run_with(tasks, public, revision, maps, IpFamily::Auto)
}

/// [`run`] with an `--ip-family`.
fn run_with(
    tasks: &[Task],
    public: bool,
    revision: Option<u32>,
    maps: Vec<PortMap>,
    ip_family: IpFamily,
) -> (Vec<String>, Vec<String>) {
    let f = fixture();
    let port_maps = PortMaps::new(maps).unwrap();
    let want = Want {
        container: "web",
        public,
        ip_family,
        revision,
        port_maps: &port_maps,
    };
    let tasks: Vec<&Task> = tasks.iter().collect();
    let fetched = Fetched {
        tasks: &tasks,
        task_defs: &f.task_defs,
        hosts: &f.hosts,
        eni_public_ips: &f.enis,
    };
    let s = build_snapshot(&want, fetched);
    let targets = s
        .targets
        .iter()
        .map(|t| format!("{}->{}", t.listen_port, t.address))
        .collect();
    let skipped = s.skipped.iter().map(|k| k.reason.clone()).collect();
    (targets, skipped)
}

fn private(tasks: &[Task]) -> (Vec<String>, Vec<String>) {
    run(tasks, false, None, vec![])
}

#[test]
fn bridge_uses_host_port_and_drops_ipv6_duplicates() {
    assert_eq!(
        private(&[bridge("a")]),
        (vec!["80->10.0.0.1:32768".into()], vec![])
    );
    let (t, _) = run(&[bridge("a")], true, None, vec![]);
    assert_eq!(t, ["80->54.0.0.1:32768"]);
}

#[test]
fn host_mode_uses_task_definition_ports() {
    let t = task("h", TD_HOST).containers(container().build()).build();
    let (targets, skipped) = private(&[t]);
    assert_eq!(targets, ["8080->10.0.0.1:8080", "9090->10.0.0.1:9091"]);
    assert!(skipped.is_empty());
}

#[test]
fn awsvpc_private_and_public() {
    assert_eq!(
        private(&[awsvpc("v", "eni-1")]).0,
        ["80->10.1.0.5:80", "443->10.1.0.5:443"]
    );
    assert_eq!(
        run(&[awsvpc("v", "eni-1")], true, None, vec![]).0,
        ["80->54.0.0.9:80", "443->54.0.0.9:443"]
    );
    let (t, s) = run(&[awsvpc("v", "eni-2")], true, None, vec![]);
    assert!(t.is_empty());
    assert_eq!(s, ["network interface eni-2 has no public IP"]);
    // The address also comes from the attachment when the container lacks it.
    let t = task("w", TD_VPC)
        .attachments(eni_attachment("eni-1", "10.1.0.7"))
        .containers(container().build())
        .build();
    assert_eq!(private(&[t]).0, ["80->10.1.0.7:80", "443->10.1.0.7:443"]);
}

#[test]
fn port_map_moves_the_listen_port() {
    let maps = vec![PortMap {
        local: 8080,
        container: 80,
    }];
    assert_eq!(
        run(&[awsvpc("v", "eni-1")], false, None, maps).0,
        ["443->10.1.0.5:443", "8080->10.1.0.5:80"]
    );
}

#[test]
fn revision_filter() {
    let old = task("o", TD_BRIDGE_OLD)
        .containers(
            container()
                .network_bindings(binding("0.0.0.0", 80, 40000))
                .build(),
        )
        .build();
    let (t, s) = run(&[bridge("a"), old.clone()], false, Some(3), vec![]);
    assert_eq!(t, ["80->10.0.0.1:32768"]);
    assert_eq!(s, ["revision 2 is not 3"]);
    assert_eq!(run(&[bridge("a"), old], false, None, vec![]).0.len(), 2);
}

#[test]
fn status_and_health_filters() {
    let cases: Vec<(Task, &str)> = vec![
        (
            task("p", TD_BRIDGE).last_status("PENDING").build(),
            "lastStatus is PENDING",
        ),
        (
            task("d", TD_BRIDGE)
                .desired_status("STOPPED")
                .containers(container().build())
                .build(),
            "desiredStatus is STOPPED (draining)",
        ),
        (
            task("c", TD_BRIDGE)
                .containers(container().last_status("STOPPED").build())
                .build(),
            "container is STOPPED",
        ),
        (
            task("u", TD_BRIDGE)
                .containers(
                    container()
                        .health_status(HealthStatus::Unhealthy)
                        .network_bindings(binding("0.0.0.0", 80, 1))
                        .build(),
                )
                .build(),
            "container is UNHEALTHY",
        ),
    ];
    for (t, reason) in cases {
        let (targets, skipped) = private(&[t, bridge("ok")]);
        assert_eq!(targets, ["80->10.0.0.1:32768"], "{reason}");
        assert_eq!(skipped, [reason]);
    }
    let healthy = task("h", TD_BRIDGE)
        .containers(
            container()
                .health_status(HealthStatus::Healthy)
                .network_bindings(binding("0.0.0.0", 80, 5))
                .build(),
        )
        .build();
    assert_eq!(private(&[healthy]).0, ["80->10.0.0.1:5"]);
}

#[test]
fn unusable_data_skips_only_that_task() {
    let f = fixture();
    let cases: Vec<(Task, &str)> = vec![
        (Task::builder().last_status("RUNNING").build(), "no taskArn"),
        (
            task("x", TD_BRIDGE).set_task_definition_arn(None).build(),
            "no taskDefinitionArn",
        ),
        (
            task("x", "arn:unknown").build(),
            "task definition arn:unknown is unavailable",
        ),
        (task("x", TD_BRIDGE).build(), "no container named 'web'"),
        (
            task("x", TD_BRIDGE)
                .containers(
                    container()
                        .network_bindings(binding("0.0.0.0", 80, 0))
                        .build(),
                )
                .build(),
            "network binding Some(80)->Some(0) has no valid port",
        ),
        (
            task("x", TD_BRIDGE)
                .containers(
                    container()
                        .network_bindings(binding("0.0.0.0", 0, 99))
                        .build(),
                )
                .build(),
            "network binding Some(0)->Some(99) has no valid port",
        ),
        (
            bare(task("x", TD_BRIDGE)),
            "container 'web' exposes no TCP port",
        ),
        (
            bare(task("x", TD_BRIDGE).set_container_instance_arn(None)),
            "no containerInstanceArn",
        ),
        (
            bare(task("x", TD_BRIDGE).container_instance_arn("arn:ci/gone")),
            "container instance arn:ci/gone is unavailable",
        ),
        (
            bare(task("x", TD_NAT)),
            "network mode 'nat' is not supported",
        ),
        (
            bare(task("x", TD_VPC).set_container_instance_arn(None)),
            "awsvpc task has no private IPv4 address",
        ),
        (
            task("x", TD_VPC)
                .containers(
                    container()
                        .network_interfaces(
                            NetworkInterface::builder()
                                .private_ipv4_address("10.1.300.1")
                                .build(),
                        )
                        .build(),
                )
                .build(),
            "the task ENI has an unparsable IP address '10.1.300.1'",
        ),
    ];
    for (bad_task, reason) in cases {
        let want = Want {
            container: "web",
            public: false,
            ip_family: IpFamily::Auto,
            revision: None,
            port_maps: &PortMaps::default(),
        };
        let ok = bridge("ok");
        let tasks = [&bad_task, &ok];
        let fetched = Fetched {
            tasks: &tasks,
            task_defs: &f.task_defs,
            hosts: &f.hosts,
            eni_public_ips: &f.enis,
        };
        let s = build_snapshot(&want, fetched);
        assert_eq!(s.targets.len(), 1, "{reason}");
        assert_eq!(s.skipped.len(), 1, "{reason}");
        assert_eq!(s.skipped[0].reason, reason);
        assert_eq!(
            s.skipped[0].kind,
            SkipKind::BadData,
            "{reason} should count as bad data"
        );
    }
}

#[test]
fn public_without_public_ip_is_skipped() {
    let t = task("n", TD_BRIDGE)
        .container_instance_arn(CI_NO_PUBLIC)
        .containers(
            container()
                .network_bindings(binding("0.0.0.0", 80, 1))
                .build(),
        )
        .build();
    assert_eq!(
        run(&[t], true, None, vec![]).1,
        ["instance i-2 has no public IP"]
    );
}

#[test]
fn zero_tasks_empty_snapshot() {
    assert_eq!(private(&[]), (vec![], vec![]));
}

/// An ENI attachment with the addresses given.
fn eni_addresses(eni: &str, v4: Option<&str>, v6: Option<&str>) -> Attachment {
    let kv = |k: &str, v: &str| KeyValuePair::builder().name(k).value(v).build();
    let mut a = Attachment::builder()
        .r#type("ElasticNetworkInterface")
        .details(kv("networkInterfaceId", eni));
    if let Some(ip) = v4 {
        a = a.details(kv("privateIPv4Address", ip));
    }
    if let Some(ip) = v6 {
        a = a.details(kv("ipv6Address", ip));
    }
    a.build()
}

/// IPv6-only tasks are reached at `[address]:port`; a task with both is
/// reached over IPv4 unless `--ip-family ipv6` says otherwise; and a task
/// without the family asked for is left out as not eligible.
#[test]
fn ipv6_tasks_and_the_ip_family() {
    let vpc = |v4: Option<&str>, v6: Option<&str>| {
        let t = task("v", TD_VPC).set_container_instance_arn(None);
        bare(t.attachments(eni_addresses("eni-1", v4, v6)))
    };
    let family = |t: &Task, f| run_with(std::slice::from_ref(t), false, None, vec![], f);
    let v6_only = vpc(None, Some("2001:db8::5"));
    assert_eq!(
        family(&v6_only, IpFamily::Auto).0,
        ["80->[2001:db8::5]:80", "443->[2001:db8::5]:443"]
    );
    let dual = vpc(Some("10.1.0.5"), Some("2001:db8::6"));
    assert_eq!(
        family(&dual, IpFamily::Auto).0,
        ["80->10.1.0.5:80", "443->10.1.0.5:443"]
    );
    assert_eq!(
        family(&dual, IpFamily::Ipv6).0,
        ["80->[2001:db8::6]:80", "443->[2001:db8::6]:443"]
    );
    // The container's network interface names it as well.
    let c = container()
        .network_interfaces(
            NetworkInterface::builder()
                .ipv6_address("2001:db8::7")
                .build(),
        )
        .build();
    let from_container = task("c", TD_VPC).containers(c).build();
    assert_eq!(
        family(&from_container, IpFamily::Auto).0[0],
        "80->[2001:db8::7]:80"
    );

    let (t, s) = family(&v6_only, IpFamily::Ipv4);
    assert!(t.is_empty());
    assert_eq!(
        s,
        ["awsvpc task has an IPv6 address only, and --ip-family is ipv4"]
    );
    let (t, s) = family(&vpc(Some("10.1.0.5"), None), IpFamily::Ipv6);
    assert!(t.is_empty());
    assert_eq!(
        s,
        ["awsvpc task has no IPv6 address, and --ip-family is ipv6"]
    );

    // Bridge mode: the instance's IPv6 address, where it has one.
    let on = |ci: &str| {
        let b = container().network_bindings(binding("0.0.0.0", 80, 32768));
        task("b", TD_BRIDGE)
            .container_instance_arn(ci)
            .containers(b.build())
            .build()
    };
    assert_eq!(
        family(&on(CI_V6), IpFamily::Ipv6).0,
        ["80->[2001:db8::3]:32768"]
    );
    assert_eq!(family(&on(CI_V6), IpFamily::Auto).0, ["80->10.0.0.3:32768"]);
    let (_, s) = family(&on(CI), IpFamily::Ipv6);
    assert_eq!(
        s,
        ["instance i-1 has no IPv6 address, and --ip-family is ipv6"]
    );
    // With --public, an IPv6 address is taken as it is (public as well).
    let (t, _) = run_with(&[on(CI_V6)], true, None, vec![], IpFamily::Ipv6);
    assert_eq!(t, ["80->[2001:db8::3]:32768"]);
}
