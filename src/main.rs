//! The `kite` binary: parse, set up logging, dispatch, exit codes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use kite::cli::{
    AttachArgs, Cli, Command, HealthArgs, LogFormat, ProxyArgs, SelectArgs, TargetsArgs, WhoamiArgs,
};
use kite::config::PortMaps;
use kite::discovery::{self, Discovery, Query, Schedule};
use kite::metadata;
use kite::metrics::Metrics;
use kite::snapshot::{Snapshot, Store};
use kite::{aws, ops, proxy};

/// The longest wait between discovery rounds after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let cli = Cli::parse_from(kite::cli::normalize_args(std::env::args_os().collect()));
    init_tracing(&cli.log_level, cli.log_format);
    // `kite proxy` serves connections on threads of its own; discovery, the
    // admin endpoint and signals need no more than this one.
    let runtime = match &cli.command {
        Command::Proxy(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Proxy(args) => run_proxy(args).await.map(|()| ExitCode::SUCCESS),
            Command::Targets(args) => run_targets(args).await.map(|()| ExitCode::SUCCESS),
            Command::Health(args) => run_health(args).await.map(|()| ExitCode::SUCCESS),
            Command::Whoami(args) => run_whoami(args).await.map(|()| ExitCode::SUCCESS),
            // The container's exit code (0-255) with --docker.
            Command::Attach(args) => run_attach(args)
                .await
                .map(|code| ExitCode::from(u8::try_from(code).unwrap_or(1))),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::builder().parse_lossy(log_directives(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The filter for a `--log-level`. A bare `debug` or `trace` applies to
/// kite alone: the AWS SDK and HTTP crates stay at info, since at debug they
/// log requests with their signed headers (and session tokens). Explicit
/// directives (`kite=debug,aws_sigv4=trace`) are taken as given.
fn log_directives(level: &str) -> String {
    match level {
        "debug" | "trace" => format!("info,kite={level}"),
        other => other.to_owned(),
    }
}

/// The discovery query from the selection flags and the resolved cluster;
/// a bad port map set is a usage error (exit 2).
fn query(select: &SelectArgs, cluster: String) -> Query {
    let port_maps = PortMaps::new(select.port_map.clone()).unwrap_or_else(|msg| {
        Cli::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                format!("--port-map: {msg}"),
            )
            .exit()
    });
    Query {
        cluster,
        selector: select.selector(),
        container: select.name.clone(),
        public: select.public,
        port_maps,
    }
}

/// The metadata endpoints the ECS agent passed in the environment.
fn metadata_endpoints() -> metadata::Endpoints {
    metadata::Endpoints::from_vars(|name| std::env::var(name).ok())
}

/// What kite defaults to when run without `--cluster` or an AWS region.
struct Defaults {
    /// `--cluster`, else the task's own cluster, else `default`.
    cluster: String,
    /// The task's region, for when the AWS configuration names none.
    region: Option<String>,
}

/// Resolves the cluster and the fallback region. The task metadata endpoint
/// is asked only when its variable is set and the cluster or the region is
/// missing, so runs outside ECS are unchanged.
async fn defaults(cluster: Option<String>) -> Defaults {
    let region_set = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|r| !r.trim().is_empty()));
    let endpoints = metadata_endpoints();
    let task = if endpoints.is_set() && (cluster.is_none() || !region_set) {
        match metadata::from_endpoints(&endpoints).await {
            Ok(task) => Some(task),
            Err(err) => {
                warn!("the task metadata endpoint did not answer, so no defaults from it: {err:#}");
                None
            }
        }
    } else {
        None
    };
    let cluster = match (cluster, task.as_ref().and_then(|t| t.cluster.clone())) {
        (Some(flag), _) => flag,
        (None, Some(own)) => {
            info!(cluster = %own, "no --cluster: using the task's own, from the task metadata endpoint");
            own
        }
        (None, None) => {
            info!("no --cluster: using `default`");
            "default".to_owned()
        }
    };
    Defaults {
        cluster,
        region: task.and_then(|t| t.region),
    }
}

async fn run_proxy(args: ProxyArgs) -> Result<()> {
    // The proxy threads start first, at the priority kite was started
    // with; this thread (discovery, the admin endpoint, signals, and the
    // blocking threads it starts later) then steps back, so that a
    // discovery round waits for the data path rather than the reverse.
    let threads = args
        .threads
        .map_or_else(proxy::default_threads, usize::from);
    let threads = proxy::Threads::start(threads).context("cannot start the proxy threads")?;
    lower_this_threads_priority(CONTROL_NICE);
    let defaults = defaults(args.select.cluster.clone()).await;
    let query = query(&args.select, defaults.cluster);
    let nofile = raise_open_file_limit();
    let metrics = Arc::new(Metrics::new());
    let clients = aws::clients(&metrics, defaults.region.as_deref()).await?;
    info!(cluster = %query.cluster, selector = %query.selector, container = %query.container,
          public = query.public, "starting");
    let store = Arc::new(Store::default());
    let cancel = CancellationToken::new();
    let cancel_admin = CancellationToken::new();
    let _stop_admin = cancel_admin.clone().drop_guard();
    let tracker = TaskTracker::new();
    let schedule = Schedule {
        refresh: args.refresh,
        max_backoff: MAX_BACKOFF.max(args.refresh),
    };
    if let Some(addr) = args.admin_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--admin-addr {addr}: cannot listen"))?;
        info!(%addr, "admin endpoint: /healthz /readyz /metrics /targets");
        let admin = ops::Admin {
            store: store.clone(),
            metrics: metrics.clone(),
            stale_after: args.stale_after,
            runtimes: threads.runtimes().to_vec(),
        };
        // The admin endpoint answers until the drain ends, so /metrics
        // shows the drain.
        let stop = cancel_admin.clone();
        tokio::spawn(async move {
            if let Err(err) = ops::serve(listener, admin, stop).await {
                warn!("{err:#}");
            }
        });
    }
    let discovery = Discovery::new(clients.ecs, clients.ec2, query).with_metrics(metrics.clone());
    tokio::spawn(discovery::run(
        discovery,
        store.clone(),
        schedule,
        cancel.clone(),
    ));
    let max_connections = args
        .max_connections
        .map_or_else(|| proxy::max_connections_for(nofile), |n| n as usize);
    let settings = proxy::Settings {
        listen_addr: args.listen_addr,
        connect_timeout: args.connect_timeout,
        max_connections,
        idle_timeout: args.idle_timeout,
        metrics,
        runtimes: threads.runtimes().to_vec(),
    };
    let serve = tokio::spawn(proxy::serve(
        settings,
        store,
        tracker.clone(),
        cancel.clone(),
    ));
    shutdown_signal().await?;
    info!("shutting down: no new connections, draining open ones");
    cancel.cancel();
    let _ = serve.await;
    tracker.close();
    let drain = args.drain_timeout;
    tokio::select! {
        _ = tracker.wait() => info!("all connections closed"),
        _ = tokio::time::sleep(drain) => {
            warn!(open = tracker.len(), "--drain-timeout {drain:?} reached: closing the remaining connections");
        }
        _ = shutdown_signal() => warn!("second signal: exiting at once"),
    }
    Ok(())
}

