//! Running kite in production: graceful shutdown, faults, limits, the admin
//! endpoint and its metrics, `kite health`. Most tests run the real binary.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::*;

/// A fake cluster with one bridge task of family `web` (container `app`,
/// container port `cport`) served by `backend`.
fn one_task(fake: &FakeAws, cport: u16, backend: &Backend) {
    let ip = backend.addr.ip().to_string();
    fake.edit(|c| {
        let ci = c.add_instance(&ip, None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci, cport, backend));
    });
}

/// A fake cluster as [`one_task`] makes it, with an Echo backend `name`
/// on 127.0.0.2; and the task's container port.
async fn one_task_cluster(name: &str) -> (FakeAws, Backend, u16) {
    let fake = FakeAws::start().await;
    let backend = Backend::start(name, "127.0.0.2", 0, Mode::Echo).await;
    let cport = listen_port();
    one_task(&fake, cport, &backend);
    (fake, backend, cport)
}

/// `kite proxy` for family web / container app against `fake`, listening on
/// 127.0.0.1, with an admin endpoint, plus `extra` flags.
fn start_kite(fake: &FakeAws, extra: &[&str]) -> KiteProcess {
    start_kite_with(fake, extra, &[], None)
}

fn start_kite_with(
    fake: &FakeAws,
    extra: &[&str],
    extra_env: &[(&str, &str)],
    nofile: Option<u64>,
) -> KiteProcess {
    let mut env = fake.child_env();
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    proxy_process(extra, &env, nofile)
}

/// Waits until a connection through kite's `port` reaches a backend.
async fn wait_serving(kite: &KiteProcess, port: u16) {
    for _ in 0..400 {
        if whoami(port).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kite never served port {port}; log:\n{}", kite.log());
}

/// The usual scene: a fake cluster with one task (Echo backend "b1" on
/// 127.0.0.2), and kite started with `extra` flags, ready and serving.
/// Tests move `cport` and `kite` out; the fake and the backend stay in the
/// scene, alive until the test ends.
struct Scene {
    fake: FakeAws,
    _backend: Backend,
    cport: u16,
    kite: KiteProcess,
}

async fn scene(backend_name: &str, extra: &[&str]) -> Scene {
    scene_with(backend_name, extra, &[], None).await
}

/// [`scene`], with extra environment and an open-file limit for kite.
async fn scene_with(
    backend_name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    nofile: Option<u64>,
) -> Scene {
    let (fake, backend, cport) = one_task_cluster(backend_name).await;
    let kite = start_kite_with(&fake, extra, env, nofile);
    kite.wait_ready().await;
    wait_serving(&kite, cport).await;
    Scene {
        fake,
        _backend: backend,
        cport,
        kite,
    }
}

/// Connects through kite and reads the backend's name line (Echo mode).
async fn open(port: u16) -> std::io::Result<(TcpStream, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .map_err(|_| std::io::Error::other("no name line"))??;
        if n == 0 {
            return Err(std::io::Error::other("closed before the name line"));
        }
        if byte[0] == b'\n' {
            break;
        }
        name.push(byte[0]);
    }
    Ok((s, String::from_utf8_lossy(&name).into_owned()))
}

/// Sends `len` random bytes on an Echo connection (after its name line),
/// half-closes, and checks the echo and the backend's sha256 trailer.
/// `progress` is told how many bytes have come back so far.
async fn echo_exchange(
    s: TcpStream,
    len: usize,
    progress: tokio::sync::watch::Sender<usize>,
) -> std::io::Result<()> {
    let data: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    let sent_hash = Sha256::digest(&data);
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(256 * 1024) {
            w.write_all(chunk).await?;
        }
        w.shutdown().await?;
        std::io::Result::Ok(())
    });
    let mut got = Vec::with_capacity(len + 32);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let _ = progress.send(got.len());
    }
    writer.await.unwrap()?;
    assert_eq!(got.len(), len + 32, "echo plus trailer");
    assert_eq!(Sha256::digest(&got[..len]), sent_hash, "echo intact");
    assert_eq!(&got[len..], &sent_hash[..], "the backend got every byte");
    Ok(())
}

