//! Discovery end to end: kite against the fake ECS/EC2 endpoint, with real
//! TCP backends on 127.0.0.x.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use kite::config::{PortMap, PortMaps, Selector};
use kite::discovery::{Discovery, Query};
use kite::proxy;
use kite::snapshot::NetworkMode;

const REFRESH: Duration = Duration::from_millis(100);

#[tokio::test]
async fn bridge_private_and_public() {
    init_logs();
    let fake = FakeAws::start().await;
    // The same host port on both addresses, as an instance would have it.
    let host_port = listen_port();
    let private = Backend::start("private", "127.0.0.2", host_port, Mode::Echo).await;
    let _public = Backend::start("public", "127.0.0.3", host_port, Mode::Echo).await;
    let cport = listen_port();
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", Some("127.0.0.3"));
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci, cport, &private));
    });
    let kite = Kite::start(&fake, family_query("web", None), REFRESH).await;
    kite.wait_port(cport, 1).await;
    assert_eq!(
        kite.store.load().targets[0].network_mode,
        NetworkMode::Bridge
    );
    assert_eq!(names(cport, 5).await, set(&["private"]));
    drop(kite);

    assert_eq!(
        public_names(&fake, "web", cport, 1, 5).await,
        set(&["public"])
    );
}

#[tokio::test]
async fn host_mode_private_and_public() {
    let fake = FakeAws::start().await;
    let cport = listen_port();
    let b = Backend::start("host", "127.0.0.6", cport, Mode::Echo).await;
    let _public = Backend::start("host-public", "127.0.0.11", cport, Mode::Echo).await;
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.6", Some("127.0.0.11"));
        let td = c.add_task_definition("hosty", 4, "host", &app(&[(cport, None)]));
        c.add_task(TaskSpec {
            container_instance_arn: Some(ci),
            containers: vec![TaskContainer::new("app")],
            ..TaskSpec::new(&td)
        });
    });
    let kite = Kite::start(&fake, family_query("hosty", None), REFRESH).await;
    kite.wait_port(cport, 1).await;
    assert_eq!(kite.store.load().targets[0].address, b.addr);
    assert_eq!(kite.store.load().targets[0].network_mode, NetworkMode::Host);
    assert_eq!(names(cport, 3).await, set(&["host"]));
    drop(kite);

    assert_eq!(
        public_names(&fake, "hosty", cport, 1, 3).await,
        set(&["host-public"])
    );
}

/// awsvpc on EC2 and on Fargate: the ENI's private IP, or its public IP.
#[tokio::test]
async fn awsvpc_ec2_and_fargate_private_and_public() {
    let fake = FakeAws::start().await;
    let cport = listen_port();
    let ec2_priv = Backend::start("ec2-private", "127.0.0.7", cport, Mode::Echo).await;
    let _ec2_pub = Backend::start("ec2-public", "127.0.0.8", cport, Mode::Echo).await;
    let _far_priv = Backend::start("fargate-private", "127.0.0.9", cport, Mode::Echo).await;
    let _far_pub = Backend::start("fargate-public", "127.0.0.10", cport, Mode::Echo).await;
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.99", None);
        let td = c.add_task_definition("vpc", 1, "awsvpc", &app(&[(cport, None)]));
        let mut on_ec2 = TaskSpec {
            container_instance_arn: Some(ci),
            eni: Some(("eni-ec2".into(), "127.0.0.7".into())),
            ..TaskSpec::new(&td)
        };
        // On EC2 the container lists the ENI address itself.
        on_ec2.containers = vec![TaskContainer {
            eni_private_ip: Some("127.0.0.7".into()),
            ..TaskContainer::new("app")
        }];
        c.add_task(on_ec2);
        // On Fargate, only the attachment carries it.
        c.add_task(TaskSpec {
            launch_type: "FARGATE".into(),
            eni: Some(("eni-far".into(), "127.0.0.9".into())),
            containers: vec![TaskContainer::new("app")],
            ..TaskSpec::new(&td)
        });
        c.enis.get_mut("eni-ec2").unwrap().public_ip = Some("127.0.0.8".into());
        c.enis.get_mut("eni-far").unwrap().public_ip = Some("127.0.0.10".into());
    });
    let kite = Kite::start(&fake, family_query("vpc", None), REFRESH).await;
    kite.wait_port(cport, 2).await;
    assert!(kite
        .store
        .load()
        .targets
        .iter()
        .all(|t| t.network_mode == NetworkMode::Awsvpc));
    assert!(kite
        .store
        .load()
        .targets
        .iter()
        .any(|t| t.address == ec2_priv.addr));
    assert_eq!(
        names(cport, 40).await,
        set(&["ec2-private", "fargate-private"])
    );
    assert_eq!(
        fake.call_count("DescribeNetworkInterfaces"),
        0,
        "private needs no ENI lookup"
    );
    drop(kite);

    assert_eq!(
        public_names(&fake, "vpc", cport, 2, 40).await,
        set(&["ec2-public", "fargate-public"])
    );
    assert!(fake.call_count("DescribeNetworkInterfaces") >= 1);
}

