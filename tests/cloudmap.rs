//! AWS Cloud Map as the source of targets (`--cloud-map`), end to end:
//! kite against the fake endpoint's Cloud Map, with real TCP backends on
//! 127.0.0.x.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::cloudmap::ecs_attributes;
use common::*;
use kite::config::{IpFamily, PortMap, PortMaps};
use kite::discovery::cloudmap::Query;
use kite::proxy;
use kite::snapshot::NetworkMode;

const REFRESH: Duration = Duration::from_millis(100);
const NS: &str = "internal.example";
const SVC: &str = "web";

fn cloud_map(maps: &[(u16, u16)]) -> Query {
    let maps = (maps.iter())
        .map(|&(local, container)| PortMap { local, container })
        .collect();
    Query {
        namespace: NS.into(),
        service: SVC.into(),
        ip_family: IpFamily::Auto,
        port_maps: PortMaps::new(maps).unwrap(),
    }
}

/// kite in this process for [`NS`]/[`SVC`] with `maps`, relisting the
/// healthy instances every `health_refresh`.
async fn start(fake: &FakeAws, maps: &[(u16, u16)], health_refresh: Duration) -> Kite {
    Kite::start_with(fake, |config| proxy::Config {
        source: cloud_map(maps).into(),
        refresh: REFRESH,
        max_backoff: REFRESH * 4,
        health_refresh,
        ..config
    })
    .await
}

/// The attributes ECS registers for `backend` (an SRV record) in zone a.
fn srv(backend: &Backend) -> BTreeMap<String, String> {
    let ip = backend.addr.ip().to_string();
    ecs_attributes(&ip, Some(backend.addr.port()), "us-east-1a")
}

/// Registering adds a target, deregistering removes it, and an instance
/// that turns unhealthy leaves at the next health refresh, though the
/// revision stays the same; it comes back when healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_deregister_and_unhealthy() {
    init_logs();
    let fake = FakeAws::start().await;
    let port = listen_port();
    let a = Backend::start("a", "127.0.0.2", port, Mode::Echo).await;
    let b = Backend::start("b", "127.0.0.3", port, Mode::Echo).await;
    fake.cloud_map(|m| m.register(NS, SVC, "task-a", srv(&a)));
    let kite = start(&fake, &[], Duration::from_millis(400)).await;
    kite.wait_port(port, 1).await;
    let t = kite.store.load().targets[0].clone();
    assert_eq!((t.task_id.as_str(), t.address), ("task-a", a.addr));
    assert_eq!(t.network_mode, NetworkMode::CloudMap);
    assert_eq!(t.zone.as_deref(), Some("us-east-1a"));
    assert_eq!(names(port, 4).await, set(&["a"]));

    fake.cloud_map(|m| m.register(NS, SVC, "task-b", srv(&b)));
    kite.wait_port(port, 2).await;
    assert_eq!(names(port, 20).await, set(&["a", "b"]));

    let revision = fake.cloud_map(|m| m.revision(NS, SVC));
    fake.cloud_map(|m| m.set_health(NS, SVC, "task-a", "UNHEALTHY"));
    assert_eq!(fake.cloud_map(|m| m.revision(NS, SVC)), revision);
    kite.wait_for("the unhealthy a to leave", |s| s.backends(port) == [b.addr])
        .await;
    assert_eq!(names(port, 6).await, set(&["b"]));
    fake.cloud_map(|m| m.set_health(NS, SVC, "task-a", "HEALTHY"));
    kite.wait_port(port, 2).await;

    assert!(fake.cloud_map(|m| m.deregister(NS, SVC, "task-b")));
    kite.wait_for("b to leave", |s| s.backends(port) == [a.addr])
        .await;
    assert_eq!(names(port, 6).await, set(&["a"]));
    // A good round with no instances empties the snapshot.
    fake.cloud_map(|m| m.deregister(NS, SVC, "task-a"));
    kite.wait_for("no targets", |s| s.targets.is_empty()).await;
}

