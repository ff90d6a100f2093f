//! The README's configuration reference against `kite --help`: every flag
//! of every command is documented, and every flag the README's tables name
//! exists.

use std::collections::BTreeSet;
use std::process::Command;

const KITE: &str = env!("CARGO_BIN_EXE_kite");

fn help(args: &[&str]) -> String {
    let out = Command::new(KITE)
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "kite {args:?} --help: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The commands `kite --help` lists.
fn commands() -> Vec<String> {
    let top = help(&[]);
    let section = top
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a Commands: section");
    let commands: Vec<String> = section
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    assert!(commands.len() >= 4, "{commands:?}");
    commands
}

/// The long flags in `text` (`--name`, not `--name=x` or `--`).
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let before = text[..i].chars().next_back();
        if name.len() > 1
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && before.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '-')
        {
            flags.insert(format!("--{name}"));
        }
    }
    flags
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// Each command with the long flags its `--help` prints.
fn flags_by_command() -> Vec<(String, BTreeSet<String>)> {
    commands()
        .into_iter()
        .map(|cmd| {
            let flags = long_flags(&help(&[&cmd]));
            (cmd, flags)
        })
        .collect()
}

#[test]
fn every_flag_of_every_command_is_in_the_readme() {
    let readme = readme();
    let mut missing = Vec::new();
    for (cmd, flags) in flags_by_command() {
        for flag in flags {
            if flag == "--help" || flag == "--version" {
                continue;
            }
            // Documented means written as code: `--flag ...`.
            if !readme.contains(&format!("`{flag}")) {
                missing.push(format!("kite {cmd} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README.md does not document {missing:?}"
    );
}

#[test]
fn every_flag_in_the_readme_tables_exists() {
    let readme = readme();
    let real: BTreeSet<String> = flags_by_command()
        .into_iter()
        .flat_map(|(_, f)| f)
        .collect();
    let mut unknown = Vec::new();
    for line in readme.lines().filter(|l| l.starts_with('|')) {
        for flag in long_flags(line) {
            if !real.contains(&flag) {
                unknown.push(format!("{flag} in {line:?}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "README.md tables name flags kite lacks: {unknown:?}"
    );
}

#[test]
fn the_flag_scanner_reads_help_text() {
    let flags =
        long_flags("  --cluster <CLUSTER>  x\n  -h, --help\n  a--b `--port-map LOCAL:C` --x");
    let want: BTreeSet<String> = ["--cluster", "--help", "--port-map"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(flags, want);
}