#[tokio::test]
async fn revision_filter_and_service_selection() {
    let fake = FakeAws::start().await;
    let old = Backend::start("rev1", "127.0.0.2", 0, Mode::Echo).await;
    let new = Backend::start("rev2", "127.0.0.2", 0, Mode::Echo).await;
    let other = Backend::start("other-service", "127.0.0.2", 0, Mode::Echo).await;
    let cport = listen_port();
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td1 = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        let td2 = c.add_task_definition("web", 2, "bridge", &app(&[(cport, None)]));
        let group = Some("service:frontend".to_owned());
        c.add_task(TaskSpec {
            group: group.clone(),
            ..bridge_task(&td1, &ci, cport, &old)
        });
        c.add_task(TaskSpec {
            group,
            ..bridge_task(&td2, &ci, cport, &new)
        });
        let mut t = bridge_task(&td2, &ci, cport, &other);
        t.group = Some("service:backoffice".into());
        c.add_task(t);
    });
    let kite = Kite::start(&fake, family_query("web", Some(2)), REFRESH).await;
    kite.wait_port(cport, 2).await;
    assert_eq!(names(cport, 30).await, set(&["rev2", "other-service"]));
    let skipped = &kite.store.load().skipped;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].reason, "revision 1 is not 2");
    drop(kite);

    let lport = listen_port();
    let mut q = family_query("unused", None);
    q.selector = Selector::Service("frontend".into());
    q.port_maps = PortMaps::new(vec![PortMap {
        local: lport,
        container: cport,
    }])
    .unwrap();
    let kite = Kite::start(&fake, q, REFRESH).await;
    kite.wait_port(lport, 2).await;
    assert_eq!(names(lport, 30).await, set(&["rev1", "rev2"]));
}

#[tokio::test]
async fn status_and_health_filters() {
    let fake = FakeAws::start().await;
    let good = Backend::start("good", "127.0.0.2", 0, Mode::Echo).await;
    let healthy = Backend::start("healthy", "127.0.0.2", 0, Mode::Echo).await;
    let bad: Vec<Backend> =
        futures_start(&["pending", "stopping", "container-stopped", "unhealthy"]).await;
    let cport = listen_port();
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci, cport, &good));
        let mut t = bridge_task(&td, &ci, cport, &healthy);
        t.containers[0].health_status = Some("HEALTHY".into());
        c.add_task(t);
        let mut t = bridge_task(&td, &ci, cport, &bad[0]);
        t.last_status = "PENDING".into();
        c.add_task(t);
        let mut t = bridge_task(&td, &ci, cport, &bad[1]);
        t.desired_status = "STOPPED".into();
        c.add_task(t);
        let mut t = bridge_task(&td, &ci, cport, &bad[2]);
        t.containers[0].last_status = "STOPPED".into();
        c.add_task(t);
        let mut t = bridge_task(&td, &ci, cport, &bad[3]);
        t.containers[0].health_status = Some("UNHEALTHY".into());
        c.add_task(t);
    });
    let kite = Kite::start(&fake, family_query("web", None), REFRESH).await;
    kite.wait_port(cport, 2).await;
    assert_eq!(names(cport, 30).await, set(&["good", "healthy"]));
    for b in &bad {
        assert_eq!(
            b.connections.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{}",
            b.name
        );
    }
}

