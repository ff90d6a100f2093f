//! The command line: clap definitions, `KITE_*` environment variables, and
//! the original Task Kite's argument form.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, FamilyArg, PortMap, Selector};

/// A TCP ambassador for Amazon ECS: reach the tasks of a family or service
/// through a tiny sidecar.
#[derive(Debug, Parser)]
#[command(name = "kite", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Log level: trace, debug, info, warn, error (or tracing directives).
    #[arg(long, global = true, env = "KITE_LOG_LEVEL", default_value = "info",
          value_parser = config::parse_log_level)]
    pub log_level: String,

    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, env = "KITE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for CloudWatch Logs and friends).
    Json,
}

/// kite's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Discover the tasks and splice every connection to a random one.
    Proxy(ProxyArgs),
    /// Run one discovery pass and print the targets and the tasks left out.
    Targets(TargetsArgs),
    /// Exit 0 when the local kite proxy is ready (for an ECS container healthCheck).
    Health(HealthArgs),
    /// Attach to ONE task: a TCP connection on stdin/stdout, a local port
    /// forward (--listen), or its container's own stdio (--docker).
    Attach(AttachArgs),
    /// From inside an ECS task: its cluster, task, family:revision and
    /// container (no AWS credentials needed).
    Whoami(WhoamiArgs),
}

/// Which tasks, which container: shared by every command that discovers.
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// The ECS cluster (name or ARN) [default: the cluster of the task kite
    /// runs in (task metadata endpoint), else `default`].
    #[arg(long, env = "KITE_CLUSTER")]
    pub cluster: Option<String>,

    /// The task definition family, optionally pinned to one revision.
    #[arg(long, env = "KITE_FAMILY", value_name = "NAME[:REV]",
          value_parser = config::parse_family, required_unless_present = "service",
          conflicts_with = "service")]
    pub family: Option<FamilyArg>,

    /// The ECS service whose tasks to reach.
    #[arg(long, env = "KITE_SERVICE", value_name = "NAME", value_parser = config::parse_service)]
    pub service: Option<String>,

    /// The container (in those tasks) whose ports to reach.
    #[arg(long, env = "KITE_NAME", value_name = "CONTAINER", value_parser = config::parse_container_name)]
    pub name: String,

    /// Route to the public IP of the instance or ENI instead of the private one.
    #[arg(long, env = "KITE_PUBLIC")]
    pub public: bool,

    /// Listen on LOCAL for the container port CONTAINER (repeatable, or comma-separated).
    #[arg(long, env = "KITE_PORT_MAP", value_name = "LOCAL:CONTAINER",
          value_parser = config::parse_port_map, value_delimiter = ',')]
    pub port_map: Vec<PortMap>,
}

impl SelectArgs {
    /// The task selector; clap guarantees exactly one of the two is set.
    pub fn selector(&self) -> Selector {
        match (&self.family, &self.service) {
            (Some(f), _) => Selector::Family {
                name: f.name.clone(),
                revision: f.revision,
            },
            (None, Some(s)) => Selector::Service(s.clone()),
            (None, None) => unreachable!("clap requires --family or --service"),
        }
    }
}

/// `kite proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Which tasks and container.
    #[command(flatten)]
    pub select: SelectArgs,

    /// The address to listen on (127.0.0.1 for a sidecar sharing the task's network).
    #[arg(long, env = "KITE_LISTEN_ADDR", default_value = "0.0.0.0")]
    pub listen_addr: IpAddr,

    /// Discovery period; each round waits this long plus up to as much again in jitter.
    #[arg(long, env = "KITE_REFRESH", value_name = "DURATION", default_value = "5s",
          value_parser = config::parse_positive_duration)]
    pub refresh: Duration,

    /// How long to wait for a backend to accept a connection before trying another.
    #[arg(long, env = "KITE_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "3s",
          value_parser = config::parse_positive_duration)]
    pub connect_timeout: Duration,

    /// On SIGTERM or SIGINT, how long open connections may finish before they are closed.
    #[arg(long, env = "KITE_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "25s",
          value_parser = config::parse_duration)]
    pub drain_timeout: Duration,

    /// Serve /healthz, /readyz, /metrics and /targets on this address (off unless set).
    #[arg(long, env = "KITE_ADMIN_ADDR", value_name = "ADDR:PORT")]
    pub admin_addr: Option<SocketAddr>,

    /// /readyz turns not-ready when the last good discovery round is older than this.
    #[arg(long, env = "KITE_STALE_AFTER", value_name = "DURATION", default_value = "5m",
          value_parser = config::parse_positive_duration)]
    pub stale_after: Duration,

    /// The most connections served at once; more wait briefly, then are refused
    /// [default: derived from the open-file limit].
    #[arg(long, env = "KITE_MAX_CONNECTIONS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Close a connection after this long without a byte either way (off unless set).
    #[arg(long, env = "KITE_IDLE_TIMEOUT", value_name = "DURATION",
          value_parser = config::parse_positive_duration)]
    pub idle_timeout: Option<Duration>,

    /// Threads that serve connections, each with its own listener on every port
    /// [default: one per CPU the process may use].
    #[arg(long, env = "KITE_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