/// SIGTERM in the middle of a 50 MiB transfer: kite stops accepting at
/// once, the transfer completes byte for byte, kite exits 0. Also checks
/// the debug connection logs in JSON, and that no credential is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_transfer_finish_then_exits_0() {
    let flags = [
        "--refresh",
        "200ms",
        "--log-level",
        "debug",
        "--log-format",
        "json",
    ];
    let token = [("AWS_SESSION_TOKEN", "SESSIONTOKEN-NEVER-LOGGED")];
    let scene = scene_with("b1", &flags, &token, None).await;
    let (cport, mut kite) = (scene.cport, scene.kite);

    let (conn, name) = open(cport).await.unwrap();
    assert_eq!(name, "b1");
    let (progress, mut seen) = tokio::sync::watch::channel(0usize);
    let transfer = tokio::spawn(echo_exchange(conn, 50 << 20, progress));
    seen.wait_for(|n| *n >= 5 << 20).await.unwrap();
    kite.sigterm();
    // Stop accepting at once: new connections are refused soon.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", cport)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "kite kept accepting after SIGTERM");
    transfer
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("transfer broke: {e}; log:\n{}", kite.log()));
    let status = kite.wait_exit(Duration::from_secs(20)).await;
    let log = kite.log();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(log.contains("all connections closed"), "{log}");

    // One JSON object per line; the close line carries the connection's facts.
    let mut close = None;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["message"] == "close" && v["bytes_up"] == json!(50u64 << 20) {
            close = Some(v);
        }
    }
    let close = close.unwrap_or_else(|| panic!("no close line for the transfer:\n{log}"));
    assert_eq!(close["bytes_down"], json!((50u64 << 20) + 32 + 3));
    assert!(close["backend"].as_str().unwrap().starts_with("127.0.0.2:"));
    assert!(close["ms"].is_u64());
    let span = close["span"].to_string();
    assert!(
        span.contains(&cport.to_string()) && span.contains("127.0.0.1:"),
        "{close}"
    );
    for secret in ["SESSIONTOKEN-NEVER-LOGGED", "fake-secret", "Signature="] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
}

/// A connection still open when `--drain-timeout` ends: kite exits 0 with
/// the deadline logged. (Whether kite or its exit closed the connection,
/// the client cannot tell: see [`drain_timeout_closes_what_is_left`].)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_ends_in_exit_0() {
    let scene = scene("b1", &["--refresh", "200ms", "--drain-timeout", "1s"]).await;
    let (cport, mut kite) = (scene.cport, scene.kite);
    let (_idle, _) = open(cport).await.unwrap();
    kite.sigterm();
    let status = kite.wait_exit(Duration::from_secs(15)).await;
    let log = kite.log();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(log.contains("--drain-timeout 1s reached"), "{log}");
}

/// A connection still open when the drain timeout ends is closed by kite
/// itself: kite runs in this process, so no process exit closes it for
/// kite. Until the deadline the connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_closes_what_is_left() {
    let (fake, _backend, cport) = one_task_cluster("b1").await;
    let drain = Duration::from_secs(1);
    let kite = Kite::start_with(&fake, |config| kite::proxy::Config {
        source: family_query("web", None).into(),
        refresh: Duration::from_millis(200),
        drain_timeout: drain,
        ..config
    })
    .await;
    kite.wait_port(cport, 1).await;
    let (mut idle, name) = open(cport).await.unwrap();
    assert_eq!(name, "b1");
    let shutdown = std::time::Instant::now();
    // Dropping kite's handle is the shutdown trigger; while it drains the
    // connection is still served.
    drop(kite);
    ping(&mut idle, b"draining").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await;
    let closed_after = shutdown.elapsed();
    assert!(
        read.is_ok(),
        "the connection was not closed at the deadline"
    );
    assert!(
        closed_after >= drain,
        "closed {closed_after:?} after the shutdown, before the drain timeout"
    );
}

/// A backend killed in the middle of transfers: its clients see their
/// connections end, the others are untouched, new connections avoid it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_ends_only_its_own_connections() {
    let fake = FakeAws::start().await;
    let a = Backend::start("a", "127.0.0.2", 0, Mode::Echo).await;
    let b = Backend::start("b", "127.0.0.3", 0, Mode::Echo).await;
    let cport = listen_port();
    fake.edit(|c| {
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        for backend in [&a, &b] {
            let ci = c.add_instance(&backend.addr.ip().to_string(), None);
            c.add_task(bridge_task(&td, &ci, cport, backend));
        }
    });
    let kite = start_kite(&fake, &["--refresh", "200ms"]);
    kite.wait_ready().await;
    wait_serving(&kite, cport).await;

    // Connections until each backend has at least three.
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    while on_a.len() < 3 || on_b.len() < 3 {
        let (s, name) = open(cport).await.unwrap();
        match name.as_str() {
            "a" => on_a.push(s),
            _ => on_b.push(s),
        }
        assert!(on_a.len() + on_b.len() < 200, "picks are not random");
    }
    // Traffic in flight on all of them, then kill a.
    for s in on_a.iter_mut().chain(on_b.iter_mut()) {
        s.write_all(&[7u8; 100_000]).await.unwrap();
    }
    a.kill();
    let failed_before = kite
        .metric(
            "kite_connections_failed_total",
            &[("port", &cport.to_string())],
        )
        .await;
    for mut s in on_a {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "a's client still open after a died");
    }
    for (i, s) in on_b.into_iter().enumerate() {
        // Drain what was echoed so far, then a full exchange.
        let (mut r, mut w) = s.into_split();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            r.read_to_end(&mut all).await.map(|_| all)
        });
        w.write_all(&[8u8; 1 << 20]).await.unwrap();
        w.shutdown().await.unwrap();
        let all = reader.await.unwrap().unwrap();
        assert_eq!(all.len(), 100_000 + (1 << 20) + 32, "b connection {i}");
    }
    // New connections all land on b (a refuses, is ejected, b is tried).
    for _ in 0..20 {
        assert_eq!(whoami(cport).await.unwrap(), "b");
    }
    let failed_after = kite
        .metric(
            "kite_connections_failed_total",
            &[("port", &cport.to_string())],
        )
        .await;
    assert_eq!(failed_before, failed_after, "no client failed");
}

