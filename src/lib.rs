//! kite: a TCP ambassador for Amazon ECS.
//!
//! A consumer container talks to `kite:PORT`; kite finds the running tasks of
//! an ECS task family or service (or the healthy instances of an AWS Cloud
//! Map service) and splices each connection to one of them, picked at
//! random (or by least connections, its own zone first).
//!
//! # Layout
//!
//! Modules are listed from the bottom up: each uses only modules above it
//! in this list (`tests/layout.rs` checks that no two import each other).
//!
//! - [`config`]: the parsers of outside input, behind the flags (task
//!   family and revision, port maps, durations, task id or ARN, Docker
//!   host, detach keys, Cloud Map `NAMESPACE/SERVICE` in `cloud_map.rs`),
//!   the routing choices (`routing.rs`: balance, IP
//!   family, PROXY protocol version) and ARNs ([`config::arn`], the one
//!   place that knows their shape). Imports nothing else from kite.
//! - [`metrics`]: the Prometheus metrics every part updates, in one
//!   registry ([`metrics::Metrics`]; their names and help in
//!   `register.rs`).
//! - [`snapshot`]: the immutable set of targets, shared through an
//!   `ArcSwap` ([`snapshot::Store`]); each port's [`snapshot::Backends`],
//!   kite's own zone first, with the connections open to each
//!   ([`snapshot::Load`], `backends.rs`); how a connection picks its
//!   backend ([`snapshot::Policy`]: random or least-conn, zone affinity)
//!   and which backends sit out after a failure ([`snapshot::Ejections`]);
//!   `kite targets`' table.
//! - [`aws`]: building the SDK clients (ECS, EC2, Cloud Map) from the
//!   standard AWS configuration chain, with clear errors when no region or
//!   credentials are found, an interceptor counting every API call, and
//!   one that keeps Cloud Map's `data-` host prefix off custom endpoints
//!   ([`aws::Clients::servicediscovery`]).
//! - [`metadata`]: from inside a task, its cluster, task, container and
//!   region (task metadata endpoint v4 or v3; else the cgroup files and the
//!   ECS agent's introspection API), for `kite whoami` and the defaults of
//!   `--cluster`, the region and `--zone` ([`metadata::defaults`]).
//! - [`discovery`]: the only writer of the snapshot. [`discovery::run`]
//!   polls a [`discovery::Source`] (the seam for a second source of
//!   targets) on a jittered schedule with backoff, widened while AWS
//!   throttles ([`discovery::Pace`], `discovery/schedule.rs`). The ECS
//!   source, [`discovery::Discovery`], calls ECS and EC2 (`ecs.rs`,
//!   `ec2.rs`), decides which tasks a round describes again (`known.rs`:
//!   new and starting ones, the others once per `--health-refresh`),
//!   caches what never changes (`task.rs`) and builds each snapshot with
//!   the pure [`discovery::build::build_snapshot`] (where a task is
//!   reached, by `--public` and `--ip-family`: `build/address.rs`). [`discovery::TaskLookup`] finds
//!   ONE task by id or ARN for attach, with the same caches, and says
//!   [`discovery::task::Error::NotFound`] when ECS has no such task. The
//!   Cloud Map source, [`discovery::cloudmap::CloudMap`], calls
//!   DiscoverInstancesRevision every round and DiscoverInstances only when
//!   the revision changed or once per `--health-refresh`, building each
//!   snapshot with the pure [`discovery::cloudmap::build::build_snapshot`].
//!   [`discovery::Select`] (`select.rs`) is the choice between the two that
//!   `kite proxy` and `kite targets` make, and [`discovery::Sources`] runs
//!   either as one [`discovery::Source`].
//! - [`ops`]: running in production: the admin endpoint (`/healthz`,
//!   `/readyz`, `/metrics`, `/targets`), its client `kite health`, and the
//!   shutdown signals ([`ops::signal`]).
//! - [`proxy`]: `kite proxy` as one call, [`proxy::run`] (`run.rs`), and
//!   the data path it drives: listeners that follow the snapshot's ports
//!   (`listen.rs`), connections placed and evened out among the proxy
//!   threads (`threads.rs`), one task per connection that is admitted,
//!   picks, connects with failover, sends the PROXY protocol header
//!   (`header.rs`) and relays (`conn.rs`), the relay itself
//!   ([`proxy::splice`]: a shared buffer for small messages, pipes and
//!   splice(2) for streams), the sockets it works on ([`proxy::net`]), and
//!   the descriptor budget ([`proxy::limits`]).
//! - [`attach`]: `kite attach`: one task, resolved with
//!   [`discovery::TaskLookup`], then stdin/stdout over TCP, a local port
//!   forward, or the container's own stdio through the Docker daemon on its
//!   host. It takes an [`attach::Options`]; nothing in it knows clap.
//! - [`cli`]: the command line (clap), `KITE_*` environment variables, the
//!   original Task Kite's argument form (`cli/original.rs`), and where the
//!   flags become [`proxy::Config`] and [`attach::Options`]. Only the
//!   binary (`main.rs`: parse, logging, dispatch) uses it.
//!
//! # Data flow
//!
//! ```text
//! proxy::run ─┬─► Threads::start (one runtime per proxy thread)
//!             ├─► discovery::run ─► Source::round ─┬─► Discovery::round (Known::plan) ─► build_snapshot ────────┬─► Store::publish
//!             │                                    └─► CloudMap::round (revision, instances) ─► build_snapshot ─┘
//!             ├─► ops::serve (admin endpoint, reads Store and Metrics)
//!             └─► proxy::serve ─► reconcile (a listener per port and thread, on Store::subscribe)
//!                      └─► accept_loop ─► least_loaded (thread) ─► Conn::serve
//!                               └─► admit ─► connect (Policy::pick, Load::open, failover, Header) ─► splice_resumable
//!                                        └─► one_way: forward (buffer) | burst_through (pipe)
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod attach;
pub mod aws;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod metadata;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod snapshot;
