//! What a round describes, and the last description of every listed task.
//!
//! ListTasks runs every round: it is what says a task is gone (a stopping
//! task leaves it at once). DescribeTasks, which says whether a task is
//! RUNNING and healthy, runs only for what needs it:
//!
//! - a task not seen before, in the round it appears;
//! - a *settling* task (starting, or its container UNHEALTHY), every round,
//!   so that it becomes a target as soon as it can;
//! - every other task once its health refresh is up, at the first round
//!   after that. A round re-describes at most its share of the known tasks
//!   (see [`Known::budget`]), oldest first, so no round is a burst.
//!
//! A call describes up to 100 tasks for the price of one: when a round
//! describes anything, its last call is topped up with the tasks due next.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_ecs::types::Task;
use rand::Rng;
use tokio::time::Instant;

use super::ecs::ECS_BATCH;
use crate::snapshot::{SkipKind, Skipped};

#[cfg(test)]
mod tests;

/// The tasks ListTasks returned, as DescribeTasks last described them.
#[derive(Debug)]
pub(super) struct Known {
    /// How long a description stays good (`--health-refresh`).
    health_refresh: Duration,
    /// By task ARN.
    tasks: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    task: Task,
    /// When it is to be described again (unless settling).
    due: Instant,
    /// Described again every round until it becomes a target.
    settling: bool,
}

impl Known {
    /// Nothing known yet.
    pub(super) fn new(health_refresh: Duration) -> Known {
        Known {
            health_refresh,
            tasks: HashMap::new(),
        }
    }

    /// Forgets the tasks not in `listed` (this round's ListTasks, each ARN
    /// once) and
    /// returns the ARNs to describe at `now`, when rounds come `between`
    /// apart on average.
    pub(super) fn plan(
        &mut self,
        listed: &[String],
        now: Instant,
        between: Duration,
    ) -> Vec<String> {
        let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
        self.tasks
            .retain(|arn, _| listed_set.contains(arn.as_str()));
        let mut plan: Vec<String> = listed
            .iter()
            .filter(|arn| self.tasks.get(*arn).is_none_or(|e| e.settling))
            .cloned()
            .collect();
        let mut waiting: Vec<(Instant, &String)> = self
            .tasks
            .iter()
            .filter(|(_, e)| !e.settling)
            .map(|(arn, e)| (e.due, arn))
            .collect();
        waiting.sort_unstable();
        let due = waiting.partition_point(|(at, _)| *at <= now);
        let wanted = plan.len() + due.min(self.budget(between));
        let topped_up = wanted.next_multiple_of(ECS_BATCH);
        let again = topped_up.min(plan.len() + waiting.len()) - plan.len();
        plan.extend(waiting[..again].iter().map(|(_, arn)| (*arn).clone()));
        plan
    }

    /// How many known tasks one round may describe again: the calls that
    /// describing every known task once per health refresh takes per round
    /// at `between`, plus one call of slack. Below a few thousand tasks
    /// this never binds, so a task is described again at the first round
    /// after its health refresh is up; above, a long gap between rounds
    /// may leave the last ones for the next round.
    fn budget(&self, between: Duration) -> usize {
        let calls = self.tasks.len().div_ceil(ECS_BATCH) as f64;
        let share = calls * between.as_secs_f64() / self.health_refresh.as_secs_f64();
        (share.ceil() as usize + 1) * ECS_BATCH
    }

    /// Keeps what DescribeTasks returned at `now`. A task described for
    /// the first time (or after settling) is due again at a random point of
    /// its first health refresh, so that the tasks a kite meets together
    /// (at its start) are described again spread over the rounds.
    pub(super) fn record(&mut self, described: Vec<Task>, now: Instant) {
        for task in described {
            let Some(arn) = task.task_arn().map(str::to_owned) else {
                continue;
            };
            let wait = match self.tasks.get(&arn) {
                Some(e) if !e.settling => self.health_refresh,
                _ => self
                    .health_refresh
                    .mul_f64(rand::rng().random_range(0.0..=1.0)),
            };
            let due = now + wait;
            let settling = false;
            self.tasks.insert(
                arn,
                Entry {
                    task,
                    due,
                    settling,
                },
            );
        }
    }

    /// Marks the tasks the snapshot skipped as settling.
    pub(super) fn settle(&mut self, skipped: &[Skipped]) {
        for s in skipped.iter().filter(|s| s.kind == SkipKind::Settling) {
            if let Some(e) = self.tasks.get_mut(&s.task_arn) {
                e.settling = true;
            }
        }
    }

    /// The known tasks, in `listed` order.
    pub(super) fn tasks<'a>(&'a self, listed: &[String]) -> Vec<&'a Task> {
        listed
            .iter()
            .filter_map(|arn| self.tasks.get(arn).map(|e| &e.task))
            .collect()
    }
}
