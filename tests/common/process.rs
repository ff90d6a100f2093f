//! The `kite` binary as a child process: a hermetic environment, its log
//! captured, its admin endpoint asked over plain HTTP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The binary under test.
pub const KITE: &str = env!("CARGO_BIN_EXE_kite");

/// `kite ARGS` with a clean environment plus `env`: no AWS configuration
/// or metadata service is picked up from the machine.
pub fn kite_command(args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(KITE);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    cmd
}

/// `kite proxy` for family web / container app, listening on 127.0.0.1,
/// with an admin endpoint on a free port, plus `extra` flags, in `env`
/// (a fake endpoint's [`child_env`](crate::common::FakeAws::child_env) and
/// more), with an open-file limit of `nofile` if given.
pub fn proxy_process(extra: &[&str], env: &[(String, String)], nofile: Option<u64>) -> KiteProcess {
    let admin: SocketAddr = format!("127.0.0.1:{}", super::listen_port())
        .parse()
        .unwrap();
    let admin_flag = admin.to_string();
    let mut args = vec![
        "proxy",
        "--family",
        "web",
        "--name",
        "app",
        "--listen-addr",
        "127.0.0.1",
        "--admin-addr",
        &admin_flag,
    ];
    args.extend_from_slice(extra);
    let mut cmd = kite_command(&args, env);
    if let Some(n) = nofile {
        limit_open_files(&mut cmd, n);
    }
    KiteProcess::spawn(cmd, Some(admin))
}

/// Gives the child an open-file limit of `n` (soft and hard).
fn limit_open_files(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: the closure only calls setrlimit(2), which is async-signal-safe,
    // on a copy of `lim`.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running `kite` child; killed when dropped if still running.
pub struct KiteProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    /// The admin endpoint, if it was given one.
    pub admin: Option<SocketAddr>,
}

impl KiteProcess {
    /// Starts `cmd` with stderr captured into [`KiteProcess::log`].
    pub fn spawn(mut cmd: Command, admin: Option<SocketAddr>) -> KiteProcess {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting kite");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        KiteProcess { child, log, admin }
    }

    /// Everything kite wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the log shows `needle` within a few seconds: the log is read
    /// from the child's stderr by another thread, so a line the child has
    /// written may not be here yet.
    pub async fn log_shows(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {pid}");
    }

    /// Waits up to `limit` for kite to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether kite is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// GET `path` on the admin endpoint: (status, body).
    pub async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.admin.expect("no --admin-addr"), path).await
    }

    /// Waits (up to 20 s) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        for _ in 0..400 {
            if let Ok((200, _)) = self.get("/readyz").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("kite never became ready; log:\n{}", self.log());
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `metric("kite_connections_accepted_total", &[("port", "80")])`;
    /// 0 when the series does not exist yet.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (status, body) = self.get("/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        sample(&body, name, labels)
    }

    /// Open file descriptors of the child, from /proc.
    /// The open descriptors once they are at most `limit`, or the count
    /// after a few seconds of waiting for them to get there: sockets the
    /// child is still closing (its admin endpoint's last answer, say) are
    /// not leaks.
    pub async fn open_fds_settled(&self, limit: usize) -> usize {
        settled(limit, || async { self.open_fds() }).await
    }

    /// The child's open descriptors now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("reading the child's /proc fd table")
            .count()
    }

    /// The names of the child's threads, sorted.
    pub fn thread_names(&self) -> Vec<String> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .expect("reading the child's /proc task list");
        let mut names: Vec<String> = tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim_end().to_owned())
            .collect();
        names.sort();
        names
    }

    /// The child's threads: for each, whether it is the main thread, its
    /// name, and its nice value.
    pub fn threads(&self) -> Vec<ThreadInfo> {
        let pid = self.pid();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("reading the child's /proc task list");
        tasks
            .filter_map(|task| {
                let task = task.ok()?;
                let tid: u32 = task.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                let (name, nice) = parse_stat(&stat)?;
                Some(ThreadInfo {
                    main: tid == pid,
                    name,
                    nice,
                })
            })
            .collect()
    }
}

/// A thread of a child, from /proc.
#[derive(Debug)]
pub struct ThreadInfo {
    pub main: bool,
    pub name: String,
    pub nice: i32,
}

/// The name and nice value in a /proc `stat` line: the name is field 2,
/// in parentheses (and may hold spaces and parentheses itself), the nice
/// value field 19.
pub fn parse_stat(stat: &str) -> Option<(String, i32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let nice = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(16)?
        .parse()
        .ok()?;
    Some((name, nice))
}

impl Drop for KiteProcess {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses a Prometheus text exposition with a real parser and returns the
/// value of the sample `name` with `labels` (0 when absent).
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = exposition.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a parsable exposition");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// A one-shot HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("admin endpoint timed out"))??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// What `read` gives once it is at most `limit`, or its last value after a
/// few seconds of asking: for counts that fall back once the child has
/// finished closing what it was closing, where only a leak stays high.
pub async fn settled<F: std::future::Future<Output = usize>>(
    limit: usize,
    mut read: impl FnMut() -> F,
) -> usize {
    let mut n = read().await;
    for _ in 0..100 {
        if n <= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        n = read().await;
    }
    n
}
