//! The polling loop: rounds of a [`Source`] on a jittered period, with
//! backoff after failures, publishing each good snapshot.
//!
//! The loop knows nothing of ECS: a source is anything that can build a
//! whole snapshot in one round ([`Discovery`] for ECS,
//! [`super::cloudmap::CloudMap`] for AWS Cloud Map).

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
    /// One round, when rounds come `between` apart on average (a source
    /// that spreads work over rounds sizes a round's share by it). An error
    /// means the round failed as a whole: the loop keeps the last good
    /// snapshot.
    fn round(&mut self, between: Duration) -> impl Future<Output = Result<Snapshot>> + Send;

    /// What this source polls (the ECS cluster, the Cloud Map service), for
    /// the `discovery` span.
    fn describe(&self) -> String;
}

impl Source for Discovery {
    fn round(&mut self, between: Duration) -> impl Future<Output = Result<Snapshot>> + Send {
        Discovery::round(self, between)
    }

    fn describe(&self) -> String {
        self.query.cluster.clone()
    }
}

/// How often discovery runs, and how it backs off.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The period between good rounds; each wait adds up to as much again
    /// in jitter, so a fleet of kites does not call ECS in step.
    pub refresh: Duration,
    /// The longest period: after repeated errors, or while AWS throttles.
    pub max_backoff: Duration,
}

/// A throttled round multiplies the period by a factor drawn from here.
/// Small steps: over many kites the periods then settle close to the one
/// the budget allows, where bigger ones would leave some kites far slower
/// than the rest (and a new task reaching them late).
const WIDEN: std::ops::Range<f64> = 1.25..1.75;

/// After a good round that AWS did not throttle, the period shrinks by this
/// factor, down to the refresh: it widens at once and narrows gradually.
const NARROW: f64 = 0.9;

/// Where a schedule stands: the period in use, and the failed rounds in a
/// row.
///
/// A round that AWS throttled (any of its calls, retried or not) widens the
/// period by 1.25 to 1.75 times, up to `max_backoff`: a fleet of kites that
/// overdraws the account's read budget slows down until it fits, each kite
/// by its own random factor. Good rounds narrow it back. Rounds that failed
/// for another reason (an endpoint down, server errors) back off on top of
/// that, doubling from the refresh; a round that failed because it was
/// throttled counts only as throttled, so that a kite not yet ready does
/// not wait twice over.
#[derive(Clone, Debug)]
pub struct Pace {
    schedule: Schedule,
    period: Duration,
    errors: u32,
}

/// What a round did to the period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    Same,
    /// Widened after throttling.
    Widened,
    /// Narrowed after a good round, not yet back to the refresh.
    Narrowed,
    /// Back to the refresh.
    Restored,
}

impl Pace {
    /// At the refresh, no errors.
    pub fn new(schedule: Schedule) -> Pace {
        Pace {
            schedule,
            period: schedule.refresh,
            errors: 0,
        }
    }

    /// The period in use, before jitter.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Failed rounds in a row.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// What a wait is before jitter: the period, or the error backoff
    /// when that is longer.
    fn base(&self) -> Duration {
        if self.errors == 0 {
            return self.period;
        }
        let factor = 2u32.saturating_pow(self.errors.min(16));
        let backoff = self.schedule.refresh.saturating_mul(factor);
        backoff.min(self.schedule.max_backoff).max(self.period)
    }

    /// The mean of [`Pace::next_wait`].
    pub fn mean_wait(&self) -> Duration {
        self.base().mul_f64(1.5)
    }

    /// The wait before the next round: the base plus up to as much again.
    pub fn next_wait(&self) -> Duration {
        let base = self.base();
        base + base.mul_f64(rand::rng().random_range(0.0..1.0))
    }

    /// Takes a round's outcome into account.
    pub fn after_round(&mut self, failed: bool, throttled: bool) -> Change {
        self.errors = match (failed, throttled) {
            (false, _) => 0,
            (true, false) => self.errors.saturating_add(1),
            (true, true) => self.errors,
        };
        let Schedule {
            refresh,
            max_backoff,
        } = self.schedule;
        let old = self.period;
        if throttled {
            let factor = rand::rng().random_range(WIDEN);
            self.period = old.mul_f64(factor).min(max_backoff).max(old);
            return if self.period > old {
                Change::Widened
            } else {
                Change::Same
            };
        }
        if failed || old <= refresh {
            return Change::Same;
        }
        self.period = old.mul_f64(NARROW).max(refresh);
        if self.period == refresh {
            Change::Restored
        } else {
            Change::Narrowed
        }
    }
}

/// Runs rounds of `source` until `cancel`: publishes each good round in
/// `store`, keeps the last good snapshot through failed ones, logs target
/// changes, and records rounds, target counts and the period in `metrics`.
/// Throttling is read off `metrics` (the SDK clients' call counter).
pub async fn run(
    mut source: impl Source,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    schedule: Schedule,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("discovery", cluster = %source.describe());
    async move {
        let mut pace = Pace::new(schedule);
        metrics.set_discovery_period(pace.period());
        loop {
            let started = Instant::now();
            let throttles = metrics.throttled_attempts();
            let round = source.round(pace.mean_wait()).await;
            let throttled = metrics.throttled_attempts() > throttles;
            metrics.round(started.elapsed(), round.is_err());
            let errors_before = pace.errors();
            let change = pace.after_round(round.is_err(), throttled);
            match round {
                Ok(snapshot) => {
                    if errors_before > 0 {
                        info!(after_errors = errors_before, "discovery recovered");
                    }
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
                    let errors = pace.errors();
                    store.fail(format!("{err:#}"));
                    warn!(
                        errors,
                        "discovery round failed, keeping the last targets: {err:#}"
                    );
                }
            }
            log_pace(change, pace.period(), schedule.refresh);
            metrics.set_discovery_period(pace.period());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pace.next_wait()) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Logs a change of the period once: widening at warn, the return to the
/// refresh at info, the steps between at debug.
fn log_pace(change: Change, period: Duration, refresh: Duration) {
    let secs = period.as_secs_f64();
    match change {
        Change::Same => {}
        Change::Widened => warn!(
            period_s = secs,
            "AWS is throttling discovery: rounds now come every {period:.1?} plus jitter"
        ),
        Change::Narrowed => debug!(period_s = secs, "discovery period narrowed"),
        Change::Restored => info!(
            period_s = secs,
            "no more throttling: discovery is back to every {refresh:?} plus jitter"
        ),
    }
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
