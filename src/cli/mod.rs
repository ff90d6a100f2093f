//! The command line: clap definitions, `KITE_*` environment variables, and
//! the original Task Kite's argument form.

mod original;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{
    self, arn, DetachKeys, DockerHost, FamilyArg, PortMap, PortMaps, Selector, TaskRef,
};
use crate::discovery::Query;
use crate::{attach, proxy};

pub use original::normalize_args;

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

    /// The discovery query in `cluster` (the resolved one); `Err` is a
    /// usage error about the port maps.
    pub fn query(&self, cluster: String) -> Result<Query, String> {
        let port_maps =
            PortMaps::new(self.port_map.clone()).map_err(|msg| format!("--port-map: {msg}"))?;
        Ok(Query {
            cluster,
            selector: self.selector(),
            container: self.name.clone(),
            public: self.public,
            port_maps,
        })
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

impl ProxyArgs {
    /// What `kite proxy` is asked to do, in `cluster` (the resolved one);
    /// `Err` is a usage error.
    pub fn config(&self, cluster: String) -> Result<proxy::Config, String> {
        Ok(proxy::Config {
            refresh: self.refresh,
            connect_timeout: self.connect_timeout,
            drain_timeout: self.drain_timeout,
            admin_addr: self.admin_addr,
            stale_after: self.stale_after,
            max_connections: self.max_connections.map(|n| n as usize),
            idle_timeout: self.idle_timeout,
            threads: (self.threads).map_or_else(proxy::default_threads, usize::from),
            ..proxy::Config::new(self.select.query(cluster)?, self.listen_addr)
        })
    }
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
          value_parser = config::parse_task_ref,
          required_unless_present = "run", conflicts_with = "run")]
    pub task: Option<TaskRef>,

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
          value_parser = config::parse_docker_host)]
    pub docker_host: Option<DockerHost>,

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
          value_parser = config::parse_detach_keys)]
    pub detach_keys: DetachKeys,
}

impl AttachArgs {
    /// The checked options: the flag combinations clap cannot express, and
    /// `--cluster` against the cluster in a new-format task ARN. The error
    /// is a usage error's message (exit 2).
    pub fn options(self) -> Result<attach::Options, String> {
        if self.keep && self.run.is_none() {
            return Err("--keep only applies with --run (a task kite started)".into());
        }
        if self.port.is_some() && self.docker {
            return Err(
                "--port does not apply to --docker (it attaches to the container's stdio)".into(),
            );
        }
        let from_arn = self.task.as_ref().and_then(|t| t.cluster.clone());
        let cluster = match (self.cluster, from_arn) {
            (Some(flag), Some(arn)) if arn::last_segment(&flag) != arn => {
                return Err(format!(
                    "--cluster {flag} does not match the cluster in the task ARN ({arn}); \
                     leave --cluster out or give the task's id"
                ));
            }
            (Some(flag), _) => Some(flag),
            (None, from_arn) => from_arn,
        };
        let task = match (self.task, self.run) {
            (Some(task), _) => attach::Which::Existing(task),
            (None, Some(taskdef)) => attach::Which::Run {
                taskdef,
                started_by: self.started_by,
                keep: self.keep,
            },
            (None, None) => return Err("--task or --run is required".into()),
        };
        let mode = if self.docker {
            attach::Mode::Docker(attach::docker::Options {
                host: self.docker_host,
                port: self.docker_port,
                tls: self.docker_tls,
                cert_path: self.docker_cert_path,
                detach_keys: self.detach_keys,
            })
        } else {
            attach::Mode::Tcp {
                port: self.port,
                listen: self.listen,
            }
        };
        Ok(attach::Options {
            cluster,
            task,
            container: self.name,
            public: self.public,
            wait: attach::Wait {
                limit: self.wait,
                poll: self.poll,
            },
            connect_timeout: self.connect_timeout,
            mode,
        })
    }
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
