//! The `kite` binary: usage errors, start-up errors, the original argument
//! form, and `kite targets`.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Runs kite with a clean, hermetic environment plus `env`.
fn kite(args: &[&str], env: &[(String, String)]) -> Output {
    base_command(args, env).output().expect("running kite")
}

fn base_command(args: &[&str], env: &[(String, String)]) -> Command {
    kite_command(args, env)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["proxy", "--family", "web"], "--name"),
        (
            vec![
                "proxy",
                "--family",
                "web",
                "--service",
                "api",
                "--name",
                "app",
            ],
            "--service",
        ),
        (vec!["proxy", "--name", "app"], "--family"),
        (
            vec!["proxy", "--family", "web:seven", "--name", "app"],
            "revision 'seven'",
        ),
        (vec!["-family=web"], "--name"),
        (
            vec!["-family=web", "-name=app", "-public=maybe"],
            "--public",
        ),
        (vec!["-family=web", "-name=app", "-bogus=1"], "-bogus"),
    ];
    // A good selection, and one flag with a bad value: the flag is named.
    for (flag, value) in [
        ("--refresh", "5y"),
        ("--connect-timeout", "0s"),
        ("--port-map", "80"),
        ("--port-map", "80:0"),
        ("--port-map", "8080:80,8080:81"),
        ("--log-format", "xml"),
        ("--threads", "0"),
        ("--balance", "round-robin"),
        ("--zone-min-targets", "0"),
        ("--proxy-protocol", "v3"),
    ] {
        let args = vec!["proxy", "--family", "web", "--name", "app", flag, value];
        cases.push((args, flag));
    }
    for (args, needle) in &cases {
        let out = kite(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    // KITE_* variables are read too, and validated the same way.
    let env = [
        ("KITE_FAMILY".to_owned(), "web:0".to_owned()),
        ("KITE_NAME".to_owned(), "app".to_owned()),
    ];
    let out = kite(&["proxy"], &env);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--family"), "{}", stderr(&out));
}

#[test]
fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["--version"], &["proxy", "--help"]] {
        let out = kite(args, &[]);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
}

#[test]
fn no_region_or_no_credentials_is_a_clear_start_up_error() {
    let out = kite(&["targets", "--family", "web", "--name", "app"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no AWS region"), "{}", stderr(&out));

    let region = [("AWS_REGION".to_owned(), "us-east-1".to_owned())];
    let started = std::time::Instant::now();
    let out = kite(&["targets", "--family", "web", "--name", "app"], &region);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no AWS credentials"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it must not hang"
    );
}

/// `kite targets` prints every target and every skipped task.
#[tokio::test]
async fn targets_table_and_json() {
    let fake = FakeAws::start().await;
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(80, None)]));
        let mut t = TaskSpec {
            container_instance_arn: Some(ci.clone()),
            availability_zone: Some("us-east-1b".into()),
            ..TaskSpec::new(&td)
        };
        t.containers = vec![TaskContainer {
            network_bindings: vec![("0.0.0.0".into(), 80, 32768)],
            ..TaskContainer::new("app")
        }];
        c.add_task(t.clone());
        t.last_status = "PENDING".into();
        c.add_task(t);
    });
    let env = fake.child_env();
    let out = tokio::task::spawn_blocking(move || {
        kite(&["targets", "--family", "web", "--name", "app"], &env)
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("PORT"), "{table}");
    assert!(
        table.contains("127.0.0.2:32768") && table.contains("web:1") && table.contains("bridge"),
        "{table}"
    );
    assert!(table.contains("lastStatus is PENDING"), "{table}");
    assert!(
        table.lines().next().unwrap().ends_with("ZONE") && table.contains("us-east-1b"),
        "{table}"
    );

    let env = fake.child_env();
    let out = tokio::task::spawn_blocking(move || {
        kite(
            &["targets", "--family", "web", "--name", "app", "--json"],
            &env,
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["targets"][0]["listen_port"], 80);
    assert_eq!(json["targets"][0]["address"], "127.0.0.2:32768");
    assert_eq!(json["targets"][0]["network_mode"], "bridge");
    assert_eq!(json["targets"][0]["zone"], "us-east-1b");
    assert_eq!(json["skipped"][0]["reason"], "lastStatus is PENDING");
}

/// The original's argument form runs `kite proxy` unchanged, end to end.
#[tokio::test]
async fn original_argument_form_proxies() {
    let fake = FakeAws::start().await;
    let b = Backend::start("orig", "127.0.0.2", 0, Mode::Echo).await;
    let cport = listen_port();
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 5, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci, cport, &b));
    });
    let mut env = fake.child_env();
    env.push(("KITE_LISTEN_ADDR".into(), "127.0.0.1".into()));
    env.push(("KITE_REFRESH".into(), "200ms".into()));
    let child = base_command(
        &[
            "-family=web:5",
            "-name=app",
            "-cluster=default",
            "-loglevel=debug",
        ],
        &env,
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut answered = None;
    for _ in 0..200 {
        if let Ok(name) = whoami(cport).await {
            answered = Some(name);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGTERM: kite exits 0 after draining.
    sigterm(child.id());
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&status.stderr).into_owned();
    assert_eq!(answered.as_deref(), Some("orig"), "{log}");
    assert!(log.contains("target added"), "{log}");
    assert!(log.contains("DEBUG"), "-loglevel=debug took effect: {log}");
    assert_eq!(status.status.code(), Some(0), "{log}");
}

/// Sends SIGTERM to a child we started, through the `kill` command.
fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}
