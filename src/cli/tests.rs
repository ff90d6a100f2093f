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
        Some(Selector::Family {
            name: "web".into(),
            revision: Some(3)
        })
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

/// `kite attach --docker` with `args` and the environment `vars`: the
/// Docker options, or the usage error.
fn docker_with(
    args: &[&str],
    vars: &[(&str, &str)],
) -> Result<crate::attach::docker::Options, String> {
    let mut all = vec![
        "kite",
        "attach",
        "--task",
        "0123456789abcdef0123456789abcdef",
        "--docker",
    ];
    all.extend_from_slice(args);
    let Command::Attach(attach) = Cli::try_parse_from(&all).unwrap().command else {
        panic!("not attach");
    };
    let env = |name: &str| {
        (vars.iter())
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    match attach.options_in(&env)?.mode {
        crate::attach::Mode::Docker(options) => Ok(options),
        other => panic!("{other:?}"),
    }
}

#[test]
fn docker_environment_as_the_docker_cli_reads_it() {
    let tcp = |s: &str| Some(crate::config::DockerHost::Tcp(s.into()));
    // Nothing set: the task's instance, with TLS.
    let o = docker_with(&[], &[]).unwrap();
    assert_eq!((o.host, o.tls), (None, true));
    // DOCKER_HOST, plain unless DOCKER_TLS_VERIFY is set.
    let o = docker_with(&[], &[("DOCKER_HOST", "tcp://10.0.0.1:2375")]).unwrap();
    assert_eq!((o.host, o.tls), (tcp("10.0.0.1:2375"), false));
    let vars = [
        ("DOCKER_HOST", "tcp://10.0.0.1:2376"),
        ("DOCKER_TLS_VERIFY", "1"),
    ];
    let o = docker_with(&[], &vars).unwrap();
    assert_eq!((o.host, o.tls), (tcp("10.0.0.1:2376"), true));
    // The flags win.
    let o = docker_with(&["--docker-host", "tcp://10.0.0.2:2376"], &vars[..1]).unwrap();
    assert_eq!((o.host, o.tls), (tcp("10.0.0.2:2376"), true));
    let o = docker_with(&["--docker-tls=true"], &vars[..1]).unwrap();
    assert!(o.tls);
    let o = docker_with(&["--docker-tls=false"], &vars).unwrap();
    assert!(!o.tls);
    // A DOCKER_HOST kite cannot use is named.
    let err = docker_with(&[], &[("DOCKER_HOST", "ssh://me@host")]).unwrap_err();
    assert!(err.starts_with("DOCKER_HOST: "), "{err}");
    // ~/.docker holds the certificates when nothing else says.
    let home = std::env::temp_dir().join(format!("kite-home-{}", std::process::id()));
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    let home_str = home.to_str().unwrap();
    assert_eq!(
        docker_with(&[], &[("HOME", home_str)]).unwrap().cert_path,
        None
    );
    std::fs::write(home.join(".docker/ca.pem"), "x").unwrap();
    let o = docker_with(&[], &[("HOME", home_str)]).unwrap();
    assert_eq!(o.cert_path, Some(home.join(".docker")));
    let o = docker_with(&["--docker-cert-path", "/etc/certs"], &[("HOME", home_str)]).unwrap();
    assert_eq!(o.cert_path, Some("/etc/certs".into()));
    std::fs::remove_dir_all(&home).unwrap();
}
