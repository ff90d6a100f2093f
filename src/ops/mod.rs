//! Running kite in production: the admin endpoint and `kite health`.
//!
//! The admin endpoint is off unless `--admin-addr` is given. It serves
//! `/healthz` (the process answers), `/readyz` (a discovery round has
//! succeeded recently enough), `/metrics` (Prometheus text format) and
//! `/targets` (the current snapshot, as `kite targets --json` prints it).

pub mod signal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::snapshot::Store;

/// What the admin endpoint reads.
#[derive(Clone, Debug)]
pub struct Admin {
    /// The snapshot discovery publishes.
    pub store: Arc<Store>,
    /// kite's metrics.
    pub metrics: Arc<Metrics>,
    /// Not ready once the last good discovery round is older than this.
    pub stale_after: Duration,
    /// Runtimes besides the admin endpoint's own (the proxy threads'),
    /// whose tasks `kite_runtime_tasks` counts too.
    pub runtimes: Vec<tokio::runtime::Handle>,
}

/// Whether kite is ready to serve: `Ok` with a one-line summary, or `Err`
/// with the reason it is not.
pub fn readiness(store: &Store, stale_after: Duration) -> Result<String, String> {
    // Why the rounds fail, when they do: what an operator must fix.
    let failing = store.failure().map_or_else(String::new, |reason| {
        format!("; the last round failed: {reason}")
    });
    let Some(age) = store.age() else {
        return Err(format!(
            "not ready: no discovery round has succeeded yet{failing}"
        ));
    };
    if age > stale_after {
        return Err(format!(
            "not ready: the last good discovery round was {}s ago, more than --stale-after {}s{failing}",
            age.as_secs(),
            stale_after.as_secs()
        ));
    }
    let snapshot = store.load();
    Ok(format!(
        "ready: {} targets on {} ports, last good discovery round {}s ago",
        snapshot.targets.len(),
        snapshot.ports().count(),
        age.as_secs()
    ))
}

/// Serves the admin endpoint on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, admin: Admin, cancel: CancellationToken) -> Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/targets", get(targets))
        .with_state(admin);
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .context("admin endpoint")
}

async fn readyz(State(admin): State<Admin>) -> Response {
    match readiness(&admin.store, admin.stale_after) {
        Ok(summary) => (StatusCode::OK, summary + "\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason + "\n").into_response(),
    }
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let alive = |runtime: &tokio::runtime::Handle| runtime.metrics().num_alive_tasks();
    let tasks =
        alive(&tokio::runtime::Handle::current()) + admin.runtimes.iter().map(alive).sum::<usize>();
    let snapshot = admin.store.load();
    let open = (snapshot.ports())
        .filter_map(|port| snapshot.port(port))
        .flat_map(|b| (0..b.len()).map(move |i| (b.addrs()[i], b.load(i).get())));
    admin.metrics.set_backend_open(open);
    let body = admin.metrics.render(admin.store.age(), tasks);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn targets(State(admin): State<Admin>) -> Response {
    match serde_json::to_string_pretty(&**admin.store.load()) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json + "\n").into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Asks the admin endpoint at `addr` whether kite is ready: `Ok` with its
/// answer when it is, an error with the reason when it is not or cannot be
/// asked. What `kite health` runs.
pub async fn check_ready(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let ask = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot reach kite's admin endpoint at {addr} (is kite proxy running with --admin-addr {addr}?)"))?;
        let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream
            .take(64 * 1024)
            .read_to_end(&mut answer)
            .await
            .with_context(|| format!("reading the answer of {addr}"))?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(timeout, ask).await.with_context(|| {
        format!("kite's admin endpoint at {addr} did not answer within {timeout:?}")
    })??;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let body = body.trim();
    match status {
        "200" => Ok(body.to_owned()),
        "" => bail!("{addr} did not answer with HTTP"),
        _ if body.is_empty() => bail!("not ready (HTTP {status} from {addr})"),
        _ => bail!("{body}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    #[test]
    fn readiness_follows_the_last_good_round() {
        let store = Store::default();
        let err = readiness(&store, Duration::from_secs(300)).unwrap_err();
        assert!(err.contains("no discovery round"), "{err}");
        store.publish(Snapshot::default());
        let ok = readiness(&store, Duration::from_secs(300)).unwrap();
        assert!(ok.starts_with("ready: 0 targets"), "{ok}");
        let err = readiness(&store, Duration::ZERO).unwrap_err();
        assert!(err.contains("--stale-after"), "{err}");
    }

    #[test]
    fn readiness_says_why_the_rounds_fail() {
        let store = Store::default();
        store.fail("AWS Cloud Map has no namespace 'x'".into());
        let err = readiness(&store, Duration::from_secs(300)).unwrap_err();
        assert!(err.ends_with("the last round failed: AWS Cloud Map has no namespace 'x'"));
        store.publish(Snapshot::default());
        assert_eq!(store.failure(), None, "a good round clears it");
        store.fail("endpoint down".into());
        let err = readiness(&store, Duration::ZERO).unwrap_err();
        assert!(
            err.contains("--stale-after") && err.ends_with("endpoint down"),
            "{err}"
        );
    }
}
