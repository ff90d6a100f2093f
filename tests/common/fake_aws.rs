//! A fake AWS endpoint on 127.0.0.1:0 for kite's tests: ECS's JSON 1.1
//! protocol (dispatched on `X-Amz-Target`), EC2's query protocol (XML
//! answers) and AWS Cloud Map's data plane ([`cloudmap`]), with state a
//! test edits live, a log of calls, and injectable
//! throttling and server errors. For the fleet benchmark
//! (examples/fleet_cluster.rs) it can also throttle ECS calls with one token
//! bucket, as ECS does per account and region, and count calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[path = "fake_cloudmap.rs"]
pub mod cloudmap;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

/// Calls that fail on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every call succeeds.
    None,
    /// Every `every`-th call (1: all) is throttled.
    Throttle { every: u32 },
    /// Every `every`-th call (1: all) gets HTTP 500.
    ServerError { every: u32 },
    /// Calls are throttled in runs of `run`, each followed by `run` calls
    /// that pass: with `run` of 2 or more, some calls fail more times in a
    /// row than the tests' clients retry (two attempts), so rounds fail.
    ThrottleRuns { run: u32 },
    /// As [`Fault::ThrottleRuns`], with HTTP 500.
    ServerErrorRuns { run: u32 },
}

/// How an injected fault answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Throttle,
    ServerError,
}

/// An EC2 instance's addresses.
#[derive(Clone, Debug, Default)]
pub struct Ec2Instance {
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub ipv6: Option<String>,
}

/// A task ENI's addresses.
#[derive(Clone, Debug, Default)]
pub struct Eni {
    pub private_ip: String,
    pub public_ip: Option<String>,
}

/// One container of a task definition: name and (containerPort, hostPort).
#[derive(Clone, Debug)]
pub struct ContainerDef {
    pub name: String,
    pub ports: Vec<(u16, Option<u16>)>,
}

/// A task to add with [`Cluster::add_task`].
#[derive(Clone, Debug)]
pub struct TaskSpec {
    pub task_definition_arn: String,
    pub container_instance_arn: Option<String>,
    pub launch_type: String,
    pub group: Option<String>,
    pub last_status: String,
    pub desired_status: String,
    pub containers: Vec<TaskContainer>,
    /// (ENI id, private IP): adds the ElasticNetworkInterface attachment
    /// (an empty IP: the ENI has no IPv4 address).
    pub eni: Option<(String, String)>,
    /// The ENI's IPv6 address, in its attachment's details.
    pub eni_ipv6: Option<String>,
    pub started_by: Option<String>,
    /// The task's `availabilityZone`.
    pub availability_zone: Option<String>,
}

impl TaskSpec {
    /// A RUNNING EC2 task of `task_definition_arn` with no containers.
    pub fn new(task_definition_arn: &str) -> Self {
        TaskSpec {
            task_definition_arn: task_definition_arn.to_owned(),
            container_instance_arn: None,
            launch_type: "EC2".into(),
            group: None,
            last_status: "RUNNING".into(),
            desired_status: "RUNNING".into(),
            containers: Vec::new(),
            eni: None,
            eni_ipv6: None,
            started_by: None,
            availability_zone: None,
        }
    }
}

/// One container of a task.
#[derive(Clone, Debug)]
pub struct TaskContainer {
    pub name: String,
    pub last_status: String,
    pub health_status: Option<String>,
    /// (bindIP, containerPort, hostPort), tcp.
    pub network_bindings: Vec<(String, u16, u16)>,
    pub eni_private_ip: Option<String>,
    pub runtime_id: Option<String>,
}

impl TaskContainer {
    /// A RUNNING container with no bindings.
    pub fn new(name: &str) -> Self {
        TaskContainer {
            name: name.to_owned(),
            last_status: "RUNNING".into(),
            health_status: None,
            network_bindings: Vec::new(),
            eni_private_ip: None,
            runtime_id: None,
        }
    }
}

/// A prefix for one cluster's ids: the process, the time and a count.
fn id_base() -> u64 {
    static CLUSTERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let count = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ (count << 16)
}

/// The fake cluster: ECS objects in the JSON shape ECS returns them.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub tasks: Vec<Value>,
    pub task_definitions: BTreeMap<String, Value>,
    pub container_instances: BTreeMap<String, Value>,
    pub instances: BTreeMap<String, Ec2Instance>,
    pub enis: BTreeMap<String, Eni>,
    next_id: u64,
    id_base: u64,
    /// Statuses each task still goes through, by task ARN: one step per
    /// DescribeTasks call that names the task.
    scripts: BTreeMap<String, VecDeque<String>>,
    /// What RunTask starts: this spec (containers, instance, bindings) with
    /// the task definition filled in, going through `run_script`.
    pub run_template: Option<TaskSpec>,
    /// The statuses a task started by RunTask goes through.
    pub run_script: Vec<String>,
    /// Every RunTask request, as sent.
    pub run_requests: Vec<Value>,
    /// Counts the changes to the tasks, so that `derived` is known stale.
    generation: u64,
    derived: Derived,
}