/// ECS unreachable for several refresh periods: kite serves the last good
/// targets throughout, `/readyz` turns not-ready only after `--stale-after`
/// (and `kite health` says why), then both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_unreachable_keeps_the_last_targets_and_readiness_follows() {
    let scene = scene("b1", &["--refresh", "200ms", "--stale-after", "3s"]).await;
    let (fake, cport, mut kite) = (&scene.fake, scene.cport, scene.kite);
    let admin = kite.admin.unwrap().to_string();
    let health = |admin: &str| {
        kite_command(&["health", "--admin-addr", admin], &[])
            .output()
            .unwrap()
    };
    let ok = health(&admin);
    assert_eq!(ok.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ready: 1 targets"));

    fake.go_down().await;
    let down_at = std::time::Instant::now();
    // Still serving, and ready until --stale-after has passed.
    let mut not_ready = None;
    while not_ready.is_none() {
        assert_eq!(whoami(cport).await.unwrap(), "b1", "{}", kite.log());
        let (status, body) = kite.get("/readyz").await.unwrap();
        if status == 503 {
            not_ready = Some((down_at.elapsed(), body));
        } else {
            assert_eq!(status, 200);
        }
        assert!(
            down_at.elapsed() < Duration::from_secs(30),
            "never not-ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (after, body) = not_ready.unwrap();
    // The last good round was at most a refresh period (with jitter) before
    // the endpoint went down.
    assert!(after >= Duration::from_secs(2), "not-ready after {after:?}");
    assert!(body.contains("--stale-after 3s"), "{body}");
    let sick = health(&admin);
    assert_eq!(sick.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&sick.stderr).contains("not ready"));
    assert!(
        kite.log_shows("discovery round failed").await,
        "{}",
        kite.log()
    );
    assert!(kite.metric("kite_discovery_errors_total", &[]).await >= 1.0);
    // Still serving while not ready.
    assert_eq!(whoami(cport).await.unwrap(), "b1");

    fake.come_back().await;
    let back_at = std::time::Instant::now();
    for i in 0.. {
        if let Ok((200, _)) = kite.get("/readyz").await {
            break;
        }
        assert!(i < 600, "never recovered:\n{}", kite.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "not ready {after:?} after ECS went down (--stale-after 3s); ready again {:?} after it came back",
        back_at.elapsed()
    );
    assert_eq!(health(&admin).status.code(), Some(0));
    assert!(
        kite.log_shows("discovery recovered").await,
        "{}",
        kite.log()
    );
    assert!(kite.running());

    // Nobody listening: a clear failure.
    let dead = format!("127.0.0.1:{}", listen_port());
    let out = health(&dead);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach kite's admin endpoint"));
}

/// Waits until kite has run `n` more discovery rounds than `since`.
async fn rounds_pass(kite: &KiteProcess, since: f64, n: f64) -> f64 {
    for _ in 0..300 {
        let now = kite.metric("kite_discovery_rounds_total", &[]).await;
        if now >= since + n {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("discovery stalled:\n{}", kite.log());
}

/// Waits for a discovery round that succeeds, so the error backoff is
/// reset; returns the round count then.
async fn good_round(kite: &KiteProcess) -> f64 {
    for _ in 0..100 {
        let rounds = kite.metric("kite_discovery_rounds_total", &[]).await;
        let errors = kite.metric("kite_discovery_errors_total", &[]).await;
        let now = rounds_pass(kite, rounds, 1.0).await;
        if kite.metric("kite_discovery_errors_total", &[]).await == errors {
            return now;
        }
    }
    panic!("no good round:\n{}", kite.log());
}

/// Malformed API answers never panic kite: a bad answer fails the round
/// (the last good targets stay), bad items are skipped with a warning and
/// the good ones served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_survived() {
    // A health refresh shorter than a round: every round describes the
    // task, so every malformed DescribeTasks answer is met.
    let args = ["--refresh", "100ms", "--health-refresh", "1ms"];
    let scene = scene("good", &args).await;
    let (fake, cport, kite) = (&scene.fake, scene.cport, scene.kite);
    let good = fake.edit(|c| c.tasks[0].clone());
    let good_arn = good["taskArn"].as_str().unwrap().to_owned();

    // The good task under another ARN, with one thing wrong.
    let variant = |suffix: &str, spoil: &dyn Fn(&mut Value)| {
        let mut task = good.clone();
        task["taskArn"] = json!(format!("{good_arn}-{suffix}"));
        spoil(&mut task);
        task
    };
    let remove = |field: &'static str| {
        move |task: &mut Value| {
            task.as_object_mut().unwrap().remove(field);
        }
    };
    let bad_items = [
        variant("nocontainers", &remove("containers")),
        variant("port0", &|task| {
            task["containers"][0]["networkBindings"][0]["hostPort"] = json!(0)
        }),
        variant("notd", &remove("taskDefinitionArn")),
        variant("noci", &|task| {
            task["containerInstanceArn"] =
                json!("arn:aws:ecs:us-east-1:123456789012:container-instance/default/gone")
        }),
    ];
    let mut items = vec![good.clone()];
    items.extend(bad_items);
    // ListTasks lists the bad ones too: what is not listed is not served.
    let listed: Vec<&Value> = items.iter().map(|t| &t["taskArn"]).collect();
    let listed = json!({ "taskArns": listed }).to_string();
    let ten_thousand: Vec<String> = (0..10_000)
        .map(|i| format!("arn:aws:ecs:us-east-1:123456789012:task/default/{i:032x}"))
        .chain([good_arn.clone()])
        .collect();

    let cases: Vec<(&str, &str, u16, String)> = vec![
        (
            "truncated JSON",
            "ListTasks",
            200,
            r#"{"taskArns":["arn:aws:ecs:us"#.into(),
        ),
        ("wrong type", "ListTasks", 200, r#"{"taskArns":42}"#.into()),
        (
            "not JSON",
            "DescribeTasks",
            200,
            "<html>502 Bad Gateway</html>".into(),
        ),
        (
            "wrong item types",
            "DescribeTasks",
            200,
            json!({"tasks":[{"taskArn":5,"containers":"x"}]}).to_string(),
        ),
        ("error without a type", "DescribeTasks", 400, "{}".into()),
        (
            "bad items beside a good one",
            "DescribeTasks",
            200,
            json!({"tasks": items, "failures": [{"arn": "x", "reason": "MISSING"}]}).to_string(),
        ),
        (
            "10,000 task ARNs in one page",
            "ListTasks",
            200,
            json!({"taskArns": ten_thousand}).to_string(),
        ),
    ];
    let mut rounds = kite.metric("kite_discovery_rounds_total", &[]).await;
    for (what, op, status, body) in cases {
        fake.set_raw(op, status, body);
        if what.starts_with("bad items") {
            fake.set_raw("ListTasks", 200, listed.clone());
        }
        rounds_pass(&kite, rounds, 2.0).await;
        assert_eq!(whoami(cport).await.unwrap(), "good", "{what}");
        let (_, targets) = kite.get("/targets").await.unwrap();
        let targets: Value = serde_json::from_str(&targets).unwrap();
        assert_eq!(
            targets["targets"].as_array().unwrap().len(),
            1,
            "{what}: {targets}"
        );
        assert_eq!(targets["targets"][0]["task_arn"], json!(good_arn), "{what}");
        if what.starts_with("bad items") {
            let skipped = targets["skipped"].to_string();
            for reason in ["-nocontainers", "-port0", "-notd", "-noci"] {
                assert!(skipped.contains(reason), "{reason} not skipped: {skipped}");
            }
        }
        fake.clear_raw();
        rounds = good_round(&kite).await;
    }

    // EC2's XML, truncated, while a new instance needs resolving: the round
    // fails and the targets stay; once EC2 answers, the new task is added.
    let newcomer = Backend::start("new", "127.0.0.3", 0, Mode::Echo).await;
    fake.set_raw(
        "DescribeInstances",
        200,
        "<DescribeInstancesResponse><reservationSet><item><instancesSet>",
    );
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.3", None);
        let td = good["taskDefinitionArn"].as_str().unwrap().to_owned();
        c.add_task(bridge_task(&td, &ci, cport, &newcomer));
    });
    let served = || async {
        let (_, targets) = kite.get("/targets").await.unwrap();
        let targets = serde_json::from_str::<Value>(&targets).unwrap();
        targets["targets"].as_array().unwrap().len()
    };
    rounds = rounds_pass(&kite, rounds, 2.0).await;
    assert_eq!(served().await, 1);
    fake.clear_raw();
    rounds_pass(&kite, rounds, 2.0).await;
    assert_eq!(served().await, 2);

    let log = kite.log();
    assert!(log.contains("skipping task"), "{log}");
    assert!(log.contains("discovery round failed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A low open-file limit: kite serves what it can, logs the shortage, and
/// recovers once connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_file_exhaustion_is_survived() {
    // --max-connections far above what 48 descriptors allow, so the
    // descriptors themselves run out.
    let flags = ["--refresh", "1h", "--max-connections", "1000"];
    let scene = scene_with("b1", &flags, &[], Some(48)).await;
    let (cport, mut kite) = (scene.cport, scene.kite);

    let attempts = (0..40).map(|_| open(cport));
    let results = futures_join_all(attempts).await;
    let served: Vec<TcpStream> = results
        .into_iter()
        .filter_map(Result::ok)
        .map(|(s, _)| s)
        .collect();
    assert!(!served.is_empty(), "nothing served:\n{}", kite.log());
    assert!(served.len() < 40, "the limit was never hit");
    let n_served = served.len();
    drop(served);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Recovered: every new connection is served again.
    for i in 0..10 {
        let mut answer = None;
        for _ in 0..50 {
            if let Ok(name) = whoami(cport).await {
                answer = Some(name);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            answer.as_deref(),
            Some("b1"),
            "attempt {i}:\n{}",
            kite.log()
        );
    }
    let log = kite.log();
    assert!(
        log.contains("Too many open files") || log.contains("out of file descriptors"),
        "{log}"
    );
    assert!(kite.running(), "{log}");
    eprintln!("served {n_served} of 40 connections with 48 descriptors");
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// 10,000 short connections leave no descriptor and no task behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_short_connections_leak_nothing() {
    let scene = scene("b1", &["--refresh", "1h"]).await;
    let (cport, kite) = (scene.cport, scene.kite);
    let port = cport.to_string();
    let tasks = || async { kite.metric("kite_runtime_tasks", &[]).await as usize };
    let settle = || async {
        for _ in 0..200 {
            if kite
                .metric("kite_connections_active", &[("port", &port)])
                .await
                == 0.0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("connections never closed");
    };
    settle().await;
    let (fds_before, tasks_before) = (kite.open_fds(), tasks().await);

    let workers = (0..20).map(|_| async move {
        for _ in 0..500 {
            let name = whoami(cport).await.unwrap();
            assert_eq!(name, "b1");
        }
    });
    futures_join_all(workers).await;
    settle().await;
    // A leak stays; what is still being closed (the admin endpoint's last
    // answer) goes within moments.
    let pooled = kite.metric("kite_pipes_pooled", &[]).await as usize;
    let fds_after = kite.open_fds_settled(fds_before + 2 * pooled).await;
    let tasks_after = settled(tasks_before, tasks).await;
    let accepted = kite
        .metric("kite_connections_accepted_total", &[("port", &port)])
        .await;
    assert!(accepted >= 10_000.0, "{accepted}");
    // The splice keeps up to 16 empty pipes per thread for reuse, two
    // descriptors each; anything beyond those is a leak.
    assert!(pooled <= 16 * 8, "{pooled} pipes pooled");
    assert!(
        fds_after <= fds_before + 2 * pooled,
        "descriptors: {fds_before} before, {fds_after} after, {pooled} pipes pooled"
    );
    assert!(
        tasks_after <= tasks_before,
        "tasks: {tasks_before} before, {tasks_after} after"
    );
    eprintln!("after 10,000 connections: {fds_after} fds (was {fds_before}), {tasks_after} tasks (was {tasks_before})");
}

/// `--threads 3` starts three proxy threads, which share each port; a second
/// kite on the same port is refused it rather than let into their group,
/// where it would silently take a share of the connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_threads_keep_their_port_to_themselves() {
    let scene = scene("b1", &["--refresh", "1h", "--threads", "3"]).await;
    let (fake, cport, kite) = (&scene.fake, scene.cport, scene.kite);
    let names = kite.thread_names();
    let proxy_threads = names
        .iter()
        .filter(|n| n.starts_with("kite-proxy-"))
        .count();
    assert_eq!(proxy_threads, 3, "threads: {names:?}");

    let second = start_kite(fake, &["--refresh", "1h", "--threads", "2"]);
    second.wait_ready().await;
    assert!(
        second.log_shows("cannot listen").await,
        "the second kite took the port: {}",
        second.log()
    );
    let port = cport.to_string();
    let accepted = || async {
        kite.metric("kite_connections_accepted_total", &[("port", &port)])
            .await
    };
    let before = accepted().await;
    for _ in 0..40 {
        assert_eq!(whoami(cport).await.unwrap(), "b1");
    }
    assert_eq!(accepted().await, before + 40.0, "{}", second.log());
}

/// Discovery, the admin endpoint and signals run on the main thread, one
/// step of ten nice values below the proxy threads, so a discovery round
/// waits for the data path rather than the reverse; the threads that thread
/// starts (the SDK's blocking lookups) inherit its place, and the proxy
/// threads keep the priority kite was started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_runs_below_the_proxy_threads() {
    let own = std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .expect("reading this thread's /proc stat")
        .1;
    let stepped_back = (own + 10).min(19);
    let scene = scene("b1", &["--refresh", "1s", "--threads", "2"]).await;
    let (cport, kite) = (scene.cport, scene.kite);
    // A few rounds and connections, so that whatever threads they start
    // are there to be seen.
    let since = kite.metric("kite_discovery_rounds_total", &[]).await;
    rounds_pass(&kite, since, 2.0).await;
    for _ in 0..10 {
        assert_eq!(whoami(cport).await.unwrap(), "b1");
    }
    let threads = kite.threads();
    let main = threads.iter().find(|t| t.main).expect("the main thread");
    assert_eq!(main.nice, stepped_back, "threads: {threads:?}");
    let (proxy, other): (Vec<_>, Vec<_>) = threads
        .iter()
        .partition(|t| t.name.starts_with("kite-proxy-"));
    assert_eq!(proxy.len(), 2, "threads: {threads:?}");
    assert!(proxy.iter().all(|t| t.nice == own), "threads: {threads:?}");
    assert!(
        other.iter().all(|t| t.nice == stepped_back),
        "threads: {threads:?}"
    );
}

/// Metric `name` of proxy thread `thread`.
async fn thread_metric(kite: &KiteProcess, name: &str, thread: usize) -> f64 {
    let thread = thread.to_string();
    kite.metric(name, &[("thread", thread.as_str())]).await
}

/// The connections each of `n` proxy threads serves, once they add up to
/// `total` (a probe connection may still be closing).
async fn thread_loads(kite: &KiteProcess, n: usize, total: i64) -> Vec<i64> {
    let mut loads = Vec::new();
    for _ in 0..100 {
        loads.clear();
        for thread in 0..n {
            loads.push(thread_metric(kite, "kite_thread_connections", thread).await as i64);
        }
        if loads.iter().sum::<i64>() == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(loads.iter().sum::<i64>(), total, "{loads:?}");
    loads
}

/// Connections are spread evenly over the proxy threads: the kernel's
/// spread by address is evened out at accept, so no thread serves more than
/// four over another (hashing alone would, for 120 connections on 3
/// threads, in nearly nine runs out of ten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_evenly_over_the_proxy_threads() {
    let scene = scene("b1", &["--refresh", "1h", "--threads", "3"]).await;
    let (cport, kite) = (scene.cport, scene.kite);
    const HELD: i64 = 120;
    let mut held = Vec::new();
    for _ in 0..HELD {
        let (conn, name) = open(cport).await.unwrap();
        assert_eq!(name, "b1");
        held.push(conn);
    }
    let loads = thread_loads(&kite, 3, HELD).await;
    let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
    assert!(max - min <= 4, "connections per thread: {loads:?}");
    eprintln!("{HELD} connections on 3 threads: {loads:?}");
}

/// The connections proxy thread `thread` serves that have streamed.
async fn thread_streams(kite: &KiteProcess, thread: usize) -> f64 {
    thread_metric(kite, "kite_thread_streams", thread).await
}

/// Opens four connections through a kite with two proxy threads (Echo
/// backend, name line read), finds a thread that two of them share, and
/// returns it and those two; the other connections are closed.
async fn two_on_one_thread(kite: &KiteProcess, cport: u16) -> (usize, TcpStream, TcpStream) {
    let mut conns: Vec<(TcpStream, usize)> = Vec::new();
    let mut before = thread_loads(kite, 2, 0).await;
    for n in 1..=4 {
        let (conn, name) = open(cport).await.unwrap();
        assert_eq!(name, "b1");
        let after = thread_loads(kite, 2, n).await;
        let thread = (0..2).find(|&t| after[t] > before[t]).unwrap();
        conns.push((conn, thread));
        before = after;
    }
    let busy = [0, 1]
        .into_iter()
        .find(|&t| conns.iter().filter(|c| c.1 == t).count() >= 2)
        .unwrap();
    let mut on_busy = conns.into_iter().filter(|c| c.1 == busy).map(|c| c.0);
    (busy, on_busy.next().unwrap(), on_busy.next().unwrap())
}

/// Two streams on one proxy thread while the other streams nothing: the
/// second moves to the other thread between two bursts, and its bytes
/// arrive intact both ways. (Counted at accept, the two connections look
/// like any other pair.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_on_a_thread_moves_to_the_idle_one() {
    let scene = scene("b1", &["--refresh", "1h", "--threads", "2"]).await;
    let (cport, kite) = (scene.cport, scene.kite);
    let (busy, mut first, second) = two_on_one_thread(&kite, cport).await;

    // The first streams 1 MiB each way and stays open: a stream of its
    // thread from then on.
    let chunk: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
    let mut echoed = vec![0; chunk.len()];
    let (mut rx, mut tx) = first.split();
    let (written, read) = tokio::join!(tx.write_all(&chunk), rx.read_exact(&mut echoed));
    written.unwrap();
    read.unwrap();
    assert!(echoed == chunk, "echo corrupted");
    let streams = thread_streams(&kite, 0).await + thread_streams(&kite, 1).await;
    assert_eq!(streams, 1.0);
    assert_eq!(kite.metric("kite_connections_moved_total", &[]).await, 0.0);

    // The second streams 32 MiB: it moves, once.
    let (progress, _) = tokio::sync::watch::channel(0);
    echo_exchange(second, 32 << 20, progress).await.unwrap();
    assert_eq!(kite.metric("kite_connections_moved_total", &[]).await, 1.0);
    // The first is still where it was, and still works.
    assert_eq!(thread_streams(&kite, busy).await, 1.0);
    first.write_all(b"still here").await.unwrap();
    let mut got = [0; 10];
    first.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"still here");
}

/// The persistent connections proxy thread `thread` serves.
async fn thread_persistent(kite: &KiteProcess, thread: usize) -> f64 {
    thread_metric(kite, "kite_thread_persistent", thread).await
}

/// A small message on an Echo connection, and its echo.
async fn ping(conn: &mut TcpStream, message: &[u8]) {
    conn.write_all(message).await.unwrap();
    let mut echoed = vec![0; message.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut echoed))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(echoed, message);
}

