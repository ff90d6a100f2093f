//! One `kite attach --docker` session: bytes between kite's stdio and the
//! container's attach stream, the TTY size, the detach keys, and the exit
//! code at the end.

use anyhow::{bail, Context, Result};
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    KillContainerOptions, ResizeContainerTTYOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::daemon::{explain, Spec};
use super::interrupts::Proxying;
use super::stdio::stdin_chunks;
use super::term::{window_size, DetachWatch};
use crate::config::DetachKeys;

/// How an attach session ended.
pub(crate) enum Ended {
    /// The container closed its output (it is exiting).
    Closed,
    /// The detach keys were typed.
    Detached,
    /// kite was told to stop.
    Interrupted,
}

pub(crate) struct Session<'a> {
    pub(crate) docker: &'a Docker,
    pub(crate) cid: &'a str,
    pub(crate) tty: bool,
    pub(crate) stdin: bool,
    pub(crate) detach_keys: &'a DetachKeys,
}

impl Session<'_> {
    /// Moves bytes until the container's output ends, the user detaches,
    /// or `cancel`; sends the container the signals `proxying` receives.
    pub(crate) async fn pump(
        &self,
        attached: bollard::container::AttachContainerResults,
        cancel: &CancellationToken,
        proxying: Option<Proxying>,
    ) -> Result<Ended> {
        let bollard::container::AttachContainerResults { mut output, input } = attached;
        if self.tty {
            self.resize().await;
        }
        let up = self.forward_stdin(input);
        let down = async {
            let mut out = tokio::io::stdout();
            let mut err = tokio::io::stderr();
            while let Some(frame) = output.next().await {
                let frame = frame.context("reading the container's output")?;
                write_frame(frame, &mut out, &mut err).await?;
            }
            Ok::<_, anyhow::Error>(())
        };
        let winch = self.follow_window_size();
        let signals = self.forward_signals(proxying);
        tokio::select! {
            r = down => r.map(|()| Ended::Closed),
            r = up => r,
            _ = winch => Ok(Ended::Closed),
            _ = signals => Ok(Ended::Closed),
            _ = cancel.cancelled() => Ok(Ended::Interrupted),
        }
    }

    /// Sends each signal `proxying` receives to the container; never
    /// returns.
    async fn forward_signals(&self, proxying: Option<Proxying>) {
        let Some(mut proxying) = proxying else {
            return std::future::pending().await;
        };
        while let Some(sig) = proxying.signals.recv().await {
            let opts = KillContainerOptions {
                signal: sig.name().to_owned(),
            };
            match self.docker.kill_container(self.cid, Some(opts)).await {
                Ok(()) => eprintln!("kite: sent {} to the container", sig.name()),
                Err(err) => eprintln!(
                    "kite: could not send {} to the container: {err}",
                    sig.name()
                ),
            }
        }
        std::future::pending().await
    }

    /// Sends kite's stdin to the container: end of file closes the
    /// container's stdin (for containers started with stdin-once); the
    /// detach keys end the session. Never returns otherwise.
    async fn forward_stdin(
        &self,
        mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    ) -> Result<Ended> {
        if !self.stdin {
            return std::future::pending().await;
        }
        let mut chunks = stdin_chunks();
        let mut watch = DetachWatch::new(self.detach_keys);
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk.context("reading stdin")?;
            if input.write_all(&chunk).await.is_err() {
                break; // the container's side closed: its output will end too
            }
            let _ = input.flush().await;
            if self.tty && watch.feed(&chunk) {
                return Ok(Ended::Detached);
            }
        }
        let _ = input.shutdown().await;
        std::future::pending().await
    }

    /// Sends the terminal's size to the container's TTY.
    async fn resize(&self) {
        if let Some((rows, cols)) = window_size() {
            let opts = ResizeContainerTTYOptions {
                h: i32::from(rows),
                w: i32::from(cols),
            };
            if let Err(err) = self.docker.resize_container_tty(self.cid, opts).await {
                tracing::debug!(%err, "resizing the container's TTY failed");
            }
        }
    }

    /// Resizes on every SIGWINCH, with a TTY; never returns.
    async fn follow_window_size(&self) {
        use tokio::signal::unix::{signal, SignalKind};
        let winch = if self.tty {
            signal(SignalKind::window_change()).ok()
        } else {
            None
        };
        let Some(mut winch) = winch else {
            return std::future::pending().await;
        };
        while winch.recv().await.is_some() {
            self.resize().await;
        }
        std::future::pending().await
    }
}

/// Writes one frame of a container's output where it belongs, flushed:
/// stdout (or a TTY's console) to `out`, stderr to `err`.
pub(crate) async fn write_frame(
    frame: bollard::container::LogOutput,
    out: &mut tokio::io::Stdout,
    err: &mut tokio::io::Stderr,
) -> std::io::Result<()> {
    use bollard::container::LogOutput;
    match frame {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            out.write_all(&message).await?;
            out.flush().await
        }
        LogOutput::StdErr { message } => {
            err.write_all(&message).await?;
            err.flush().await
        }
        LogOutput::StdIn { .. } => Ok(()),
    }
}

/// The container's exit code, once it has stopped.
pub(crate) async fn exit_code(docker: &Docker, cid: &str, spec: &Spec) -> Result<i32> {
    let opts = WaitContainerOptions {
        condition: "not-running".into(),
    };
    let mut wait = docker.wait_container(cid, Some(opts));
    match wait.next().await {
        Some(Ok(r)) => Ok(i32::try_from(r.status_code).unwrap_or(1)),
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
            Ok(i32::try_from(code).unwrap_or(1))
        }
        Some(Err(e)) => Err(explain(&e, spec, "cannot get the exit code from")),
        None => bail!(
            "the Docker daemon at {} gave no exit code for container {cid}",
            spec.host
        ),
    }
}
