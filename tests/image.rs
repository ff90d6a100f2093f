//! kite's container image (the top-level Dockerfile, as
//! scripts/build-image.sh builds it) in real containers on a Docker network
//! of the test's own:
//!
//! - the image runs `kite --version` as a numeric non-root user;
//! - end to end: three backend containers (busybox httpd in a scratch image,
//!   each answering with its name), the fake ECS/EC2 endpoint on the
//!   network's gateway address, kite in its own container started with the
//!   original Task Kite's argument form, and a consumer container reaching
//!   kite by its network alias. The consumer reaches every backend; a
//!   backend stopped and removed from the fake cluster gets no more
//!   connections.
//!
//! The image is KITE_TEST_IMAGE when set (`.ci/run` builds it once), else
//! built here with `KITE_PROFILE=image-test scripts/build-image.sh` (a
//! static build: minutes the first time). Without a Docker daemon these
//! tests print a notice and pass, unless KITE_REQUIRE_DOCKER=1.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;

/// The port the backends serve and kite listens on.
const PORT: u16 = 8080;

/// The image under test, built at most once per test run.
fn kite_image() -> String {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let Ok(tag) = std::env::var("KITE_TEST_IMAGE") {
                return Ok(tag);
            }
            let tag = "kite-test:local".to_owned();
            eprintln!("building {tag} with scripts/build-image.sh (KITE_TEST_IMAGE unset)");
            let out = Command::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/build-image.sh"
            ))
            .arg(&tag)
            .env("KITE_PROFILE", "image-test")
            .output()
            .map_err(|e| format!("scripts/build-image.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/build-image.sh failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
            Ok(tag)
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_image_runs_kite_as_a_non_root_user() {
    if !docker_ready("the_image_runs_kite_as_a_non_root_user") {
        return;
    }
    let image = kite_image();
    let config = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}",
        &image,
    ]);
    assert_eq!(config, r#"65534:65534 ["/kite"] ["proxy"]"#);
    let version = docker(&["run", "--rm", &image, "--version"]);
    assert_eq!(version, format!("kite {}", env!("CARGO_PKG_VERSION")));
    // The uid the process really runs as, from the kernel.
    let name = format!("kite-uid-{}", suffix("uid"));
    let mut cleanup = Cleanup::default();
    cleanup.containers.push(name.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        &image,
        "health",
        "--admin-addr",
        "127.0.0.1:1",
        "--timeout",
        "30s",
    ]);
    let status = docker(&["wait", &name]);
    assert_eq!(status, "1", "kite health against nothing exits 1");
    let user = docker(&["inspect", "-f", "{{.Config.User}}", &name]);
    assert_eq!(user, "65534:65534");
    // With no selection at all, the default command is a usage error (2).
    let out = Command::new("docker")
        .args(["run", "--rm", &image])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--family"),
        "{out:?}"
    );
    eprintln!(
        "image {image}: {} bytes",
        docker(&["image", "inspect", "-f", "{{.Size}}", &image])
    );
}

/// The container's address on `network`.
fn container_ip(name: &str, network: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        name,
    ])
}

