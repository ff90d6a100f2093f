//! What the process may use: the descriptor budget that sets the default
//! `--max-connections`, the open-file limit it comes from, and the control
//! thread's priority.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tracing::{debug, warn};

/// The file descriptors one proxied connection holds: the client and
/// backend sockets, and two pipes of two ends each for splice(2).
pub const FDS_PER_CONNECTION: u64 = 6;

/// Descriptors kept for everything else: listeners, the runtime, the AWS
/// clients' connections, logs.
const FDS_RESERVED: u64 = 64;

/// The connection limit an open-file limit of `nofile` allows: what is
/// left after a reserve, divided by the descriptors each connection holds.
pub fn max_connections_for(nofile: u64) -> usize {
    let n = nofile.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION;
    usize::try_from(n.max(1)).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit to the hard one (as Go and HAProxy do),
/// since every proxied connection holds several descriptors; returns the
/// soft limit in force (`u64::MAX` when unlimited).
pub fn raise_open_file_limit() -> u64 {
    let mut limit = getrlimit(Resource::Nofile);
    // The soft limit is never above the hard one (`None`: unlimited).
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    soft(limit)
}

/// The soft limit of `limit`, as getrlimit(2) reports it: RLIM_INFINITY is
/// `u64::MAX`.
fn soft(limit: Rlimit) -> u64 {
    limit.current.unwrap_or(u64::MAX)
}

/// Adds `step` to the calling thread's nice value. On Linux a nice value
/// belongs to a thread, and threads started later inherit it; raising it
/// needs no privilege. Failing is not fatal: kite works the same, only
/// without the precedence.
pub fn lower_this_threads_priority(step: i32) {
    use rustix::process::{getpriority_process, setpriority_process};
    let result = getpriority_process(None)
        .and_then(|nice| setpriority_process(None, nice.saturating_add(step).min(19)));
    match result {
        Ok(()) => debug!(
            step,
            "discovery and the admin endpoint run at a lower priority"
        ),
        Err(err) => warn!("cannot lower the control thread's priority: {err}"),
    }
}