/// Two persistent connections (small exchanges going on past their first
/// 100 ms) on one proxy thread while the other has none: the second moves
/// to the other thread between two exchanges, once, and both keep working.
/// Exchanges within a connection's first 100 ms move nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_persistent_connection_on_a_thread_moves_to_the_idle_one() {
    let scene = scene("b1", &["--refresh", "1h", "--threads", "2"]).await;
    let (cport, kite) = (scene.cport, scene.kite);
    let opened = std::time::Instant::now();
    let (busy, mut first, mut second) = two_on_one_thread(&kite, cport).await;
    // kite made both connections after `opened` and before this.
    let both_open = std::time::Instant::now();
    let moved = || kite.metric("kite_connections_moved_total", &[]);
    let persistent = || async {
        [
            thread_persistent(&kite, 0).await,
            thread_persistent(&kite, 1).await,
        ]
    };

    ping(&mut first, b"one").await;
    // (A machine this slow says nothing about the first 100 ms.)
    if opened.elapsed() < Duration::from_millis(60) {
        assert_eq!(persistent().await, [0.0, 0.0], "short-lived so far");
    }
    assert_eq!(moved().await, 0.0);

    // The first keeps exchanging until it counts as persistent (past its
    // first 100 ms): one against none, so it stays. The second exchanges
    // nothing meanwhile, so it is not counted yet, however slow this is.
    let mut expected = [0.0, 0.0];
    expected[busy] = 1.0;
    for i in 0.. {
        ping(&mut first, b"three").await;
        if persistent().await == expected {
            break;
        }
        assert!(i < 100, "never persistent: {:?}", persistent().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(moved().await, 0.0, "one against none: no move");

    // The second's next exchange, once it too is past its first 100 ms,
    // makes it the second persistent one on that thread: it moves, once.
    let past_100_ms = both_open + Duration::from_millis(150);
    tokio::time::sleep_until(past_100_ms.into()).await;
    ping(&mut second, b"four").await;
    for i in 0.. {
        if moved().await == 1.0 && persistent().await == [1.0, 1.0] {
            break;
        }
        assert!(
            i < 100,
            "moved {}, persistent {:?}",
            moved().await,
            persistent().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        ping(&mut first, b"five").await;
        ping(&mut second, b"six").await;
    }
    assert_eq!(moved().await, 1.0, "nothing moves back");
}

/// Idle connections hold their two sockets and nothing else: the splice
/// takes a pipe only while bytes move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_hold_no_pipes() {
    let scene = scene("b1", &["--refresh", "1h"]).await;
    let (cport, kite) = (scene.cport, scene.kite);
    let before = kite.open_fds();
    let tasks_before = kite.metric("kite_runtime_tasks", &[]).await;
    let mut held = Vec::new();
    for _ in 0..100 {
        // Each reads the backend's name line, so bytes moved once.
        let (conn, name) = open(cport).await.unwrap();
        assert_eq!(name, "b1");
        held.push(conn);
    }
    // A task each, on whichever proxy thread accepted it.
    let want_tasks = tasks_before + held.len() as f64;
    let mut tasks_with = 0.0;
    for _ in 0..100 {
        tasks_with = kite.metric("kite_runtime_tasks", &[]).await;
        if tasks_with >= want_tasks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tasks_with >= want_tasks,
        "tasks: {tasks_before} before, {tasks_with} with {} connections",
        held.len()
    );
    // Two sockets each; eager pipes would add four descriptors each. A
    // pipe still on its way back to the pool counts for a moment, so wait
    // (a while) for the count to get under the bound.
    let bound = |pooled: usize| before + 2 * held.len() + 2 * pooled + 4;
    let (mut with, mut pooled) = (0, 0);
    for _ in 0..100 {
        pooled = kite.metric("kite_pipes_pooled", &[]).await as usize;
        with = kite.open_fds();
        if with <= bound(pooled) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        with <= bound(pooled),
        "{} idle connections: {before} descriptors before, {with} with them, {pooled} pipes pooled",
        held.len()
    );
    eprintln!(
        "{} idle connections: {before} descriptors before, {with} with them, {pooled} pipes pooled",
        held.len()
    );
}

/// `/metrics`, read by a Prometheus text-format parser, counts what the
/// test did: connections, bytes both ways, failures, API calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let fake = FakeAws::start().await;
    let backend = Backend::start("b1", "127.0.0.2", 0, Mode::Echo).await;
    let (cport, dead_port) = (listen_port(), listen_port());
    let dead_host_port = listen_port(); // nothing listens there
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition(
            "web",
            1,
            "bridge",
            &app(&[(cport, None), (dead_port, None)]),
        );
        let mut task = bridge_task(&td, &ci, cport, &backend);
        task.containers[0]
            .network_bindings
            .push(("0.0.0.0".into(), dead_port, dead_host_port));
        c.add_task(task);
    });
    // One discovery round only, so the fake's call log is final.
    let kite = start_kite(&fake, &["--refresh", "1h"]);
    kite.wait_ready().await;
    wait_serving(&kite, cport).await; // one connection

    let mut up = 0u64;
    let mut down = ("b1\n".len() + 32) as u64; // the probe: name line and trailer
    for len in [0usize, 1, 1000, 70_000, 1 << 20] {
        let (s, _) = open(cport).await.unwrap();
        let (tx, _rx) = tokio::sync::watch::channel(0);
        echo_exchange(s, len, tx).await.unwrap();
        up += len as u64;
        down += ("b1\n".len() + len + 32) as u64;
    }
    // The dead port: the client is closed, the failure counted.
    assert!(whoami(dead_port).await.is_err());

    assert_eq!(
        kite.get("/healthz").await.unwrap(),
        (200, "ok\n".to_owned())
    );
    let (status, body) = kite.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    let p = cport.to_string();
    let dp = dead_port.to_string();
    let get = |name: &str, labels: &[(&str, &str)]| sample(&body, name, labels);
    assert_eq!(
        get("kite_connections_accepted_total", &[("port", &p)]),
        6.0,
        "{body}"
    );
    assert_eq!(get("kite_connections_active", &[("port", &p)]), 0.0);
    assert_eq!(
        get("kite_bytes_to_backend_total", &[("port", &p)]),
        up as f64
    );
    assert_eq!(
        get("kite_bytes_to_client_total", &[("port", &p)]),
        down as f64
    );
    assert_eq!(get("kite_connections_failed_total", &[("port", &dp)]), 1.0);
    let dead_backend = format!("127.0.0.2:{dead_host_port}");
    assert_eq!(
        get(
            "kite_backend_connect_failures_total",
            &[("backend", &dead_backend)]
        ),
        1.0
    );
    assert_eq!(
        get(
            "kite_backend_ejections_total",
            &[("backend", &dead_backend)]
        ),
        1.0
    );
    assert_eq!(get("kite_targets", &[("port", &p)]), 1.0);
    assert_eq!(get("kite_discovery_rounds_total", &[]), 1.0);
    assert_eq!(get("kite_discovery_errors_total", &[]), 0.0);
    assert_eq!(get("kite_discovery_round_duration_seconds_count", &[]), 1.0);
    assert!(get("kite_snapshot_age_seconds", &[]) >= 0.0);
    assert!(get("kite_runtime_tasks", &[]) > 0.0);
    // The connections open to each backend (what least-conn compares):
    // none now, one while one is held.
    let live_backend = backend.addr.to_string();
    let open_to = |body: &str| {
        sample(
            body,
            "kite_backend_connections_open",
            &[("backend", &live_backend)],
        )
    };
    assert!(body.contains("kite_backend_connections_open{"), "{body}");
    assert_eq!(open_to(&body), 0.0);
    let (held, _) = open(cport).await.unwrap();
    let (_, body) = kite.get("/metrics").await.unwrap();
    assert_eq!(open_to(&body), 1.0, "{body}");
    drop(held);
    let calls = fake.calls();
    for op in [
        "ListTasks",
        "DescribeTasks",
        "DescribeTaskDefinition",
        "DescribeContainerInstances",
        "DescribeInstances",
    ] {
        let n = calls.iter().filter(|c| *c == op).count();
        assert!(n >= 1, "{op} never called: {calls:?}");
        assert_eq!(
            get("kite_aws_api_calls_total", &[("operation", op)]),
            n as f64,
            "{op}"
        );
    }
}

