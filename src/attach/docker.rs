//! `kite attach --docker`: the container's own stdin, stdout and stderr,
//! through the Docker Engine API on the task's host (bollard).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_ecs::types::Task;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{AttachContainerOptions, ListContainersOptions};
use bollard::Docker;
use tokio_util::sync::CancellationToken;

use super::session::{exit_code, Ended, Session};
use super::term::{DetachKeys, RawMode};
use super::{short_id, tls};
use crate::cli::AttachArgs;
use crate::discovery::Discovery;

/// The ECS agent's Docker labels that name a container's task and name.
const TASK_ARN_LABEL: &str = "com.amazonaws.ecs.task-arn";
const CONTAINER_NAME_LABEL: &str = "com.amazonaws.ecs.container-name";

/// Where a Docker daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerHost {
    /// `tcp://HOST:PORT` (TLS unless `--docker-tls=false`).
    Tcp(String),
    /// `unix:///PATH`, for a daemon on the machine kite runs on.
    Unix(PathBuf),
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerHost::Tcp(a) => write!(f, "tcp://{a}"),
            DockerHost::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// Parses `tcp://HOST[:PORT]` (port 2376 when left out) or `unix:///PATH`.
pub fn parse_docker_host(s: &str) -> Result<DockerHost, String> {
    let s = s.trim();
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!(
                "'{s}': a unix socket needs an absolute path (unix:///var/run/docker.sock)"
            ));
        }
        return Ok(DockerHost::Unix(PathBuf::from(path)));
    }
    let Some(addr) = s.strip_prefix("tcp://") else {
        return Err(format!(
            "'{s}' is not a Docker host (expected tcp://HOST:PORT or unix:///PATH)"
        ));
    };
    let addr = addr.trim_end_matches('/');
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (h, Some(p)),
        _ => (addr, None),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("'{s}' names no host (expected tcp://HOST:PORT)"));
    }
    let port = match port {
        None => 2376,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("'{s}': port '{p}' is not a port number 1-65535"))?,
    };
    Ok(DockerHost::Tcp(format!("{host}:{port}")))
}

/// Everything the Docker attach needs, resolved from ECS.
#[derive(Debug)]
pub struct Spec {
    /// The daemon.
    pub host: DockerHost,
    /// The TLS files (ca.pem, cert.pem, key.pem) for a tcp daemon; None for
    /// plain TCP or a unix socket.
    pub tls: Option<tls::Files>,
    /// The task's ARN, for the label lookup.
    pub task_arn: String,
    /// The container name in the task.
    pub container: String,
    /// The Docker container id ECS reported, when it did.
    pub runtime_id: Option<String>,
    /// The detach key sequence.
    pub detach_keys: DetachKeys,
    /// How long reaching the daemon may take.
    pub connect_timeout: Duration,
}

