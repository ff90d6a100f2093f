//! kite: a TCP ambassador for Amazon ECS.
//!
//! A consumer container talks to `kite:PORT`; kite finds the running tasks of
//! an ECS task family or service and splices each connection to one of them,
//! picked at random.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap), `KITE_*` environment variables and the
//!   original Task Kite's argument form.
//! - [`config`]: the value parsers behind the flags: task family and
//!   revision, port maps, durations.
//! - [`discovery`]: the only writer of the snapshot. Each round calls the ECS
//!   and EC2 APIs ([`discovery::Discovery::round`]), caches what never
//!   changes, and builds a new [`snapshot::Snapshot`] with the pure
//!   [`discovery::build::build_snapshot`].
//! - [`snapshot`]: the immutable set of targets, shared through an `ArcSwap`
//!   ([`snapshot::Store`]), and the lock-free backend pick.
//! - [`proxy`]: listeners that follow the snapshot's ports, and one task per
//!   connection: pick, connect with failover, splice. Connections run on
//!   [`proxy::Threads`], one single-threaded runtime per CPU, each with its
//!   own listener on every port (SO_REUSEPORT). Its sockets
//!   ([`proxy::net`]) also wait for TCP urgent data, which the splice loop
//!   ([`proxy::splice`]) needs to know when a short read means drained.
//! - [`metrics`]: the Prometheus metrics every part updates.
//! - [`ops`]: running in production: the admin endpoint (`/healthz`,
//!   `/readyz`, `/metrics`, `/targets`) and its client, `kite health`.
//! - [`attach`]: `kite attach`: one task, resolved with the same discovery,
//!   then stdin/stdout over TCP, a local port forward, or the container's
//!   own stdio through the Docker daemon on its host.
//! - [`aws`]: building the SDK clients from the standard AWS configuration
//!   chain, with clear errors when no region or credentials are found, and
//!   an interceptor counting every API call.
//! - [`metadata`]: from inside a task, its cluster, task, container and
//!   region (task metadata endpoint v4 or v3; else the cgroup files and the
//!   ECS agent's introspection API), for `kite whoami` and the defaults of
//!   `--cluster` and the region.
//!
//! # Data flow
//!
//! ```text
//! discovery::run ─► Discovery::round ─► build_snapshot ─► Store (ArcSwap)
//!                                                            │
//! proxy::serve ─► listeners (per port, one per thread) ─► accept ─► pick ─► connect ─► splice
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