async fn futures_start(names: &[&str]) -> Vec<Backend> {
    let mut out = Vec::new();
    for n in names {
        out.push(Backend::start(n, "127.0.0.2", 0, Mode::Echo).await);
    }
    out
}

/// Tasks come and go while kite runs; zero tasks empty the snapshot and
/// close the port; several ports on one container; a port that disappears
/// stops accepting while its open connection goes on.
#[tokio::test]
async fn tasks_and_ports_follow_the_cluster() {
    let fake = FakeAws::start().await;
    let (p1, p2) = (listen_port(), listen_port());
    let a1 = Backend::start("a", "127.0.0.2", 0, Mode::Echo).await;
    let a2 = Backend::start("a-second-port", "127.0.0.2", 0, Mode::Echo).await;
    let b1 = Backend::start("b", "127.0.0.2", 0, Mode::Echo).await;
    let (ci, td2) = fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(p1, None), (p2, None)]));
        let mut t = bridge_task(&td, &ci, p1, &a1);
        t.containers[0]
            .network_bindings
            .push(("0.0.0.0".into(), p2, a2.port()));
        c.add_task(t);
        let td2 = c.add_task_definition("web", 2, "bridge", &app(&[(p1, None)]));
        (ci, td2)
    });
    let kite = Kite::start(&fake, family_query("web", None), REFRESH).await;
    kite.wait_port(p1, 1).await;
    kite.wait_port(p2, 1).await;
    assert_eq!(names(p1, 3).await, set(&["a"]));
    assert_eq!(names(p2, 3).await, set(&["a-second-port"]));

    // A new task is picked up by the next round (the one in flight may
    // have listed the tasks just before the change).
    let rounds = fake.call_count("ListTasks");
    let b_arn = fake.edit(|c| c.add_task(bridge_task(&td2, &ci, p1, &b1)));
    kite.wait_for("the new task", |s| s.backends(p1).len() == 2)
        .await;
    assert!(
        fake.call_count("ListTasks") <= rounds + 2,
        "picked up within one refresh"
    );
    kite.wait_port(p1, 2).await;
    assert_eq!(names(p1, 40).await, set(&["a", "b"]));

    // Hold a connection open on p2, then remove the only task with p2.
    let mut held = tokio::net::TcpStream::connect(("127.0.0.1", p2))
        .await
        .unwrap();
    let mut line = vec![0u8; "a-second-port\n".len()];
    tokio::io::AsyncReadExt::read_exact(&mut held, &mut line)
        .await
        .unwrap();
    fake.edit(|c| assert!(c.remove_task(&first_task_arn(c))));
    kite.wait_for("port p2 gone", |s| {
        s.backends(p2).is_empty() && s.backends(p1).len() == 1
    })
    .await;
    eventually_refused(p2).await;
    assert_eq!(names(p1, 10).await, set(&["b"]));
    // The connection opened before goes on.
    tokio::io::AsyncWriteExt::write_all(&mut held, b"still here")
        .await
        .unwrap();
    let mut echo = [0u8; 10];
    tokio::io::AsyncReadExt::read_exact(&mut held, &mut echo)
        .await
        .unwrap();
    assert_eq!(&echo, b"still here");

    // Zero tasks: a good, empty round empties the snapshot.
    fake.edit(|c| assert!(c.remove_task(&b_arn)));
    kite.wait_for("empty snapshot", |s| {
        s.targets.is_empty() && s.ports().count() == 0
    })
    .await;
    eventually_refused(p1).await;
}

fn first_task_arn(c: &Cluster) -> String {
    c.tasks[0]["taskArn"].as_str().unwrap().to_owned()
}

