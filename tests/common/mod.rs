//! Test harness: the fake AWS endpoint, real TCP backends on 127.0.0.x, and
//! kite (discovery + proxy) running in-process against them.
#![allow(dead_code)]

pub mod docker;
pub mod fake_aws;
pub mod process;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use fake_aws::*;
use kite::config::{PortMaps, Selector};
use kite::discovery::{self, Discovery, Query, Schedule};
use kite::proxy;
use kite::snapshot::{Snapshot, Store};
#[allow(unused_imports)]
pub use process::*;

/// A port that was free on 127.0.0.1 a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// kite's discovery and proxy running in this process.
pub struct Kite {
    pub store: Arc<Store>,
    cancel: CancellationToken,
}

impl Kite {
    /// Starts kite against the fake with `refresh`, listening on 127.0.0.1.
    pub async fn start(fake: &FakeAws, query: Query, refresh: Duration) -> Kite {
        let store = Arc::new(Store::default());
        let cancel = CancellationToken::new();
        let discovery = Discovery::new(fake.ecs_client(), fake.ec2_client(), query);
        let schedule = Schedule {
            refresh,
            max_backoff: refresh * 4,
        };
        tokio::spawn(discovery::run(
            discovery,
            store.clone(),
            schedule,
            cancel.clone(),
        ));
        let settings = proxy::Settings {
            connect_timeout: Duration::from_secs(2),
            ..proxy::Settings::new("127.0.0.1".parse().unwrap())
        };
        tokio::spawn(proxy::serve(
            settings,
            store.clone(),
            TaskTracker::new(),
            cancel.clone(),
        ));
        Kite { store, cancel }
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
        self.cancel.cancel();
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
