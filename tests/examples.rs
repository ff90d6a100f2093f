//! The example task definitions under `examples/task-definitions/`: valid
//! RegisterTaskDefinition input by the official AWS service model
//! (botocore's), kite's command lines in them accepted by kite, and each
//! described in the README. The CloudFormation templates under
//! `examples/cloudformation/` likewise: clean by `cfn-lint`, kite's command
//! lines accepted, and described in the README.
//!
//! The schema check needs python3 with botocore, the template check
//! python3 with cfn-lint; without them the tests print a notice and pass,
//! unless KITE_REQUIRE_BOTOCORE=1 or KITE_REQUIRE_CFN_LINT=1 (both set by
//! `.ci/run`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::kite_command;
use serde_json::Value;

const CHECKER: &str = "scripts/check-task-definitions.py";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The JSON files of `examples/{folder}`, at least `fewest` of them.
fn json_files(folder: &str, fewest: usize) -> Vec<PathBuf> {
    let dir = root().join("examples").join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= fewest, "{}: {files:?}", dir.display());
    files
}

fn examples() -> Vec<PathBuf> {
    json_files("task-definitions", 4)
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A python3 check that may find its module missing: it exits
/// `missing_code` then, and the check is skipped with a notice, unless the
/// environment variable `require` is 1.
struct PythonCheck {
    /// What it checks, for the notice.
    what: &'static str,
    missing_code: i32,
    require: &'static str,
}

impl PythonCheck {
    /// Runs `python3 ARGS FILES`: its exit code and output, or None when
    /// its module is not there (and not required).
    fn run(&self, args: &[&str], files: &[PathBuf]) -> Option<(i32, String)> {
        let out = Command::new("python3").args(args).args(files).output();
        let required = std::env::var_os(self.require).is_some_and(|v| v == "1");
        let missing = match &out {
            Err(e) => Some(format!("python3: {e}")),
            Ok(o) if o.status.code() == Some(self.missing_code) => {
                Some(String::from_utf8_lossy(&o.stderr).trim().to_owned())
            }
            Ok(_) => None,
        };
        if let Some(why) = missing {
            assert!(!required, "{}=1 but {why}", self.require);
            eprintln!("NOTICE: {} skipped: {why}", self.what);
            return None;
        }
        let out = out.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Some((out.status.code().unwrap_or(-1), text))
    }
}

/// Runs `checker` (as [`check`] or [`cfn_lint`]) on a broken example,
/// written to a file of its own (`kind` names it) for the run only.
fn check_broken(
    kind: &str,
    contents: &[u8],
    checker: fn(&[PathBuf]) -> Option<(i32, String)>,
) -> Option<(i32, String)> {
    let name = format!("kite-bad-{kind}-{}.json", std::process::id());
    let bad = std::env::temp_dir().join(name);
    std::fs::write(&bad, contents).unwrap();
    let result = checker(std::slice::from_ref(&bad));
    std::fs::remove_file(&bad).ok();
    result
}

/// Runs the checker on `files`: its exit code and output, or None when
/// botocore is not there (and not required).
fn check(files: &[PathBuf]) -> Option<(i32, String)> {
    let checker = root().join(CHECKER);
    let botocore = PythonCheck {
        what: "task definition schema check",
        missing_code: 3,
        require: "KITE_REQUIRE_BOTOCORE",
    };
    botocore.run(&[checker.to_str().unwrap()], files)
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
    let bad = serde_json::to_vec_pretty(&doc).unwrap();
    let Some((code, out)) = check_broken("taskdef", &bad, check) else {
        return;
    };
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("esential"), "{out}");
    assert!(out.contains("brigde"), "{out}");
}

/// Runs kite on the command line `args` with `env`, and checks that it got
/// past its command line: it stops at the first thing the test machine
/// lacks (an AWS region, or a kite to ask for health), exit 1, never the
/// usage error's 2.
fn assert_kite_accepts(args: &[String], env: &[(String, String)], file: &Path) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kite_command(&args, env).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}: kite {args:?}: {stderr}",
        file.display()
    );
    assert!(!stderr.contains("Usage:"), "{}: {stderr}", file.display());
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
                assert_kite_accepts(&args, &env, &file);
                seen += 1;
            }
        }
    }
    assert!(seen >= 5, "only {seen} kite command lines in the examples");
}

#[test]
fn the_readme_describes_every_example() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for file in examples().into_iter().chain(templates()) {
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        assert!(readme.contains(&name), "README.md does not describe {name}");
    }
}

// === CloudFormation ===

fn templates() -> Vec<PathBuf> {
    json_files("cloudformation", 1)
}