/// Resolves the Docker side of a task: the daemon on its instance (or
/// `--docker-host`), TLS files, and the container's runtime id.
pub async fn spec(
    discovery: &mut Discovery,
    task: &Task,
    container: &str,
    cluster: &str,
    args: &AttachArgs,
) -> Result<Spec> {
    let arn = task.task_arn().unwrap_or_default().to_owned();
    let id = short_id(&arn).to_owned();
    let fargate = task.launch_type().is_some_and(|l| l.as_str() == "FARGATE");
    if fargate || (task.container_instance_arn().is_none() && args.docker_host.is_none()) {
        bail!(
            "task {id} runs on Fargate, which has no Docker daemon kite can reach; get a shell \
             with `aws ecs execute-command --cluster {cluster} --task {id} --container {container} \
             --interactive --command /bin/sh` (the task needs enableExecuteCommand)"
        );
    }
    let host = match &args.docker_host {
        Some(h) => h.clone(),
        None => {
            let addrs = discovery.instance_addrs(task).await?.with_context(|| {
                format!(
                    "cannot find the EC2 instance of task {id} (its container instance is gone)"
                )
            })?;
            let (ip, which) = if args.public {
                (addrs.public_ip, "public")
            } else {
                (addrs.private_ip, "private")
            };
            let ip = ip.with_context(|| {
                format!(
                    "instance {} of task {id} has no {which} IP",
                    addrs.instance_id
                )
            })?;
            DockerHost::Tcp(format!("{ip}:{}", args.docker_port))
        }
    };
    let tls = match (&host, args.docker_tls) {
        (DockerHost::Tcp(_), true) => {
            let dir = args.docker_cert_path.as_deref().with_context(|| {
                format!(
                    "the Docker daemon at {host} needs TLS: set DOCKER_CERT_PATH (or \
                     --docker-cert-path) to a directory with ca.pem, cert.pem and key.pem, \
                     or pass --docker-tls=false for plain TCP"
                )
            })?;
            Some(tls::Files::load(dir, &host)?)
        }
        (DockerHost::Tcp(_), false) => {
            eprintln!(
                "kite: warning: plain TCP to the Docker daemon at {host} (--docker-tls=false): \
                 neither encrypted nor authenticated"
            );
            None
        }
        (DockerHost::Unix(_), _) => None,
    };
    let runtime_id = task
        .containers()
        .iter()
        .find(|c| c.name() == Some(container))
        .and_then(|c| c.runtime_id())
        .map(str::to_owned);
    Ok(Spec {
        host,
        tls,
        task_arn: arn,
        container: container.to_owned(),
        runtime_id,
        detach_keys: args.detach_keys.clone(),
        connect_timeout: args.connect_timeout,
    })
}

/// Connects to the daemon and agrees on an API version (the first request,
/// so an unreachable daemon or a TLS problem shows here).
async fn connect(spec: &Spec) -> Result<Docker> {
    let timeout = spec.connect_timeout.as_secs().max(1) * 24;
    let version = bollard::API_DEFAULT_VERSION;
    let docker = match (&spec.host, &spec.tls) {
        (DockerHost::Unix(path), _) => {
            Docker::connect_with_unix(&path.to_string_lossy(), timeout, version)
        }
        (DockerHost::Tcp(addr), Some(files)) => {
            tls::install_provider();
            Docker::connect_with_ssl(
                &format!("tcp://{addr}"),
                &files.key,
                &files.cert,
                &files.ca,
                timeout,
                version,
            )
        }
        (DockerHost::Tcp(addr), None) => {
            Docker::connect_with_http(&format!("tcp://{addr}"), timeout, version)
        }
    }
    .map_err(|e| explain(&e, spec, "cannot reach"))?;
    match tokio::time::timeout(spec.connect_timeout, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(explain(&e, spec, "cannot reach")),
        Err(_) => bail!(
            "cannot reach the Docker daemon at {}: no answer within {:?}",
            spec.host,
            spec.connect_timeout
        ),
    }
}

/// One line for a Docker error: what failed, on which host, and a hint.
pub(crate) fn explain(err: &DockerError, spec: &Spec, what: &str) -> anyhow::Error {
    let host = &spec.host;
    if let Some(hint) = spec.tls.as_ref().and_then(|f| tls::explain(err, f, host)) {
        return anyhow!("{what} the Docker daemon at {host}: {hint}");
    }
    let chain = error_chain(err);
    let hint = if chain.contains("onnection refused") || chain.contains("No such file") {
        match host {
            DockerHost::Tcp(_) => {
                " (is the daemon listening there? see --docker-port and --docker-host)"
            }
            DockerHost::Unix(_) => " (is the Docker daemon running on this machine?)",
        }
    } else {
        ""
    };
    anyhow!("{what} the Docker daemon at {host}: {chain}{hint}")
}

