//! Parsing `--docker-host`: where a Docker daemon listens.

use std::fmt;
use std::path::PathBuf;

/// Where a Docker daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerHost {
    /// `tcp://HOST:PORT` (TLS unless `--docker-tls=false`).
    Tcp(String),
    /// `unix:///PATH`, for a daemon on the machine kite runs on.
    Unix(PathBuf),
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerHost::Tcp(a) => write!(f, "tcp://{a}"),
            DockerHost::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// Parses `tcp://HOST[:PORT]` (port 2376 when left out) or `unix:///PATH`.
pub fn parse_docker_host(s: &str) -> Result<DockerHost, String> {
    let s = s.trim();
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!(
                "'{s}': a unix socket needs an absolute path (unix:///var/run/docker.sock)"
            ));
        }
        return Ok(DockerHost::Unix(PathBuf::from(path)));
    }
    let Some(addr) = s.strip_prefix("tcp://") else {
        return Err(format!(
            "'{s}' is not a Docker host (expected tcp://HOST:PORT or unix:///PATH)"
        ));
    };
    let addr = addr.trim_end_matches('/');
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (h, Some(p)),
        _ => (addr, None),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("'{s}' names no host (expected tcp://HOST:PORT)"));
    }
    let port = match port {
        None => 2376,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("'{s}': port '{p}' is not a port number 1-65535"))?,
    };
    Ok(DockerHost::Tcp(format!("{host}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts() {
        let tcp = |s: &str| DockerHost::Tcp(s.to_owned());
        assert_eq!(
            parse_docker_host("tcp://10.0.0.5:2376").unwrap(),
            tcp("10.0.0.5:2376")
        );
        assert_eq!(
            parse_docker_host("tcp://host.internal").unwrap(),
            tcp("host.internal:2376")
        );
        assert_eq!(
            parse_docker_host("tcp://[::1]:2375/").unwrap(),
            tcp("[::1]:2375")
        );
        assert_eq!(
            parse_docker_host("unix:///var/run/docker.sock").unwrap(),
            DockerHost::Unix("/var/run/docker.sock".into())
        );
        for (bad, want) in [
            ("10.0.0.5:2376", "not a Docker host"),
            ("http://x", "not a Docker host"),
            ("unix://docker.sock", "absolute path"),
            ("tcp://", "names no host"),
            ("tcp://h:0", "not a port number"),
            ("tcp://h:http", "not a port number"),
        ] {
            let err = parse_docker_host(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