/// Throttled calls are counted per operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_are_counted() {
    let (fake, _backend, cport) = one_task_cluster("b1").await;
    let kite = start_kite(&fake, &["--refresh", "100ms"]);
    kite.wait_ready().await;
    fake.set_fault(Fault::Throttle { every: 1 });
    for _ in 0..200 {
        if kite
            .metric(
                "kite_aws_api_throttled_total",
                &[("operation", "ListTasks")],
            )
            .await
            >= 2.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        kite.metric(
            "kite_aws_api_throttled_total",
            &[("operation", "ListTasks")]
        )
        .await
            >= 2.0,
        "{}",
        kite.log()
    );
    fake.set_fault(Fault::None);
    assert_eq!(whoami(cport).await.unwrap(), "b1");
}

/// `--max-connections`: one more waits briefly, then is refused and
/// counted. `--idle-timeout`: idle connections are closed, busy ones not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_idle_timeout() {
    let limits = ["--max-connections", "2", "--idle-timeout", "1500ms"];
    let scene = scene("b1", &[&["--refresh", "1h"][..], &limits].concat()).await;
    let (cport, kite) = (scene.cport, scene.kite);
    let p = cport.to_string();

    let (mut held1, _) = open(cport).await.unwrap();
    let (held2, _) = open(cport).await.unwrap();
    // A third is refused: closed without reaching a backend.
    let refused = open(cport).await;
    assert!(refused.is_err(), "a third connection was served");
    assert_eq!(
        kite.metric("kite_connections_refused_total", &[("port", &p)])
            .await,
        1.0
    );
    assert!(
        kite.log_shows("refusing connections").await,
        "{}",
        kite.log()
    );
    drop(held2);

    // held1 stays busy: a ping every 200 ms for 3 s, each echoed.
    for _ in 0..15 {
        held1.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), held1.read_exact(&mut pong))
            .await
            .expect("busy connection stalled")
            .expect("busy connection was closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then idle: kite closes it.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), held1.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "idle connection not closed");
    assert_eq!(
        kite.metric("kite_connections_idle_closed_total", &[("port", &p)])
            .await,
        1.0
    );
    // Below the limit again (held2 dropped, held1 closed): served, and the
    // end of the refusals logged once.
    assert_eq!(whoami(cport).await.unwrap(), "b1");
    assert!(
        kite.log_shows("accepting connections again").await,
        "{}",
        kite.log()
    );
    assert_eq!(
        kite.log().matches("accepting connections again").count(),
        1,
        "{}",
        kite.log()
    );
}