/// A steady round costs one DiscoverInstancesRevision call; a changed
/// revision (up or down) costs one DiscoverInstances more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_rounds_call_only_discover_instances_revision() {
    let fake = FakeAws::start().await;
    let port = listen_port();
    let a = Backend::start("a", "127.0.0.2", port, Mode::Echo).await;
    fake.cloud_map(|m| m.register(NS, SVC, "task-a", srv(&a)));
    let kite = start(&fake, &[], Duration::from_secs(3600)).await;
    kite.wait_port(port, 1).await;
    let rounds = || {
        sample(
            &kite.metrics.render(None, 0),
            "kite_discovery_rounds_total",
            &[],
        )
    };
    fake.clear_calls();
    let before = rounds();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = fake.calls();
    let done = rounds() - before;
    // Rounds come every 100-200 ms; one call each (a round may be under
    // way at either end).
    assert!(done >= 5.0, "{done} rounds");
    assert!(
        (calls.len() as f64 - done).abs() <= 1.0,
        "{done} rounds: {calls:?}"
    );
    assert!(
        calls.iter().all(|c| c == "DiscoverInstancesRevision"),
        "{calls:?}"
    );
    eprintln!("steady: {done} rounds, {} calls", calls.len());

    let b = Backend::start("b", "127.0.0.3", port, Mode::Echo).await;
    fake.clear_calls();
    fake.cloud_map(|m| m.register(NS, SVC, "task-b", srv(&b)));
    kite.wait_port(port, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.call_count("DiscoverInstances"),
        1,
        "{:?}",
        fake.calls()
    );

    // Compared for change, not for order: a revision that goes down is
    // a change too.
    fake.clear_calls();
    fake.cloud_map(|m| {
        m.deregister(NS, SVC, "task-b");
        m.set_revision(NS, SVC, 5);
    });
    kite.wait_for("b to leave", |s| s.backends(port) == [a.addr])
        .await;
    assert_eq!(
        fake.call_count("DiscoverInstances"),
        1,
        "{:?}",
        fake.calls()
    );
}

/// Instances on several ports, and A-record instances (no port) reached on
/// the ports of --port-map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ports_and_a_records_with_port_map() {
    let fake = FakeAws::start().await;
    let (p1, p2, local, remote) = (listen_port(), listen_port(), listen_port(), listen_port());
    let x = Backend::start("x", "127.0.0.2", p1, Mode::Echo).await;
    let y = Backend::start("y", "127.0.0.3", p2, Mode::Echo).await;
    let _z = Backend::start("z", "127.0.0.4", remote, Mode::Echo).await;
    fake.cloud_map(|m| {
        m.register(NS, SVC, "x", srv(&x));
        m.register(NS, SVC, "y", srv(&y));
        m.register(
            NS,
            SVC,
            "z",
            ecs_attributes("127.0.0.4", None, "us-east-1b"),
        );
    });
    let kite = start(&fake, &[(local, remote)], Duration::from_secs(30)).await;
    kite.wait_port(p1, 1).await;
    kite.wait_port(p2, 1).await;
    kite.wait_port(local, 1).await;
    assert_eq!(names(p1, 3).await, set(&["x"]));
    assert_eq!(names(p2, 3).await, set(&["y"]));
    assert_eq!(names(local, 3).await, set(&["z"]));
    let z: SocketAddr = format!("127.0.0.4:{remote}").parse().unwrap();
    assert_eq!(kite.store.load().backends(local), [z]);
}

