//! Reaching the Docker daemon of `kite attach --docker`: where it is and
//! what to ask it ([`Spec`]), connecting, and its errors in one line.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bollard::errors::Error as DockerError;
use bollard::Docker;

use super::tls::{self, error_chain};
use crate::config::{DetachKeys, DockerHost};

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
    /// The container's output from its start, not from the attach (a task
    /// kite started: none of a short command's output may be lost).
    pub from_start: bool,
    /// Send kite's SIGINT, SIGTERM and SIGHUP to the container
    /// (`--sig-proxy`); `None`: when it has no TTY.
    pub sig_proxy: Option<bool>,
}

/// Connects to the daemon and agrees on an API version (the first request,
/// so an unreachable daemon or a TLS problem shows here).
pub async fn connect(spec: &Spec) -> Result<Docker> {
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
pub fn explain(err: &DockerError, spec: &Spec, what: &str) -> anyhow::Error {
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
