//! The polling loop: rounds of a [`Source`] on a jittered period, with
//! backoff after failures, publishing each good snapshot.
//!
//! The loop knows nothing of ECS: a source is anything that can build a
//! whole snapshot in one round ([`Discovery`] today; AWS Cloud Map could
//! be another).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::Discovery;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, Store, Target};

#[cfg(test)]
mod tests;

/// Where targets come from: one round builds a whole snapshot.
pub trait Source: Send {
    /// One round. An error means the round failed as a whole: the loop
    /// keeps the last good snapshot.
    fn round(&mut self) -> impl Future<Output = Result<Snapshot>> + Send;

    /// What this source polls (the ECS cluster), for the `discovery` span.
    fn describe(&self) -> String;
}

impl Source for Discovery {
    fn round(&mut self) -> impl Future<Output = Result<Snapshot>> + Send {
        Discovery::round(self)
    }

    fn describe(&self) -> String {
        self.query.cluster.clone()
    }
}

/// How often discovery runs, and how it backs off after errors.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The period between good rounds; each wait adds up to as much again
    /// in jitter, so a fleet of kites does not call ECS in step.
    pub refresh: Duration,
    /// The longest wait after repeated errors.
    pub max_backoff: Duration,
}

impl Schedule {
    /// The wait before the next round, after `errors` consecutive failures.
    pub fn next_wait(&self, errors: u32) -> Duration {
        let base = if errors == 0 {
            self.refresh
        } else {
            let factor = 2u32.saturating_pow(errors.min(16));
            self.refresh.saturating_mul(factor).min(self.max_backoff)
        };
        base + base.mul_f64(rand::rng().random_range(0.0..1.0))
    }
}

/// Runs rounds of `source` until `cancel`: publishes each good round in
/// `store`, keeps the last good snapshot through failed ones, logs target
/// changes, and records rounds and target counts in `metrics`.
pub async fn run(
    mut source: impl Source,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    schedule: Schedule,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("discovery", cluster = %source.describe());
    async move {
        let mut errors = 0u32;
        loop {
            let started = Instant::now();
            let round = source.round().await;
            metrics.round(started.elapsed(), round.is_err());
            match round {
                Ok(snapshot) => {
                    if errors > 0 {
                        info!(after_errors = errors, "discovery recovered");
                    }
                    errors = 0;
                    debug!(
                        targets = snapshot.targets.len(),
                        skipped = snapshot.skipped.len(),
                        took_ms = started.elapsed().as_millis() as u64,
                        "discovery round"
                    );
                    let counts: BTreeMap<u16, usize> = snapshot
                        .ports()
                        .map(|port| (port, snapshot.backends(port).len()))
                        .collect();
                    metrics.set_targets(&counts);
                    let old = store.publish(snapshot);
                    log_changes(&old, &store.load());
                }
                Err(err) => {
                    errors = errors.saturating_add(1);
                    warn!(
                        errors,
                        "discovery round failed, keeping the last targets: {err:#}"
                    );
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(schedule.next_wait(errors)) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Logs each added and removed target once, at info.
pub fn log_changes(old: &Snapshot, new: &Snapshot) {
    let key = |t: &Target| (t.listen_port, t.address, t.task_id.clone());
    let before: HashSet<_> = old.targets.iter().map(key).collect();
    let after: HashSet<_> = new.targets.iter().map(key).collect();
    for t in new.targets.iter().filter(|t| !before.contains(&key(t))) {
        info!(port = t.listen_port, backend = %t.address, task = %t.task_id,
              taskdef = %t.task_definition, "target added");
    }
    for t in old.targets.iter().filter(|t| !after.contains(&key(t))) {
        info!(port = t.listen_port, backend = %t.address, task = %t.task_id, "target removed");
    }
}