/// With Cloud Map unreachable, kite keeps the last targets and serves them,
/// says why the rounds fail, and follows changes once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_keeps_the_last_targets() {
    let fake = FakeAws::start().await;
    let port = listen_port();
    let a = Backend::start("a", "127.0.0.2", port, Mode::Echo).await;
    fake.cloud_map(|m| m.register(NS, SVC, "task-a", srv(&a)));
    let kite = start(&fake, &[], Duration::from_millis(300)).await;
    kite.wait_port(port, 1).await;

    fake.go_down().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while kite.store.failure().is_none() {
        assert!(std::time::Instant::now() < deadline, "no round failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past a health refresh: the instances kite knew are still served.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(kite.store.load().backends(port), [a.addr]);
    assert_eq!(names(port, 3).await, set(&["a"]));

    fake.come_back().await;
    fake.cloud_map(|m| m.deregister(NS, SVC, "task-a"));
    kite.wait_for("a to leave", |s| s.targets.is_empty()).await;
    assert_eq!(kite.store.failure(), None);
}

/// DiscoverInstances has no pages: kite asks for all of them (up to 1,000)
/// where Cloud Map answers 100 unless asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_hundred_instances() {
    let fake = FakeAws::start().await;
    let port = listen_port();
    fake.cloud_map(|m| {
        for i in 0..150u16 {
            let ip = format!("127.0.{}.{}", 1 + i / 200, 1 + i % 200);
            m.register(
                NS,
                SVC,
                &format!("i-{i}"),
                ecs_attributes(&ip, Some(port), "z"),
            );
        }
    });
    let kite = start(&fake, &[], Duration::from_secs(30)).await;
    kite.wait_port(port, 150).await;
}

/// `kite proxy --cloud-map NAMESPACE/SERVICE` as a child process, listening
/// on 127.0.0.1, with an admin endpoint, plus `extra` flags.
fn cloud_map_process(target: &str, extra: &[&str], env: &[(String, String)]) -> KiteProcess {
    let admin: SocketAddr = format!("127.0.0.1:{}", listen_port()).parse().unwrap();
    let admin_flag = admin.to_string();
    let mut args = vec![
        "proxy",
        "--cloud-map",
        target,
        "--listen-addr",
        "127.0.0.1",
        "--admin-addr",
        &admin_flag,
        "--refresh",
        "100ms",
    ];
    args.extend_from_slice(extra);
    KiteProcess::spawn(kite_command(&args, env), Some(admin))
}