/// How much lower than the proxy threads' the control thread's priority is
/// (a nice value step; 10 gives it about a tenth of a core the proxy
/// threads want, which still finishes a 5,000-task round within seconds).
const CONTROL_NICE: i32 = 10;

/// Adds `step` to the calling thread's nice value. On Linux a nice value
/// belongs to a thread, and threads started later inherit it; raising it
/// needs no privilege. Failing is not fatal: kite works the same, only
/// without the precedence.
fn lower_this_threads_priority(step: i32) {
    use rustix::process::{getpriority_process, setpriority_process};
    let result = getpriority_process(None)
        .and_then(|nice| setpriority_process(None, nice.saturating_add(step).min(19)));
    match result {
        Ok(()) => debug!(
            step,
            "discovery and the admin endpoint run at a lower priority"
        ),
        Err(err) => warn!("cannot lower the control thread's priority: {err}"),
    }
}

/// Raises the soft open-file limit to the hard one (as Go and HAProxy do),
/// since every proxied connection holds several descriptors; returns the
/// soft limit in force.
#[allow(unsafe_code)]
fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit; setrlimit only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

async fn run_health(args: HealthArgs) -> Result<()> {
    let answer = ops::check_ready(args.admin_addr, args.timeout).await?;
    println!("{answer}");
    Ok(())
}

/// Waits for SIGTERM (what ECS sends) or SIGINT.
async fn shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r.context("installing the SIGINT handler")?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("installing the Ctrl-C handler")?;
    Ok(())
}

async fn run_targets(args: TargetsArgs) -> Result<()> {
    let defaults = defaults(args.select.cluster.clone()).await;
    let query = query(&args.select, defaults.cluster);
    let clients = aws::clients(&Arc::new(Metrics::new()), defaults.region.as_deref()).await?;
    let mut discovery = Discovery::new(clients.ecs, clients.ec2, query);
    let snapshot = discovery.round().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", targets_table(&snapshot));
    }
    Ok(())
}

/// The targets and the skipped tasks as aligned text columns.
fn targets_table(s: &Snapshot) -> String {
    let mut rows = vec![[
        "PORT".to_owned(),
        "ADDRESS".to_owned(),
        "TASK".to_owned(),
        "TASKDEF".to_owned(),
        "MODE".to_owned(),
        "HEALTH".to_owned(),
    ]];
    for t in &s.targets {
        rows.push([
            t.listen_port.to_string(),
            t.address.to_string(),
            t.task_id.clone(),
            t.task_definition.clone(),
            t.network_mode.to_string(),
            t.health.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if s.targets.is_empty() {
        out.push_str("(no targets)\n");
    }
    if !s.skipped.is_empty() {
        out.push_str("\nSKIPPED\n");
        for k in &s.skipped {
            out.push_str(&format!("{}  {}\n", k.task_arn, k.reason));
        }
    }
    out
}

/// `kite attach`; the exit code is the container's with `--docker`.
async fn run_attach(args: AttachArgs) -> Result<i32> {
    let cluster = kite::attach::cluster(&args).unwrap_or_else(|msg| {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit()
    });
    let defaults = defaults(cluster).await;
    let clients = aws::clients(&Arc::new(Metrics::new()), defaults.region.as_deref()).await?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if shutdown_signal().await.is_ok() {
            on_signal.cancel();
        }
    });
    kite::attach::run(args, defaults.cluster, clients.ecs, clients.ec2, cancel).await
}

/// `kite whoami`: the task kite runs in; no AWS call.
async fn run_whoami(args: WhoamiArgs) -> Result<()> {
    let fallbacks = metadata::Fallbacks {
        agent_uri: args.agent_uri,
        cgroup_paths: args.cgroup_path,
    };
    let me = metadata::whoami(&metadata_endpoints(), &fallbacks).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&me)?);
    } else {
        print!("{}", me.text());
    }
    Ok(())
}
