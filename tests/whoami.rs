//! `kite whoami` and the defaults taken from the task kite runs in, with
//! fake task metadata endpoints and a fake ECS agent on 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use common::*;

// === a fake metadata endpoint / ECS agent ===

#[derive(Default)]
struct Routes {
    /// Answers by path and query.
    answers: BTreeMap<String, Value>,
    /// The paths asked, in order.
    asked: Vec<String>,
}

/// A tiny HTTP server answering fixed JSON by path; it stops when dropped.
struct FakeHttp {
    addr: SocketAddr,
    routes: Arc<Mutex<Routes>>,
    stop: CancellationToken,
}

impl FakeHttp {
    async fn start(answers: &[(&str, Value)]) -> FakeHttp {
        let routes = Arc::new(Mutex::new(Routes {
            answers: answers
                .iter()
                .map(|(p, v)| (p.to_string(), v.clone()))
                .collect(),
            asked: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(routes.clone());
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        FakeHttp { addr, routes, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn asked(&self) -> Vec<String> {
        self.routes.lock().unwrap().asked.clone()
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(State(routes): State<Arc<Mutex<Routes>>>, uri: Uri) -> Response {
    let key = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let mut routes = routes.lock().unwrap();
    routes.asked.push(key.clone());
    match routes.answers.get(&key) {
        Some(v) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "404 page not found").into_response(),
    }
}

// === documented shapes: an EC2 task and a Fargate task ===

const EC2_DOCKER_ID: &str = "7c2f9a41be0d5e8f13a6c4d9b27e80f5a1c3e5d7f90b2a4c6e8d0f1a3b5c7d9e";
const EC2_TASK_ARN: &str =
    "arn:aws:ecs:us-west-2:111122223333:task/default/4b9d2e7c1a8f4e3d9c6b5a4f3e2d1c0b";

fn ec2_container() -> Value {
    json!({
        "DockerId": EC2_DOCKER_ID,
        "Name": "curl",
        "DockerName": "ecs-curltest-26-curl-d2b6a8e4c0f2a4b6c801",
        "Image": "111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest:latest",
        "ImageID": "sha256:d691691e9652791a60114e67b365688d20d19940dde7c4736ea30e660d8d3553",
        "Labels": {
            "com.amazonaws.ecs.cluster": "default",
            "com.amazonaws.ecs.container-name": "curl",
            "com.amazonaws.ecs.task-arn": EC2_TASK_ARN,
            "com.amazonaws.ecs.task-definition-family": "curltest",
            "com.amazonaws.ecs.task-definition-version": "26"
        },
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 10, "Memory": 128},
        "CreatedAt": "2020-10-02T00:15:07.620912337Z",
        "StartedAt": "2020-10-02T00:15:08.062559351Z",
        "Type": "NORMAL",
        "LogDriver": "awslogs",
        "ContainerARN": "arn:aws:ecs:us-west-2:111122223333:container/0206b271-b33f-47ab-86c6-a0ba208a70a9",
        "Networks": [{
            "NetworkMode": "awsvpc",
            "IPv4Addresses": ["10.0.2.106"],
            "AttachmentIndex": 0,
            "MACAddress": "12:34:56:78:9a:bc",
            "IPv4SubnetCIDRBlock": "10.0.2.0/24",
            "PrivateDNSName": "ip-10-0-2-106.us-west-2.compute.internal",
            "SubnetGatewayIpv4Address": "10.0.2.1/24"
        }]
    })
}

fn ec2_task() -> Value {
    json!({
        "Cluster": "default",
        "TaskARN": EC2_TASK_ARN,
        "Family": "curltest",
        "ServiceName": "MyService",
        "Revision": "26",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "PullStartedAt": "2020-10-02T00:43:06.202617438Z",
        "PullStoppedAt": "2020-10-02T00:43:06.31288465Z",
        "AvailabilityZone": "us-west-2b",
        "VPCID": "vpc-1234567890abcdef0",
        "LaunchType": "EC2",
        "ContainerInstanceARN": "arn:aws:ecs:us-west-2:111122223333:container-instance/default/9d2f8b1e6c4a4f7e8b3d5a1c2e9f0b7d",
        "Containers": [ec2_container()]
    })
}

const FARGATE_TASK_ARN: &str =
    "arn:aws:ecs:eu-west-1:111122223333:task/prod-east/a1b2c3d4e5f60718293a4b5c6d7e8f90";
const FARGATE_CLUSTER: &str = "arn:aws:ecs:eu-west-1:111122223333:cluster/prod-east";
const FARGATE_DOCKER_ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90-3140519215";

fn fargate_container() -> Value {
    json!({
        "DockerId": FARGATE_DOCKER_ID,
        "Name": "web",
        "DockerName": "web",
        "Image": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/web:1.4",
        "ImageID": "sha256:8b1a6e1e2c6f1d0c5e7b3f5a9c2d4e6f8a0b1c3d5e7f9a1b3c5d7e9f0a2b4c6d",
        "Labels": {
            "com.amazonaws.ecs.cluster": FARGATE_CLUSTER,
            "com.amazonaws.ecs.container-name": "web",
            "com.amazonaws.ecs.task-arn": FARGATE_TASK_ARN,
            "com.amazonaws.ecs.task-definition-family": "web",
            "com.amazonaws.ecs.task-definition-version": "12"
        },
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 2},
        "CreatedAt": "2023-02-08T18:40:59.052612325Z",
        "StartedAt": "2023-02-08T18:41:00.110574411Z",
        "Type": "NORMAL",
        "Networks": [{
            "NetworkMode": "awsvpc",
            "IPv4Addresses": ["172.31.42.189"],
            "AttachmentIndex": 0,
            "MACAddress": "0a:b1:c2:d3:e4:f5",
            "IPv4SubnetCIDRBlock": "172.31.32.0/20",
            "DomainNameServers": ["172.31.0.2"],
            "PrivateDNSName": "ip-172-31-42-189.eu-west-1.compute.internal",
            "SubnetGatewayIpv4Address": "172.31.32.1/20"
        }],
        "Snapshotter": "overlayfs"
    })
}

fn fargate_task() -> Value {
    json!({
        "Cluster": FARGATE_CLUSTER,
        "TaskARN": FARGATE_TASK_ARN,
        "Family": "web",
        "Revision": "12",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 0.25, "Memory": 512},
        "PullStartedAt": "2023-02-08T18:40:51.356113478Z",
        "PullStoppedAt": "2023-02-08T18:40:58.718542359Z",
        "AvailabilityZone": "eu-west-1c",
        "LaunchType": "FARGATE",
        "Containers": [fargate_container()],
        "ClockDrift": {
            "ClockErrorBound": 0.446931,
            "ReferenceTimestamp": "2023-02-08T18:40:00Z",
            "ClockSynchronizationStatus": "SYNCHRONIZED"
        },
        "EphemeralStorageMetrics": {"Utilized": 261, "Reserved": 20496}
    })
}

/// A v4 endpoint at `/v4/ID` serving `container` and `task`.
async fn metadata_v4(container: Value, task: Value) -> (FakeHttp, String) {
    let fake = FakeHttp::start(&[
        ("/v4/0f1e2d3c-4b5a", container),
        ("/v4/0f1e2d3c-4b5a/task", task),
    ])
    .await;
    let base = fake.url("/v4/0f1e2d3c-4b5a");
    (fake, base)
}

// === running kite ===

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs kite off the async runtime (the fakes live on it).
async fn kite(args: &[&str], env: Vec<(String, String)>) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kite_command(&args, &env).output().expect("running kite")
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A cgroup file with `text`, unique to this test run.
fn cgroup_file(text: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "kite-whoami-{}-{}.cgroup",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `kite ARGS` with `vars` and `KITE_CGROUP_PATH` naming a cgroup file
/// that holds `cgroup` (removed afterwards): the output, how long kite took,
/// and the file's path.
async fn kite_in_cgroup(
    args: &[&str],
    cgroup: &str,
    vars: &[(&str, &str)],
) -> (Output, Duration, String) {
    let file = cgroup_file(cgroup);
    let path = file.to_str().unwrap().to_owned();
    let mut vars = env(vars);
    vars.push(("KITE_CGROUP_PATH".into(), path.clone()));
    let started = Instant::now();
    let out = kite(args, vars).await;
    let took = started.elapsed();
    let _ = std::fs::remove_file(&file);
    (out, took, path)
}

/// The value on the text line that starts with `key`.
fn line_value(text: &str, key: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no '{key}' line in:\n{text}"));
    line[key.len()..].trim().to_owned()
}

// === kite whoami ===

#[tokio::test]
async fn whoami_on_ec2_from_metadata_v4() {
    let (fake, base) = metadata_v4(ec2_container(), ec2_task()).await;
    let out = kite(
        &["whoami"],
        env(&[("ECS_CONTAINER_METADATA_URI_V4", &base)]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(line_value(&text, "cluster"), "default", "{text}");
    assert_eq!(line_value(&text, "task"), EC2_TASK_ARN, "{text}");
    assert_eq!(
        line_value(&text, "task definition"),
        "curltest:26",
        "{text}"
    );
    assert_eq!(line_value(&text, "availability zone"), "us-west-2b");
    assert_eq!(line_value(&text, "region"), "us-west-2");
    assert_eq!(line_value(&text, "container id"), EC2_DOCKER_ID);
    assert_eq!(line_value(&text, "container name"), "curl");
    assert_eq!(line_value(&text, "launch type"), "EC2");
    assert_eq!(line_value(&text, "source"), "metadata-v4");
    // The values are aligned in one column.
    let columns: Vec<usize> = text
        .lines()
        .map(|l| l.len() - l.split_once("  ").unwrap().1.trim_start().len())
        .collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "{text}");
    assert!(
        fake.asked().contains(&"/v4/0f1e2d3c-4b5a/task".to_owned()),
        "{:?}",
        fake.asked()
    );
}

#[tokio::test]
async fn whoami_on_fargate_json() {
    let (_fake, base) = metadata_v4(fargate_container(), fargate_task()).await;
    let out = kite(
        &["whoami", "--json"],
        env(&[("ECS_CONTAINER_METADATA_URI_V4", &base)]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["cluster"], FARGATE_CLUSTER);
    assert_eq!(json["task_arn"], FARGATE_TASK_ARN);
    assert_eq!(json["family"], "web");
    assert_eq!(json["revision"], "12");
    assert_eq!(json["availability_zone"], "eu-west-1c");
    assert_eq!(json["region"], "eu-west-1");
    assert_eq!(json["container_id"], FARGATE_DOCKER_ID);
    assert_eq!(json["container_name"], "web");
    assert_eq!(json["launch_type"], "FARGATE");
    assert_eq!(json["container_instance_arn"], Value::Null);
    assert_eq!(json["source"], "metadata-v4");
}

#[tokio::test]
async fn whoami_from_metadata_v3_when_v4_is_unset() {
    let fake =
        FakeHttp::start(&[("/v3/5e6f", ec2_container()), ("/v3/5e6f/task", ec2_task())]).await;
    let out = kite(
        &["whoami", "--json"],
        env(&[("ECS_CONTAINER_METADATA_URI", &fake.url("/v3/5e6f"))]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["source"], "metadata-v3");
    assert_eq!(json["task_arn"], EC2_TASK_ARN);
}

#[tokio::test]
async fn whoami_from_cgroup_and_agent_introspection() {
    let agent = FakeHttp::start(&[
        (
            &format!("/v1/tasks?dockerid={EC2_DOCKER_ID}"),
            json!({
                "Arn": EC2_TASK_ARN,
                "DesiredStatus": "RUNNING",
                "KnownStatus": "RUNNING",
                "Family": "curltest",
                "Version": "26",
                "Containers": [
                    {"DockerId": "0000000000000000000000000000000000000000000000000000000000000001",
                     "DockerName": "ecs-curltest-26-log-aa00", "Name": "log"},
                    {"DockerId": EC2_DOCKER_ID,
                     "DockerName": "ecs-curltest-26-curl-d2b6a8e4c0f2a4b6c801", "Name": "curl"}
                ]
            }),
        ),
        (
            "/v1/metadata",
            json!({
                "Cluster": "default",
                "ContainerInstanceArn": "arn:aws:ecs:us-west-2:111122223333:container-instance/default/9d2f8b1e6c4a4f7e8b3d5a1c2e9f0b7d",
                "Version": "Amazon ECS Agent - v1.80.0 (a1b2c3d4)"
            }),
        ),
    ])
    .await;
    let cgroup = format!(
        "12:pids:/ecs/4b9d2e7c1a8f4e3d9c6b5a4f3e2d1c0b/{EC2_DOCKER_ID}\n\
         11:cpuset:/ecs/4b9d2e7c1a8f4e3d9c6b5a4f3e2d1c0b/{EC2_DOCKER_ID}\n"
    );
    let (out, _, _) = kite_in_cgroup(
        &["whoami"],
        &cgroup,
        &[("KITE_ECS_AGENT_URI", &agent.url(""))],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(line_value(&text, "cluster"), "default", "{text}");
    assert_eq!(line_value(&text, "task"), EC2_TASK_ARN);
    assert_eq!(line_value(&text, "task definition"), "curltest:26");
    assert_eq!(line_value(&text, "region"), "us-west-2");
    assert_eq!(line_value(&text, "container id"), EC2_DOCKER_ID);
    assert_eq!(line_value(&text, "container name"), "curl");
    assert_eq!(line_value(&text, "source"), "introspection");
    assert!(
        agent
            .asked()
            .contains(&format!("/v1/tasks?dockerid={EC2_DOCKER_ID}")),
        "{:?}",
        agent.asked()
    );
}

#[tokio::test]
async fn whoami_outside_ecs_exits_1_naming_the_sources() {
    let agent = FakeHttp::start(&[]).await;
    let (out, took, cgroup) = kite_in_cgroup(
        &["whoami"],
        "0::/\n",
        &[("KITE_ECS_AGENT_URI", &agent.url(""))],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("no ECS metadata found"), "{err}");
    assert!(err.contains("ECS_CONTAINER_METADATA_URI_V4"), "{err}");
    assert!(err.contains(&cgroup), "{err}");
    assert!(took < Duration::from_secs(10), "it must not hang");
    // Without a container id there is nothing to ask the agent about.
    assert!(agent.asked().is_empty(), "{:?}", agent.asked());

    // The agent is asked once an id is found; its silence is named too.
    let (out, _, _) = kite_in_cgroup(
        &["whoami", "--json"],
        &format!("/docker/{EC2_DOCKER_ID}\n"),
        &[("KITE_ECS_AGENT_URI", &agent.url(""))],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("no ECS metadata found"), "{err}");
    assert!(err.contains(EC2_DOCKER_ID) && err.contains("404"), "{err}");
}

#[tokio::test]
async fn whoami_with_a_dead_metadata_endpoint_fails_fast() {
    let dead = format!("http://127.0.0.1:{}/v4/gone", listen_port());
    let (out, took, _) = kite_in_cgroup(
        &["whoami"],
        "0::/\n",
        &[("ECS_CONTAINER_METADATA_URI_V4", &dead)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no ECS metadata found") && err.contains(&dead),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "it must not hang");
}

#[tokio::test]
async fn whoami_falls_back_to_the_container_labels() {
    // An agent whose `/task` path fails: the container's labels still say.
    let fake = FakeHttp::start(&[("/v4/0f1e2d3c-4b5a", ec2_container())]).await;
    let out = kite(
        &["whoami", "--json"],
        env(&[(
            "ECS_CONTAINER_METADATA_URI_V4",
            &fake.url("/v4/0f1e2d3c-4b5a"),
        )]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["cluster"], "default");
    assert_eq!(json["task_arn"], EC2_TASK_ARN);
    assert_eq!(json["family"], "curltest");
    assert_eq!(json["revision"], "26");
    assert_eq!(json["region"], "us-west-2");
    assert_eq!(json["container_name"], "curl");
}

#[tokio::test]
async fn whoami_with_a_silent_metadata_endpoint_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v4/silent", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let (out, took, _) = kite_in_cgroup(
        &["whoami"],
        "0::/\n",
        &[("ECS_CONTAINER_METADATA_URI_V4", &base)],
    )
    .await;
    hold.abort();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no answer within"),
        "{}",
        stderr(&out)
    );
    assert!(
        took < Duration::from_secs(8),
        "bounded by the 2 s timeout: {took:?}"
    );
}

// === defaults from the task in `kite targets` ===

/// A fake AWS whose only cluster is `prod-east`, with one web task.
async fn prod_east() -> FakeAws {
    let fake = FakeAws::start().await;
    fake.edit(|c| {
        c.name = "prod-east".into();
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 12, "bridge", &app(&[(80, None)]));
        let mut t = TaskSpec {
            container_instance_arn: Some(ci),
            ..TaskSpec::new(&td)
        };
        t.containers = vec![TaskContainer {
            network_bindings: vec![("0.0.0.0".into(), 80, 32771)],
            ..TaskContainer::new("app")
        }];
        c.add_task(t);
    });
    fake
}

#[tokio::test]
async fn targets_uses_the_tasks_own_cluster_unless_told() {
    let fake = prod_east().await;
    let (metadata, base) = metadata_v4(fargate_container(), fargate_task()).await;
    let targets = ["targets", "--family", "web", "--name", "app"];

    let mut e = fake.child_env();
    e.extend(env(&[("ECS_CONTAINER_METADATA_URI_V4", &base)]));
    let out = kite(&targets, e).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("127.0.0.2:32771"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the task's own"),
        "where the cluster came from is logged: {}",
        stderr(&out)
    );
    assert!(fake.call_count("ListTasks") >= 1);

    // An explicit --cluster (or KITE_CLUSTER) wins, and the metadata
    // endpoint is not even asked.
    let asked_before = metadata.asked().len();
    let mut e = fake.child_env();
    e.extend(env(&[("ECS_CONTAINER_METADATA_URI_V4", &base)]));
    let mut args = targets.to_vec();
    args.extend(["--cluster", "staging"]);
    let out = kite(&args, e).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Cluster not found"),
        "{}",
        stderr(&out)
    );

    let mut e = fake.child_env();
    e.extend(env(&[
        ("ECS_CONTAINER_METADATA_URI_V4", &base),
        ("KITE_CLUSTER", "staging"),
    ]));
    let out = kite(&targets, e).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        metadata.asked().len(),
        asked_before,
        "{:?}",
        metadata.asked()
    );

    // Outside a task: `default`, which this fake does not have.
    let out = kite(&targets, fake.child_env()).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Cluster not found"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn targets_takes_the_tasks_region_when_none_is_configured() {
    let fake = prod_east().await;
    let (_metadata, base) = metadata_v4(fargate_container(), fargate_task()).await;
    let targets = ["targets", "--family", "web", "--name", "app"];
    let no_region: Vec<(String, String)> = fake
        .child_env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_REGION")
        .collect();

    let mut e = no_region.clone();
    e.extend(env(&[("ECS_CONTAINER_METADATA_URI_V4", &base)]));
    let out = kite(&targets, e).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("127.0.0.2:32771"), "{}", stdout(&out));
    let log = stderr(&out);
    assert!(
        log.contains("no AWS region configured") && log.contains("eu-west-1"),
        "{log}"
    );

    // Without the metadata endpoint it is still a clear start-up error.
    let out = kite(&targets, no_region).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no AWS region"), "{}", stderr(&out));
}

// === the zone from the task in `kite proxy` ===

/// `kite proxy --zone-affinity` takes its zone from the task metadata
/// endpoint: of two tasks, the one in the task's zone (eu-west-1c, the
/// Fargate task's) takes every connection, and the connections count as
/// the same zone's. Without the endpoint, and no --zone, it warns once,
/// naming the fix, and picks from every zone.
#[tokio::test]
async fn proxy_takes_its_zone_from_the_task() {
    let near = Backend::start("near", "127.0.0.2", 0, Mode::Echo).await;
    let far = Backend::start("far", "127.0.0.3", 0, Mode::Echo).await;
    let fake = FakeAws::start().await;
    let cport = listen_port();
    fake.edit(|c| {
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        for (backend, ip, zone) in [
            (&near, "127.0.0.2", "eu-west-1c"),
            (&far, "127.0.0.3", "eu-west-1a"),
        ] {
            let ci = c.add_instance(ip, None);
            c.add_task(TaskSpec {
                availability_zone: Some(zone.into()),
                ..bridge_task(&td, &ci, cport, backend)
            });
        }
    });
    let (_metadata, base) = metadata_v4(fargate_container(), fargate_task()).await;
    let start = |metadata: Option<&str>| {
        let mut e = fake.child_env();
        if let Some(base) = metadata {
            e.extend(env(&[("ECS_CONTAINER_METADATA_URI_V4", base)]));
        }
        // The fake's cluster, not the task's own.
        let flags = [
            "--zone-affinity",
            "--zone-min-targets",
            "1",
            "--cluster",
            "default",
        ];
        proxy_process(&flags, &e, None)
    };

    let kite = start(Some(&base));
    kite.wait_ready().await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        seen.insert(whoami(cport).await.expect("a connection through kite"));
    }
    assert_eq!(seen, ["near".to_owned()].into(), "{}", kite.log());
    let same = kite
        .metric("kite_connections_by_zone_total", &[("zone", "same")])
        .await;
    assert_eq!(same, 20.0, "{}", kite.log());
    drop(kite);

    let kite = start(None);
    kite.wait_ready().await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        seen.insert(whoami(cport).await.expect("a connection through kite"));
    }
    assert_eq!(seen.len(), 2, "every zone: {seen:?}");
    let log = kite.log();
    assert_eq!(
        log.matches("does not know its own zone").count(),
        1,
        "{log}"
    );
    assert!(log.contains("set --zone"), "{log}");
}
