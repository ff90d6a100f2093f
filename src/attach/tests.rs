use std::collections::HashMap;

use aws_sdk_ecs::types::{Container, Task};

use super::*;
use crate::snapshot::{NetworkMode, SkipKind, Skipped};

fn td(ports: &[(&str, &[u16])]) -> TaskDef {
    TaskDef {
        name: "web:1".into(),
        revision: 1,
        network_mode: Ok(NetworkMode::Bridge),
        ports: ports
            .iter()
            .map(|(n, p)| (n.to_string(), p.iter().map(|p| (*p, None)).collect()))
            .collect::<HashMap<_, _>>(),
    }
}

fn task(names: &[&str]) -> Task {
    let mut b = Task::builder().task_arn("arn:aws:ecs:r:123456789012:task/c/abc");
    for n in names {
        b = b.containers(Container::builder().name(*n).build());
    }
    b.build()
}

#[test]
fn container_choice() {
    let t = task(&["app", "log"]);
    let one = td(&[("app", &[80]), ("log", &[])]);
    assert_eq!(choose_container(&one, &t, None, false).unwrap(), "app");
    assert_eq!(
        choose_container(&one, &t, Some("log"), true).unwrap(),
        "log"
    );
    let err = choose_container(&one, &t, Some("db"), false).unwrap_err();
    assert!(err.to_string().contains("no container named 'db'"), "{err}");
    assert!(err.to_string().contains("app, log"), "{err}");
    let two = td(&[("app", &[80]), ("log", &[514])]);
    let err = choose_container(&two, &t, None, false).unwrap_err();
    assert!(
        err.to_string()
            .contains("several containers with ports (app, log)"),
        "{err}"
    );
    let none = td(&[("app", &[]), ("log", &[])]);
    assert!(choose_container(&none, &t, None, true).is_err());
    let single = task(&["app"]);
    assert_eq!(choose_container(&none, &single, None, true).unwrap(), "app");
    assert!(choose_container(&none, &single, None, false).is_err());
}

#[test]
fn target_choice() {
    let t = |port: u16| Target {
        listen_port: port,
        container_port: port,
        address: ([127, 0, 0, 1], port + 1000).into(),
        task_id: "abc".into(),
        task_arn: "arn".into(),
        task_definition: "web:1".into(),
        network_mode: NetworkMode::Bridge,
        health: "UNKNOWN".into(),
        host: "ci".into(),
        zone: None,
    };
    let s = Snapshot::new(vec![t(80), t(443)], vec![]);
    assert_eq!(
        choose_target(&s, "abc", "app", Some(443))
            .unwrap()
            .container_port,
        443
    );
    let err = choose_target(&s, "abc", "app", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("several ports (80, 443)"), "{err}");
    let err = choose_target(&s, "abc", "app", Some(8080))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not expose port 8080 (it exposes 80, 443)"),
        "{err}"
    );
    let s = Snapshot::new(vec![t(80)], vec![]);
    assert_eq!(
        choose_target(&s, "abc", "app", None)
            .unwrap()
            .container_port,
        80
    );
    let skipped = Skipped {
        task_arn: "arn".into(),
        reason: "container is PENDING".into(),
        kind: SkipKind::Settling,
    };
    let s = Snapshot::new(vec![], vec![skipped]);
    let err = choose_target(&s, "abc", "app", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("container is PENDING"), "{err}");
}
