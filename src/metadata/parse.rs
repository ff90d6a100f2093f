//! Parsing what the cgroup files and availability zones say (ARNs:
//! [`crate::config::arn`]).

use serde::{Deserialize, Deserializer};

use super::Whoami;
use crate::config::arn;

/// The container id in a `/proc/self/cgroup` or `/proc/self/cpuset` text:
/// the last component of a cgroup path, when it is 64 hex digits (also in
/// systemd's `docker-ID.scope` spelling).
pub fn container_id_from_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        // cgroup lines are `ID:CONTROLLERS:PATH`; cpuset is the bare path.
        let path = line.splitn(3, ':').last()?.trim();
        let last = path.rsplit('/').next()?;
        let last = last.strip_suffix(".scope").unwrap_or(last);
        let last = last.rsplit('-').next()?;
        (last.len() == 64 && last.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| last.to_ascii_lowercase())
    })
}

/// The region of a task: from its ARN, or else its availability zone.
pub(super) fn region(w: &Whoami) -> Option<String> {
    w.task_arn
        .as_deref()
        .and_then(arn::region)
        .or_else(|| w.availability_zone.as_deref().and_then(region_from_az))
}

/// An availability zone's region: `us-west-2d` → `us-west-2`, and
/// `us-west-2-lax-1a` (a Local Zone) → `us-west-2`.
pub fn region_from_az(az: &str) -> Option<String> {
    let parts: Vec<&str> = az.split('-').collect();
    let i = parts
        .iter()
        .position(|p| p.starts_with(|c: char| c.is_ascii_digit()))?;
    if i < 2 {
        return None;
    }
    let number = parts[i].trim_end_matches(|c: char| c.is_ascii_lowercase());
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{}-{number}", parts[..i].join("-")))
}

/// ECS writes revisions as strings; accept numbers too.
pub(super) fn string_or_number<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}
