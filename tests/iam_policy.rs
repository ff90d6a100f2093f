//! The IAM policies shipped with kite (`iam-policy.json` for discovery,
//! `iam-policy-attach.json` for what `kite attach --run` adds) against the
//! AWS operations the code really calls.
//!
//! The operations come from the source: every `.operation_name()` call in
//! `src/` whose name is an operation of the ECS, EC2 or Cloud Map
//! (`servicediscovery`) SDK (the SDK crates'
//! own `src/operation/` folders, found through `cargo metadata`). A new call
//! the policies do not allow fails here, and so does an action the policies
//! allow that no code calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Actions a policy needs that are not SDK calls of kite's: RunTask passes
/// the task definition's task and execution roles to ECS.
const IMPLIED: &[(&str, &str)] = &[("iam:PassRole", "ecs:RunTask")];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The snake_case operation names (`list_tasks`, ...) of the ECS, EC2 and
/// Cloud Map SDK crates, found with one `cargo metadata` for the whole test
/// binary.
fn sdk_operations() -> &'static [(&'static str, BTreeSet<String>); 3] {
    static OPS: OnceLock<[(&str, BTreeSet<String>); 3]> = OnceLock::new();
    OPS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(root())
            .output()
            .expect("running cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ops = |crate_name: &str| operations_of(&meta, crate_name);
        [
            ("ecs", ops("aws-sdk-ecs")),
            ("ec2", ops("aws-sdk-ec2")),
            ("servicediscovery", ops("aws-sdk-servicediscovery")),
        ]
    })
}

/// The operation folders of `crate_name`, a package in `meta`.
fn operations_of(meta: &Value, crate_name: &str) -> BTreeSet<String> {
    let manifest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == crate_name)
        .unwrap_or_else(|| panic!("{crate_name} is not a dependency"))["manifest_path"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = Path::new(&manifest).parent().unwrap().join("src/operation");
    let ops: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let e = e.unwrap();
            e.file_type()
                .unwrap()
                .is_dir()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    // A sanity check that this found the operations and not some other folder.
    assert!(ops.len() > 20, "{} holds only {ops:?}", dir.display());
    ops
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `snake_case` to the IAM action's `PascalCase`.
fn pascal(op: &str) -> String {
    op.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Every SDK operation called in `dir` (as IAM actions), with the files
/// that call it. A fluent SDK call is `.op()`: no arguments.
fn called_actions(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let services = sdk_operations();
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for piece in text.split('.').skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() || !piece[name.len()..].starts_with("()") {
                continue;
            }
            let owners: Vec<&str> = services
                .iter()
                .filter(|(_, ops)| ops.contains(&name))
                .map(|(svc, _)| *svc)
                .collect();
            match owners.as_slice() {
                [] => {}
                [svc] => {
                    found
                        .entry(format!("{svc}:{}", pascal(&name)))
                        .or_default()
                        .insert(rel.clone());
                }
                _ => panic!(
                    "{rel}: .{name}() is an operation of several SDKs ({owners:?}); \
                     teach this test which client it is on"
                ),
            }
        }
    }
    found
}

/// The actions a policy file allows, and its statements.
fn policy(file: &str) -> (BTreeSet<String>, Vec<Value>) {
    let path = root().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(doc["Version"], "2012-10-17", "{file}: policy Version");
    let statements = doc["Statement"].as_array().expect("Statement list").clone();
    let mut actions = BTreeSet::new();
    for s in &statements {
        assert_eq!(s["Effect"], "Allow", "{file}: {s}");
        assert!(
            s["Sid"].is_string(),
            "{file}: every statement has a Sid: {s}"
        );
        let list = match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(v) => v.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
            other => panic!("{file}: Action {other}"),
        };
        for a in list {
            assert!(!a.contains('*'), "{file}: wildcard action {a}");
            assert!(actions.insert(a.clone()), "{file}: {a} twice");
        }
    }
    (actions, statements)
}

/// The statement of `file` that allows `action`.
fn statement_for<'a>(statements: &'a [Value], action: &str) -> &'a Value {
    statements
        .iter()
        .find(|s| match &s["Action"] {
            Value::String(a) => a == action,
            Value::Array(v) => v.iter().any(|a| a == action),
            _ => false,
        })
        .unwrap_or_else(|| panic!("no statement allows {action}"))
}