/// `n` HTTP requests to kite:PORT from a consumer container; how many
/// answers came from each backend (a failed request counts as "failed").
fn consume(busybox: &str, network: &str, n: usize) -> BTreeMap<String, usize> {
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do i=$((i+1)); \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 kite {PORT} | grep backend- || echo failed; done"
    );
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        network,
        busybox,
        "sh",
        "-c",
        &script,
    ]);
    let mut seen = BTreeMap::new();
    for line in out.lines() {
        *seen.entry(line.trim().to_owned()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn kite_in_a_container_reaches_backend_containers_through_the_fake_cluster() {
    let test = "e2e";
    if !docker_ready(test) {
        return;
    }
    let image = kite_image();
    let id = suffix(test);
    let mut cleanup = Cleanup::default();
    let busybox = build_image(&mut cleanup, &id);

    let network = format!("kite-{id}");
    docker(&["network", "create", &network]);
    cleanup.networks.push(network.clone());
    let gateway: IpAddr = docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        &network,
    ])
    .parse()
    .expect("the network's gateway address");

    // The backends: busybox httpd answering with its name.
    let mut backends = Vec::new();
    for n in 1..=3 {
        let name = format!("backend-{n}-{id}");
        cleanup.containers.push(name.clone());
        let script = format!(
            "mkdir -p /www && echo backend-{n} > /www/index.html && exec httpd -f -p {PORT} -h /www"
        );
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &network,
            &busybox,
            "sh",
            "-c",
            &script,
        ]);
        backends.push((name.clone(), container_ip(&name, &network)));
    }

    // The fake ECS/EC2 endpoint on the host's side of the network, and the
    // cluster: a bridge task per backend on an "instance" at its address.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeAws::start_on(gateway));
    let mut task_arns = Vec::new();
    fake.edit(|c| {
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(PORT, Some(PORT))]));
        for (_, ip) in &backends {
            let ci = c.add_instance(ip, None);
            task_arns.push(c.add_task(TaskSpec {
                container_instance_arn: Some(ci),
                containers: vec![TaskContainer {
                    network_bindings: vec![("0.0.0.0".into(), PORT, PORT)],
                    ..TaskContainer::new("app")
                }],
                ..TaskSpec::new(&td)
            }));
        }
    });

    // kite, with the original's argument form, reachable as "kite".
    let kite = format!("kite-{id}");
    cleanup.containers.push(kite.clone());
    let mut args: Vec<String> = ["run", "-d", "--name", &kite, "--network", &network]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--network-alias".into(), "kite".into()]);
    let mut env = fake.child_env();
    env.push(("KITE_REFRESH".into(), "1s".into()));
    env.push(("KITE_ADMIN_ADDR".into(), "127.0.0.1:9901".into()));
    for (k, v) in &env {
        args.extend(["-e".into(), format!("{k}={v}")]);
    }
    args.push(image.clone());
    args.extend(
        [
            "-cluster=default",
            "-family=web",
            "-name=app",
            "-loglevel=debug",
        ]
        .map(String::from),
    );
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let logs = || {
        let out = Command::new("docker")
            .args(["logs", &kite])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Ready, asked with `kite health` inside the kite container itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new("docker")
            .args(["exec", &kite, "/kite", "health"])
            .output()
            .unwrap();
        if ready.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kite never became ready: {ready:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let top = docker(&["top", &kite, "-o", "pid,uid"]);
    let uid = top.lines().nth(1).and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(uid, Some("65534"), "kite runs as 65534: {top}");

    let seen = consume(&busybox, &network, 30);
    for n in 1..=3 {
        assert!(
            seen.get(&format!("backend-{n}")).is_some_and(|c| *c > 0),
            "backend-{n} got no connection: {seen:?}\n{}",
            logs()
        );
    }
    assert_eq!(seen.values().sum::<usize>(), 30, "{seen:?}");
    assert!(!seen.contains_key("failed"), "{seen:?}\n{}", logs());

    // backend-1 stops and leaves the cluster; once kite has finished a
    // round without it (two ListTasks later), it gets nothing.
    docker(&["rm", "-f", &backends[0].0]);
    let rounds = fake.call_count("ListTasks");
    fake.edit(|c| assert!(c.remove_task(&task_arns[0])));
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.call_count("ListTasks") < rounds + 2 {
        assert!(Instant::now() < deadline, "no discovery rounds\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = consume(&busybox, &network, 20);
    assert_eq!(
        seen.get("backend-1"),
        None,
        "backend-1 still reached: {seen:?}"
    );
    assert!(!seen.contains_key("failed"), "{seen:?}\n{}", logs());
    assert_eq!(
        seen.get("backend-2").unwrap_or(&0) + seen.get("backend-3").unwrap_or(&0),
        20,
        "{seen:?}"
    );
    drop(fake);
}
