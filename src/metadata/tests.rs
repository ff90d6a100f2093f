use super::*;

const ID: &str = "3f1b8c0e9d2a4b6c8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f";

#[test]
fn container_id_from_cgroup_v1_docker() {
    let text =
        format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
    assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
}

#[test]
fn container_id_from_cgroup_v1_ecs() {
    let text = format!(
        "9:perf_event:/ecs/5a8c1d1f8b7e4d2c9f0e1a2b3c4d5e6f/{ID}\n\
         8:cpuset:/ecs/5a8c1d1f8b7e4d2c9f0e1a2b3c4d5e6f/{ID}\n"
    );
    assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
}

#[test]
fn container_id_from_cgroup_v2() {
    let ecs = format!("0::/ecs/5a8c1d1f8b7e4d2c9f0e1a2b3c4d5e6f/{ID}\n");
    assert_eq!(container_id_from_cgroup(&ecs).as_deref(), Some(ID));
    let systemd = format!("0::/system.slice/docker-{ID}.scope\n");
    assert_eq!(container_id_from_cgroup(&systemd).as_deref(), Some(ID));
    // A private cgroup namespace shows only the root: no id.
    assert_eq!(container_id_from_cgroup("0::/\n"), None);
}

#[test]
fn container_id_from_cpuset() {
    assert_eq!(
        container_id_from_cgroup(&format!("/docker/{ID}\n")).as_deref(),
        Some(ID)
    );
    assert_eq!(
        container_id_from_cgroup(&format!("/ecs/5a8c1d1f/{}\n", ID.to_uppercase())).as_deref(),
        Some(ID)
    );
}

#[test]
fn container_id_from_garbage() {
    for text in [
        "",
        "\n\n",
        "not a cgroup file",
        "0::/user.slice/user-1000.slice/session-2.scope\n",
        // 63 and 65 digits, and a non-hex letter.
        &format!("0::/docker/{}\n", &ID[..63]),
        &format!("0::/docker/{ID}0\n"),
        &format!("0::/docker/{}g\n", &ID[..63]),
        // A Fargate-style id is not a Docker id.
        "0::/ecs/5a8c1d1f8b7e4d2c9f0e1a2b3c4d5e6f/5a8c1d1f8b7e4d2c9f0e1a2b3c4d5e6f-2495160603\n",
        // The id in the middle of a path, not at its end.
        &format!("0::/docker/{ID}/init\n"),
    ] {
        assert_eq!(container_id_from_cgroup(text), None, "{text:?}");
    }
}

#[test]
fn region_from_availability_zone() {
    for (az, want) in [
        ("us-west-2d", Some("us-west-2")),
        ("eu-central-1a", Some("eu-central-1")),
        ("us-gov-west-1b", Some("us-gov-west-1")),
        ("ap-northeast-1c", Some("ap-northeast-1")),
        ("us-west-2-lax-1a", Some("us-west-2")),
        ("use1-az1", None),
        ("", None),
        ("zone", None),
    ] {
        assert_eq!(region_from_az(az).as_deref(), want, "{az}");
    }
}

#[test]
fn region_prefers_the_arn_to_the_zone() {
    let w = Whoami {
        task_arn: Some("arn:aws:ecs:eu-west-1:111122223333:task/c/abc".into()),
        availability_zone: Some("us-east-1a".into()),
        ..Whoami::default()
    };
    assert_eq!(region(&w).as_deref(), Some("eu-west-1"));
    let w = Whoami {
        availability_zone: Some("us-east-1a".into()),
        ..Whoami::default()
    };
    assert_eq!(region(&w).as_deref(), Some("us-east-1"));
}

#[test]
fn task_metadata_tolerates_missing_and_unknown_fields() {
    let t: TaskMetadata = serde_json::from_str(
        r#"{"Cluster":"default","Revision":26,"Limits":{"CPU":0.25},"Unknown":[1]}"#,
    )
    .unwrap();
    assert_eq!(t.cluster.as_deref(), Some("default"));
    assert_eq!(t.revision.as_deref(), Some("26"));
    assert_eq!(t.task_arn, None);
    let c: ContainerMetadata = serde_json::from_str(r#"{"Labels":null}"#).unwrap();
    assert!(c.labels.is_none());
}

#[test]
fn endpoints_from_vars_ignore_empty_values() {
    let e = Endpoints::from_vars(|k| match k {
        ENV_V4 => Some(String::new()),
        ENV_V3 => Some("http://169.254.170.2/v3/x".into()),
        _ => None,
    });
    assert_eq!(e.v4, None);
    assert!(e.is_set());
    assert!(!Endpoints::from_vars(|_| None).is_set());
}

#[test]
fn text_aligns_values_and_marks_unknowns() {
    let w = Whoami {
        cluster: Some("default".into()),
        family: Some("web".into()),
        revision: Some("7".into()),
        source: Some(Source::Introspection),
        ..Whoami::default()
    };
    let text = w.text();
    assert!(text.starts_with("cluster            default\n"), "{text}");
    assert!(text.contains("\ntask definition    web:7\n"), "{text}");
    assert!(text.contains("\ntask               -\n"), "{text}");
    assert!(
        text.ends_with("\nsource             introspection\n"),
        "{text}"
    );
}