/// What the answers need of the tasks, worked out once per generation of
/// them: a scan per ListTasks page and per DescribeTasks name would make a
/// round over 5,000 tasks cost seconds of this process's CPU, beside the
/// kite being measured.
#[derive(Debug, Default)]
struct Derived {
    generation: u64,
    /// Task position by ARN and by ID.
    index: HashMap<String, usize>,
    /// The ARNs ListTasks returns, by its filters.
    lists: HashMap<String, Vec<String>>,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            name: "default".into(),
            tasks: Vec::new(),
            task_definitions: BTreeMap::new(),
            container_instances: BTreeMap::new(),
            instances: BTreeMap::new(),
            enis: BTreeMap::new(),
            next_id: 0,
            id_base: id_base(),
            scripts: BTreeMap::new(),
            run_template: None,
            run_script: Vec::new(),
            run_requests: Vec::new(),
            generation: 0,
            derived: Derived::default(),
        }
    }

    /// Notes that the tasks may have changed.
    fn changed(&mut self) {
        self.generation += 1;
    }

    /// `derived`, emptied first if the tasks changed since it was filled.
    fn derived(&mut self) -> &mut Derived {
        if self.derived.generation != self.generation {
            self.derived = Derived {
                generation: self.generation,
                ..Derived::default()
            };
        }
        &mut self.derived
    }

    /// The position of the task `arn_or_id`, through the index.
    fn indexed_position(&mut self, arn_or_id: &str) -> Option<usize> {
        if self.derived().index.is_empty() {
            let mut index = HashMap::with_capacity(2 * self.tasks.len());
            for (i, t) in self.tasks.iter().enumerate() {
                if let Some(arn) = t["taskArn"].as_str() {
                    index.entry(arn.to_owned()).or_insert(i);
                    if let Some(id) = arn.rsplit('/').next() {
                        index.entry(id.to_owned()).or_insert(i);
                    }
                }
            }
            self.derived().index = index;
        }
        self.derived.index.get(arn_or_id).copied()
    }

    /// The next id: this cluster's own prefix (so that tests side by side
    /// never share a task ARN, on a Docker daemon they share), then a count.
    fn id(&mut self) -> u128 {
        self.next_id += 1;
        (u128::from(self.id_base) << 64) | u128::from(self.next_id)
    }

    fn arn(&self, kind: &str, rest: &str) -> String {
        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:{kind}/{rest}")
    }

    /// Adds an EC2 instance and its container instance; returns the
    /// container instance ARN.
    pub fn add_instance(&mut self, private_ip: &str, public_ip: Option<&str>) -> String {
        let n = self.id();
        let instance_id = format!("i-{:017x}", n as u64);
        let ci = self.arn("container-instance", &format!("{}/{n:032x}", self.name));
        self.instances.insert(
            instance_id.clone(),
            Ec2Instance {
                private_ip: Some(private_ip.to_owned()),
                public_ip: public_ip.map(str::to_owned),
                ipv6: None,
            },
        );
        let value =
            json!({"containerInstanceArn": ci, "ec2InstanceId": instance_id, "status": "ACTIVE"});
        self.container_instances.insert(ci.clone(), value);
        ci
    }

    /// Registers a task definition; returns its ARN.
    pub fn add_task_definition(
        &mut self,
        family: &str,
        revision: u32,
        network_mode: &str,
        containers: &[ContainerDef],
    ) -> String {
        let arn = self.arn("task-definition", &format!("{family}:{revision}"));
        let defs: Vec<Value> = containers
            .iter()
            .map(|c| {
                let ports: Vec<Value> = c
                    .ports
                    .iter()
                    .map(|(cp, hp)| match hp {
                        Some(hp) => json!({"containerPort": cp, "hostPort": hp, "protocol": "tcp"}),
                        None => json!({"containerPort": cp, "protocol": "tcp"}),
                    })
                    .collect();
                json!({"name": c.name, "image": "scratch", "essential": true, "portMappings": ports})
            })
            .collect();
        let td = json!({
            "taskDefinitionArn": arn, "family": family, "revision": revision,
            "networkMode": network_mode, "status": "ACTIVE", "containerDefinitions": defs,
        });
        self.task_definitions.insert(arn.clone(), td);
        arn
    }

    /// Adds a task; returns its ARN.
    pub fn add_task(&mut self, spec: TaskSpec) -> String {
        self.changed();
        let n = self.id();
        let task_arn = self.arn("task", &format!("{}/{n:032x}", self.name));
        let family = spec
            .task_definition_arn
            .rsplit('/')
            .next()
            .and_then(|s| s.split(':').next())
            .unwrap_or_default()
            .to_owned();
        let containers: Vec<Value> = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let bindings: Vec<Value> = c
                    .network_bindings
                    .iter()
                    .map(|(ip, cp, hp)| {
                        json!({"bindIP": ip, "containerPort": cp, "hostPort": hp, "protocol": "tcp"})
                    })
                    .collect();
                let mut v = json!({
                    "containerArn": self.arn("container", &format!("{}/{n:032x}/{i}", self.name)),
                    "taskArn": task_arn, "name": c.name, "lastStatus": c.last_status,
                    "networkBindings": bindings, "networkInterfaces": [],
                });
                if let Some(h) = &c.health_status {
                    v["healthStatus"] = json!(h);
                }
                if let Some(ip) = &c.eni_private_ip {
                    v["networkInterfaces"] = json!([{"attachmentId": "att-1", "privateIpv4Address": ip}]);
                }
                if let Some(id) = &c.runtime_id {
                    v["runtimeId"] = json!(id);
                }
                v
            })
            .collect();
        let mut task = json!({
            "taskArn": task_arn,
            "clusterArn": self.arn("cluster", &self.name),
            "taskDefinitionArn": spec.task_definition_arn,
            "lastStatus": spec.last_status,
            "desiredStatus": spec.desired_status,
            "launchType": spec.launch_type,
            "group": spec.group.unwrap_or_else(|| format!("family:{family}")),
            "containers": containers,
            "attachments": [],
            "createdAt": 1_700_000_000 + (n as u64 & 0xffff_ffff),
        });
        if let Some(ci) = spec.container_instance_arn {
            task["containerInstanceArn"] = json!(ci);
        }
        if let Some(by) = spec.started_by {
            task["startedBy"] = json!(by);
        }
        if let Some(zone) = spec.availability_zone {
            task["availabilityZone"] = json!(zone);
        }
        if let Some((eni, ip)) = spec.eni {
            let mut details = vec![json!({"name": "networkInterfaceId", "value": eni})];
            if !ip.is_empty() {
                details.push(json!({"name": "privateIPv4Address", "value": ip}));
            }
            if let Some(v6) = &spec.eni_ipv6 {
                details.push(json!({"name": "ipv6Address", "value": v6}));
            }
            task["attachments"] = json!([{
                "id": format!("att-{n}"), "type": "ElasticNetworkInterface", "status": "ATTACHED",
                "details": details,
            }]);
            self.enis.insert(
                eni,
                Eni {
                    private_ip: ip,
                    public_ip: None,
                },
            );
        }
        self.tasks.push(task);
        task_arn
    }

    /// Makes the task go through `steps`, one per DescribeTasks call that
    /// names it: `STATUS` sets lastStatus (and the containers' status),
    /// `STOPPED:reason` also sets desiredStatus and stoppedReason, and
    /// `STOPPED:reason:exit=N` the containers' exit code too.
    pub fn script(&mut self, task_arn: &str, steps: &[&str]) {
        let steps = steps.iter().map(|s| s.to_string()).collect();
        self.scripts.insert(task_arn.to_owned(), steps);
    }

    /// Applies the next scripted step of the task at `i`, if any.
    fn step(&mut self, i: usize) {
        let arn = self.tasks[i]["taskArn"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(step) = self.scripts.get_mut(&arn).and_then(VecDeque::pop_front) else {
            return;
        };
        self.changed();
        let (status, reason) = match step.split_once(':') {
            Some((s, r)) => (s.to_owned(), Some(r.to_owned())),
            None => (step, None),
        };
        let task = &mut self.tasks[i];
        task["lastStatus"] = json!(status);
        if let Some(cs) = task["containers"].as_array_mut() {
            for c in cs {
                c["lastStatus"] = json!(status);
            }
        }
        if status == "STOPPED" {
            task["desiredStatus"] = json!("STOPPED");
        }
        // `STOPPED:reason:exit=N` also sets the containers' exit code.
        if let Some(r) = reason {
            let (r, code) = match r.rsplit_once(":exit=") {
                Some((r, code)) => (r.to_owned(), code.parse::<i64>().ok()),
                None => (r, None),
            };
            task["stoppedReason"] = json!(r);
            if let (Some(code), Some(cs)) = (code, task["containers"].as_array_mut()) {
                for c in cs {
                    c["exitCode"] = json!(code);
                }
            }
        }
    }

    fn position(&self, arn_or_id: &str) -> Option<usize> {
        self.tasks.iter().position(|t| {
            let arn = t["taskArn"].as_str().unwrap_or_default();
            arn == arn_or_id || arn.rsplit('/').next() == Some(arn_or_id)
        })
    }

    /// Removes a task; false when there is none.
    pub fn remove_task(&mut self, arn_or_id: &str) -> bool {
        self.changed();
        self.position(arn_or_id)
            .map(|i| self.tasks.remove(i))
            .is_some()
    }

    /// The task's JSON, to edit in place.
    pub fn task_mut(&mut self, arn_or_id: &str) -> Option<&mut Value> {
        self.changed();
        let i = self.position(arn_or_id)?;
        Some(&mut self.tasks[i])
    }
}

