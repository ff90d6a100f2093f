//! The kite playground: a simulated ECS cluster on loopback, with kite in
//! front of it, no AWS account needed.
//!
//! It starts a fake ECS/EC2 endpoint, three backend "tasks" on 127.0.0.2-4
//! (each answers with its task id), and kite's discovery and proxy (the same
//! code `kite proxy` runs). A client then connects through kite twice a
//! second while tasks come and go, so you can watch connections land on
//! different tasks and kite follow the cluster.
//!
//! Run: `cargo run --example playground` (about 20 seconds; Ctrl-C ends it).

#[path = "../tests/common/fake_aws.rs"]
#[allow(dead_code)]
mod fake_aws;

use std::time::Duration;

use anyhow::Result;
use fake_aws::{ContainerDef, FakeAws, TaskContainer, TaskSpec};
use kite::config::{PortMaps, Selector};
use kite::discovery::Query;
use kite::proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The container port the simulated tasks expose (kite listens on it).
const PORT: u16 = 18080;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let fake = FakeAws::start().await;
    println!("fake ECS/EC2 endpoint: {}", fake.endpoint_url());

    let td = fake.edit(|c| {
        let app = ContainerDef {
            name: "app".into(),
            ports: vec![(PORT, None)],
        };
        c.add_task_definition("web", 1, "bridge", &[app])
    });
    let mut tasks = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        tasks.push(start_task(&fake, &td, ip).await?);
    }

    let query = Query {
        cluster: "default".into(),
        selector: Selector::Family {
            name: "web".into(),
            revision: None,
        },
        container: "app".into(),
        public: false,
        ip_family: kite::config::IpFamily::Auto,
        port_maps: PortMaps::default(),
    };
    // What `kite proxy --family web --name app --listen-addr 127.0.0.1
    // --refresh 500ms --connect-timeout 1s` runs, against the fake.
    let config = proxy::Config {
        refresh: Duration::from_millis(500),
        max_backoff: Duration::from_secs(4),
        connect_timeout: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(1),
        ..proxy::Config::new(query, "127.0.0.1".parse()?)
    };
    let clients = fake.clients();
    let shutdown = CancellationToken::new();
    let kite = tokio::spawn(proxy::run(
        config,
        clients,
        proxy::Handles::default(),
        shutdown.clone().cancelled_owned(),
    ));
    println!("kite listens on 127.0.0.1:{PORT} for family web, container app\n");

    let script = async {
        for tick in 0..40u32 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match tick {
                8 => {
                    println!("-- a fourth task starts on 127.0.0.5");
                    tasks.push(start_task(&fake, &td, "127.0.0.5").await?);
                }
                16 => {
                    let arn = tasks.remove(0);
                    println!("-- the first task is stopping (desiredStatus STOPPED)");
                    fake.edit(|c| {
                        c.task_mut(&arn)
                            .map(|t| t["desiredStatus"] = "STOPPED".into())
                    });
                }
                26 => {
                    println!("-- every task is gone");
                    fake.edit(|c| c.tasks.clear());
                }
                32 => {
                    println!("-- a new task starts on 127.0.0.6");
                    tasks.push(start_task(&fake, &td, "127.0.0.6").await?);
                }
                _ => {}
            }
            match ask().await {
                Ok(answer) => println!("connection {tick:>2} -> {answer}"),
                Err(err) => println!("connection {tick:>2} -> failed: {err}"),
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = script => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    shutdown.cancel();
    kite.await?
}

/// Starts a backend on `ip` that answers with its task id, and registers it
/// as a bridge task in the fake cluster. Returns the task ARN.
async fn start_task(fake: &FakeAws, td: &str, ip: &str) -> Result<String> {
    let listener = TcpListener::bind((ip, 0)).await?;
    let host_port = listener.local_addr()?.port();
    let arn = fake.edit(|c| {
        let ci = c.add_instance(ip, None);
        c.add_task(TaskSpec {
            container_instance_arn: Some(ci),
            containers: vec![TaskContainer {
                network_bindings: vec![("0.0.0.0".into(), PORT, host_port)],
                ..TaskContainer::new("app")
            }],
            ..TaskSpec::new(td)
        })
    });
    let id = kite::config::arn::last_segment(&arn).to_owned();
    let answer = format!(
        "task …{} at {ip}:{host_port}",
        &id[id.len().saturating_sub(6)..]
    );
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move { sock.write_all(answer.as_bytes()).await });
        }
    });
    Ok(arn)
}

/// One connection through kite: what the task answered.
async fn ask() -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", PORT)).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut answer)).await??;
    if answer.is_empty() {
        anyhow::bail!("closed without an answer (no task to route to)");
    }
    Ok(answer)
}