/// `kite health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The admin address of the kite proxy to ask (its --admin-addr).
    #[arg(
        long,
        env = "KITE_ADMIN_ADDR",
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:9901"
    )]
    pub admin_addr: SocketAddr,

    /// How long to wait for the answer.
    #[arg(long, value_name = "DURATION", default_value = "2s",
          value_parser = config::parse_positive_duration)]
    pub timeout: Duration,
}

/// `kite targets`.
#[derive(Debug, Args)]
pub struct TargetsArgs {
    /// Which tasks and container.
    #[command(flatten)]
    pub select: SelectArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `kite attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The ECS cluster (name or ARN) [default: the cluster in a new-format
    /// task ARN, else the cluster of the task kite runs in, else `default`].
    #[arg(long, env = "KITE_CLUSTER")]
    pub cluster: Option<String>,

    /// The task: its id, or its ARN (old or new format).
    #[arg(long, env = "KITE_TASK", value_name = "ID|ARN",
          value_parser = crate::attach::parse_task_ref,
          required_unless_present = "run", conflicts_with = "run")]
    pub task: Option<crate::attach::TaskRef>,

    /// Start a new task of this task definition (RunTask), then attach to it.
    #[arg(long, env = "KITE_RUN", value_name = "TASKDEF[:REV]", value_parser = config::parse_family)]
    pub run: Option<FamilyArg>,

    /// With --run: the task's startedBy, to find it later.
    #[arg(long, env = "KITE_STARTED_BY", default_value = "kite-attach")]
    pub started_by: String,

    /// With --run: leave the task running when the attach ends.
    #[arg(long, env = "KITE_KEEP")]
    pub keep: bool,

    /// The container; may be left out when exactly one container of the task exposes ports.
    #[arg(long, env = "KITE_NAME", value_name = "CONTAINER", value_parser = config::parse_container_name)]
    pub name: Option<String>,

    /// The container port; may be left out when the container exposes exactly one.
    #[arg(long, env = "KITE_PORT", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Reach the task through the public IP of its instance or ENI.
    #[arg(long, env = "KITE_PUBLIC")]
    pub public: bool,

    /// How long to wait for the task to be RUNNING.
    #[arg(long, env = "KITE_WAIT", value_name = "DURATION", default_value = "5m",
          value_parser = config::parse_positive_duration)]
    pub wait: Duration,

    /// How often to ask ECS for the task's status while waiting.
    #[arg(long, env = "KITE_POLL", value_name = "DURATION", default_value = "2s",
          value_parser = config::parse_positive_duration)]
    pub poll: Duration,

    /// How long to wait for the container port (or the Docker daemon) to accept a connection.
    #[arg(long, env = "KITE_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "5s",
          value_parser = config::parse_positive_duration)]
    pub connect_timeout: Duration,

    /// Forward this local address to the task (many connections) instead of using stdin/stdout.
    #[arg(
        long,
        env = "KITE_LISTEN",
        value_name = "ADDR",
        conflicts_with = "docker"
    )]
    pub listen: Option<SocketAddr>,

    /// Attach to the container's own stdin/stdout/stderr through the Docker daemon on its host.
    #[arg(long, env = "KITE_DOCKER")]
    pub docker: bool,

    /// The Docker daemon (tcp://HOST:PORT or unix:///PATH); default: tcp://INSTANCE-IP:--docker-port.
    #[arg(long, env = "KITE_DOCKER_HOST", value_name = "URL", requires = "docker",
          value_parser = crate::attach::parse_docker_host)]
    pub docker_host: Option<crate::attach::DockerHost>,

    /// The Docker daemon's TCP port on the task's instance.
    #[arg(long, env = "KITE_DOCKER_PORT", default_value_t = 2376,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub docker_port: u16,

    /// Mutual TLS to a tcp:// Docker daemon; plain TCP only with an explicit --docker-tls=false.
    #[arg(long, env = "KITE_DOCKER_TLS", default_value_t = true, action = clap::ArgAction::Set,
          value_name = "BOOL")]
    pub docker_tls: bool,

    /// The directory with ca.pem, cert.pem and key.pem for the Docker daemon's TLS.
    #[arg(long, env = "DOCKER_CERT_PATH", value_name = "DIR")]
    pub docker_cert_path: Option<std::path::PathBuf>,

    /// The keys that detach from a container with a TTY, leaving it running.
    #[arg(long, env = "KITE_DETACH_KEYS", default_value = "ctrl-p,ctrl-q",
          value_parser = crate::attach::parse_detach_keys)]
    pub detach_keys: crate::attach::DetachKeys,
}

/// `kite whoami`.
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Print one JSON object instead of aligned lines.
    #[arg(long)]
    pub json: bool,

    /// The ECS agent's introspection API, asked when no task metadata
    /// endpoint is set (EC2 bridge networking).
    #[arg(long, env = "KITE_ECS_AGENT_URI", value_name = "URL",
          default_value = crate::metadata::DEFAULT_AGENT_URI)]
    pub agent_uri: String,

    /// The files whose cgroup path ends in the container id (for tests).
    #[arg(long, env = "KITE_CGROUP_PATH", value_name = "FILE", value_delimiter = ',',
          default_values = ["/proc/self/cgroup", "/proc/self/cpuset"], hide = true)]
    pub cgroup_path: Vec<std::path::PathBuf>,
}

/// The subcommand names, so that anything else in first position is read as
/// `kite proxy` flags.
const SUBCOMMANDS: &[&str] = &["proxy", "targets", "attach", "health", "whoami", "help"];

/// The original Task Kite's flags (Go `flag` package names) and kite's.
const ORIGINAL_FLAGS: &[(&str, &str)] = &[
    ("family", "family"),
    ("service", "service"),
    ("name", "name"),
    ("cluster", "cluster"),
    ("public", "public"),
    ("loglevel", "log-level"),
];

/// Rewrites the original's argument form into kite's.
///
/// The original took Go-style flags and no subcommand
/// (`kite -family=web -name=nginx -cluster=prod -public -loglevel=debug`).
/// When the first argument is not a subcommand (nor help or version), this
/// inserts `proxy` and turns each original flag into its kite spelling, so
/// existing task definitions keep working. Anything else is passed through
/// for clap to accept or reject.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    if SUBCOMMANDS.contains(&first) || ["-h", "--help", "-V", "--version"].contains(&first) {
        return args;
    }
    let mut out = Vec::with_capacity(args.len() + 1);
    out.push(args[0].clone());
    out.push(OsString::from("proxy"));
    for arg in &args[1..] {
        match arg.to_str().and_then(rewrite_original_flag) {
            Some(Some(new)) => out.push(OsString::from(new)),
            Some(None) => {} // `-public=false`: the default, so nothing to pass.
            None => out.push(arg.clone()),
        }
    }
    out
}

/// One original flag in kite's spelling: `Some(None)` drops it, `None` is
/// "not a flag, keep as is". Go accepts `-flag` and `--flag` alike, so any
/// other single-dash word becomes `--word` too, and clap names it in full
/// if it is unknown.
fn rewrite_original_flag(arg: &str) -> Option<Option<String>> {
    let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    let (flag, value) = match bare.split_once('=') {
        Some((f, v)) => (f, Some(v)),
        None => (bare, None),
    };
    let is_word = flag.len() > 1 && flag.chars().all(|c| c.is_ascii_alphabetic() || c == '-');
    if !is_word {
        return None;
    }
    let kite = ORIGINAL_FLAGS
        .iter()
        .find(|(old, _)| *old == flag)
        .map_or(flag, |(_, kite)| kite);
    if kite == "public" {
        // Go's boolean flags accept these spellings.
        return match value {
            None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => {
                Some(Some("--public".into()))
            }
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Some(None),
            Some(other) => Some(Some(format!("--public={other}"))),
        };
    }
    Some(Some(match value {
        Some(v) => format!("--{kite}={v}"),
        None => format!("--{kite}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
        let cases: &[(&[&str], &str)] = &[
            (&["kite", "proxy", "--family", "web"], "--name"),
            (
                &[
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
            (&["kite", "proxy", "--name", "n"], "--family"),
            (
                &["kite", "proxy", "--family", "w:x", "--name", "n"],
                "--family",
            ),
            (
                &[
                    "kite",
                    "proxy",
                    "--family",
                    "w",
                    "--name",
                    "n",
                    "--refresh",
                    "soon",
                ],
                "--refresh",
            ),
            (
                &[
                    "kite",
                    "proxy",
                    "--family",
                    "w",
                    "--name",
                    "n",
                    "--port-map",
                    "80",
                ],
                "--port-map",
            ),
        ];
        for (args, flag) in cases {
            let err = Cli::try_parse_from(*args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let msg = err.to_string();
            assert!(msg.contains(flag), "{args:?}: {msg}");
        }
    }
}
