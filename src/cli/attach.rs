//! `kite attach`'s arguments, and the [`attach::Options`] they make.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::attach;
use crate::config::{self, arn, DetachKeys, DockerHost, FamilyArg, IdList, TaskRef};

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

    /// With --run: an environment variable for the container (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE",
          value_parser = config::parse_env_var)]
    pub env: Vec<(String, String)>,

    /// With --run: the task's subnets (awsvpc), comma-separated.
    #[arg(long, value_name = "ID,...", value_parser = config::parse_id_list)]
    pub subnets: Option<IdList>,

    /// With --run: the task's security groups (awsvpc), comma-separated.
    #[arg(long, value_name = "ID,...", requires = "subnets", value_parser = config::parse_id_list)]
    pub security_groups: Option<IdList>,

    /// With --run: give the task's network interface a public IP (awsvpc).
    #[arg(long, requires = "subnets")]
    pub assign_public_ip: bool,

    /// With --run: the launch type.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        conflicts_with = "capacity_provider"
    )]
    pub launch_type: Option<LaunchTypeArg>,

    /// With --run: the capacity provider to run on (instead of --launch-type).
    #[arg(long, value_name = "NAME")]
    pub capacity_provider: Option<String>,

    /// With --run: a memberOf placement constraint, in the cluster query language (repeatable).
    #[arg(long, value_name = "EXPR",
          value_parser = config::parse_placement_constraint)]
    pub placement_constraint: Vec<String>,

    /// The container; may be left out when exactly one container of the task exposes
    /// ports, or, with --run, when the task definition has one container.
    #[arg(long, visible_alias = "container", env = "KITE_NAME", value_name = "CONTAINER",
          value_parser = config::parse_container_name)]
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

    /// The Docker daemon (tcp://HOST:PORT or unix:///PATH) [default: DOCKER_HOST, else
    /// tcp://INSTANCE-IP:--docker-port].
    #[arg(long, env = "KITE_DOCKER_HOST", value_name = "URL", requires = "docker",
          value_parser = config::parse_docker_host)]
    pub docker_host: Option<DockerHost>,

    /// The Docker daemon's TCP port on the task's instance.
    #[arg(long, env = "KITE_DOCKER_PORT", default_value_t = 2376,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub docker_port: u16,

    /// Mutual TLS to a tcp:// Docker daemon [default: true; with the daemon from DOCKER_HOST,
    /// whether DOCKER_TLS_VERIFY is set, as the docker CLI does].
    #[arg(long, env = "KITE_DOCKER_TLS", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub docker_tls: Option<bool>,

    /// The directory with ca.pem, cert.pem and key.pem for the Docker daemon's TLS
    /// [default: ~/.docker when it holds them].
    #[arg(long, env = "DOCKER_CERT_PATH", value_name = "DIR")]
    pub docker_cert_path: Option<std::path::PathBuf>,

    /// Send the SIGINT, SIGTERM and SIGHUP kite gets to the container, and go on until it
    /// exits (a second Ctrl-C within a second leaves) [default: true without a TTY].
    #[arg(long, env = "KITE_SIG_PROXY", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub sig_proxy: Option<bool>,

    /// The keys that detach from a container with a TTY, leaving it running.
    #[arg(long, env = "KITE_DETACH_KEYS", default_value = "ctrl-p,ctrl-q",
          value_parser = config::parse_detach_keys)]
    pub detach_keys: DetachKeys,

    /// With --run: the command for the container, after `--` (default: the task definition's).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--launch-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LaunchTypeArg {
    /// On the cluster's container instances.
    #[value(name = "EC2")]
    Ec2,
    /// On Fargate.
    #[value(name = "FARGATE")]
    Fargate,
}

impl AttachArgs {
    /// The checked options: the flag combinations clap cannot express,
    /// `--cluster` against the cluster in a new-format task ARN, and the
    /// docker CLI's environment (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`,
    /// `HOME`). The error is a usage error's message (exit 2).
    pub fn options(self) -> Result<attach::Options, String> {
        self.options_in(&|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`AttachArgs::options`] with the environment variables `env` gives.
    pub fn options_in(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<attach::Options, String> {
        if self.keep && self.run.is_none() {
            return Err("--keep only applies with --run (a task kite started)".into());
        }
        if self.run.is_none() {
            let run_only = [
                ("a command after --", !self.command.is_empty()),
                ("--env", !self.env.is_empty()),
                ("--subnets", self.subnets.is_some()),
                ("--security-groups", self.security_groups.is_some()),
                ("--assign-public-ip", self.assign_public_ip),
                ("--launch-type", self.launch_type.is_some()),
                ("--capacity-provider", self.capacity_provider.is_some()),
                (
                    "--placement-constraint",
                    !self.placement_constraint.is_empty(),
                ),
            ];
            if let Some((what, _)) = run_only.iter().find(|(_, given)| *given) {
                return Err(format!(
                    "{what} only applies with --run (a task kite starts)"
                ));
            }
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
            (None, Some(taskdef)) => attach::Which::Run(attach::Run {
                taskdef,
                started_by: self.started_by,
                keep: self.keep,
                command: self.command,
                env: self.env,
                network: self.subnets.map(|subnets| attach::run::Awsvpc {
                    subnets: subnets.0,
                    security_groups: self.security_groups.map(|g| g.0).unwrap_or_default(),
                    assign_public_ip: self.assign_public_ip,
                }),
                launch: match (self.launch_type, self.capacity_provider) {
                    (Some(LaunchTypeArg::Ec2), _) => Some(attach::run::Launch::Ec2),
                    (Some(LaunchTypeArg::Fargate), _) => Some(attach::run::Launch::Fargate),
                    (None, Some(name)) => Some(attach::run::Launch::CapacityProvider(name)),
                    (None, None) => None,
                },
                constraints: self.placement_constraint,
            }),
            (None, None) => return Err("--task or --run is required".into()),
        };
        let mode = if self.docker {
            attach::Mode::Docker(attach::docker::Options {
                sig_proxy: self.sig_proxy,
                ..docker_options(
                    self.docker_host,
                    self.docker_port,
                    self.docker_tls,
                    self.docker_cert_path,
                    self.detach_keys,
                    env,
                )?
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

/// The Docker side, as the docker CLI reads it: the flags (and `KITE_*`)
/// first; else `DOCKER_HOST`, with TLS when `DOCKER_TLS_VERIFY` is set;
/// else the task's instance, with TLS. The certificates default to
/// `~/.docker` when it holds a ca.pem.
fn docker_options(
    host: Option<DockerHost>,
    port: u16,
    tls: Option<bool>,
    cert_path: Option<std::path::PathBuf>,
    detach_keys: DetachKeys,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<attach::docker::Options, String> {
    let (host, tls) = match (host, env("DOCKER_HOST")) {
        (Some(host), _) => (Some(host), tls.unwrap_or(true)),
        (None, Some(url)) => {
            let host = config::parse_docker_host(&url)
                .map_err(|e| format!("DOCKER_HOST: {e} (unset it, or give --docker-host)"))?;
            (
                Some(host),
                tls.unwrap_or(env("DOCKER_TLS_VERIFY").is_some()),
            )
        }
        (None, None) => (None, tls.unwrap_or(true)),
    };
    let cert_path = cert_path.or_else(|| {
        let dir = std::path::Path::new(&env("HOME")?).join(".docker");
        dir.join("ca.pem").is_file().then_some(dir)
    });
    Ok(attach::docker::Options {
        host,
        port,
        tls,
        cert_path,
        detach_keys,
        sig_proxy: None,
    })
}
