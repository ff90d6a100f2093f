//! A fake ECS cluster for the fleet benchmark (bench/fleet.sh): the
//! project's fake ECS/EC2 endpoint on loopback, throttling ECS calls with one
//! token bucket as ECS does per account and region, in front of which a
//! fleet of kites runs its real discovery.
//!
//! ```sh
//! cargo run --release --example fleet_cluster -- --tasks 100 --instances 10 --rate 20 --burst 50
//! ```
//!
//! The cluster `fleet` holds `--tasks` bridge-mode tasks of family `fleet`
//! (container `app`, container port `--port`, default 8080), spread over
//! `--instances` container instances on 127.0.100.1, 127.0.100.2, ...
//! (nothing listens there: the fleet measures discovery, not traffic).
//! `--rate 0` turns the bucket off.
//!
//! With `--source cloud-map` the same tasks are instead the instances of
//! the AWS Cloud Map service `fleet/app`, each registered as ECS registers
//! an awsvpc task (an SRV record): its own address, 127.0.100.1,
//! 127.0.100.2, ... and then 127.0.101.1, ..., and the container port, so a
//! kite run with `--cloud-map fleet/app` listens on that one port. `add`
//! registers one more instance and `stop ID` deregisters it (both change
//! the service's revision); Cloud Map calls are not throttled (its budget,
//! about 3,000 DiscoverInstancesRevision calls/s per account, is beyond
//! what one machine's fleet asks).
//!
//! It prints the environment kite needs (`KEY=VALUE` lines), then `ready`,
//! and answers one line per line on stdin:
//!
//! - `add`: starts a new task; prints its ID;
//! - `stop ID`: sets the task's desiredStatus to STOPPED (it leaves
//!   ListTasks, as after StopTask); prints `stopped ID`;
//! - `stats`: prints the calls so far as one JSON object: `ecs` and `ec2`
//!   (all calls that arrived), `ecs_throttled`, and `ecs_by_op`, `ec2_by_op`,
//!   `cloud_map` and `cloud_map_by_op`;
//!
//! and exits when stdin closes. Errors print `error: ...`.

#[path = "../tests/common/fake_aws.rs"]
#[allow(dead_code)]
mod fake_aws;

use anyhow::{bail, Context, Result};
use fake_aws::cloudmap::{ecs_attributes, CloudMap};
use fake_aws::{Cluster, ContainerDef, FakeAws, RateLimit, TaskContainer, TaskSpec};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The first host port a task binds (Docker's ephemeral range).
const FIRST_HOST_PORT: u16 = 32768;

/// The Cloud Map namespace and service of `--source cloud-map`.
const NAMESPACE: &str = "fleet";
const SERVICE: &str = "app";

/// Where the fleet's kites discover the tasks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Ecs,
    CloudMap,
}

struct Args {
    tasks: usize,
    instances: usize,
    port: u16,
    rate: f64,
    burst: f64,
    source: Source,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        tasks: 100,
        instances: 10,
        port: 8080,
        rate: 20.0,
        burst: 50.0,
        source: Source::Ecs,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tasks" => args.tasks = value.parse().context("--tasks")?,
            "--instances" => args.instances = value.parse().context("--instances")?,
            "--port" => args.port = value.parse().context("--port")?,
            "--rate" => args.rate = value.parse().context("--rate")?,
            "--burst" => args.burst = value.parse().context("--burst")?,
            "--source" => {
                args.source = match value.as_str() {
                    "ecs" => Source::Ecs,
                    "cloud-map" => Source::CloudMap,
                    other => bail!("--source {other}: want ecs or cloud-map"),
                }
            }
            other => bail!(
                "unknown flag {other} (want --tasks, --instances, --port, --rate, --burst, --source)"
            ),
        }
    }
    if args.tasks == 0 || !(1..=250).contains(&args.instances) {
        bail!("want --tasks of 1 or more and --instances from 1 to 250");
    }
    if args.rate < 0.0 || (args.rate > 0.0 && args.burst < 1.0) {
        bail!("want --rate of 0 (no throttling) or more, with --burst of 1 or more");
    }
    Ok(args)
}

/// The fleet's tasks and instances, and what `add` needs to start more.
struct Fleet {
    task_definition: String,
    instances: Vec<String>,
    port: u16,
    /// Tasks started so far: places the next one and picks its host port.
    started: usize,
}

/// The fleet as Cloud Map instances: what `add` needs to register more.
struct Registry {
    port: u16,
    /// Instances registered so far: names the next one and picks its
    /// address.
    registered: usize,
}

impl Registry {
    fn new(map: &mut CloudMap, args: &Args) -> Self {
        map.add_service(NAMESPACE, SERVICE);
        let mut registry = Registry {
            port: args.port,
            registered: 0,
        };
        for _ in 0..args.tasks {
            registry.add(map);
        }
        registry
    }