/// The messages of an error and its sources, deduplicated, on one line.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Finds the task's container: by ECS's runtimeId, else by the labels the
/// ECS agent sets.
async fn find_container(docker: &Docker, spec: &Spec) -> Result<ContainerInspectResponse> {
    let id = short_id(&spec.task_arn);
    if let Some(rid) = &spec.runtime_id {
        match docker.inspect_container(rid, None).await {
            Ok(c) => return Ok(c),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(explain(&e, spec, "cannot inspect a container on")),
        }
    }
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{TASK_ARN_LABEL}={}", spec.task_arn),
            format!("{CONTAINER_NAME_LABEL}={}", spec.container),
        ],
    )]);
    let opts = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let found = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| explain(&e, spec, "cannot list the containers of"))?;
    let Some(cid) = found.first().and_then(|c| c.id.clone()) else {
        bail!(
            "the Docker daemon at {} has no container {} of task {id} (looked for runtimeId {} \
             and the labels {TASK_ARN_LABEL}, {CONTAINER_NAME_LABEL}); is it the task's host?",
            spec.host,
            spec.container,
            spec.runtime_id.as_deref().unwrap_or("(none)"),
        );
    };
    docker
        .inspect_container(&cid, None)
        .await
        .map_err(|e| explain(&e, spec, "cannot inspect a container on"))
}

/// Attaches to the container's stdio until it ends; returns its exit code.
pub async fn attach(spec: Spec, cancel: &CancellationToken) -> Result<i32> {
    let docker = connect(&spec).await?;
    let inspect = find_container(&docker, &spec).await?;
    let cid = inspect.id.clone().unwrap_or_default();
    let short = &cid[..cid.len().min(12)];
    let task = short_id(&spec.task_arn);
    let state = inspect.state.clone().unwrap_or_default();
    if state.running != Some(true) {
        bail!(
            "container {} ({short}) of task {task} on {} is not running: {}{}",
            spec.container,
            spec.host,
            state.status.map_or("unknown".into(), |s| s.to_string()),
            state
                .exit_code
                .map_or(String::new(), |c| format!(", exit code {c}")),
        );
    }
    let config = inspect.config.clone().unwrap_or_default();
    let tty = config.tty == Some(true);
    let stdin = config.open_stdin == Some(true);
    let opts = AttachContainerOptions {
        stream: true,
        stdin,
        stdout: true,
        stderr: true,
        logs: false,
        detach_keys: Some(spec.detach_keys.spec.clone()),
    };
    let attached = docker
        .attach_container(&cid, Some(opts))
        .await
        .map_err(|e| explain(&e, &spec, "cannot attach to a container on"))?;
    eprintln!(
        "kite: attached to container {} ({short}) of task {task} on {}{}",
        spec.container,
        spec.host,
        if tty {
            format!(" (detach: {})", spec.detach_keys)
        } else {
            String::new()
        }
    );
    let raw = if tty {
        RawMode::enable().context("cannot put the terminal in raw mode")?
    } else {
        None
    };
    let session = Session {
        docker: &docker,
        cid: &cid,
        tty,
        stdin,
        detach_keys: &spec.detach_keys,
    };
    let ended = session.pump(attached, cancel).await;
    drop(raw);
    match ended? {
        Ended::Detached => {
            eprintln!("kite: detached; container {short} keeps running");
            Ok(0)
        }
        Ended::Interrupted => bail!("interrupted; container {short} keeps running"),
        Ended::Closed => exit_code(&docker, &cid, &spec).await,
    }
}

/// Where TLS files are looked for, for messages.
pub(crate) fn cert_dir(files: &tls::Files) -> &Path {
    files.ca.parent().unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts() {
        let tcp = |s: &str| DockerHost::Tcp(s.to_owned());
        assert_eq!(
            parse_docker_host("tcp://10.0.0.5:2376").unwrap(),
            tcp("10.0.0.5:2376")
        );
        assert_eq!(
            parse_docker_host("tcp://host.internal").unwrap(),
            tcp("host.internal:2376")
        );
        assert_eq!(
            parse_docker_host("tcp://[::1]:2375/").unwrap(),
            tcp("[::1]:2375")
        );
        assert_eq!(
            parse_docker_host("unix:///var/run/docker.sock").unwrap(),
            DockerHost::Unix("/var/run/docker.sock".into())
        );
        for (bad, want) in [
            ("10.0.0.5:2376", "not a Docker host"),
            ("http://x", "not a Docker host"),
            ("unix://docker.sock", "absolute path"),
            ("tcp://", "names no host"),
            ("tcp://h:0", "not a port number"),
            ("tcp://h:http", "not a port number"),
        ] {
            let err = parse_docker_host(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