async fn eventually_refused(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("kite still accepts on port {port}");
}

/// ECS throttling or failing half the calls, or every call: rounds fail
/// (more failures in a row than the SDK retries), and kite keeps serving
/// the last good targets throughout; it picks up changes once calls go
/// through.
#[tokio::test]
async fn keeps_serving_through_throttling_and_errors() {
    let fake = FakeAws::start().await;
    let a = Backend::start("a", "127.0.0.2", 0, Mode::Echo).await;
    let b = Backend::start("b", "127.0.0.2", 0, Mode::Echo).await;
    let cport = listen_port();
    let (ci, td) = fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci, cport, &a));
        (ci, td)
    });
    let kite = Kite::start(&fake, family_query("web", None), REFRESH).await;
    kite.wait_port(cport, 1).await;
    let failed_rounds = || {
        let exposition = kite.metrics.render(None, 0);
        sample(&exposition, "kite_discovery_errors_total", &[])
    };
    for fault in [
        Fault::ThrottleRuns { run: 2 },
        Fault::ServerErrorRuns { run: 2 },
        Fault::Throttle { every: 1 },
    ] {
        let failed_before = failed_rounds();
        fake.set_fault(fault);
        // Serve through failing rounds, at least two of them.
        for i in 0.. {
            assert_eq!(whoami(cport).await.unwrap(), "a");
            assert_eq!(kite.store.load().backends(cport).len(), 1, "{fault:?}");
            if i >= 20 && failed_rounds() >= failed_before + 2.0 {
                break;
            }
            assert!(i < 400, "no round failed under {fault:?}");
            tokio::time::sleep(REFRESH / 4).await;
        }
    }
    fake.set_fault(Fault::None);
    fake.edit(|c| c.add_task(bridge_task(&td, &ci, cport, &b)));
    kite.wait_port(cport, 2).await;
}