    /// Registers a healthy instance at the next address; returns its ID.
    fn add(&mut self, map: &mut CloudMap) -> String {
        let n = self.registered;
        self.registered += 1;
        let id = format!("task{n:06}");
        let ip = format!("127.0.{}.{}", 100 + n / 250, 1 + n % 250);
        let zone = ["us-east-1a", "us-east-1b", "us-east-1c"][n % 3];
        map.register(
            NAMESPACE,
            SERVICE,
            &id,
            ecs_attributes(&ip, Some(self.port), zone),
        );
        id
    }
}

/// What `add` and `stop` change: ECS tasks or Cloud Map instances.
enum Tasks {
    Ecs(Fleet),
    CloudMap(Registry),
}

impl Fleet {
    fn new(cluster: &mut Cluster, args: &Args) -> Self {
        cluster.name = "fleet".into();
        let app = ContainerDef {
            name: "app".into(),
            ports: vec![(args.port, None)],
        };
        let task_definition = cluster.add_task_definition("fleet", 1, "bridge", &[app]);
        let instances = (0..args.instances)
            .map(|i| cluster.add_instance(&format!("127.0.100.{}", i + 1), None))
            .collect();
        let mut fleet = Fleet {
            task_definition,
            instances,
            port: args.port,
            started: 0,
        };
        for _ in 0..args.tasks {
            fleet.add(cluster);
        }
        fleet
    }

    /// Starts a RUNNING task on the next instance; returns its ID.
    fn add(&mut self, cluster: &mut Cluster) -> String {
        let n = self.started;
        self.started += 1;
        // Distinct on each instance, as Docker's ephemeral ports are.
        let host_port = FIRST_HOST_PORT + u16::try_from(n % 30_000).unwrap_or(0);
        let arn = cluster.add_task(TaskSpec {
            container_instance_arn: Some(self.instances[n % self.instances.len()].clone()),
            containers: vec![TaskContainer {
                network_bindings: vec![("0.0.0.0".to_owned(), self.port, host_port)],
                ..TaskContainer::new("app")
            }],
            ..TaskSpec::new(&self.task_definition)
        });
        task_id(&arn).to_owned()
    }
}

/// The task ID: the last part of its ARN.
fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The answer to one command line.
fn answer(fake: &FakeAws, tasks: &mut Tasks, line: &str) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), tasks) {
        (Some("add"), None, Tasks::Ecs(fleet)) => fake.edit(|c| fleet.add(c)),
        (Some("add"), None, Tasks::CloudMap(registry)) => fake.cloud_map(|m| registry.add(m)),
        (Some("stop"), Some(id), Tasks::Ecs(_)) => fake.edit(|c| match c.task_mut(id) {
            Some(task) => {
                task["desiredStatus"] = json!("STOPPED");
                format!("stopped {id}")
            }
            None => format!("error: no task {id}"),
        }),
        (Some("stop"), Some(id), Tasks::CloudMap(_)) => {
            match fake.cloud_map(|m| m.deregister(NAMESPACE, SERVICE, id)) {
                true => format!("stopped {id}"),
                false => format!("error: no instance {id}"),
            }
        }
        (Some("stats"), None, _) => {
            let counts = fake.counts();
            json!({
                "ecs": counts.ecs_total(),
                "ecs_throttled": counts.ecs_throttled,
                "ec2": counts.ec2_total(),
                "ecs_by_op": counts.ecs,
                "ec2_by_op": counts.ec2,
                "cloud_map": counts.cloud_map_total(),
                "cloud_map_by_op": counts.cloud_map,
            })
            .to_string()
        }
        _ => format!("error: unknown command {line:?} (want add, stop ID, stats)"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args().unwrap_or_else(|err| {
        eprintln!("fleet_cluster: {err:#}");
        std::process::exit(2)
    });
    let fake = FakeAws::start().await;
    fake.set_call_log(false);
    if args.rate > 0.0 {
        fake.set_ecs_rate_limit(Some(RateLimit {
            rate: args.rate,
            burst: args.burst,
        }));
    }
    let mut tasks = match args.source {
        Source::Ecs => Tasks::Ecs(fake.edit(|c| Fleet::new(c, &args))),
        Source::CloudMap => Tasks::CloudMap(fake.cloud_map(|m| Registry::new(m, &args))),
    };
    let mut out = tokio::io::stdout();
    let mut hello = String::new();
    for (k, v) in fake.child_env() {
        hello.push_str(&format!("{k}={v}\n"));
    }
    hello.push_str("ready\n");
    out.write_all(hello.as_bytes()).await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let reply = answer(&fake, &mut tasks, line.trim());
        out.write_all(format!("{reply}\n").as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}
