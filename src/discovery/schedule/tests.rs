//! The polling loop under paused time, driven by a scripted [`Source`].

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use tokio::time::Instant;

use super::*;
use crate::snapshot::NetworkMode;

const REFRESH: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// One round as the fake saw it: when it started, and the targets the
/// store held then (what the loop published before it).
#[derive(Clone, Debug)]
struct Call {
    at: Instant,
    published: Vec<u16>,
    /// What the loop said the mean time between rounds is.
    between: Duration,
}

/// One scripted round: `Ok(ports)` builds a snapshot with one target per
/// port, `Err(())` fails the round; `throttled`: AWS throttled one of its
/// calls (retried or not).
struct Step {
    answer: Result<Vec<u16>, ()>,
    throttled: bool,
}

impl From<Result<Vec<u16>, ()>> for Step {
    fn from(answer: Result<Vec<u16>, ()>) -> Step {
        let throttled = false;
        Step { answer, throttled }
    }
}

/// A round that AWS throttled.
fn throttled(answer: Result<Vec<u16>, ()>) -> Step {
    let throttled = true;
    Step { answer, throttled }
}

/// A source that answers from a script, counting throttled calls in the
/// metrics as the SDK clients' call counter does. Once the script is done
/// it cancels the loop.
struct Fake {
    script: VecDeque<Step>,
    calls: Arc<Mutex<Vec<Call>>>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

impl Source for Fake {
    fn round(&mut self, between: Duration) -> impl Future<Output = Result<Snapshot>> + Send {
        let published = self
            .store
            .load()
            .targets
            .iter()
            .map(|t| t.listen_port)
            .collect();
        self.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            published,
            between,
        });
        let next = self.script.pop_front();
        if self.script.is_empty() {
            self.cancel.cancel();
        }
        if next.as_ref().is_some_and(|s| s.throttled) {
            self.metrics.api_call("ListTasks", true);
        }
        async move {
            match next.map(|s| s.answer) {
                Some(Ok(ports)) => Ok(snapshot(&ports)),
                _ => Err(anyhow!("scripted failure")),
            }
        }
    }

    fn describe(&self) -> String {
        "fake".into()
    }
}

fn target(port: u16) -> Target {
    Target {
        listen_port: port,
        container_port: port,
        address: ([10, 0, 0, 1], port).into(),
        task_id: format!("task-{port}"),
        task_arn: format!("arn:aws:ecs:eu-west-1:1:task/default/task-{port}"),
        task_definition: "web:1".into(),
        network_mode: NetworkMode::Bridge,
        health: "UNKNOWN".into(),
        host: "i-1".into(),
        zone: None,
    }
}

fn snapshot(ports: &[u16]) -> Snapshot {
    Snapshot::new(ports.iter().copied().map(target).collect(), Vec::new())
}

