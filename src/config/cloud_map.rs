//! `--cloud-map NAMESPACE/SERVICE`: the AWS Cloud Map service whose
//! instances to reach.

/// A Cloud Map namespace and service, as given to `--cloud-map`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudMapArg {
    /// The namespace name (`internal.example`; an HTTP namespace's name).
    pub namespace: String,
    /// The service name in it.
    pub service: String,
}

/// Parses `NAMESPACE/SERVICE`. A service name has no `/`, so the last one
/// splits the two; the namespace is 1 to 1,024 visible ASCII characters,
/// the service 1 to 127 letters, digits, `-`, `_` and `.` (Cloud Map's
/// limits).
pub fn parse_cloud_map(s: &str) -> Result<CloudMapArg, String> {
    let s = s.trim();
    let form = "expected NAMESPACE/SERVICE, e.g. internal.example/web";
    let (namespace, service) = s
        .rsplit_once('/')
        .ok_or_else(|| format!("'{s}' has no '/' ({form})"))?;
    if namespace.is_empty() || service.is_empty() {
        return Err(format!(
            "'{s}' names no {} ({form})",
            if namespace.is_empty() {
                "namespace"
            } else {
                "service"
            }
        ));
    }
    if namespace.len() > 1024 {
        return Err("the namespace name is longer than 1024 characters".into());
    }
    if let Some(c) = namespace.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the namespace name '{namespace}' contains {c:?}; Cloud Map namespace names \
             are visible ASCII characters"
        ));
    }
    if service.len() > 127 {
        return Err("the service name is longer than 127 characters".into());
    }
    if let Some(c) = service
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "the service name '{service}' contains {c:?}; Cloud Map service names use \
             only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(CloudMapArg {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
    })
}

#[cfg(test)]
mod tests;
