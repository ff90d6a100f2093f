//! Reading ARNs: the one place that knows their shape,
//! `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`, where a task's
//! resource is `task/ID` (old format) or `task/CLUSTER/ID` (new format).

use super::task_ref::parse_task_ref;

/// The last `/`-separated segment: a task's id from its ARN, a cluster's
/// or service's name from theirs, a container instance's id. A string
/// without `/` (a bare id or name) is returned as it is.
pub fn last_segment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The cluster a new-format task ARN names; `None` for an old-format ARN
/// and for anything that is not a task ARN.
pub fn task_cluster(arn: &str) -> Option<String> {
    parse_task_ref(arn).ok()?.cluster
}

/// `arn:aws:ecs:REGION:ACCOUNT:...` → REGION.
pub fn region(arn: &str) -> Option<String> {
    let mut parts = arn.split(':');
    if parts.next() != Some("arn") {
        return None;
    }
    let region = parts.nth(2)?;
    (!region.is_empty()).then(|| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn last_segments() {
        let new = format!("arn:aws:ecs:us-east-1:123456789012:task/prod/{ID}");
        assert_eq!(last_segment(&new), ID);
        assert_eq!(
            last_segment("arn:aws:ecs:r:123456789012:cluster/prod"),
            "prod"
        );
        assert_eq!(last_segment(ID), ID);
        assert_eq!(last_segment(""), "");
    }

    #[test]
    fn task_clusters() {
        let new = format!("arn:aws:ecs:us-east-1:123456789012:task/prod_1/{ID}");
        assert_eq!(task_cluster(&new).as_deref(), Some("prod_1"));
        let old = format!("arn:aws:ecs:us-east-1:123456789012:task/{ID}");
        assert_eq!(task_cluster(&old), None);
        assert_eq!(task_cluster(ID), None);
        assert_eq!(task_cluster("arn:aws:ecs:r:123456789012:task/a b/x"), None);
    }

    #[test]
    fn regions() {
        assert_eq!(
            region(
                "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c"
            )
            .as_deref(),
            Some("us-west-2")
        );
        assert_eq!(
            region("arn:aws-cn:ecs:cn-north-1:111122223333:task/3f2a").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(region("arn:aws:ecs::111122223333:task/x"), None);
        assert_eq!(region("task/default/abc"), None);
        assert_eq!(region("arn:aws"), None);
    }
}