/// What a scripted run left: the rounds the source saw, the store and
/// the metrics.
struct Ran {
    calls: Vec<Call>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

/// Runs the loop over `script` to its end (time is paused, so the waits
/// take no real time).
async fn run_script(script: Vec<impl Into<Step>>) -> Ran {
    let store = Arc::new(Store::default());
    let metrics = Arc::new(Metrics::default());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let cancel = CancellationToken::new();
    let fake = Fake {
        script: script.into_iter().map(Into::into).collect(),
        calls: calls.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        cancel: cancel.clone(),
    };
    let schedule = Schedule {
        refresh: REFRESH,
        max_backoff: MAX_BACKOFF,
    };
    run(fake, store.clone(), metrics.clone(), schedule, cancel).await;
    let calls = calls.lock().unwrap().clone();
    Ran {
        calls,
        store,
        metrics,
    }
}

/// The waits between consecutive rounds (the fake's rounds take no time).
fn waits(calls: &[Call]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// Whether `wait` is `base` plus at most as much again in jitter.
fn jittered(wait: Duration, base: Duration) -> bool {
    wait >= base && wait <= base * 2
}

/// Between good rounds the loop waits the refresh plus up to as much again
/// in jitter, and the jitter varies from round to round.
#[tokio::test(start_paused = true)]
async fn good_rounds_come_every_refresh_plus_jitter() {
    let Ran { calls, .. } = run_script(vec![Ok(vec![80]); 30]).await;
    assert_eq!(calls.len(), 30);
    let waits = waits(&calls);
    for w in &waits {
        assert!(
            jittered(*w, REFRESH),
            "wait {w:?} outside [1s, 2s]: {waits:?}"
        );
    }
    let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
    assert!(
        *max - *min > REFRESH / 10,
        "no jitter between rounds: {waits:?}"
    );
}

/// Consecutive failures double the wait each time, up to `max_backoff`.
#[tokio::test(start_paused = true)]
async fn failures_back_off_up_to_the_maximum() {
    let mut script = vec![Ok(vec![80])];
    script.extend(std::iter::repeat_n(Err(()), 6));
    script.push(Ok(vec![80]));
    let Ran { calls, .. } = run_script(script).await;
    let waits = waits(&calls);
    // After the good round, then after 1, 2, ... 6 failures in a row.
    let s = Duration::from_secs;
    let bases = [s(1), s(2), s(4), s(8), s(8), s(8), s(8)];
    assert_eq!(waits.len(), bases.len());
    for (i, (w, base)) in waits.iter().zip(bases).enumerate() {
        assert!(
            jittered(*w, base),
            "wait {i} is {w:?}, not within [{base:?}, {:?}]: {waits:?}",
            base * 2
        );
    }
}

/// One good round after failures brings the period back to the refresh.
#[tokio::test(start_paused = true)]
async fn a_good_round_resets_the_backoff() {
    let mut script = vec![Err(()), Err(()), Err(())];
    script.extend(vec![Ok(vec![80]); 4]);
    let Ran { calls, .. } = run_script(script).await;
    let waits = waits(&calls);
    assert!(jittered(waits[2], MAX_BACKOFF), "backed off: {waits:?}");
    for w in &waits[3..] {
        assert!(jittered(*w, REFRESH), "no reset after success: {waits:?}");
    }
}

/// A failed round publishes nothing: the last good targets stay until a
/// good round replaces them.
#[tokio::test(start_paused = true)]
async fn a_failed_round_keeps_the_last_good_snapshot() {
    let script = vec![Ok(vec![80, 81]), Err(()), Err(()), Ok(vec![82]), Err(())];
    let Ran {
        calls,
        store,
        metrics,
    } = run_script(script).await;
    let seen: Vec<Vec<u16>> = calls.iter().map(|c| c.published.clone()).collect();
    let want: Vec<Vec<u16>> = vec![vec![], vec![80, 81], vec![80, 81], vec![80, 81], vec![82]];
    assert_eq!(seen, want, "targets published before each round");
    let after: Vec<u16> = store.load().targets.iter().map(|t| t.listen_port).collect();
    assert_eq!(after, [82], "the last failed round kept the targets");
    let rendered = metrics.render(None, 0);
    let line = |name: &str| {
        rendered
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{rendered}"))
            .to_owned()
    };
    assert!(
        line("kite_discovery_rounds_total").ends_with(" 5"),
        "{rendered}"
    );
    assert!(
        line("kite_discovery_errors_total").ends_with(" 3"),
        "{rendered}"
    );
}

/// A writer into a shared buffer, for capturing what the loop logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The captured lines that contain `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// Logs at info and above into a fresh buffer while `f` runs.
fn capture_info<T>(f: impl FnOnce() -> T) -> (T, Captured) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    (out, captured)
}

/// log_changes logs each added and each removed target once, at info, and
/// nothing for a target that stays.
#[test]
fn target_changes_are_logged_once_each() {
    let ((), log) = capture_info(|| log_changes(&snapshot(&[80, 81]), &snapshot(&[81, 82])));
    let added = log.lines_with("target added");
    let removed = log.lines_with("target removed");
    assert_eq!(added.len(), 1, "{added:?}");
    assert!(added[0].contains(" INFO "), "{added:?}");
    assert!(added[0].contains("port=82") && added[0].contains("backend=10.0.0.1:82"));
    assert!(added[0].contains("task=task-82") && added[0].contains("taskdef=web:1"));
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].contains(" INFO "), "{removed:?}");
    assert!(removed[0].contains("port=80") && removed[0].contains("task=task-80"));
    assert!(
        log.lines_with("port=81").is_empty(),
        "an unchanged target was logged"
    );
}

/// Through the loop: the first round adds its targets, a failed round logs
/// no change, and the next good round logs only what changed.
#[test]
fn the_loop_logs_target_changes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let script = vec![Ok(vec![80]), Err(()), Ok(vec![80, 81]), Ok(vec![81])];
    let (_, log) = capture_info(|| runtime.block_on(run_script(script)));
    let changes: Vec<String> = log
        .lines_with("target ")
        .iter()
        .map(|l| {
            let what = if l.contains("target added") {
                "added"
            } else {
                "removed"
            };
            let port = l.split("port=").nth(1).unwrap().split(' ').next().unwrap();
            format!("{what} {port}")
        })
        .collect();
    assert_eq!(
        changes,
        ["added 80", "added 81", "removed 80"],
        "{changes:?}"
    );
    assert_eq!(log.lines_with("discovery round failed").len(), 1);
    assert!(log.lines_with("discovery round failed")[0].contains(" WARN "));
}