/// `--health-refresh`: a task kite knows is described again about once per
/// health refresh, not every round, and a container that turns UNHEALTHY
/// gets no new connections once a health refresh plus a round has passed;
/// a starting task is described every round, so it becomes a target as
/// soon as it is RUNNING.
#[tokio::test]
async fn health_refresh_paces_describes_and_bounds_unhealthy_service() {
    const HEALTH: Duration = Duration::from_secs(2);
    let fake = FakeAws::start().await;
    let a = Backend::start("a", "127.0.0.2", 0, Mode::Echo).await;
    let b = Backend::start("b", "127.0.0.2", 0, Mode::Echo).await;
    let c = Backend::start("c", "127.0.0.2", 0, Mode::Echo).await;
    let cport = listen_port();
    let (ci, td, a_arn) = fake.edit(|cl| {
        let ci = cl.add_instance("127.0.0.2", None);
        let td = cl.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        let a_arn = cl.add_task(bridge_task(&td, &ci, cport, &a));
        cl.add_task(bridge_task(&td, &ci, cport, &b));
        (ci, td, a_arn)
    });
    let kite = Kite::start_with(&fake, |config| proxy::Config {
        source: family_query("web", None).into(),
        refresh: REFRESH,
        max_backoff: REFRESH * 4,
        health_refresh: HEALTH,
        ..config
    })
    .await;
    kite.wait_port(cport, 2).await;

    // Steady: ListTasks every round, DescribeTasks (both tasks in one
    // call) about once per health refresh.
    fake.clear_calls();
    tokio::time::sleep(HEALTH * 2).await;
    let (lists, describes) = (
        fake.call_count("ListTasks"),
        fake.call_count("DescribeTasks"),
    );
    println!(
        "over {:?}: {lists} ListTasks, {describes} DescribeTasks",
        HEALTH * 2
    );
    assert!(lists >= 10, "{lists} rounds");
    assert!(
        (1..=3).contains(&describes),
        "{describes} DescribeTasks in {lists} rounds"
    );

    // a turns UNHEALTHY: gone within a health refresh plus a round (two
    // refreshes at most), with room for a slow machine.
    fake.edit(|cl| {
        cl.task_mut(&a_arn).unwrap()["containers"][0]["healthStatus"] = "UNHEALTHY".into()
    });
    let turned = tokio::time::Instant::now();
    kite.wait_for("a left for UNHEALTHY", |s| s.backends(cport).len() == 1)
        .await;
    let took = turned.elapsed();
    println!("UNHEALTHY a left after {took:?}");
    assert!(
        took <= HEALTH + REFRESH * 2 + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(names(cport, 10).await, set(&["b"]));

    // c starts: PENDING for three describes, then RUNNING. Described once
    // per health refresh it would take three of them; described every
    // round it is a target within a few rounds.
    let started = tokio::time::Instant::now();
    fake.edit(|cl| {
        let mut t = bridge_task(&td, &ci, cport, &c);
        t.last_status = "PENDING".into();
        let arn = cl.add_task(t);
        cl.script(&arn, &["PENDING", "PENDING", "RUNNING"]);
    });
    kite.wait_for("c RUNNING", |s| s.backends(cport).len() == 2)
        .await;
    let took = started.elapsed();
    println!("starting c became a target after {took:?}");
    assert!(took < HEALTH, "{took:?}");
    assert_eq!(names(cport, 30).await, set(&["b", "c"]));
}

/// A steady kite's metrics: the discovery period gauge reads the refresh;
/// under throttling it widens (and the targets stay); once calls go
/// through again it narrows back to the refresh.
#[tokio::test]
async fn throttling_widens_the_period_and_it_comes_back() {
    let fake = FakeAws::start().await;
    let a = Backend::start("a", "127.0.0.2", 0, Mode::Echo).await;
    let cport = listen_port();
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci, cport, &a));
    });
    let kite = Kite::start_with(&fake, |config| proxy::Config {
        source: family_query("web", None).into(),
        refresh: REFRESH,
        max_backoff: REFRESH * 8,
        ..config
    })
    .await;
    kite.wait_port(cport, 1).await;
    let period = || {
        sample(
            &kite.metrics.render(None, 0),
            "kite_discovery_period_seconds",
            &[],
        )
    };
    assert_eq!(period(), REFRESH.as_secs_f64());
    fake.set_fault(Fault::Throttle { every: 2 });
    for i in 0.. {
        assert_eq!(whoami(cport).await.unwrap(), "a");
        if period() >= (REFRESH * 4).as_secs_f64() {
            break;
        }
        assert!(i < 400, "the period never widened: {}", period());
        tokio::time::sleep(REFRESH / 4).await;
    }
    assert!(period() <= (REFRESH * 8).as_secs_f64());
    fake.set_fault(Fault::None);
    for i in 0.. {
        assert_eq!(kite.store.load().backends(cport).len(), 1);
        if period() == REFRESH.as_secs_f64() {
            break;
        }
        assert!(i < 800, "the period never came back: {}", period());
        tokio::time::sleep(REFRESH / 4).await;
    }
}

