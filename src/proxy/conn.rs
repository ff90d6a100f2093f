//! One client connection: pick a backend, connect with failover, splice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{splice, Shared, EJECT_FOR};
use crate::snapshot;

/// Serves one client until both directions are done. Errors are logged
/// here: they never reach the accept loop.
pub(crate) async fn handle(mut client: TcpStream, port: u16, shared: Arc<Shared>) {
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let (mut backend, addr) = match connect(port, &shared).await {
        Ok(connected) => connected,
        Err(err) => {
            warn!("closing client connection: {err:#}");
            return;
        }
    };
    debug!(backend = %addr, "open");
    match splice::splice_bidirectional(&mut client, &mut backend).await {
        Ok((up, down)) => debug!(
            backend = %addr,
            bytes_up = up,
            bytes_down = down,
            ms = started.elapsed().as_millis() as u64,
            "close"
        ),
        Err(err) => debug!(backend = %addr, ms = started.elapsed().as_millis() as u64,
                           "closed with error: {err}"),
    }
}

/// Connects to a random backend of `port`, trying the others in turn when
/// one fails; a failed backend is ejected for [`EJECT_FOR`].
async fn connect(port: u16, shared: &Shared) -> Result<(TcpStream, SocketAddr)> {
    let mut tried: Vec<SocketAddr> = Vec::new();
    loop {
        // Load, pick and copy the address out: no guard lives across an await.
        let picked = {
            let snapshot = shared.store.load();
            snapshot::pick(snapshot.backends(port), &tried, &shared.ejections)
        };
        let Some(addr) = picked else {
            if tried.is_empty() {
                bail!("no backend for port {port}");
            }
            bail!("all {} backends for port {port} failed", tried.len());
        };
        match tokio::time::timeout(shared.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                shared.ejections.restore(addr);
                return Ok((stream, addr));
            }
            Ok(Err(err)) => warn!(backend = %addr, "connect failed, trying another backend: {err}"),
            Err(_) => warn!(backend = %addr, timeout = ?shared.connect_timeout,
                            "connect timed out, trying another backend"),
        }
        shared.ejections.eject(addr, EJECT_FOR);
        tried.push(addr);
    }
}
