use std::ffi::OsString;

use clap::CommandFactory;

use super::*;

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn original_form_becomes_proxy() {
    let got = normalize_args(os(&[
        "kite",
        "-family=web:3",
        "-name=nginx",
        "-cluster=prod",
        "-public",
        "-loglevel=debug",
    ]));
    let want = os(&[
        "kite",
        "proxy",
        "--family=web:3",
        "--name=nginx",
        "--cluster=prod",
        "--public",
        "--log-level=debug",
    ]);
    assert_eq!(got, want);
    let got = normalize_args(os(&[
        "kite",
        "-service",
        "api",
        "-name",
        "app",
        "-public=false",
    ]));
    assert_eq!(
        got,
        os(&["kite", "proxy", "--service", "api", "--name", "app"])
    );
}

#[test]
fn subcommands_pass_through() {
    for args in [
        &["kite", "proxy", "--family", "web"][..],
        &["kite", "--help"],
        &["kite", "targets", "-family=x"],
        &["kite", "whoami", "--json"],
        &["kite"],
    ] {
        assert_eq!(normalize_args(os(args)), os(args));
    }
}

#[test]
fn original_form_parses() {
    let args = normalize_args(os(&[
        "kite",
        "-family=web:3",
        "-name=nginx",
        "-public=true",
    ]));
    let cli = Cli::try_parse_from(args).unwrap();
    let Command::Proxy(p) = cli.command else {
        panic!("expected proxy")
    };
    assert_eq!(
        p.select.selector(),
        Selector::Family {
            name: "web".into(),
            revision: Some(3)
        }
    );
    assert!(p.select.public);
    assert_eq!(p.select.cluster, None);
}

#[test]
fn usage_errors_name_the_flag() {
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["kite", "proxy", "--family", "web"], "--name"),
        (
            vec![
                "kite",
                "proxy",
                "--family",
                "w",
                "--service",
                "s",
                "--name",
                "n",
            ],
            "--service",
        ),
        (vec!["kite", "proxy", "--name", "n"], "--family"),
        (
            vec!["kite", "proxy", "--family", "w:x", "--name", "n"],
            "--family",
        ),
    ];
    // A good selection, and one flag with a bad value.
    for (flag, value) in [("--refresh", "soon"), ("--port-map", "80")] {
        let args = vec!["kite", "proxy", "--family", "w", "--name", "n", flag, value];
        cases.push((args, flag));
    }
    for (args, flag) in &cases {
        let err = Cli::try_parse_from(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
        let msg = err.to_string();
        assert!(msg.contains(flag), "{args:?}: {msg}");
    }
}

#[test]
fn run_flags_need_run() {
    let task = "0123456789abcdef0123456789abcdef";
    for extra in [
        &["--env", "A=1"][..],
        &["--subnets", "subnet-1"],
        &["--launch-type", "EC2"],
        &["--capacity-provider", "cp"],
        &["--placement-constraint", "x"],
    ] {
        let mut args = vec!["kite", "attach", "--task", task];
        args.extend_from_slice(extra);
        let Command::Attach(attach) = Cli::try_parse_from(&args).unwrap().command else {
            panic!("not attach");
        };
        let err = attach
            .options()
            .expect_err(&format!("{extra:?} without --run"));
        assert!(err.contains("only applies with --run"), "{extra:?}: {err}");
    }
}