#[test]
fn the_policies_allow_exactly_what_the_code_calls() {
    let called = called_actions(&root().join("src"));
    let discovery = called_actions(&root().join("src/discovery"));
    // The scan itself works: discovery's calls are all there.
    for a in [
        "ecs:ListTasks",
        "ecs:DescribeTasks",
        "ecs:DescribeTaskDefinition",
        "ecs:DescribeContainerInstances",
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "servicediscovery:DiscoverInstances",
        "servicediscovery:DiscoverInstancesRevision",
    ] {
        assert!(
            discovery.contains_key(a),
            "the scan missed {a}: {discovery:?}"
        );
    }

    let (proxy, _) = policy("iam-policy.json");
    let (attach, _) = policy("iam-policy-attach.json");
    let allowed: BTreeSet<String> = proxy.union(&attach).cloned().collect();

    let missing: Vec<String> = called
        .iter()
        .filter(|(a, _)| !allowed.contains(*a))
        .map(|(a, files)| format!("{a} (called in {files:?})"))
        .collect();
    assert!(
        missing.is_empty(),
        "the code calls operations the IAM policies do not allow: {missing:?}; \
         add them to iam-policy.json (discovery) or iam-policy-attach.json"
    );

    let unused: Vec<&String> = allowed
        .iter()
        .filter(|a| {
            !called.contains_key(*a)
                && !IMPLIED
                    .iter()
                    .any(|(implied, by)| implied == a && called.contains_key(*by))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "the IAM policies allow actions no code calls: {unused:?}; remove them"
    );

    // Least privilege per role: a proxy's role gets discovery only.
    let proxy_extra: Vec<&String> = proxy
        .iter()
        .filter(|a| !discovery.contains_key(*a))
        .collect();
    assert!(
        proxy_extra.is_empty(),
        "iam-policy.json allows more than discovery calls: {proxy_extra:?}"
    );
    let overlap: Vec<&String> = attach.intersection(&proxy).collect();
    assert!(overlap.is_empty(), "in both policy files: {overlap:?}");
}

#[test]
fn cluster_scoped_actions_are_limited_to_one_cluster() {
    let (_, proxy) = policy("iam-policy.json");
    let (_, attach) = policy("iam-policy-attach.json");
    // The ECS actions IAM can scope by cluster carry the ecs:cluster
    // condition; DescribeTaskDefinition and EC2's Describe* cannot be scoped.
    for (statements, action) in [
        (&proxy, "ecs:ListTasks"),
        (&proxy, "ecs:DescribeTasks"),
        (&proxy, "ecs:DescribeContainerInstances"),
        (&attach, "ecs:RunTask"),
        (&attach, "ecs:StopTask"),
    ] {
        let s = statement_for(statements, action);
        let cluster = &s["Condition"]["ArnEquals"]["ecs:cluster"];
        assert!(
            cluster
                .as_str()
                .is_some_and(|c| c.starts_with("arn:aws:ecs:") && c.contains(":cluster/")),
            "{action}: no ecs:cluster condition with a cluster ARN in {s}"
        );
    }
    let run = statement_for(&attach, "ecs:RunTask");
    assert!(
        run["Resource"]
            .as_str()
            .is_some_and(|r| r.contains(":task-definition/")),
        "RunTask is scoped to task definitions: {run}"
    );
    let pass = statement_for(&attach, "iam:PassRole");
    assert_eq!(
        pass["Condition"]["StringEquals"]["iam:PassedToService"], "ecs-tasks.amazonaws.com",
        "iam:PassRole only towards ECS tasks: {pass}"
    );
}

#[test]
fn the_scan_finds_calls_and_ignores_look_alikes() {
    let dir = std::env::temp_dir().join(format!("kite-iam-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.rs"),
        "async fn f(c: &Client) { c.stop_task().task(x).send().await; \
         describe_tasks(c, &arns).await; self.run_task; }",
    )
    .unwrap();
    let found = called_actions(&dir);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        vec!["ecs:StopTask".to_owned()]
    );
}
