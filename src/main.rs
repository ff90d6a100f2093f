//! The `kite` binary: parse, set up logging, dispatch, exit codes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use kite::cli::{AttachArgs, Cli, Command, LogFormat, ProxyArgs, SelectArgs, TargetsArgs};
use kite::config::PortMaps;
use kite::discovery::{self, Discovery, Query, Schedule};
use kite::snapshot::{Snapshot, Store};
use kite::{aws, proxy};

/// How long open connections may finish after SIGTERM (ECS sends SIGKILL
/// 30 s after SIGTERM by default).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// The longest wait between discovery rounds after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let cli = Cli::parse_from(kite::cli::normalize_args(std::env::args_os().collect()));
    init_tracing(&cli.log_level, cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
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
    let filter = tracing_subscriber::EnvFilter::builder().parse_lossy(level);
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

/// The discovery query from the selection flags; a bad port map set is a
/// usage error (exit 2).
fn query(select: &SelectArgs) -> Query {
    let port_maps = PortMaps::new(select.port_map.clone()).unwrap_or_else(|msg| {
        Cli::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                format!("--port-map: {msg}"),
            )
            .exit()
    });
    Query {
        cluster: select.cluster.clone(),
        selector: select.selector(),
        container: select.name.clone(),
        public: select.public,
        port_maps,
    }
}

async fn run_proxy(args: ProxyArgs) -> Result<()> {
    let query = query(&args.select);
    let clients = aws::clients().await?;
    info!(cluster = %query.cluster, selector = %query.selector, container = %query.container,
          public = query.public, "starting");
    let store = Arc::new(Store::default());
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let schedule = Schedule {
        refresh: args.refresh,
        max_backoff: MAX_BACKOFF.max(args.refresh),
    };
    let discovery = Discovery::new(clients.ecs, clients.ec2, query);
    tokio::spawn(discovery::run(
        discovery,
        store.clone(),
        schedule,
        cancel.clone(),
    ));
    let settings = proxy::Settings {
        listen_addr: args.listen_addr,
        connect_timeout: args.connect_timeout,
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
    tokio::select! {
        _ = tracker.wait() => info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => warn!("drain timeout: closing the remaining connections"),
        _ = shutdown_signal() => warn!("second signal: exiting at once"),
    }
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
    let query = query(&args.select);
    let clients = aws::clients().await?;
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
    let clients = aws::clients().await?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if shutdown_signal().await.is_ok() {
            on_signal.cancel();
        }
    });
    kite::attach::run(args, cluster, clients.ecs, clients.ec2, cancel).await
}