/// A token bucket shared by every ECS call, as ECS throttles an account's
/// read APIs per region: `rate` tokens a second, at most `burst` held. A
/// call that finds the bucket empty is throttled (it takes no token).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    filled_at: Instant,
}

impl Bucket {
    /// A full bucket.
    fn new(limit: RateLimit) -> Self {
        Bucket {
            limit,
            tokens: limit.burst,
            filled_at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.filled_at).as_secs_f64() * self.limit.rate;
        self.tokens = (self.tokens + refill).min(self.limit.burst);
        self.filled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Calls counted since the fake started: every call that arrived, throttled
/// or not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// ECS calls by operation.
    pub ecs: BTreeMap<String, u64>,
    /// ECS calls answered `ThrottlingException` (by the bucket or injected).
    pub ecs_throttled: u64,
    /// EC2 calls by action.
    pub ec2: BTreeMap<String, u64>,
    /// Cloud Map calls by operation.
    pub cloud_map: BTreeMap<String, u64>,
}

impl CallCounts {
    /// All ECS calls.
    pub fn ecs_total(&self) -> u64 {
        self.ecs.values().sum()
    }

    /// All EC2 calls.
    pub fn ec2_total(&self) -> u64 {
        self.ec2.values().sum()
    }

    /// All Cloud Map calls.
    pub fn cloud_map_total(&self) -> u64 {
        self.cloud_map.values().sum()
    }
}

#[derive(Debug)]
struct Inner {
    cluster: Cluster,
    cloud_map: cloudmap::CloudMap,
    calls: Vec<String>,
    /// Whether `calls` grows: a long benchmark turns it off and reads
    /// `counts` instead.
    log_calls: bool,
    counts: CallCounts,
    /// ECS's throttling, when set.
    bucket: Option<Bucket>,
    fault: Fault,
    counter: u64,
    /// Verbatim answers per operation: (HTTP status, body).
    raw: BTreeMap<String, (u16, String)>,
}

impl Inner {
    /// Logs and counts a call; `ecs` tells which service it went to.
    fn record(&mut self, op: &str, ecs: bool) {
        if self.log_calls {
            self.calls.push(op.to_owned());
        }
        let counts = if ecs {
            &mut self.counts.ecs
        } else {
            &mut self.counts.ec2
        };
        *counts.entry(op.to_owned()).or_default() += 1;
    }
}

type Shared = Arc<Mutex<Inner>>;

/// The fake endpoint; it stops when dropped.
pub struct FakeAws {
    addr: SocketAddr,
    state: Shared,
    server: Mutex<Option<Server>>,
}

/// A running server: its task and the token that shuts it down.
struct Server {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn spawn(listener: tokio::net::TcpListener, state: Shared) -> Server {
        let app = axum::Router::new().fallback(handle).with_state(state);
        let stop = tokio_util::sync::CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Server { stop, task }
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            server.stop.cancel();
            server.task.abort();
        }
    }
}

