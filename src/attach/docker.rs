//! `kite attach --docker`: the container's own stdin, stdout and stderr,
//! through the Docker Engine API on the task's host (bollard).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_ecs::types::Task;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{AttachContainerOptions, ListContainersOptions, LogsOptions};
use bollard::Docker;
use futures_util::StreamExt;

use super::daemon::{connect, explain};
use super::interrupts::Interrupts;
use super::session::{exit_code, write_frame, Ended, Session};
use super::term::RawMode;
use super::tls;
use crate::config::arn::last_segment;
use crate::config::{DetachKeys, DockerHost};
use crate::discovery::TaskLookup;

/// The ECS agent's Docker labels that name a container's task and name.
const TASK_ARN_LABEL: &str = "com.amazonaws.ecs.task-arn";
const CONTAINER_NAME_LABEL: &str = "com.amazonaws.ecs.container-name";

pub use super::daemon::Spec;

/// The Docker flags of `kite attach --docker`.
#[derive(Clone, Debug)]
pub struct Options {
    /// The daemon (`--docker-host`); default: the task's instance.
    pub host: Option<DockerHost>,
    /// The daemon's TCP port on the task's instance (`--docker-port`).
    pub port: u16,
    /// Mutual TLS to a tcp:// daemon (`--docker-tls`).
    pub tls: bool,
    /// The directory with ca.pem, cert.pem and key.pem (`--docker-cert-path`).
    pub cert_path: Option<PathBuf>,
    /// The keys that detach from a container with a TTY.
    pub detach_keys: DetachKeys,
    /// Send kite's SIGINT, SIGTERM and SIGHUP to the container
    /// (`--sig-proxy`); `None`: when it has no TTY.
    pub sig_proxy: Option<bool>,
}

/// How to reach the task's instance: shared with the TCP modes.
#[derive(Clone, Copy, Debug)]
pub struct Reach {
    /// Through its public IP (`--public`).
    pub public: bool,
    /// How long reaching the daemon may take (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// The container's output from its start (`--run`).
    pub from_start: bool,
}

/// Resolves the Docker side of a task: the daemon on its instance (or
/// `--docker-host`), TLS files, and the container's runtime id.
pub async fn spec(
    lookup: &mut TaskLookup,
    task: &Task,
    container: &str,
    reach: Reach,
    options: &Options,
) -> Result<Spec> {
    let cluster = lookup.cluster().to_owned();
    let arn = task.task_arn().unwrap_or_default().to_owned();
    let id = last_segment(&arn).to_owned();
    let fargate = task.launch_type().is_some_and(|l| l.as_str() == "FARGATE");
    if fargate || (task.container_instance_arn().is_none() && options.host.is_none()) {
        bail!(
            "task {id} runs on Fargate, which has no Docker daemon kite can reach; get a shell \
             with `aws ecs execute-command --cluster {cluster} --task {id} --container {container} \
             --interactive --command /bin/sh` (the task needs enableExecuteCommand)"
        );
    }
    let host = match &options.host {
        Some(h) => h.clone(),
        None => {
            let addrs = lookup.instance_addrs(task).await?.with_context(|| {
                format!(
                    "cannot find the EC2 instance of task {id} (its container instance is gone)"
                )
            })?;
            let (ip, which) = if reach.public {
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
            DockerHost::Tcp(format!("{ip}:{}", options.port))
        }
    };
    let tls = match (&host, options.tls) {
        (DockerHost::Tcp(_), true) => {
            let dir = options.cert_path.as_deref().with_context(|| {
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
        detach_keys: options.detach_keys.clone(),
        connect_timeout: reach.connect_timeout,
        from_start: reach.from_start,
        sig_proxy: options.sig_proxy,
    })
}

/// Finds the task's container: by ECS's runtimeId, else by the labels the
/// ECS agent sets.
async fn find_container(docker: &Docker, spec: &Spec) -> Result<ContainerInspectResponse> {
    let id = last_segment(&spec.task_arn);
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
/// With `--sig-proxy` (by default without a TTY) the signals kite gets go
/// to the container meanwhile.
pub async fn attach(spec: Spec, interrupts: &Interrupts) -> Result<i32> {
    let docker = connect(&spec).await?;
    let inspect = find_container(&docker, &spec).await?;
    let cid = inspect.id.clone().unwrap_or_default();
    let short = &cid[..cid.len().min(12)];
    let task = last_segment(&spec.task_arn);
    let state = inspect.state.clone().unwrap_or_default();
    let exited = state.status.as_ref().map(|s| s.to_string());
    if spec.from_start && matches!(exited.as_deref(), Some("exited" | "dead")) {
        // Done before kite could attach: all it said, once, and its code.
        print_logs(&docker, &cid, &spec).await?;
        let code = state.exit_code.unwrap_or(1);
        eprintln!(
            "kite: container {} ({short}) of task {task} had exited (code {code}) before \
             kite attached: its output is above",
            spec.container
        );
        return Ok(i32::try_from(code).unwrap_or(1));
    }
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
        // From its start: what a short command printed before the attach
        // comes first, then the stream, nothing twice.
        logs: spec.from_start,
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
    let proxying = spec.sig_proxy.unwrap_or(!tty).then(|| interrupts.proxy());
    let leave = if proxying.is_some() {
        " (a second Ctrl-C within a second)"
    } else {
        ""
    };
    let ended = session.pump(attached, &interrupts.cancel, proxying).await;
    drop(raw);
    match ended? {
        Ended::Detached => {
            eprintln!("kite: detached; container {short} keeps running");
            Ok(0)
        }
        Ended::Interrupted => bail!("interrupted{leave}; container {short} keeps running"),
        Ended::Closed => exit_code(&docker, &cid, &spec).await,
    }
}

/// Copies the whole output of a container that has exited: stdout to
/// stdout, stderr to stderr.
async fn print_logs(docker: &Docker, cid: &str, spec: &Spec) -> Result<()> {
    let opts = LogsOptions {
        stdout: true,
        stderr: true,
        follow: false,
        ..Default::default()
    };
    let mut logs = docker.logs(cid, Some(opts));
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    while let Some(frame) = logs.next().await {
        let frame =
            frame.map_err(|e| explain(&e, spec, "cannot read the output of a container on"))?;
        write_frame(frame, &mut out, &mut err).await?;
    }
    Ok(())
}
