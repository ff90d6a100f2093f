//! A fake ECS cluster for the benchmarks (bench/run.sh): the project's fake
//! ECS/EC2 endpoint on loopback, with bridge tasks of family `bench`
//! (container `app`) whose ports lead to the benchmark's servers, so that
//! kite runs its real discovery in front of them.
//!
//! ```sh
//! cargo run --release --example bench_cluster -- \
//!     --port 8081=127.0.0.1:18081 --port 5201=127.0.0.1:15201 --tasks 1 --instances 1
//! ```
//!
//! `--port CONTAINER=IP:PORT` (repeatable) binds the container port to that
//! server; `--tasks N --instances M` spreads N tasks over M container
//! instances, every one of them leading to the same servers (the discovery
//! benchmark asks for 5,000 on 500), all in zone `bench-zone-a`. It prints
//! the environment kite needs (`KEY=VALUE` lines), then `ready`, and serves
//! until stdin closes or it is killed.

#[path = "../tests/common/fake_aws.rs"]
#[allow(dead_code)]
mod fake_aws;

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use fake_aws::{ContainerDef, FakeAws, TaskContainer, TaskSpec};
use tokio::io::AsyncReadExt;

struct Args {
    ports: Vec<(u16, SocketAddr)>,
    tasks: usize,
    instances: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        ports: Vec::new(),
        tasks: 1,
        instances: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => {
                let (container, server) = value
                    .split_once('=')
                    .with_context(|| format!("--port {value}: want CONTAINER=IP:PORT"))?;
                args.ports.push((
                    container.parse().context("--port: container port")?,
                    server.parse().context("--port: server IP:PORT")?,
                ));
            }
            "--tasks" => args.tasks = value.parse().context("--tasks")?,
            "--instances" => args.instances = value.parse().context("--instances")?,
            other => bail!("unknown flag {other} (want --port, --tasks, --instances)"),
        }
    }
    if args.ports.is_empty() || args.tasks == 0 || args.instances == 0 {
        bail!("usage: bench_cluster --port CONTAINER=IP:PORT... [--tasks N] [--instances M]");
    }
    let ips: std::collections::BTreeSet<_> = args.ports.iter().map(|(_, s)| s.ip()).collect();
    if ips.len() != 1 {
        bail!("every --port server must be on the same IP (it stands for the instance)");
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args().unwrap_or_else(|err| {
        eprintln!("bench_cluster: {err:#}");
        std::process::exit(2)
    });
    let fake = FakeAws::start().await;
    let ip = args.ports[0].1.ip().to_string();
    fake.edit(|c| {
        let app = ContainerDef {
            name: "app".into(),
            ports: args.ports.iter().map(|(cp, _)| (*cp, None)).collect(),
        };
        let td = c.add_task_definition("bench", 1, "bridge", &[app]);
        let instances: Vec<String> = (0..args.instances)
            .map(|_| c.add_instance(&ip, None))
            .collect();
        for n in 0..args.tasks {
            let bindings = args
                .ports
                .iter()
                .map(|(cp, server)| ("0.0.0.0".to_owned(), *cp, server.port()))
                .collect();
            c.add_task(TaskSpec {
                container_instance_arn: Some(instances[n % instances.len()].clone()),
                // What `kite proxy --zone bench-zone-a --zone-affinity` prefers.
                availability_zone: Some("bench-zone-a".into()),
                containers: vec![TaskContainer {
                    network_bindings: bindings,
                    ..TaskContainer::new("app")
                }],
                ..TaskSpec::new(&td)
            });
        }
    });
    for (k, v) in fake.child_env() {
        println!("{k}={v}");
    }
    println!("ready");
    // Serve until whoever started us closes our stdin (or kills us).
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}