impl FakeAws {
    /// Starts serving on 127.0.0.1:0.
    pub async fn start() -> FakeAws {
        FakeAws::start_on("127.0.0.1".parse().unwrap()).await
    }

    /// Starts serving on `ip`, port 0: the host's side of a Docker network
    /// the test made, for kite in a container.
    pub async fn start_on(ip: std::net::IpAddr) -> FakeAws {
        let state: Shared = Arc::new(Mutex::new(Inner {
            cluster: Cluster::new(),
            cloud_map: cloudmap::CloudMap::default(),
            calls: Vec::new(),
            log_calls: true,
            counts: CallCounts::default(),
            bucket: None,
            fault: Fault::None,
            counter: 0,
            raw: BTreeMap::new(),
        }));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::spawn(listener, state.clone());
        FakeAws {
            addr,
            state,
            server: Mutex::new(Some(server)),
        }
    }

    /// Becomes unreachable: stops listening (connections are refused) and
    /// closes its open connections once their requests are answered.
    pub async fn go_down(&self) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            server.stop.cancel();
            let _ = server.task.await;
        }
    }

    /// Listens again on the same address after [`FakeAws::go_down`].
    pub async fn come_back(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("re-binding the fake's address");
        let server = Server::spawn(listener, self.state.clone());
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
    }

    /// Answers every call of `op` (e.g. `DescribeTasks`) with `status` and
    /// `body` verbatim, until [`FakeAws::clear_raw`].
    pub fn set_raw(&self, op: &str, status: u16, body: impl Into<String>) {
        self.lock().raw.insert(op.to_owned(), (status, body.into()));
    }

    /// Back to real answers.
    pub fn clear_raw(&self) {
        self.lock().raw.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The SDK configuration of a client of the fake: its endpoint, a
    /// region, test credentials, and quick retries.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        let credentials = aws_sdk_ecs::config::Credentials::for_tests();
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
            )
            .endpoint_url(self.endpoint_url())
            .retry_config(retry())
            .build()
    }

    /// The clients kite builds ([`kite::aws::Clients::new`]), pointed at
    /// the fake.
    pub fn clients(&self) -> kite::aws::Clients {
        kite::aws::Clients::new(&self.sdk_config())
    }

    /// Environment for a child `kite` process using the fake.
    pub fn child_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint_url().as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "AKIDFAKE"),
            ("AWS_SECRET_ACCESS_KEY", "fake-secret"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Edits the cluster (the lock is never held across an await).
    pub fn edit<R>(&self, f: impl FnOnce(&mut Cluster) -> R) -> R {
        let mut inner = self.lock();
        inner.cluster.changed();
        f(&mut inner.cluster)
    }

    /// Edits Cloud Map's namespaces, services and instances.
    pub fn cloud_map<R>(&self, f: impl FnOnce(&mut cloudmap::CloudMap) -> R) -> R {
        f(&mut self.lock().cloud_map)
    }

    /// Operation names called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// How many times `op` was called.
    pub fn call_count(&self, op: &str) -> usize {
        self.lock().calls.iter().filter(|c| *c == op).count()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Throttles ECS calls with one token bucket (full at first), or stops
    /// throttling with `None`. EC2 calls are never in it: EC2 has its own
    /// budget.
    pub fn set_ecs_rate_limit(&self, limit: Option<RateLimit>) {
        self.lock().bucket = limit.map(Bucket::new);
    }

    /// Calls counted so far (kept whether or not the log of calls is).
    pub fn counts(&self) -> CallCounts {
        self.lock().counts.clone()
    }

    /// Keeps the log of calls ([`FakeAws::calls`]) or stops growing it: a
    /// fleet of clients polling for an hour would make it large.
    pub fn set_call_log(&self, on: bool) {
        self.lock().log_calls = on;
    }

    /// Sets the faults to inject, counting calls afresh.
    pub fn set_fault(&self, fault: Fault) {
        let mut inner = self.lock();
        inner.fault = fault;
        inner.counter = 0;
    }
}

fn retry() -> aws_sdk_ecs::config::retry::RetryConfig {
    aws_sdk_ecs::config::retry::RetryConfig::standard()
        .with_max_attempts(2)
        .with_initial_backoff(Duration::from_millis(5))
}

/// An answer: status, content type, body.
type Answer = (StatusCode, &'static str, String);

async fn handle(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    let (status, content_type, body) = {
        let mut inner = state.lock().unwrap_or_else(|e| e.into_inner());
        match target {
            Some(target) => match target.strip_prefix(cloudmap::TARGET_PREFIX) {
                Some(op) => cloud_map_call(&mut inner, op, host.unwrap_or_default(), &body),
                None => ecs_call(&mut inner, &target, &body),
            },
            None => ec2_call(&mut inner, &body),
        }
    };
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    resp
}

/// Whether this call fails by injection, and how.
fn injected(inner: &mut Inner) -> Option<Failure> {
    inner.counter += 1;
    let every = |n: u32| inner.counter.is_multiple_of(u64::from(n.max(1)));
    // Calls 1..=run fail, run+1..=2*run pass, and so on.
    let in_run = |n: u32| ((inner.counter - 1) / u64::from(n.max(1))).is_multiple_of(2);
    let (fails, failure) = match inner.fault {
        Fault::None => return None,
        Fault::Throttle { every: n } => (every(n), Failure::Throttle),
        Fault::ServerError { every: n } => (every(n), Failure::ServerError),
        Fault::ThrottleRuns { run } => (in_run(run), Failure::Throttle),
        Fault::ServerErrorRuns { run } => (in_run(run), Failure::ServerError),
    };
    fails.then_some(failure)
}

// === Cloud Map ===

fn cloud_map_call(inner: &mut Inner, op: &str, host: &str, body: &[u8]) -> Answer {
    if inner.log_calls {
        inner.calls.push(op.to_owned());
    }
    *inner.counts.cloud_map.entry(op.to_owned()).or_default() += 1;
    inner.cloud_map.hosts.push(host.to_owned());
    let (status, body) = match injected(inner) {
        Some(Failure::Throttle) => cloudmap::error(
            StatusCode::BAD_REQUEST,
            "RequestLimitExceeded",
            "Rate exceeded",
        ),
        Some(Failure::ServerError) => cloudmap::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "injected",
        ),
        None => cloudmap::call(&mut inner.cloud_map, op, body),
    };
    (status, "application/x-amz-json-1.1", body)
}

// === ECS ===

fn ecs_error(status: StatusCode, code: &str, message: &str) -> Answer {
    let body = json!({"__type": code, "message": message}).to_string();
    (status, "application/x-amz-json-1.1", body)
}

fn ecs_ok(v: Value) -> Answer {
    (StatusCode::OK, "application/x-amz-json-1.1", v.to_string())
}

fn invalid(message: &str) -> Answer {
    ecs_error(
        StatusCode::BAD_REQUEST,
        "InvalidParameterException",
        message,
    )
}

/// How ECS answers a call that fails.
fn ecs_failure(failure: Failure) -> Answer {
    match failure {
        Failure::Throttle => ecs_error(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
        ),
        Failure::ServerError => ecs_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerException",
            "injected",
        ),
    }
}

