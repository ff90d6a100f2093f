//! TCP modes of `kite attach`: stdin/stdout to one connection (like nc),
//! or a local port forwarded to the one task.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

use super::stdio::stdin_chunks;
use crate::proxy::net::{Listener, Socket};
use crate::proxy::splice::{splice_bidirectional, Activity, Meter};
use crate::snapshot::Target;
use prometheus_client::metrics::counter::Counter;

/// How open forwarded connections may finish after kite is told to stop.
const DRAIN: Duration = Duration::from_secs(5);

/// Connects to the target with a timeout; the error names the task,
/// container port and address.
async fn connect(target: &Target, timeout: Duration) -> Result<TcpStream> {
    let what = || {
        format!(
            "cannot connect to port {} of task {} at {}",
            target.container_port, target.task_id, target.address
        )
    };
    let sock = match tokio::time::timeout(timeout, TcpStream::connect(target.address)).await {
        Ok(r) => r.with_context(what)?,
        Err(_) => bail!("{}: no answer within {timeout:?}", what()),
    };
    let _ = sock.set_nodelay(true);
    Ok(sock)
}

/// Copies stdin to one connection to the target and the connection to
/// stdout. End of stdin half-closes the connection (the task still gets to
/// answer); the end of the task's answer ends kite, as with nc.
pub async fn stdio(target: &Target, timeout: Duration, cancel: &CancellationToken) -> Result<()> {
    let sock = connect(target, timeout).await?;
    eprintln!(
        "kite: connected to port {} of task {} at {}",
        target.container_port, target.task_id, target.address
    );
    let (mut rd, mut wr) = sock.into_split();
    let mut input = stdin_chunks();
    let up = async move {
        while let Some(chunk) = input.recv().await {
            let chunk = chunk.context("reading stdin")?;
            if let Err(err) = wr.write_all(&chunk).await {
                // The task closed or reset the connection: the read side
                // ends kite, with the answer that is still on its way.
                debug!(%err, "sending stdin to the task failed");
                return std::future::pending::<Result<()>>().await;
            }
        }
        if let Err(err) = wr.shutdown().await {
            debug!(%err, "half-closing the connection failed");
        }
        // Done sending; the connection stays open for the answer.
        std::future::pending::<Result<()>>().await
    };
    let down = async move {
        let mut out = tokio::io::stdout();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = rd.read(&mut buf).await.context("receiving from the task")?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).await.context("writing stdout")?;
            out.flush().await.context("writing stdout")?;
        }
        out.flush().await.context("writing stdout")?;
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        r = up => r,
        r = down => r,
        _ = cancel.cancelled() => Ok(()),
    }
    .with_context(|| {
        format!(
            "connection to task {} at {}",
            target.task_id, target.address
        )
    })
}

/// Listens on `addr` and splices every connection to the target, until
/// `cancel`; open connections then get a few seconds to finish.
pub async fn listen(
    addr: SocketAddr,
    target: &Target,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<()> {
    let listener =
        Listener::bind(addr).with_context(|| format!("cannot listen on {addr} (--listen)"))?;
    let local = listener.local_addr().unwrap_or(addr);
    eprintln!(
        "kite: forwarding {local} to port {} of task {} at {}",
        target.container_port, target.task_id, target.address
    );
    let tracker = TaskTracker::new();
    loop {
        let (client, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(err) => {
                    warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let target = target.clone();
        let span = tracing::debug_span!("conn", client.addr = %peer, backend = %target.address);
        tracker.spawn(
            async move {
                let connected = connect(&target, timeout).await.and_then(|s| {
                    Socket::from_tokio(s).context("registering the connection to the task")
                });
                let backend = match connected {
                    Ok(s) => s,
                    Err(err) => {
                        warn!("{err:#}");
                        return;
                    }
                };
                let _ = client.set_nodelay(true);
                // Counted nowhere: attach has no metrics endpoint.
                let (up, down, activity) =
                    (Counter::default(), Counter::default(), Activity::default());
                let meter = Meter {
                    a_to_b: &up,
                    b_to_a: &down,
                    activity: &activity,
                };
                match splice_bidirectional(&client, &backend, meter).await {
                    Ok((up, down)) => debug!(up, down, "connection closed"),
                    Err(err) => debug!(%err, "connection ended with an error"),
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
    Ok(())
}