/// What `cfn_lint` exits with when cfn-lint is not installed.
const NO_CFN_LINT: i32 = 99;

/// Runs cfn-lint (PyPI `cfn-lint`, through python3, whatever its PATH) on
/// `files`: its exit code and output, or None when it is not there (and not
/// required).
fn cfn_lint(files: &[PathBuf]) -> Option<(i32, String)> {
    let script = format!(
        "import sys\n\
         try:\n    from cfnlint.runner import main\n\
         except ImportError as e:\n    \
             print(f'cfn-lint is not installed ({{e}}): pip install cfn-lint', file=sys.stderr)\n    \
             sys.exit({NO_CFN_LINT})\n\
         sys.argv = ['cfn-lint', *sys.argv[1:]]\n\
         main()\n"
    );
    let lint = PythonCheck {
        what: "CloudFormation template check",
        missing_code: NO_CFN_LINT,
        require: "KITE_REQUIRE_CFN_LINT",
    };
    lint.run(&["-c", &script], files)
}

#[test]
fn templates_pass_cfn_lint() {
    let Some((code, out)) = cfn_lint(&templates()) else {
        return;
    };
    assert_eq!(code, 0, "cfn-lint: {out}");
}

#[test]
fn cfn_lint_catches_a_typo_and_a_bad_value() {
    let file = &templates()[0];
    let text = std::fs::read_to_string(file).unwrap();
    let bad_text = text
        .replacen("\"DesiredCount\"", "\"DesiredCont\"", 1)
        .replacen(
            "\"LaunchType\": \"FARGATE\"",
            "\"LaunchType\": \"FARGAT\"",
            1,
        );
    assert_ne!(bad_text, text);
    let Some((code, out)) = check_broken("template", bad_text.as_bytes(), cfn_lint) else {
        return;
    };
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("DesiredCont"), "{out}");
    assert!(out.contains("'FARGAT'"), "{out}");
}

/// The container definitions of every task definition in `template` whose
/// image is kite's (the `KiteImage` parameter).
fn kite_containers(template: &Value) -> Vec<Value> {
    let resources = template["Resources"].as_object().unwrap();
    resources
        .values()
        .filter(|r| r["Type"] == "AWS::ECS::TaskDefinition")
        .flat_map(|r| {
            r["Properties"]["ContainerDefinitions"]
                .as_array()
                .unwrap()
                .clone()
        })
        .filter(|c| c["Image"]["Ref"] == "KiteImage")
        .collect()
}

#[test]
fn kite_accepts_the_command_lines_in_the_templates() {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let mut seen = 0;
    for file in templates() {
        let doc = load(&file);
        for c in kite_containers(&doc) {
            let env: Vec<(String, String)> = (c["Environment"].as_array().into_iter().flatten())
                .map(|e| {
                    let k = e["Name"].as_str().unwrap().to_owned();
                    (k, e["Value"].as_str().unwrap().to_owned())
                })
                .collect();
            assert_kite_accepts(&strings(&c["Command"]), &env, &file);
            let check = strings(&c["HealthCheck"]["Command"]);
            if !check.is_empty() {
                assert_eq!(check[..2], ["CMD", "/kite"], "{}", file.display());
                assert_kite_accepts(&check[2..], &env, &file);
            }
            seen += 1;
        }
    }
    assert!(seen >= 1, "no kite in the templates");
}

/// The Cloud Map template's task role allows what `iam-policy.json` allows
/// for Cloud Map, no more and no less.
#[test]
fn the_template_role_holds_the_cloud_map_policy() {
    let actions = |statements: &Value| -> Vec<String> {
        let mut all: Vec<String> = (statements.as_array().unwrap().iter())
            .flat_map(|s| match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(v) => v.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
                _ => vec![],
            })
            .filter(|a| a.starts_with("servicediscovery:"))
            .collect();
        all.sort();
        all
    };
    let policy = load(&root().join("iam-policy.json"));
    let want = actions(&policy["Statement"]);
    assert_eq!(want.len(), 2, "{want:?}");
    let template = load(&root().join("examples/cloudformation/cloud-map.json"));
    let role = &template["Resources"]["KiteTaskRole"]["Properties"];
    let statements = &role["Policies"][0]["PolicyDocument"]["Statement"];
    assert_eq!(actions(statements), want);
    let consumer = &template["Resources"]["ConsumerTaskDefinition"]["Properties"];
    assert_eq!(consumer["TaskRoleArn"]["Fn::GetAtt"][0], "KiteTaskRole");
    let orders = &template["Resources"]["OrdersService"]["Properties"];
    assert!(orders["ServiceRegistries"][0]["RegistryArn"].is_object());
}