fn ecs_call(inner: &mut Inner, target: &str, body: &[u8]) -> Answer {
    let op = target.rsplit('.').next().unwrap_or(target).to_owned();
    inner.record(&op, true);
    let out_of_tokens = inner.bucket.as_mut().is_some_and(|b| !b.take());
    let failure = if out_of_tokens {
        Some(Failure::Throttle)
    } else {
        injected(inner)
    };
    if let Some(failure) = failure {
        if failure == Failure::Throttle {
            inner.counts.ecs_throttled += 1;
        }
        return ecs_failure(failure);
    }
    if let Some((status, body)) = inner.raw.get(&op) {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
        return (status, "application/x-amz-json-1.1", body.clone());
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return ecs_error(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "bad JSON",
        );
    };
    let cluster = &mut inner.cluster;
    if let Some(name) = req.get("cluster").and_then(Value::as_str) {
        let name = name.rsplit('/').next().unwrap_or(name);
        if name != cluster.name && op != "DescribeTaskDefinition" {
            return ecs_error(
                StatusCode::BAD_REQUEST,
                "ClusterNotFoundException",
                "Cluster not found.",
            );
        }
    }
    match op.as_str() {
        "ListTasks" => list_tasks(cluster, &req),
        "DescribeTasks" => describe_tasks(cluster, &req),
        "DescribeTaskDefinition" => {
            // An ARN, family:revision, or a family (its latest revision).
            let want = req["taskDefinition"].as_str().unwrap_or_default();
            let found = (cluster.task_definitions.iter())
                .filter(|(arn, td)| {
                    *arn == want || arn.ends_with(&format!("/{want}")) || td["family"] == want
                })
                .max_by_key(|(_, td)| td["revision"].as_u64());
            match found {
                Some((_, td)) => ecs_ok(json!({"taskDefinition": td})),
                None => ecs_error(
                    StatusCode::BAD_REQUEST,
                    "ClientException",
                    "Unable to describe task definition.",
                ),
            }
        }
        "DescribeContainerInstances" => {
            let ids = strings(&req["containerInstances"]);
            if ids.is_empty() || ids.len() > 100 {
                return invalid("containerInstances must hold 1 to 100 items");
            }
            let (mut found, mut failures) = (Vec::new(), Vec::new());
            for id in ids {
                match cluster
                    .container_instances
                    .iter()
                    .find(|(arn, _)| *arn == &id || arn.ends_with(&format!("/{id}")))
                {
                    Some((_, ci)) => found.push(ci.clone()),
                    None => failures.push(json!({"arn": id, "reason": "MISSING"})),
                }
            }
            ecs_ok(json!({"containerInstances": found, "failures": failures}))
        }
        "RunTask" => run_task(cluster, &req),
        "StopTask" => {
            let id = req["task"].as_str().unwrap_or_default().to_owned();
            let reason = req["reason"]
                .as_str()
                .unwrap_or("Task stopped by user")
                .to_owned();
            match cluster.task_mut(&id) {
                Some(t) => {
                    t["desiredStatus"] = json!("STOPPED");
                    t["lastStatus"] = json!("STOPPED");
                    t["stoppedReason"] = json!(reason);
                    ecs_ok(json!({"task": t.clone()}))
                }
                None => invalid("The referenced task was not found."),
            }
        }
        _ => ecs_error(StatusCode::BAD_REQUEST, "UnknownOperationException", &op),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn list_tasks(cluster: &mut Cluster, req: &Value) -> Answer {
    let max = req["maxResults"].as_u64().unwrap_or(100);
    if !(1..=100).contains(&max) {
        return invalid("maxResults must be between 1 and 100");
    }
    let family = req["family"].as_str();
    let service = req["serviceName"].as_str();
    if family.is_some() && service.is_some() {
        return invalid("family and serviceName cannot both be set");
    }
    let desired = req["desiredStatus"].as_str().unwrap_or("RUNNING");
    let started_by = req["startedBy"].as_str();
    let key = format!("{desired}|{family:?}|{service:?}|{started_by:?}");
    if let Some(arns) = cluster.derived().lists.get(&key) {
        return list_page(arns, max, req);
    }
    let arns: Vec<String> = cluster
        .tasks
        .iter()
        .filter(|t| t["desiredStatus"].as_str() == Some(desired))
        .filter(|t| {
            family.is_none_or(|f| {
                let td = t["taskDefinitionArn"].as_str().unwrap_or_default();
                td.rsplit('/').next().and_then(|s| s.split(':').next()) == Some(f)
            })
        })
        .filter(|t| service.is_none_or(|s| t["group"].as_str() == Some(&format!("service:{s}"))))
        .filter(|t| started_by.is_none_or(|s| t["startedBy"].as_str() == Some(s)))
        .filter_map(|t| t["taskArn"].as_str())
        .map(str::to_owned)
        .collect();
    let answer = list_page(&arns, max, req);
    cluster.derived().lists.insert(key, arns);
    answer
}

/// The page of `arns` that `req`'s nextToken and maxResults (`max`) ask for.
/// The token is the last ARN of the page before: a task that leaves the list
/// between two pages shifts none of the later ones out of sight (as an
/// offset would), since ARNs are made in ascending order.
fn list_page(arns: &[String], max: u64, req: &Value) -> Answer {
    let start = match req["nextToken"].as_str() {
        Some(last) => match arns.iter().position(|a| a == last) {
            Some(i) => i + 1,
            None => arns
                .iter()
                .position(|a| a.as_str() > last)
                .unwrap_or(arns.len()),
        },
        None => 0,
    };
    let end = (start + max as usize).min(arns.len());
    let page = &arns[start..end];
    let mut out = json!({"taskArns": page});
    if end < arns.len() {
        out["nextToken"] = json!(page.last());
    }
    ecs_ok(out)
}

fn describe_tasks(cluster: &mut Cluster, req: &Value) -> Answer {
    let ids = strings(&req["tasks"]);
    if ids.is_empty() || ids.len() > 100 {
        return invalid("tasks must hold 1 to 100 items");
    }
    // All looked up before any scripted step changes the tasks.
    let positions: Vec<(String, Option<usize>)> = ids
        .into_iter()
        .map(|id| {
            let i = cluster.indexed_position(&id);
            (id, i)
        })
        .collect();
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for (id, position) in positions {
        match position {
            Some(i) => {
                cluster.step(i);
                found.push(cluster.tasks[i].clone())
            }
            None => failures.push(json!({"arn": id, "reason": "MISSING"})),
        }
    }
    ecs_ok(json!({"tasks": found, "failures": failures}))
}

fn run_task(cluster: &mut Cluster, req: &Value) -> Answer {
    let want = req["taskDefinition"].as_str().unwrap_or_default();
    let Some((arn, td)) = cluster
        .task_definitions
        .iter()
        .find(|(arn, td)| {
            *arn == want || arn.ends_with(&format!("/{want}")) || td["family"] == want
        })
        .map(|(a, t)| (a.clone(), t.clone()))
    else {
        return ecs_error(
            StatusCode::BAD_REQUEST,
            "ClientException",
            "TaskDefinition not found.",
        );
    };
    let count = req["count"].as_u64().unwrap_or(1);
    let mut tasks = Vec::new();
    for _ in 0..count {
        let containers = td["containerDefinitions"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| TaskContainer {
                        last_status: "PENDING".into(),
                        ..TaskContainer::new(c["name"].as_str().unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let base = match &cluster.run_template {
            Some(t) => TaskSpec {
                task_definition_arn: arn.clone(),
                containers: t
                    .containers
                    .iter()
                    .map(|c| TaskContainer {
                        last_status: "PENDING".into(),
                        ..c.clone()
                    })
                    .collect(),
                ..t.clone()
            },
            None => TaskSpec {
                containers,
                ..TaskSpec::new(&arn)
            },
        };
        let spec = TaskSpec {
            last_status: "PROVISIONING".into(),
            launch_type: req["launchType"].as_str().unwrap_or("EC2").to_owned(),
            started_by: req["startedBy"].as_str().map(str::to_owned),
            ..base
        };
        let task_arn = cluster.add_task(spec);
        // What ECS reports of the request: the overrides, and the capacity
        // provider or the launch type.
        let task = cluster.task_mut(&task_arn).unwrap();
        task["overrides"] = match req.get("overrides") {
            Some(o) => o.clone(),
            None => json!({"containerOverrides": []}),
        };
        if let Some(cp) = req["capacityProviderStrategy"][0]["capacityProvider"].as_str() {
            task["capacityProviderName"] = json!(cp);
        }
        cluster.run_requests.push(req.clone());
        let script = cluster.run_script.clone();
        let steps: Vec<&str> = script.iter().map(String::as_str).collect();
        cluster.script(&task_arn, &steps);
        let i = cluster.position(&task_arn).unwrap();
        tasks.push(cluster.tasks[i].clone());
    }
    ecs_ok(json!({"tasks": tasks, "failures": []}))
}

// === EC2 ===

const EC2_NS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

fn ec2_error(status: StatusCode, code: &str, message: &str) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>fake</RequestID></Response>"
    );
    (status, "text/xml;charset=UTF-8", body)
}

/// Decodes an `application/x-www-form-urlencoded` body into pairs.
fn form(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The ids asked for, as `ID.N` parameters or as the values of a filter
/// named `filter_name`.
fn ec2_ids(params: &[(String, String)], id_key: &str, filter_name: &str) -> (Vec<String>, bool) {
    let mut ids: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.strip_prefix(id_key).is_some_and(|n| n.starts_with('.')))
        .map(|(_, v)| v.clone())
        .collect();
    let by_filter = params
        .iter()
        .find(|(k, v)| k.starts_with("Filter.") && k.ends_with(".Name") && v == filter_name)
        .map(|(k, _)| k.trim_end_matches("Name").to_owned());
    if let Some(prefix) = &by_filter {
        let values = format!("{prefix}Value.");
        ids.extend(
            params
                .iter()
                .filter(|(k, _)| k.starts_with(&values))
                .map(|(_, v)| v.clone()),
        );
    }
    (ids, by_filter.is_some())
}

fn ec2_call(inner: &mut Inner, body: &[u8]) -> Answer {
    let params = form(body);
    let action = params
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    inner.record(&action, false);
    match injected(inner) {
        Some(Failure::Throttle) => {
            return ec2_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "RequestLimitExceeded",
                "Request limit exceeded.",
            )
        }
        Some(Failure::ServerError) => {
            return ec2_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "injected",
            )
        }
        None => {}
    }
    if let Some((status, body)) = inner.raw.get(&action) {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
        return (status, "text/xml", body.clone());
    }
    let cluster = &inner.cluster;
    match action.as_str() {
        "DescribeInstances" => {
            let (ids, by_filter) = ec2_ids(&params, "InstanceId", "instance-id");
            if ids.len() > 1000 {
                return ec2_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValue",
                    "too many ids",
                );
            }
            let mut items = String::new();
            for id in &ids {
                let Some(i) = cluster.instances.get(id) else {
                    if by_filter {
                        continue;
                    }
                    let msg = format!("The instance ID '{id}' does not exist");
                    return ec2_error(StatusCode::BAD_REQUEST, "InvalidInstanceID.NotFound", &msg);
                };
                items.push_str(&format!("<item><instanceId>{id}</instanceId>"));
                if let Some(ip) = &i.private_ip {
                    items.push_str(&format!("<privateIpAddress>{ip}</privateIpAddress>"));
                }
                if let Some(ip) = &i.public_ip {
                    items.push_str(&format!("<ipAddress>{ip}</ipAddress>"));
                }
                if let Some(ip) = &i.ipv6 {
                    items.push_str(&format!("<ipv6Address>{ip}</ipv6Address>"));
                }
                items.push_str("</item>");
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstancesResponse xmlns=\"{EC2_NS}\">\
                 <requestId>fake</requestId><reservationSet><item><reservationId>r-1</reservationId>\
                 <instancesSet>{items}</instancesSet></item></reservationSet></DescribeInstancesResponse>"
            );
            (StatusCode::OK, "text/xml;charset=UTF-8", body)
        }
        "DescribeNetworkInterfaces" => {
            let (ids, by_filter) = ec2_ids(&params, "NetworkInterfaceId", "network-interface-id");
            let mut items = String::new();
            for id in &ids {
                let Some(eni) = cluster.enis.get(id) else {
                    if by_filter {
                        continue;
                    }
                    let msg = format!("The networkInterface ID '{id}' does not exist");
                    return ec2_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidNetworkInterfaceID.NotFound",
                        &msg,
                    );
                };
                items.push_str(&format!(
                    "<item><networkInterfaceId>{id}</networkInterfaceId><privateIpAddress>{}</privateIpAddress>",
                    eni.private_ip
                ));
                if let Some(ip) = &eni.public_ip {
                    items.push_str(&format!(
                        "<association><publicIp>{ip}</publicIp></association>"
                    ));
                }
                items.push_str("</item>");
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeNetworkInterfacesResponse xmlns=\"{EC2_NS}\">\
                 <requestId>fake</requestId><networkInterfaceSet>{items}</networkInterfaceSet>\
                 </DescribeNetworkInterfacesResponse>"
            );
            (StatusCode::OK, "text/xml;charset=UTF-8", body)
        }
        _ => ec2_error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("unknown action '{action}'"),
        ),
    }
}
