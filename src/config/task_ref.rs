//! Parsing `--task`: a bare task id or a task ARN, old or new format. Pure,
//! so it can be tested (and fuzzed) without AWS.

use std::fmt;

/// A task as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRef {
    /// The task id: 32 hex digits, or the older UUID form.
    pub id: String,
    /// The full ARN, when one was given.
    pub arn: Option<String>,
    /// The cluster named in a new-format ARN.
    pub cluster: Option<String>,
}

impl TaskRef {
    /// What to send to DescribeTasks: the ARN when there is one (it names
    /// the region and account too), else the id.
    pub fn lookup(&self) -> &str {
        self.arn.as_deref().unwrap_or(&self.id)
    }
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

const EXPECTED: &str = "expected a task id (32 hex digits, or a UUID) or a task ARN \
    (arn:aws:ecs:REGION:ACCOUNT:task/ID or arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID)";

/// Parses a task id or ARN:
///
/// - `0123456789abcdef0123456789abcdef` (current ids) or
///   `01234567-89ab-cdef-0123-456789abcdef` (older ids);
/// - `arn:PARTITION:ecs:REGION:ACCOUNT:task/ID` (old ARN format);
/// - `arn:PARTITION:ecs:REGION:ACCOUNT:task/CLUSTER/ID` (new ARN format).
pub fn parse_task_ref(s: &str) -> Result<TaskRef, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("the task is empty ({EXPECTED})"));
    }
    let Some(rest) = s.strip_prefix("arn:") else {
        let id = parse_id(s)?;
        return Ok(TaskRef {
            id,
            arn: None,
            cluster: None,
        });
    };
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    let [partition, service, region, account, resource] = parts[..] else {
        return Err(format!("'{s}' is not a complete ARN ({EXPECTED})"));
    };
    if !partition.starts_with("aws") || !is_word(partition) {
        return Err(format!("'{s}': '{partition}' is not an AWS partition"));
    }
    if service != "ecs" {
        return Err(format!("'{s}' is an ARN of {service}, not of an ECS task"));
    }
    if region.is_empty() || !is_word(region) {
        return Err(format!("'{s}': '{region}' is not an AWS region"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}': '{account}' is not a 12-digit account id"));
    }
    let Some(path) = resource.strip_prefix("task/") else {
        return Err(format!(
            "'{s}' is not a task ARN (its resource is '{resource}'; {EXPECTED})"
        ));
    };
    let (cluster, id) = match path.split_once('/') {
        Some((cluster, id)) => (Some(parse_cluster(cluster, s)?), id),
        None => (None, path),
    };
    let id = parse_id(id).map_err(|e| format!("'{s}': {e}"))?;
    Ok(TaskRef {
        arn: Some(s.to_owned()),
        id,
        cluster,
    })
}

/// Lowercase letters, digits and '-' (partitions, regions).
fn is_word(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn parse_cluster(name: &str, arn: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(format!(
            "'{arn}': '{name}' is not a cluster name (letters, digits, '-' and '_')"
        ));
    }
    Ok(name.to_owned())
}

/// A task id: 32 hex digits, or a UUID (8-4-4-4-12 hex digits). Returned
/// lowercase, as ECS writes them.
fn parse_id(s: &str) -> Result<String, String> {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = s.split('-').collect();
    let ok = match groups[..] {
        [one] => hex(one, 32),
        [a, b, c, d, e] => hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12),
        _ => false,
    };
    if !ok {
        let shown: String = s.chars().take(80).collect();
        return Err(format!("'{shown}' is not a task id ({EXPECTED})"));
    }
    Ok(s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const UUID: &str = "01234567-89ab-cdef-0123-456789abcdef";

    #[test]
    fn bare_ids() {
        let t = parse_task_ref(ID).unwrap();
        assert_eq!((t.id.as_str(), t.arn, t.cluster), (ID, None, None));
        assert_eq!(parse_task_ref(UUID).unwrap().id, UUID);
        assert_eq!(parse_task_ref(&ID.to_uppercase()).unwrap().id, ID);
        assert_eq!(parse_task_ref(&format!(" {ID}\n")).unwrap().lookup(), ID);
    }

    #[test]
    fn old_and_new_arns() {
        let old = format!("arn:aws:ecs:us-east-1:123456789012:task/{UUID}");
        let t = parse_task_ref(&old).unwrap();
        assert_eq!(t.id, UUID);
        assert_eq!(t.cluster, None);
        assert_eq!(t.lookup(), old);
        let new = format!("arn:aws-cn:ecs:cn-north-1:123456789012:task/prod_1/{ID}");
        let t = parse_task_ref(&new).unwrap();
        assert_eq!(t.id, ID);
        assert_eq!(t.cluster.as_deref(), Some("prod_1"));
        assert_eq!(t.arn.as_deref(), Some(new.as_str()));
    }

    #[test]
    fn bad_input_names_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("abc", "not a task id"),
            (&ID[1..], "not a task id"),
            ("0123456789abcdef0123456789abcdeg", "not a task id"),
            ("01234567-89ab-cdef-0123-456789abcde", "not a task id"),
            ("01234567-89ab-cdef-0123456789abcdef", "not a task id"),
            ("arn:aws:ecs:us-east-1:123456789012", "not a complete ARN"),
            (
                "arn:aws:s3:us-east-1:123456789012:task/x",
                "not of an ECS task",
            ),
            (
                "arn:aws:ecs:us-east-1:12345:task/0123456789abcdef0123456789abcdef",
                "12-digit",
            ),
            (
                "arn:aws:ecs:us-east-1:123456789012:service/web",
                "not a task ARN",
            ),
            (
                "arn:aws:ecs:us-east-1:123456789012:task/a b/0123456789abcdef0123456789abcdef",
                "not a cluster name",
            ),
            (
                "arn:aws:ecs:us-east-1:123456789012:task/c/d/0123456789abcdef0123456789abcdef",
                "not a task id",
            ),
            ("arn:aws:ecs:us-east-1:123456789012:task/", "not a task id"),
            ("arn:gcp:ecs:r:123456789012:task/x", "partition"),
            ("arn:aws:ecs:US East:123456789012:task/x", "region"),
        ];
        for (input, want) in cases {
            let err = parse_task_ref(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "arn:",
            "arn:::::",
            "arn:aws:ecs:r:123456789012:task//",
            "-----",
            "é",
            "arn:aws:ecs:r:123456789012:task/é/é",
        ] {
            assert!(parse_task_ref(s).is_err(), "{s:?}");
        }
    }
}