/// A throttled round widens the period 1.25 to 1.75 times, up to the
/// maximum; good rounds narrow it back gradually, to the refresh; a round
/// that failed because it was throttled adds no error backoff.
#[test]
fn throttling_widens_the_period_and_good_rounds_narrow_it() {
    let schedule = Schedule {
        refresh: REFRESH,
        max_backoff: MAX_BACKOFF,
    };
    let mut pace = Pace::new(schedule);
    assert_eq!(pace.after_round(false, false), Change::Same);
    assert_eq!(pace.period(), REFRESH);
    assert_eq!(pace.after_round(false, true), Change::Widened);
    let p = pace.period();
    assert!(p >= REFRESH * 5 / 4 && p <= REFRESH * 7 / 4, "{p:?}");
    assert_eq!(pace.mean_wait(), p.mul_f64(1.5));
    // Throttled and failed: wider, and no error backoff on top.
    assert_eq!(pace.after_round(true, true), Change::Widened);
    let q = pace.period();
    assert!(q >= p * 5 / 4 && q <= p * 7 / 4, "{p:?} {q:?}");
    assert_eq!((pace.errors(), pace.mean_wait()), (0, q.mul_f64(1.5)));
    // Failed otherwise: the error backoff (2 s, 4 s...) when it is longer.
    pace.after_round(true, false);
    pace.after_round(true, false);
    assert_eq!(pace.errors(), 2);
    assert_eq!(pace.mean_wait(), (REFRESH * 4).max(q).mul_f64(1.5));
    for _ in 0..10 {
        pace.after_round(false, true);
    }
    assert_eq!(pace.period(), MAX_BACKOFF, "capped");
    assert_eq!(pace.after_round(false, true), Change::Same, "at the cap");
    // Good rounds: 0.9 times each, never a jump back.
    let mut rounds = 0;
    loop {
        let before = pace.period();
        rounds += 1;
        match pace.after_round(false, false) {
            Change::Narrowed => assert_eq!(pace.period(), before.mul_f64(0.9)),
            Change::Restored => break,
            other => panic!("{other:?} after a good round at {before:?}"),
        }
    }
    assert_eq!(pace.period(), REFRESH);
    assert_eq!(rounds, 20, "8 s × 0.9^20 < 1 s");
    assert_eq!(pace.after_round(false, false), Change::Same);
}

/// Through the loop: throttled rounds stretch the waits and the period
/// gauge, the targets stay published throughout, the source hears the mean
/// wait, and the change is logged once per widening and once on return.
#[test]
fn throttled_rounds_slow_the_loop_and_keep_the_targets() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let mut script: Vec<Step> = vec![Ok(vec![80]).into()];
    script.extend((0..3).map(|_| throttled(Ok(vec![80]))));
    script.push(throttled(Err(())));
    script.extend((0..30).map(|_| Step::from(Ok(vec![80]))));
    let (ran, log) = capture_info(|| runtime.block_on(run_script(script)));
    let waits = waits(&ran.calls);
    assert!(jittered(waits[0], REFRESH), "{waits:?}");
    assert!(waits[1] >= REFRESH * 5 / 4, "not widened: {waits:?}");
    assert!(
        waits[3] >= REFRESH * 19 / 10,
        "not widened again: {waits:?}"
    );
    assert!(waits[4] >= waits[3] / 2, "{waits:?}");
    for w in &waits[waits.len() - 3..] {
        assert!(jittered(*w, REFRESH), "not narrowed back: {waits:?}");
    }
    for (i, call) in ran.calls.iter().enumerate().skip(1) {
        assert_eq!(call.published, [80], "round {i}: targets lost");
    }
    assert_eq!(ran.calls[0].between, REFRESH.mul_f64(1.5));
    assert!(
        ran.calls[2].between >= REFRESH.mul_f64(1.87),
        "{:?}",
        ran.calls[2]
    );
    let rendered = ran.metrics.render(None, 0);
    assert!(
        rendered.contains("kite_discovery_period_seconds 1.0"),
        "{rendered}"
    );
    let widened = log.lines_with("AWS is throttling");
    assert_eq!(widened.len(), 4, "{widened:?}");
    assert!(widened.iter().all(|l| l.contains(" WARN ")), "{widened:?}");
    assert_eq!(log.lines_with("no more throttling").len(), 1);
}