/// One round over 5,000 tasks on 500 container instances: at most 50
/// ListTasks and 50 DescribeTasks calls; once the caches are warm, at most
/// 64 calls and no DescribeContainerInstances, DescribeInstances or
/// DescribeTaskDefinition.
#[tokio::test]
async fn api_economy_at_5000_tasks() {
    let fake = FakeAws::start().await;
    let cport = 8080;
    fake.edit(|c| {
        let cis: Vec<String> = (0..500)
            .map(|i| c.add_instance(&format!("10.0.{}.{}", i / 250, i % 250 + 1), None))
            .collect();
        let td = c.add_task_definition("big", 1, "bridge", &app(&[(cport, None)]));
        for i in 0..5000u32 {
            let mut t = TaskSpec {
                container_instance_arn: Some(cis[i as usize % 500].clone()),
                containers: vec![TaskContainer::new("app")],
                ..TaskSpec::new(&td)
            };
            t.containers[0].network_bindings =
                vec![("0.0.0.0".into(), cport, 30000 + (i / 500) as u16)];
            c.add_task(t);
        }
    });
    let clients = fake.clients();
    let mut discovery = Discovery::new(clients.ecs(), clients.ec2(), family_query("big", None));
    let snapshot = discovery.round(Duration::from_secs(7)).await.unwrap();
    assert_eq!(snapshot.targets.len(), 5000);
    let count = |op| fake.call_count(op);
    println!(
        "cold round: ListTasks {} DescribeTasks {} DescribeTaskDefinition {} DescribeContainerInstances {} DescribeInstances {}",
        count("ListTasks"), count("DescribeTasks"), count("DescribeTaskDefinition"),
        count("DescribeContainerInstances"), count("DescribeInstances")
    );
    assert!(count("ListTasks") <= 50);
    assert!(count("DescribeTasks") <= 50);
    assert_eq!(count("DescribeTaskDefinition"), 1);
    assert!(count("DescribeContainerInstances") <= 5);
    assert!(count("DescribeInstances") <= 5);

    fake.clear_calls();
    let snapshot = discovery.round(Duration::from_secs(7)).await.unwrap();
    assert_eq!(snapshot.targets.len(), 5000);
    println!(
        "warm round: {} calls: ListTasks {} DescribeTasks {}",
        fake.calls().len(),
        count("ListTasks"),
        count("DescribeTasks")
    );
    assert!(count("ListTasks") <= 50);
    assert!(
        fake.calls().len() <= 64,
        "a steady round costs at most 64 calls"
    );
    for op in [
        "DescribeContainerInstances",
        "DescribeInstances",
        "DescribeTaskDefinition",
        "DescribeNetworkInterfaces",
    ] {
        assert_eq!(count(op), 0, "{op} on a warm round");
    }
}

/// Unusable data in one task: that task is skipped, the others served.
#[tokio::test]
async fn bad_task_data_skips_only_that_task() {
    let fake = FakeAws::start().await;
    let good = Backend::start("good", "127.0.0.2", 0, Mode::Echo).await;
    let cport = listen_port();
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci, cport, &good));
        let zero = c.add_task(bridge_task(&td, &ci, cport, &good));
        c.task_mut(&zero).unwrap()["containers"][0]["networkBindings"] =
            serde_json::json!([{"bindIP": "0.0.0.0", "containerPort": cport, "hostPort": 0, "protocol": "tcp"}]);
        let no_ci = c.add_task(bridge_task(&td, &ci, cport, &good));
        c.task_mut(&no_ci).unwrap().as_object_mut().unwrap().remove("containerInstanceArn");
        let bad_ip_ci = c.add_instance("not-an-ip", None);
        c.add_task(bridge_task(&td, &bad_ip_ci, cport, &good));
    });
    let kite = Kite::start(&fake, family_query("web", None), REFRESH).await;
    kite.wait_port(cport, 1).await;
    let snap = kite.store.load();
    let mut reasons: Vec<&str> = snap.skipped.iter().map(|s| s.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("has an unparsable IP address 'not-an-ip'"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("has no valid port"), "{reasons:?}");
    assert_eq!(reasons[2], "no containerInstanceArn");
}

/// The names seen over `n` connections through a kite that routes to the
/// `targets` tasks of `family` by public address, their container port
/// `cport` listened on at a port of its own.
async fn public_names(
    fake: &FakeAws,
    family: &str,
    cport: u16,
    targets: usize,
    n: usize,
) -> HashSet<String> {
    let lport = listen_port();
    let kite = Kite::start(fake, public_query(family, lport, cport), REFRESH).await;
    kite.wait_port(lport, targets).await;
    names(lport, n).await
}

/// The tasks of `family` by public address, container port `container`
/// listened on at `local`.
fn public_query(family: &str, local: u16, container: u16) -> Query {
    let mut q = family_query(family, None);
    q.public = true;
    q.port_maps = PortMaps::new(vec![PortMap { local, container }]).unwrap();
    q
}
