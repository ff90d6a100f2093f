//! What a splice reports as it moves bytes: the byte counters, and when the
//! connection last moved one ([`Activity`]), for `--idle-timeout` and for
//! telling a persistent connection from a short one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// When a connection last moved a byte, for `--idle-timeout`.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte moved either way.
    last_ms: AtomicU64,
    /// `last_ms` when [`Activity::persistent_check_due`] last said yes.
    checked_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            checked_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Notes that bytes moved just now.
    pub fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Whether bytes moved [`PERSISTENT_AFTER`] or more after it was made
    /// (a connection that goes on exchanging, not a short one), and as
    /// long again since this last said yes: a persistent connection looks
    /// at every thread's counts once per [`PERSISTENT_AFTER`] of traffic
    /// at most, not at every small exchange.
    pub fn persistent_check_due(&self) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        let checked = self.checked_ms.load(Ordering::Relaxed);
        if last < checked + PERSISTENT_AFTER.as_millis() as u64 {
            return false;
        }
        self.checked_ms.store(last, Ordering::Relaxed);
        true
    }

    /// How long since it was made.
    pub fn age(&self) -> Duration {
        self.start.elapsed()
    }

    /// How long no byte has moved either way.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// How long a connection must go on moving bytes to count as persistent
/// ([`Activity::persistent_check_due`]): far beyond a request on a
/// connection of its own, well within the life of a keep-alive one.
pub const PERSISTENT_AFTER: Duration = Duration::from_millis(100);

/// Where a splice reports the bytes it moves, as it moves them.
#[derive(Clone, Copy, Debug)]
pub struct Meter<'a> {
    /// Bytes moved a → b.
    pub a_to_b: &'a Counter,
    /// Bytes moved b → a.
    pub b_to_a: &'a Counter,
    /// Touched whenever bytes move.
    pub activity: &'a Activity,
}

impl Meter<'_> {
    pub(super) fn moved(&self, counter: &Counter, n: usize) {
        counter.inc_by(n as u64);
        self.activity.touch();
    }
}