/// Bad `--cloud-map` values and combinations exit 2 naming the flag, before
/// any AWS call.
#[test]
fn bad_input_exits_2_and_names_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["proxy", "--cloud-map", "web"], "--cloud-map"),
        (&["proxy", "--cloud-map", "ns/"], "--cloud-map"),
        (&["proxy", "--cloud-map", "ns/a b"], "--cloud-map"),
        (
            &["proxy", "--cloud-map", "ns/web", "--family", "web"],
            "--family",
        ),
        (
            &["proxy", "--cloud-map", "ns/web", "--service", "web"],
            "--service",
        ),
        (
            &["targets", "--cloud-map", "ns/web", "--name", "app"],
            "--name",
        ),
        (
            &["proxy", "--cloud-map", "ns/web", "--port-map", "80"],
            "--port-map",
        ),
        (&["targets", "--cloud-map", "web"], "--cloud-map"),
    ];
    for (args, flag) in cases {
        let out = kite_command(args, &[]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // From the environment too.
    let env = [("KITE_CLOUD_MAP".to_owned(), "no-slash".to_owned())];
    let out = kite_command(&["proxy"], &env).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no '/'"));
}

/// Waits (up to 10 s) until `/readyz` says `needle`, which it must say
/// not ready (503); returns what it said.
async fn readyz_says(kite: &KiteProcess, needle: &str) -> String {
    for _ in 0..200 {
        // Refused until kite listens.
        let (status, body) = kite.get("/readyz").await.unwrap_or_default();
        if body.contains(needle) {
            assert_eq!(status, 503, "{body}");
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never said {needle:?}; log:\n{}", kite.log());
}

/// A namespace or service Cloud Map does not know: the error names it,
/// `/readyz` says why kite is not ready, and kite keeps trying until it
/// exists. Every request reached the endpoint's host as given (no `data-`
/// prefix on DiscoverInstances).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_namespace_or_service_says_why_and_keeps_trying() {
    let fake = FakeAws::start().await;
    let port = listen_port();
    let a = Backend::start("a", "127.0.0.2", port, Mode::Echo).await;
    let kite = cloud_map_process("nowhere.example/web", &[], &fake.child_env());
    let body = readyz_says(&kite, "no namespace 'nowhere.example'").await;
    assert!(body.contains("not ready"), "{body}");
    assert!(kite.log_shows("no namespace 'nowhere.example'").await);

    // The namespace exists, but not the service.
    fake.cloud_map(|m| m.add_service("nowhere.example", "api"));
    readyz_says(&kite, "no service 'web' in namespace 'nowhere.example'").await;

    fake.cloud_map(|m| m.register("nowhere.example", "web", "task-a", srv(&a)));
    kite.wait_ready().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while whoami(port).await.ok().as_deref() != Some("a") {
        assert!(std::time::Instant::now() < deadline, "{}", kite.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let endpoint = fake.endpoint_url();
    let host = endpoint.trim_start_matches("http://");
    let hosts = fake.cloud_map(|m| m.hosts.clone());
    assert!(hosts.iter().all(|h| h == host), "{hosts:?}");
    assert!(fake.call_count("DiscoverInstances") >= 1);
}

/// An instance without an address is skipped with one warning, however
/// many rounds see it, and `kite targets --cloud-map` lists it with the
/// reason. `AWS_ENDPOINT_URL_SERVICEDISCOVERY` alone points kite at the
/// endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_without_an_address_is_skipped_and_listed() {
    let fake = FakeAws::start().await;
    let port = listen_port();
    let a = Backend::start("a", "127.0.0.2", port, Mode::Echo).await;
    let mut bare = ecs_attributes("127.0.0.9", Some(port), "us-east-1a");
    bare.remove("AWS_INSTANCE_IPV4");
    fake.cloud_map(|m| {
        m.register(NS, SVC, "task-a", srv(&a));
        m.register(NS, SVC, "task-bare", bare);
    });
    // ECS's and EC2's endpoint is nowhere: only Cloud Map's is set.
    let mut env: Vec<(String, String)> = (fake.child_env().into_iter())
        .filter(|(k, _)| k != "AWS_ENDPOINT_URL")
        .collect();
    env.push(("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:9".into()));
    env.push((
        "AWS_ENDPOINT_URL_SERVICEDISCOVERY".into(),
        fake.endpoint_url(),
    ));

    let target = format!("{NS}/{SVC}");
    let out = kite_command(&["targets", "--cloud-map", &target], &env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("127.0.0.2:{port}")), "{stdout}");
    assert!(
        stdout.contains("task-a") && stdout.contains("cloudmap"),
        "{stdout}"
    );
    let skipped = stdout.split("SKIPPED").nth(1).unwrap_or_default();
    assert!(
        skipped.contains(&format!("{NS}/{SVC}/task-bare")),
        "{stdout}"
    );
    assert!(
        skipped.contains("neither AWS_INSTANCE_IPV4 nor AWS_INSTANCE_IPV6"),
        "{stdout}"
    );

    let kite = cloud_map_process(&target, &["--health-refresh", "200ms"], &env);
    kite.wait_ready().await;
    // Several rounds, and DiscoverInstances again and again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        fake.call_count("DiscoverInstances") >= 4,
        "{:?}",
        fake.calls()
    );
    let log = kite.log();
    assert_eq!(log.matches("skipping instance").count(), 1, "{log}");
    assert!(log.contains("task-bare"), "{log}");
    let (_, targets) = kite.get("/targets").await.unwrap();
    assert!(targets.contains("task-bare"), "{targets}");
}

/// Instances registered without a port and no --port-map: the warning names
/// the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_without_port_map_warn_with_the_fix() {
    let fake = FakeAws::start().await;
    fake.cloud_map(|m| m.register(NS, SVC, "a", ecs_attributes("127.0.0.2", None, "z")));
    let kite = cloud_map_process(&format!("{NS}/{SVC}"), &[], &fake.child_env());
    kite.wait_ready().await;
    assert!(
        kite.log_shows("--port-map LOCAL:PORT").await,
        "{}",
        kite.log()
    );
}
