//! `kite attach` end to end: the kite binary against the fake ECS/EC2
//! endpoint, waiting for RUNNING, then stdin/stdout or `--listen` to real
//! TCP backends on 127.0.0.x, and `--run`.

mod attach_child;
mod common;

use std::process::Output;
use std::time::Duration;

use attach_child::{kite_attach, text};
use common::*;
use kite::config::arn::last_segment as id;

/// Runs `kite attach ARGS` with `input` on stdin (then end of file).
async fn attach(fake: &FakeAws, args: &[&str], input: &[u8]) -> Output {
    let cmd = kite_attach(fake, args, &[]);
    attach_child::run(cmd, input, Duration::from_secs(60)).await
}

/// A bridge task of family `web` on an instance at 127.0.0.1 whose
/// container "app" maps `cport` to the backend; its ARN.
fn bridge(fake: &FakeAws, backend: &Backend, cport: u16) -> String {
    fake.edit(|c| {
        let ci = c.add_instance(&backend.addr.ip().to_string(), None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci, cport, backend))
    })
}

#[tokio::test]
async fn waits_through_pending_then_talks_over_stdio_bridge() {
    let fake = FakeAws::start().await;
    let b = Backend::start("bridge-task", "127.0.0.2", 0, Mode::Echo).await;
    let arn = bridge(&fake, &b, 8080);
    fake.edit(|c| {
        c.task_mut(&arn).unwrap()["lastStatus"] = "PROVISIONING".into();
        c.script(&arn, &["PROVISIONING", "PENDING", "PENDING", "RUNNING"]);
    });
    let out = attach(&fake, &["--task", id(&arn), "--poll", "10ms"], b"hello\n").await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // The echo backend: its name, the echo, then the sha256 of what it got,
    // which it sends only after kite half-closed at the end of stdin.
    assert!(stdout.starts_with("bridge-task\nhello\n"), "{stdout:?}");
    assert_eq!(out.stdout.len(), "bridge-task\nhello\n".len() + 32);
    let p = stderr.find("is PROVISIONING").expect(&stderr);
    let q = stderr.find("is PENDING").expect(&stderr);
    let r = stderr.find("is RUNNING").expect(&stderr);
    assert!(p < q && q < r, "{stderr}");
    assert_eq!(stderr.matches("is PENDING").count(), 1, "{stderr}");
    assert_eq!(b.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stdio_to_an_awsvpc_task_by_new_arn_with_several_ports() {
    let fake = FakeAws::start().await;
    let b = Backend::start("eni-task", "127.0.0.7", 0, Mode::AnswerAfterEof(100_000)).await;
    let arn = fake.edit(|c| {
        let td = c.add_task_definition("api", 2, "awsvpc", &app(&[(b.port(), None), (9, None)]));
        c.add_task(TaskSpec {
            eni: Some(("eni-0a".into(), "127.0.0.7".into())),
            containers: vec![TaskContainer::new("app")],
            ..TaskSpec::new(&td)
        })
    });
    let port = b.port().to_string();
    let out = attach(&fake, &["--task", &arn, "--port", &port], b"request").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut want = b"eni-task\n".to_vec();
    want.extend(pattern(100_000));
    assert!(out.stdout == want, "got {} bytes", out.stdout.len());

    // Without --port the choice is the user's: the error lists the ports.
    let out = attach(&fake, &["--task", &arn], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("several ports") && err.contains("--port"),
        "{err}"
    );
}

#[tokio::test]
async fn listen_forwards_many_connections_to_the_one_task() {
    let fake = FakeAws::start().await;
    let one = Backend::start("one", "127.0.0.3", 0, Mode::Echo).await;
    let two = Backend::start("two", "127.0.0.4", 0, Mode::Echo).await;
    let arn = bridge(&fake, &one, 80);
    fake.edit(|c| {
        // Another task of the same family: attach must not use it.
        let ci = c.add_instance("127.0.0.4", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(80, None)]));
        c.add_task(bridge_task(&td, &ci, 80, &two));
    });
    let port = listen_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = kite_attach(&fake, &["--task", id(&arn), "--listen", &listen], &[])
        .spawn()
        .unwrap();
    let mut names = Vec::new();
    for _ in 0..20 {
        match whoami(port).await {
            Ok(name) => names.push(name),
            Err(_) if names.is_empty() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("connection through --listen failed: {e}"),
        }
        if names.len() == 5 {
            break;
        }
    }
    assert_eq!(names, vec!["one"; 5]);
    assert_eq!(two.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn stopped_task_fails_at_once_with_its_reason() {
    let fake = FakeAws::start().await;
    let b = Backend::start("x", "127.0.0.5", 0, Mode::Echo).await;
    let arn = bridge(&fake, &b, 80);
    fake.edit(|c| {
        let t = c.task_mut(&arn).unwrap();
        t["lastStatus"] = "STOPPED".into();
        t["desiredStatus"] = "STOPPED".into();
        t["stoppedReason"] = "Essential container in task exited".into();
    });
    let out = attach(&fake, &["--task", id(&arn), "--wait", "10m"], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("has stopped: Essential container in task exited"),
        "{err}"
    );
    assert_eq!(fake.call_count("DescribeTasks"), 1);

    // A task that stops while kite waits.
    let arn = bridge(&fake, &b, 81);
    fake.edit(|c| {
        c.task_mut(&arn).unwrap()["lastStatus"] = "PENDING".into();
        c.script(
            &arn,
            &["PENDING", "STOPPED:CannotPullContainerError: no such image"],
        );
    });
    let out = attach(&fake, &["--task", &arn, "--poll", "10ms"], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("is PENDING"), "{err}");
    assert!(
        err.contains("CannotPullContainerError: no such image"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_task_and_timeout() {
    let fake = FakeAws::start().await;
    let out = attach(&fake, &["--task", "0123456789abcdef0123456789abcdef"], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("task 0123456789abcdef0123456789abcdef not found in cluster default"),
        "{err}"
    );

    let b = Backend::start("slow", "127.0.0.6", 0, Mode::Echo).await;
    let arn = bridge(&fake, &b, 80);
    fake.edit(|c| c.task_mut(&arn).unwrap()["lastStatus"] = "PENDING".into());
    let args = ["--task", id(&arn), "--wait", "200ms", "--poll", "20ms"];
    let out = attach(&fake, &args, b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("still PENDING after 200ms (--wait)"), "{err}");
    assert_eq!(b.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bad_names_and_ports_are_named() {
    let fake = FakeAws::start().await;
    let b = Backend::start("x", "127.0.0.8", 0, Mode::Echo).await;
    let arn = bridge(&fake, &b, 80);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--name", "db"],
            "no container named 'db' (its containers: app)",
        ),
        (
            &["--port", "443"],
            "does not expose port 443 (it exposes 80)",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--task", id(&arn)];
        args.extend_from_slice(extra);
        let out = attach(&fake, &args, b"").await;
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{extra:?}: {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1);
    }
    // A backend that is gone: the error names the task and address.
    b.kill();
    let out = attach(&fake, &["--task", id(&arn), "--connect-timeout", "2s"], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to port 80 of task {}", id(&arn))),
        "{err}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let fake = FakeAws::start().await;
    let other = "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef0123456789abcdef";
    let cases: &[(&[&str], &str)] = &[
        (&["--task", "nope"], "'nope' is not a task id"),
        (&[], "--task"),
        (
            &["--task", other, "--cluster", "staging"],
            "does not match the cluster",
        ),
        (
            &["--task", "0123456789abcdef0123456789abcdef", "--keep"],
            "--run",
        ),
        (
            &[
                "--task",
                "0123456789abcdef0123456789abcdef",
                "--docker",
                "--listen",
                "127.0.0.1:1",
            ],
            "--listen",
        ),
        (
            &[
                "--task",
                "0123456789abcdef0123456789abcdef",
                "--docker",
                "--docker-host",
                "ftp://x",
            ],
            "not a Docker host",
        ),
        (
            &[
                "--task",
                "0123456789abcdef0123456789abcdef",
                "--detach-keys",
                "ctrl-1",
            ],
            "not a key",
        ),
    ];
    for (args, want) in cases {
        let out = attach(&fake, args, b"").await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(fake.calls().is_empty(), "usage errors call no API");
}

#[tokio::test]
async fn run_starts_attaches_and_stops_the_task() {
    let fake = FakeAws::start().await;
    let b = Backend::start("fresh", "127.0.0.9", 0, Mode::Echo).await;
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.9", None);
        c.add_task_definition("batch", 3, "bridge", &app(&[(7000, None)]));
        c.run_template = Some(bridge_task("", &ci, 7000, &b));
        c.run_script = ["PROVISIONING", "PENDING", "RUNNING"]
            .map(String::from)
            .to_vec();
    });
    let out = attach(&fake, &["--run", "batch:3", "--poll", "10ms"], b"ping\n").await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("fresh\nping\n"), "{stdout:?}");
    assert!(stderr.contains("started task"), "{stderr}");
    assert!(
        stderr.contains("is PENDING") && stderr.contains("is RUNNING"),
        "{stderr}"
    );
    let calls = fake.calls();
    let run = calls.iter().position(|c| c == "RunTask").expect("RunTask");
    let stop = calls
        .iter()
        .position(|c| c == "StopTask")
        .expect("StopTask");
    assert!(run < stop, "{calls:?}");
    let started = fake.edit(|c| c.tasks[0].clone());
    assert_eq!(started["startedBy"], "kite-attach");
    assert_eq!(started["desiredStatus"], "STOPPED");
    assert!(stderr.contains("stopped task"), "{stderr}");

    // --keep leaves it running.
    fake.clear_calls();
    let out = attach(&fake, &["--run", "batch", "--keep", "--poll", "10ms"], b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fake.call_count("RunTask"), 1);
    assert_eq!(fake.call_count("StopTask"), 0);
    assert_eq!(
        fake.edit(|c| c.tasks[1]["desiredStatus"].clone()),
        "RUNNING"
    );
}

/// An awsvpc task definition `migrate:1` with the containers "app" (its
/// ENI at 127.0.0.11 leads to `backend`) and "sidecar"; RunTask starts
/// such a task.
fn migrate_cluster(fake: &FakeAws, backend: &Backend) {
    fake.edit(|c| {
        let mut containers = app(&[(backend.port(), None)]);
        containers.push(ContainerDef {
            name: "sidecar".into(),
            ports: Vec::new(),
        });
        let td = c.add_task_definition("migrate", 1, "awsvpc", &containers);
        c.run_template = Some(TaskSpec {
            eni: Some(("eni-0b".into(), backend.addr.ip().to_string())),
            containers: vec![TaskContainer::new("app"), TaskContainer::new("sidecar")],
            ..TaskSpec::new(&td)
        });
        c.run_script = ["PENDING", "RUNNING"].map(String::from).to_vec();
    });
}

/// `--run` hands RunTask the command after `--` and `--env` for the
/// chosen container, the awsvpc network, the capacity provider or launch
/// type, and the placement constraints; DescribeTasks reports the
/// overrides as ECS does.
#[tokio::test]
async fn run_passes_command_environment_network_and_placement() {
    let fake = FakeAws::start().await;
    let b = Backend::start("migrated", "127.0.0.11", 0, Mode::Echo).await;
    migrate_cluster(&fake, &b);
    let args = [
        "--run",
        "migrate",
        "--container",
        "app",
        "--poll",
        "10ms",
        "--env",
        "DATABASE_URL=postgres://db/app?sslmode=require",
        "--env",
        "EMPTY=",
        "--subnets",
        "subnet-1,subnet-2",
        "--security-groups",
        "sg-1",
        "--assign-public-ip",
        "--capacity-provider",
        "spot",
        "--placement-constraint",
        "attribute:ecs.instance-type =~ t3.*",
        "--placement-constraint",
        "attribute:ecs.os-type == linux",
        "--",
        "./manage.py",
        "migrate",
        "--noinput",
    ];
    let out = attach(&fake, &args, b"ping\n").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("migrated\nping\n"));
    let sent = fake.edit(|c| c.run_requests.clone());
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    let want_overrides = serde_json::json!({"containerOverrides": [{
        "name": "app",
        "command": ["./manage.py", "migrate", "--noinput"],
        "environment": [
            {"name": "DATABASE_URL", "value": "postgres://db/app?sslmode=require"},
            {"name": "EMPTY", "value": ""},
        ],
    }]});
    assert_eq!(req["overrides"], want_overrides, "{req}");
    assert_eq!(
        req["networkConfiguration"]["awsvpcConfiguration"],
        serde_json::json!({
            "subnets": ["subnet-1", "subnet-2"],
            "securityGroups": ["sg-1"],
            "assignPublicIp": "ENABLED",
        }),
        "{req}"
    );
    assert_eq!(
        req["capacityProviderStrategy"][0]["capacityProvider"],
        "spot"
    );
    assert!(req.get("launchType").is_none(), "{req}");
    let constraints = serde_json::json!([
        {"type": "memberOf", "expression": "attribute:ecs.instance-type =~ t3.*"},
        {"type": "memberOf", "expression": "attribute:ecs.os-type == linux"},
    ]);
    assert_eq!(req["placementConstraints"], constraints, "{req}");
    let task = fake.edit(|c| c.tasks[0].clone());
    assert_eq!(task["overrides"], want_overrides);
    assert_eq!(task["capacityProviderName"], "spot");

    // --launch-type (any case), no overrides when none are given.
    let args = [
        "--run",
        "migrate:1",
        "--container",
        "app",
        "--subnets",
        "subnet-1",
        "--launch-type",
        "fargate",
        "--poll",
        "10ms",
    ];
    let out = attach(&fake, &args, b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let req = fake.edit(|c| c.run_requests[1].clone());
    assert_eq!(req["launchType"], "FARGATE", "{req}");
    assert!(req.get("overrides").is_none(), "{req}");
    assert!(
        req["networkConfiguration"]["awsvpcConfiguration"]
            .get("securityGroups")
            .is_none(),
        "{req}"
    );
}

/// What only the task definition shows wrong is a usage error too (exit
/// 2), found before RunTask: awsvpc without `--subnets`, several
/// containers and no `--container`, a container it lacks. A RunTask
/// failure is one line with ECS's reason (exit 1).
#[tokio::test]
async fn run_checks_the_task_definition_before_starting() {
    let fake = FakeAws::start().await;
    let b = Backend::start("never", "127.0.0.11", 0, Mode::Echo).await;
    migrate_cluster(&fake, &b);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--run", "migrate", "--container", "app"],
            &["--subnets", "awsvpc"],
        ),
        (
            &["--run", "migrate", "--subnets", "subnet-1"],
            &["several containers (app, sidecar)", "--container"],
        ),
        (
            &[
                "--run",
                "migrate",
                "--container",
                "db",
                "--subnets",
                "subnet-1",
            ],
            &["--container db", "no such container", "app, sidecar"],
        ),
    ];
    for (args, wants) in cases {
        let out = attach(&fake, args, b"").await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for want in *wants {
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
    assert_eq!(fake.call_count("RunTask"), 0, "nothing started");
    assert!(fake.call_count("DescribeTaskDefinition") >= 3);

    fake.set_raw(
        "RunTask",
        200,
        r#"{"tasks":[],"failures":[{"arn":"arn:aws:ecs:us-east-1:123456789012:container-instance/default/1","reason":"RESOURCE:MEMORY"}]}"#,
    );
    let args = [
        "--run",
        "migrate",
        "--container",
        "app",
        "--subnets",
        "subnet-1",
    ];
    let out = attach(&fake, &args, b"").await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("started no task: RESOURCE:MEMORY"),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with(errors[0]),
        "nothing after the error: {err}"
    );
}

/// The flags of `--run` that are wrong on their own exit 2 before any
/// API call, naming the flag.
#[tokio::test]
async fn run_flags_usage_errors_exit_2() {
    let fake = FakeAws::start().await;
    let task = "0123456789abcdef0123456789abcdef";
    let cases: &[(&[&str], &str)] = &[
        (&["--run", "migrate", "--env", "NOEQUALS"], "has no '='"),
        (&["--run", "migrate", "--env", "=x"], "no name before '='"),
        (
            &["--run", "migrate", "--launch-type", "BOAT"],
            "--launch-type",
        ),
        (
            &[
                "--run",
                "migrate",
                "--launch-type",
                "EC2",
                "--capacity-provider",
                "x",
            ],
            "--capacity-provider",
        ),
        (&["--task", task, "--", "ls"], "only applies with --run"),
        (&["--task", task, "--env", "A=1"], "--run"),
        (
            &["--run", "migrate", "--subnets", "a,,b"],
            "not a list of ids",
        ),
        (&["--run", "migrate", "--assign-public-ip"], "--subnets"),
        (
            &["--run", "migrate", "--placement-constraint", " "],
            "placement constraint is empty",
        ),
    ];
    for (args, want) in cases {
        let out = attach(&fake, args, b"").await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(fake.calls().is_empty(), "usage errors call no API");
}

/// `--run --docker` of a Fargate task: no Docker daemon to attach through,
/// so kite waits for the task to stop, prints why, the container's exit
/// code and where its logs are, exits with that code, and leaves the
/// stopping to ECS.
#[tokio::test]
async fn run_on_fargate_waits_for_the_exit_code() {
    let fake = FakeAws::start().await;
    fake.edit(|c| {
        let td = c.add_task_definition("job", 4, "awsvpc", &app(&[]));
        c.task_definitions.get_mut(&td).unwrap()["containerDefinitions"][0]["logConfiguration"] =
            serde_json::json!({"logDriver": "awslogs", "options": {
                "awslogs-group": "/ecs/job", "awslogs-region": "eu-west-1",
                "awslogs-stream-prefix": "job",
            }});
        c.run_template = Some(TaskSpec {
            eni: Some(("eni-0f".into(), "127.0.0.12".into())),
            containers: vec![TaskContainer::new("app")],
            ..TaskSpec::new(&td)
        });
        c.run_script = [
            "PROVISIONING",
            "PENDING",
            "RUNNING",
            "RUNNING",
            "STOPPED:Essential container in task exited:exit=7",
        ]
        .map(String::from)
        .to_vec();
    });
    let args = [
        "--run",
        "job",
        "--subnets",
        "subnet-1",
        "--launch-type",
        "FARGATE",
        "--docker",
        "--poll",
        "10ms",
        "--",
        "./job",
        "--once",
    ];
    let out = attach(&fake, &args, b"").await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    let id = fake.edit(|c| c.tasks[0]["taskArn"].as_str().unwrap().to_owned());
    let id = id.rsplit('/').next().unwrap();
    for want in [
        "runs on Fargate",
        "is RUNNING",
        "Essential container in task exited; container app exited 7",
        &format!("CloudWatch Logs group /ecs/job, stream job/app/{id}, region eu-west-1"),
        "stopped by itself",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(fake.call_count("StopTask"), 0, "ECS stopped it");
}
