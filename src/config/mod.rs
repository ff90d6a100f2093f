//! Validated configuration values and the parsers of outside input: the
//! flags, and the ARNs that AWS and the ECS agent hand back.
//!
//! Each parser returns a message that names the problem and the expected
//! form; clap prefixes it with the flag, and exits 2. This module imports
//! nothing else from kite, so every other module may use it.

pub mod arn;
mod cloud_map;
mod detach_keys;
mod docker_host;
mod routing;
mod run;
mod task_ref;

use std::fmt;
use std::time::Duration;

pub use cloud_map::{parse_cloud_map, CloudMapArg};
pub use detach_keys::{parse_detach_keys, DetachKeys};
pub use docker_host::{parse_docker_host, DockerHost};
pub use routing::{Balance, IpFamily, ProxyProtocol};
pub use run::{parse_env_var, parse_id_list, parse_placement_constraint, IdList};
pub use task_ref::{parse_task_ref, TaskRef};

/// Which tasks to route to: the tasks of a family (optionally one revision),
/// or the tasks of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// `--family NAME[:REVISION]`.
    Family {
        /// The task definition family.
        name: String,
        /// Only tasks of this revision, when set.
        revision: Option<u32>,
    },
    /// `--service NAME`.
    Service(String),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Family {
                name,
                revision: Some(rev),
            } => write!(f, "family {name}:{rev}"),
            Selector::Family { name, .. } => write!(f, "family {name}"),
            Selector::Service(name) => write!(f, "service {name}"),
        }
    }
}

/// A task family with an optional revision, as given to `--family`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyArg {
    /// The family name.
    pub name: String,
    /// The revision, when given as `NAME:REV`.
    pub revision: Option<u32>,
}

/// Parses `NAME`, `NAME:REV` or a task definition ARN ending in `/NAME:REV`.
pub fn parse_family(s: &str) -> Result<FamilyArg, String> {
    let s = s.trim();
    // A task definition ARN names the family after the last '/'.
    let s = match s.strip_prefix("arn:") {
        Some(_) => s
            .rsplit_once(":task-definition/")
            .map(|(_, rest)| rest)
            .ok_or_else(|| format!("'{s}' is an ARN but not a task definition ARN"))?,
        None => s,
    };
    let (name, revision) = match s.split_once(':') {
        Some((name, rev)) => {
            let rev: u32 = rev.parse().ok().filter(|r| *r > 0).ok_or_else(|| {
                format!("revision '{rev}' is not a positive integer (expected NAME or NAME:REVISION, e.g. web:7)")
            })?;
            (name, Some(rev))
        }
        None => (s, None),
    };
    validate_name(name, "family")?;
    Ok(FamilyArg {
        name: name.to_owned(),
        revision,
    })
}

/// Parses a service name (or a service ARN, whose last segment is the name).
pub fn parse_service(s: &str) -> Result<String, String> {
    let s = s.trim();
    let name = match s.strip_prefix("arn:") {
        Some(_) => arn::last_segment(s),
        None => s,
    };
    validate_name(name, "service")?;
    Ok(name.to_owned())
}

/// Parses a container name: non-empty, at most 255 letters, digits, `-`, `_`.
pub fn parse_container_name(s: &str) -> Result<String, String> {
    validate_name(s.trim(), "container")?;
    Ok(s.trim().to_owned())
}

/// ECS names are 1 to 255 letters, digits, hyphens and underscores.
fn validate_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} name is empty"));
    }
    if name.len() > 255 {
        return Err(format!("the {what} name is longer than 255 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "the {what} name '{name}' contains '{c}'; ECS names use only letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// `--port-map LOCAL:CONTAINER`: listen on LOCAL for the container's port
/// CONTAINER, for sidecars whose container port is already taken locally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMap {
    /// The port kite listens on.
    pub local: u16,
    /// The container port it forwards to.
    pub container: u16,
}

/// Parses `LOCAL:CONTAINER`, both ports 1-65535.
pub fn parse_port_map(s: &str) -> Result<PortMap, String> {
    let (local, container) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not LOCAL:CONTAINER (e.g. 8080:80)"))?;
    let port = |p: &str, which: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{which} port '{p}' in '{s}' is not a port number 1-65535"))
    };
    Ok(PortMap {
        local: port(local, "local")?,
        container: port(container, "container")?,
    })
}

/// The listen port for each container port, after `--port-map`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortMaps(Vec<PortMap>);

impl PortMaps {
    /// Checks that no local or container port is mapped twice.
    pub fn new(maps: Vec<PortMap>) -> Result<Self, String> {
        for (i, a) in maps.iter().enumerate() {
            for b in &maps[..i] {
                if a.local == b.local {
                    return Err(format!(
                        "local port {} is mapped twice ({}:{} and {}:{})",
                        a.local, b.local, b.container, a.local, a.container
                    ));
                }
                if a.container == b.container {
                    return Err(format!(
                        "container port {} is mapped twice ({}:{} and {}:{})",
                        a.container, b.local, b.container, a.local, a.container
                    ));
                }
            }
        }
        Ok(PortMaps(maps))
    }

    /// The maps, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &PortMap> {
        self.0.iter()
    }

    /// The port kite listens on for `container_port`.
    pub fn listen_port(&self, container_port: u16) -> u16 {
        self.0
            .iter()
            .find(|m| m.container == container_port)
            .map_or(container_port, |m| m.local)
    }
}

/// Parses a duration: `250ms`, `5s`, `1m`, `1h`, Go-style sums such as
/// `1m30s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration (expected e.g. 500ms, 5s, 1m30s)");
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
        rest = &rest[unit..];
    }
    if s.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Parses a positive duration (a refresh period or a timeout cannot be zero).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("'{s}' must be greater than zero"));
    }
    Ok(d)
}

/// Parses a log level, also accepting the original's logrus names
/// (`fatal`, `panic` map to `error`, `warning` to `warn`) and full
/// `tracing` filter directives such as `kite=debug,info`.
pub fn parse_log_level(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_lowercase();
    let level = match s.as_str() {
        "fatal" | "panic" => "error",
        "warning" => "warn",
        other => other,
    };
    let expected =
        "expected trace, debug, info, warn, error or off, or directives like kite=debug,info";
    // tracing-subscriber's directive parser can panic on multi-byte
    // characters (found by fuzzing); targets, spans and levels are ASCII.
    if let Some(c) = level.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return Err(format!(
            "'{s}' is not a log level: {c:?} is not allowed, only visible ASCII \
             ({expected})"
        ));
    }
    // A bare word would parse as a target name and silently log nothing.
    let is_directive = level.contains('=') || level.contains(',');
    if !is_directive && !["trace", "debug", "info", "warn", "error", "off"].contains(&level) {
        return Err(format!("'{s}' is not a log level ({expected})"));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map_err(|e| format!("'{s}' is not a log filter ({expected}): {e}"))?;
    Ok(level.to_owned())
}

#[cfg(test)]
mod tests;
