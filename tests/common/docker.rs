//! Docker for the tests that need real containers: is a daemon there, run
//! the CLI, build a `FROM scratch` image around Debian's static busybox, and
//! remove what a test made even when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's busybox-static: the shell, nc and httpd of the test images.
pub const BUSYBOX: &str = "/bin/busybox";

/// A per-run suffix for every Docker object's name.
pub fn suffix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos:x}", std::process::id())
}

/// Whether Docker (and busybox-static) can be used; prints why not, and
/// panics instead when KITE_REQUIRE_DOCKER=1.
pub fn docker_ready(test: &str) -> bool {
    let daemon = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    let problem = match daemon {
        Err(e) => Some(format!("no docker CLI ({e})")),
        Ok(o) if !o.status.success() => Some(format!(
            "no Docker daemon answers ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) if !Path::new(BUSYBOX).exists() => Some(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        )),
        Ok(_) => None,
    };
    let Some(problem) = problem else {
        return true;
    };
    if std::env::var("KITE_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("{test}: KITE_REQUIRE_DOCKER=1 but {problem}");
    }
    eprintln!("SKIPPED {test}: {problem}");
    false
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Docker objects this test made, removed when dropped (also on failure).
#[derive(Default)]
pub struct Cleanup {
    /// Containers, removed first.
    pub containers: Vec<String>,
    /// Networks, removed after their containers.
    pub networks: Vec<String>,
    /// Images.
    pub images: Vec<String>,
    /// Scratch directories.
    pub dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for n in &self.networks {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
        for i in &self.images {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A scratch directory under the system temp dir.
pub fn temp_dir(cleanup: &mut Cleanup, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kite-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    cleanup.dirs.push(dir.clone());
    dir
}

/// Builds `FROM scratch` + static busybox; returns the image tag.
pub fn build_image(cleanup: &mut Cleanup, name: &str) -> String {
    let ctx = temp_dir(cleanup, &format!("ctx-{name}"));
    std::fs::copy(BUSYBOX, ctx.join("busybox")).unwrap();
    // A file of its own, first, makes each test's image share no layer
    // with another's: tests running side by side would otherwise share
    // one image (or its cached parent), and one test's `rmi -f` at its end
    // could take it from under the others.
    std::fs::write(ctx.join("name"), name).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY name /name\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n",
    )
    .unwrap();
    let tag = format!("kite-test-busybox:{name}");
    cleanup.images.push(tag.clone());
    docker(&["build", "-q", "-t", &tag, ctx.to_str().unwrap()]);
    tag
}
