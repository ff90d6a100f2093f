//! The describe plan, driven by a simulated clock and ListTasks.

use std::collections::HashMap;

use rand::Rng;

use super::*;
use crate::snapshot::{SkipKind, Skipped};

const HEALTH: Duration = Duration::from_secs(30);
const REFRESH: Duration = Duration::from_secs(5);

fn arn(n: usize) -> String {
    format!("arn:aws:ecs:eu-west-1:1:task/c/{n:08}")
}

fn arns(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(arn).collect()
}

/// What DescribeTasks answers for `plan`.
fn describe(plan: &[String]) -> Vec<Task> {
    plan.iter()
        .map(|a| Task::builder().task_arn(a).build())
        .collect()
}

/// DescribeTasks calls for `plan`.
fn calls(plan: &[String]) -> usize {
    plan.len().div_ceil(ECS_BATCH)
}

/// Runs rounds of `tasks` listed tasks, `REFRESH` plus up to as much
/// again apart, as kite's loop does, for `rounds` rounds after a first.
/// Returns the DescribeTasks calls of each later round and, per task, the
/// longest time between two of its descriptions less the gap before the
/// round that described it.
fn steady(tasks: usize, rounds: usize) -> (Vec<usize>, Duration) {
    let listed = arns(0..tasks);
    let mut known = Known::new(HEALTH);
    let between = REFRESH.mul_f64(1.5);
    let mut now = Instant::now();
    let first = known.plan(&listed, now, between);
    assert_eq!(first.len(), tasks, "the first round describes every task");
    known.record(describe(&first), now);
    let mut last: HashMap<String, Instant> = first.iter().map(|a| (a.clone(), now)).collect();
    let mut per_round = Vec::new();
    let mut worst = Duration::ZERO;
    for _ in 0..rounds {
        let gap = REFRESH + REFRESH.mul_f64(rand::rng().random_range(0.0..1.0));
        now += gap;
        let plan = known.plan(&listed, now, between);
        per_round.push(calls(&plan));
        known.record(describe(&plan), now);
        for a in &plan {
            let since = now - last.insert(a.clone(), now).unwrap();
            worst = worst.max(since.saturating_sub(gap));
        }
    }
    // The ones never described again count up to now.
    for at in last.values() {
        worst = worst.max(now - *at);
    }
    (per_round, worst)
}

/// 5,000 tasks: a steady round's ListTasks (50 calls) and DescribeTasks
/// stay within 64 calls, and no task goes undescribed for much longer than
/// a health refresh.
#[test]
fn a_steady_round_over_5000_tasks_costs_at_most_64_calls() {
    let (per_round, worst) = steady(5000, 400);
    let max = per_round.iter().max().unwrap();
    let mean = per_round.iter().sum::<usize>() as f64 / per_round.len() as f64;
    println!(
        "5,000 tasks: DescribeTasks per round max {max}, mean {mean:.2}; worst staleness {worst:?}"
    );
    assert!(50 + max <= 64, "{per_round:?}");
    // Every task is described about once per health refresh and part of a
    // round: 50 calls' worth per 34 s or so, rounds 7.5 s apart.
    assert!((9.0..=13.0).contains(&mean), "{mean}");
    // A long gap may leave the last of a round's share for the next one.
    assert!(worst <= HEALTH + REFRESH * 2, "{worst:?}");
}

/// 100 tasks: a steady round costs at most 1.3 calls on average (one
/// ListTasks, and one DescribeTasks per health refresh), and every task is
/// described again at the first round after its health refresh is up.
#[test]
fn a_steady_round_over_100_tasks_costs_about_one_call() {
    let (per_round, worst) = steady(100, 2000);
    let mean = 1.0 + per_round.iter().sum::<usize>() as f64 / per_round.len() as f64;
    println!("100 tasks: {mean:.3} calls per round; worst staleness {worst:?}");
    assert!(mean <= 1.3, "{mean}");
    assert!(per_round.iter().all(|c| *c <= 1), "{per_round:?}");
    assert!(worst <= HEALTH, "{worst:?}");
}

/// A new task is described in the round it appears, and the call is
/// topped up with the known tasks due next (100 per call); a task no longer
/// listed is forgotten; the tasks come back in listing order.
#[test]
fn new_tasks_are_described_at_once_with_a_full_call() {
    let mut known = Known::new(HEALTH);
    let between = REFRESH.mul_f64(1.5);
    let t0 = Instant::now();
    let mut listed = arns(0..150);
    let plan = known.plan(&listed, t0, between);
    known.record(describe(&plan), t0);
    // 1 s later nothing is due (the first refresh is spread over 30 s, so
    // a few may be): no call, or one.
    let t1 = t0 + Duration::from_secs(1);
    let plan = known.plan(&listed, t1, between);
    assert!(plan.len() <= 100, "{}", plan.len());
    known.record(describe(&plan), t1);
    // Three new tasks, one gone.
    listed.remove(7);
    listed.extend(arns(1000..1003));
    let t2 = t1 + Duration::from_secs(1);
    let plan = known.plan(&listed, t2, between);
    assert_eq!(plan.len(), 100, "topped up to one full call");
    assert_eq!(plan[..3], arns(1000..1003), "new ones first");
    assert!(!plan.contains(&arn(7)), "a task no longer listed");
    known.record(describe(&plan), t2);
    let order: Vec<&str> = (known.tasks(&listed).iter())
        .map(|t| t.task_arn().unwrap())
        .collect();
    assert_eq!(order, listed, "listing order, the gone one forgotten");
}

/// A settling task (starting, unhealthy) is described every round until it
/// is a target, then once per health refresh like the others.
#[test]
fn settling_tasks_are_described_every_round() {
    let mut known = Known::new(HEALTH);
    let between = REFRESH.mul_f64(1.5);
    let listed = arns(0..2);
    let mut now = Instant::now();
    let plan = known.plan(&listed, now, between);
    known.record(describe(&plan), now);
    let pending = Skipped {
        task_arn: arn(1),
        reason: "lastStatus is PENDING".into(),
        kind: SkipKind::Settling,
    };
    let other = Skipped {
        kind: SkipKind::Ineligible,
        ..pending.clone()
    };
    known.settle(std::slice::from_ref(&pending));
    for _ in 0..5 {
        now += REFRESH;
        let plan = known.plan(&listed, now, between);
        assert!(plan.contains(&arn(1)), "{plan:?}");
        known.record(describe(&plan), now);
        known.settle(std::slice::from_ref(&pending));
    }
    // Running now: due again within its first health refresh, not every
    // round.
    now += REFRESH;
    let plan = known.plan(&listed, now, between);
    assert!(plan.contains(&arn(1)), "{plan:?}");
    known.record(describe(&plan), now);
    known.settle(&[other]);
    let entry = &known.tasks[&arn(1)];
    assert!(!entry.settling);
    assert!(entry.due >= now && entry.due <= now + HEALTH, "{entry:?}");
}
