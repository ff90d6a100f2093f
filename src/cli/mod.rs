//! The command line: clap definitions, `KITE_*` environment variables, and
//! the original Task Kite's argument form.

mod attach;
mod original;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, CloudMapArg, FamilyArg, PortMap, PortMaps, Selector};
use crate::discovery::{cloudmap, Query, Select};
use crate::proxy;

pub use attach::AttachArgs;
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
    Attach(Box<AttachArgs>),
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
          value_parser = config::parse_family,
          required_unless_present_any = ["service", "cloud_map"], conflicts_with = "service")]
    pub family: Option<FamilyArg>,

    /// The ECS service whose tasks to reach.
    #[arg(long, env = "KITE_SERVICE", value_name = "NAME", value_parser = config::parse_service)]
    pub service: Option<String>,

    /// The AWS Cloud Map service whose healthy instances to reach, instead of ECS tasks
    /// (no --family, --service or --name then).
    #[arg(long, env = "KITE_CLOUD_MAP", value_name = "NAMESPACE/SERVICE",
          value_parser = config::parse_cloud_map,
          conflicts_with_all = ["family", "service", "name", "cluster", "public"])]
    pub cloud_map: Option<CloudMapArg>,

    /// The container (in those tasks) whose ports to reach.
    #[arg(long, env = "KITE_NAME", value_name = "CONTAINER", value_parser = config::parse_container_name,
          required_unless_present = "cloud_map")]
    pub name: Option<String>,

    /// Route to the public IP of the instance or ENI instead of the private one.
    #[arg(long, env = "KITE_PUBLIC")]
    pub public: bool,

    /// Which address of a task that has both an IPv4 and an IPv6 one: auto takes IPv4.
    #[arg(long, env = "KITE_IP_FAMILY", value_name = "FAMILY", value_enum,
          default_value_t = config::IpFamily::Auto)]
    pub ip_family: config::IpFamily,

    /// Listen on LOCAL for the container port CONTAINER (repeatable, or comma-separated);
    /// with --cloud-map, on LOCAL for instance port CONTAINER, which instances registered
    /// without a port are reached on.
    #[arg(long, env = "KITE_PORT_MAP", value_name = "LOCAL:CONTAINER",
          value_parser = config::parse_port_map, value_delimiter = ',')]
    pub port_map: Vec<PortMap>,
}

impl SelectArgs {
    /// The task selector, when ECS is the source (clap requires `--family`
    /// or `--service` unless `--cloud-map` is given).
    pub fn selector(&self) -> Option<Selector> {
        match (&self.family, &self.service) {
            (Some(f), _) => Some(Selector::Family {
                name: f.name.clone(),
                revision: f.revision,
            }),
            (None, Some(s)) => Some(Selector::Service(s.clone())),
            (None, None) => None,
        }
    }

    /// What to discover, in `cluster` (the resolved one) for ECS: the
    /// tasks of the ECS query, or the instances of `--cloud-map`. `Err` is
    /// a usage error naming the flag.
    pub fn select(&self, cluster: String) -> Result<Select, String> {
        let port_maps =
            PortMaps::new(self.port_map.clone()).map_err(|msg| format!("--port-map: {msg}"))?;
        if let Some(CloudMapArg { namespace, service }) = &self.cloud_map {
            return Ok(Select::CloudMap(cloudmap::Query {
                namespace: namespace.clone(),
                service: service.clone(),
                ip_family: self.ip_family,
                port_maps,
            }));
        }
        let need = "--family NAME or --service NAME (or --cloud-map NAMESPACE/SERVICE)";
        let selector = self
            .selector()
            .ok_or_else(|| format!("{need} is required"))?;
        let container = (self.name.clone())
            .ok_or_else(|| "--name CONTAINER is required with --family or --service".to_owned())?;
        Ok(Select::Ecs(Query {
            cluster,
            selector,
            container,
            public: self.public,
            ip_family: self.ip_family,
            port_maps,
        }))
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

    /// How long a task's status and health are trusted: each known task is
    /// described again once per this, spread over the rounds (new and starting
    /// tasks every round); with --cloud-map, the healthy instances are listed again.
    #[arg(long, env = "KITE_HEALTH_REFRESH", value_name = "DURATION", default_value = "30s",
          value_parser = config::parse_positive_duration)]
    pub health_refresh: Duration,

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

    /// How a connection picks among its port's backends: at random, or the one of two
    /// at random with fewer connections open through this kite.
    #[arg(long, env = "KITE_BALANCE", value_name = "POLICY", value_enum,
          default_value_t = config::Balance::Random)]
    pub balance: config::Balance,

    /// kite's own availability zone [default: AvailabilityZone from the task metadata endpoint].
    #[arg(long, env = "KITE_ZONE", value_name = "NAME")]
    pub zone: Option<String>,

    /// Send new connections to the targets in kite's own zone while it has at least
    /// --zone-min-targets usable ones; else to every zone.
    #[arg(long, env = "KITE_ZONE_AFFINITY")]
    pub zone_affinity: bool,

    /// The fewest usable targets of a port in kite's own zone for --zone-affinity to keep
    /// to it.
    #[arg(long, env = "KITE_ZONE_MIN_TARGETS", value_name = "N", default_value = "2",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub zone_min_targets: u16,

    /// Send each backend a PROXY protocol header (HAProxy's, version 1 or 2) with the
    /// client's address before the client's bytes (off unless set).
    #[arg(long, env = "KITE_PROXY_PROTOCOL", value_name = "VERSION", value_enum)]
    pub proxy_protocol: Option<config::ProxyProtocol>,
}

impl ProxyArgs {
    /// What `kite proxy` is asked to do, in `cluster` (the resolved one),
    /// with `zone` (the task's, from its metadata) unless `--zone` names
    /// one; `Err` is a usage error.
    pub fn config(&self, cluster: String, zone: Option<String>) -> Result<proxy::Config, String> {
        Ok(proxy::Config {
            refresh: self.refresh,
            health_refresh: self.health_refresh,
            connect_timeout: self.connect_timeout,
            drain_timeout: self.drain_timeout,
            admin_addr: self.admin_addr,
            stale_after: self.stale_after,
            max_connections: self.max_connections.map(|n| n as usize),
            idle_timeout: self.idle_timeout,
            threads: (self.threads).map_or_else(proxy::default_threads, usize::from),
            proxy_protocol: self.proxy_protocol,
            balance: self.balance,
            zone: self.zone.clone().or(zone),
            zone_affinity: self.zone_affinity,
            zone_min_targets: usize::from(self.zone_min_targets),
            ..proxy::Config::new(self.select.select(cluster)?, self.listen_addr)
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
