//! The example task definitions under `examples/task-definitions/`: valid
//! RegisterTaskDefinition input by the official AWS service model
//! (botocore's), kite's command lines in them accepted by kite, and each
//! described in the README.
//!
//! The schema check needs python3 with botocore; without it the test prints
//! a notice and passes, unless KITE_REQUIRE_BOTOCORE=1 (set by `.ci/run`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::kite_command;
use serde_json::Value;

const CHECKER: &str = "scripts/check-task-definitions.py";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let dir = root().join("examples/task-definitions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "examples: {files:?}");
    files
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the checker on `files`: its exit code and output, or None when
/// botocore is not there (and not required).
fn check(files: &[PathBuf]) -> Option<(i32, String)> {
    let out = Command::new("python3")
        .arg(root().join(CHECKER))
        .args(files)
        .output();
    let required = std::env::var_os("KITE_REQUIRE_BOTOCORE").is_some_and(|v| v == "1");
    let missing = match &out {
        Err(e) => Some(format!("python3: {e}")),
        Ok(o) if o.status.code() == Some(3) => {
            Some(String::from_utf8_lossy(&o.stderr).trim().to_owned())
        }
        Ok(_) => None,
    };
    if let Some(why) = missing {
        assert!(!required, "KITE_REQUIRE_BOTOCORE=1 but {why}");
        eprintln!("NOTICE: task definition schema check skipped: {why}");
        return None;
    }
    let out = out.unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.code().unwrap_or(-1), text))
}

#[test]
fn examples_are_valid_register_task_definition_input() {
    let files = examples();
    let Some((code, out)) = check(&files) else {
        return;
    };
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{} of {} valid", files.len(), files.len())),
        "{out}"
    );
}

#[test]
fn the_schema_check_catches_a_typo_and_a_bad_enum() {
    let mut doc = load(&examples()[0]);
    let container = &mut doc["containerDefinitions"][0];
    let essential = container.as_object_mut().unwrap().remove("essential");
    container["esential"] = essential.unwrap_or(Value::Bool(true));
    doc["networkMode"] = Value::from("brigde");
    let bad = std::env::temp_dir().join(format!("kite-bad-taskdef-{}.json", std::process::id()));
    std::fs::write(&bad, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let result = check(std::slice::from_ref(&bad));
    std::fs::remove_file(&bad).ok();
    let Some((code, out)) = result else {
        return;
    };
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("esential"), "{out}");
    assert!(out.contains("brigde"), "{out}");
}

/// The arguments kite gets from a container definition: its `command`
/// (which replaces the image's `CMD ["proxy"]`), or `proxy` without one.
fn kite_args(container: &Value) -> Vec<String> {
    match container["command"].as_array() {
        Some(args) => args
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect(),
        None => vec!["proxy".to_owned()],
    }
}

#[test]
fn kite_accepts_the_command_lines_in_the_examples() {
    let mut seen = 0;
    for file in examples() {
        let doc = load(&file);
        for c in doc["containerDefinitions"].as_array().unwrap() {
            if !c["image"].as_str().unwrap_or("").contains("/kite:") {
                continue;
            }
            let env: Vec<(String, String)> = c["environment"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .map(|e| {
                            let k = e["name"].as_str().unwrap().to_owned();
                            (k, e["value"].as_str().unwrap().to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut commands = vec![kite_args(c)];
            if let Some(check) = c["healthCheck"]["command"].as_array() {
                let check: Vec<String> = check.iter().map(|a| a.as_str().unwrap().into()).collect();
                assert_eq!(
                    check[..2],
                    ["CMD", "/kite"],
                    "{}: {check:?}",
                    file.display()
                );
                commands.push(check[2..].to_vec());
            }
            for args in commands {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = kite_command(&args, &env).output().unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                // Past the command line, kite stops at the first thing the
                // test machine lacks (an AWS region, or a kite to ask for
                // health): exit 1, never the usage error's 2.
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{}: kite {args:?}: {stderr}",
                    file.display()
                );
                assert!(!stderr.contains("Usage:"), "{}: {stderr}", file.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 5, "only {seen} kite command lines in the examples");
}

#[test]
fn the_readme_describes_every_example() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for file in examples() {
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        assert!(readme.contains(&name), "README.md does not describe {name}");
    }
}
