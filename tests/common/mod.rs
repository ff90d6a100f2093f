//! Test harness: the fake AWS endpoint, real TCP backends on 127.0.0.x, and
//! kite (discovery + proxy) running in-process against them.
#![allow(dead_code)]

pub mod docker;
pub mod fake_aws;
pub mod process;
pub mod proxy_protocol;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub use fake_aws::*;
use kite::config::{PortMaps, Selector};
use kite::discovery::Query;
use kite::proxy;
use kite::snapshot::{Snapshot, Store};
#[allow(unused_imports)]
pub use process::*;

/// A port for kite itself to listen on (a container port, an admin
/// endpoint), or one where nothing may listen: this test process's alone
/// until it exits.
///
/// kite binds the port itself, so no listener of ours can be handed over,
/// and holding one would make kite's bind fail. Instead the port is below
/// the kernel's ephemeral range (nothing bound to `:0`, no outgoing
/// connection is given it), unique within this process, and claimed
/// across processes (test binaries running side by side) by an abstract
/// Unix socket named after it, which lives as long as this process; a
/// port something else already listens on is skipped.
pub fn listen_port() -> u16 {
    static CLAIMED: std::sync::Mutex<Vec<std::os::unix::net::UnixListener>> =
        std::sync::Mutex::new(Vec::new());
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Where each process starts, so that processes seldom try the same
    // ports; 10000..32000 is below Linux's default ephemeral range
    // (32768..60999) and above the well-known ports.
    const FIRST: usize = 10_000;
    const SPAN: usize = 22_000;
    let start = (std::process::id() as usize).wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        let Some(claim) = claim_port(port) else {
            continue;
        };
        // Free now; and no other test process will take it from now on.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            CLAIMED.lock().unwrap().push(claim);
            return port;
        }
    }
    panic!("no port left to listen on");
}

/// Claims `port` among test processes: an abstract Unix socket of that
/// name can be bound by one process at a time, and goes when it exits.
fn claim_port(port: u16) -> Option<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("kite-test-port-{port}");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?;
    std::os::unix::net::UnixListener::bind_addr(&addr).ok()
}

/// How a backend answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Writes its name and a newline, then echoes until EOF, then appends
    /// the sha256 of everything it received and closes.
    Echo,
    /// Reads until EOF, then answers its name, a newline and `n` bytes of a
    /// deterministic pattern, and closes.
    AnswerAfterEof(usize),
    /// Reads a PROXY protocol header first ([`proxy_protocol::read_header`]),
    /// then writes its name and a line `VERSION SOURCE DESTINATION` (or
    /// `bad header: WHY`), then echoes until EOF as [`Mode::Echo`] does.
    ProxyHeader,
}

/// A real TCP backend standing in for one task's container port.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Backend {
    /// Starts a backend on `ip:port` (port 0: any).
    pub async fn start(name: &str, ip: &str, port: u16, mode: Mode) -> Backend {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), port))
            .await
            .unwrap_or_else(|e| panic!("backend {name} cannot bind {ip}:{port}: {e}"));
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let connections = Arc::new(AtomicUsize::new(0));
        let (n, s, c) = (name.to_owned(), stop.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (sock, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (n, s) = (n.clone(), s.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = s.cancelled() => {}
                        _ = serve(sock, &n, mode) => {}
                    }
                });
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            connections,
            stop,
        }
    }

    /// Stops listening and drops every open connection.
    pub fn kill(&self) {
        self.stop.cancel();
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(mut sock: TcpStream, name: &str, mode: Mode) -> std::io::Result<()> {
    match mode {
        Mode::ProxyHeader => {
            let line = match proxy_protocol::read_header(&mut sock).await {
                Ok(h) => format!("{} {} {}", h.version, h.source, h.destination),
                Err(why) => format!("bad header: {why}"),
            };
            sock.write_all(format!("{name}\n{line}\n").as_bytes())
                .await?;
            let (mut r, mut w) = sock.split();
            tokio::io::copy(&mut r, &mut w).await?;
            return w.shutdown().await;
        }
        Mode::Echo => {
            sock.write_all(format!("{name}\n").as_bytes()).await?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = sock.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                sock.write_all(&buf[..n]).await?;
            }
            sock.write_all(&hasher.finalize()).await?;
        }
        Mode::AnswerAfterEof(n) => {
            let mut sink = Vec::new();
            sock.read_to_end(&mut sink).await?;
            sock.write_all(format!("{name}\n").as_bytes()).await?;
            sock.write_all(&pattern(n)).await?;
        }
    }
    sock.shutdown().await
}

/// A deterministic, non-repeating-looking byte pattern of length `n`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

/// Connects to kite's `port`, reads the backend's name line, closes.
pub async fn whoami(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    let text = String::from_utf8_lossy(&out);
    let name = text.lines().next().unwrap_or_default().to_owned();
    if name.is_empty() {
        return Err(std::io::Error::other("connection closed without an answer"));
    }
    Ok(name)
}

/// Names seen over `n` connections to kite's `port`.
pub async fn names(port: u16, n: usize) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        seen.insert(whoami(port).await.expect("connection through kite"));
    }
    seen
}

/// A set of backend names, to compare with [`names`].
pub fn set(names: &[&str]) -> std::collections::HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// kite running in this process: [`kite::proxy::run`], as `kite proxy`
/// runs it (proxy threads and all), against the fake.
pub struct Kite {
    pub store: Arc<Store>,
    pub metrics: Arc<kite::metrics::Metrics>,
    shutdown: CancellationToken,
}

impl Kite {
    /// Starts kite against the fake with `refresh`, listening on 127.0.0.1,
    /// for `source` (an ECS [`Query`] or a Cloud Map query).
    pub async fn start(
        fake: &FakeAws,
        source: impl Into<kite::discovery::Select>,
        refresh: Duration,
    ) -> Kite {
        Kite::start_with(fake, |config| proxy::Config {
            source: source.into(),
            refresh,
            max_backoff: refresh * 4,
            ..config
        })
        .await
    }

    /// Starts kite against the fake with the configuration `configure`
    /// makes of the tests' defaults (the family "app" of [`family_query`],
    /// 127.0.0.1, a 2 s connect timeout, a 1 s drain).
    pub async fn start_with(
        fake: &FakeAws,
        configure: impl FnOnce(proxy::Config) -> proxy::Config,
    ) -> Kite {
        let defaults = proxy::Config {
            connect_timeout: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(1),
            ..proxy::Config::new(family_query("app", None), "127.0.0.1".parse().unwrap())
        };
        let handles = proxy::Handles::default();
        let clients = fake.clients();
        let shutdown = CancellationToken::new();
        let run = proxy::run(
            configure(defaults),
            clients,
            handles.clone(),
            shutdown.clone().cancelled_owned(),
        );
        tokio::spawn(async move {
            if let Err(err) = run.await {
                panic!("kite failed: {err:#}");
            }
        });
        Kite {
            store: handles.store,
            metrics: handles.metrics,
            shutdown,
        }
    }

    /// Waits (up to 10 s) until the snapshot satisfies `cond`.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Snapshot) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond(&self.store.load()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; snapshot: {:#?}",
                self.store.load()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until `port` has `n` backends and kite accepts on it.
    pub async fn wait_port(&self, port: u16, n: usize) {
        self.wait_for(&format!("{n} backends on port {port}"), |s| {
            s.backends(port).len() == n
        })
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "kite never listened on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Kite {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A family query for container "app".
pub fn family_query(family: &str, revision: Option<u32>) -> Query {
    Query {
        cluster: "default".into(),
        selector: Selector::Family {
            name: family.into(),
            revision,
        },
        container: "app".into(),
        public: false,
        ip_family: kite::config::IpFamily::Auto,
        port_maps: PortMaps::default(),
    }
}

/// A bridge-mode task of `td` on container instance `ci` whose container
/// "app" binds `container_port` to the backend's port.
pub fn bridge_task(td: &str, ci: &str, container_port: u16, backend: &Backend) -> TaskSpec {
    TaskSpec {
        container_instance_arn: Some(ci.to_owned()),
        containers: vec![TaskContainer {
            network_bindings: vec![
                ("0.0.0.0".into(), container_port, backend.port()),
                ("::".into(), container_port, backend.port()),
            ],
            ..TaskContainer::new("app")
        }],
        ..TaskSpec::new(td)
    }
}

/// A task definition "app" container with one port.
pub fn app(ports: &[(u16, Option<u16>)]) -> Vec<ContainerDef> {
    vec![ContainerDef {
        name: "app".into(),
        ports: ports.to_vec(),
    }]
}

/// Tests run with kite's logs on stderr when RUST_LOG is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
