//! The `kite` binary: parse, set up logging, dispatch, exit codes.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use tracing::warn;

use kite::cli::{
    AttachArgs, Cli, Command, HealthArgs, LogFormat, ProxyArgs, TargetsArgs, WhoamiArgs,
};
use kite::discovery::{Source, HEALTH_REFRESH};
use kite::metadata;
use kite::{aws, ops, proxy};

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
    // Each command's future lives on the heap, at its own size: block_on
    // keeps the future it is given on this thread's stack, and a match of
    // them all would be as large as the largest (attach's), in every
    // command's resident stack.
    let result = runtime.block_on(async {
        match cli.command {
            Command::Proxy(args) => Box::pin(run_proxy(args)).await.map(|()| ExitCode::SUCCESS),
            Command::Targets(args) => Box::pin(run_targets(args))
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Health(args) => Box::pin(run_health(args)).await.map(|()| ExitCode::SUCCESS),
            Command::Whoami(args) => Box::pin(run_whoami(args)).await.map(|()| ExitCode::SUCCESS),
            // The container's exit code (0-255) with --docker.
            Command::Attach(args) => Box::pin(run_attach(args))
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

/// Exits with a usage error (exit 2) about the flags.
fn usage_error(kind: clap::error::ErrorKind, msg: String) -> ! {
    Cli::command().error(kind, msg).exit()
}

/// The metadata endpoints the ECS agent passed in the environment.
fn metadata_endpoints() -> metadata::Endpoints {
    metadata::Endpoints::from_vars(|name| std::env::var(name).ok())
}

/// The cluster and fallback region, from `--cluster` or the task kite runs
/// in, and with `want_zone` the task's zone (see [`metadata::defaults`]).
async fn defaults(cluster: Option<String>, want_zone: bool) -> metadata::Defaults {
    let region_configured = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|r| !r.trim().is_empty()));
    metadata::defaults(cluster, &metadata_endpoints(), region_configured, want_zone).await
}

/// `kite proxy`: the first SIGTERM or SIGINT drains, a second one exits at
/// once.
async fn run_proxy(args: ProxyArgs) -> Result<()> {
    let defaults = defaults(args.select.cluster.clone(), args.zone.is_none()).await;
    let config = (args.config(defaults.cluster, defaults.zone))
        .unwrap_or_else(|msg| usage_error(ErrorKind::ValueValidation, msg));
    let handles = proxy::Handles::default();
    let clients = aws::clients(defaults.region.as_deref()).await?;
    let signals = ops::signal::watch();
    tokio::select! {
        result = proxy::run(config, clients, handles, signals.first.cancelled_owned()) => result,
        _ = signals.second.cancelled() => {
            warn!("second signal: exiting at once");
            Ok(())
        }
    }
}

async fn run_health(args: HealthArgs) -> Result<()> {
    let answer = ops::check_ready(args.admin_addr, args.timeout).await?;
    println!("{answer}");
    Ok(())
}

async fn run_targets(args: TargetsArgs) -> Result<()> {
    let defaults = defaults(args.select.cluster.clone(), false).await;
    let select = (args.select.select(defaults.cluster))
        .unwrap_or_else(|msg| usage_error(ErrorKind::ValueValidation, msg));
    let clients = aws::clients(defaults.region.as_deref()).await?;
    // One round: nothing known yet, so nothing to spread over rounds.
    let snapshot = (select.source(clients, HEALTH_REFRESH))
        .round(Duration::ZERO)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", snapshot.table());
    }
    Ok(())
}

/// `kite attach`; the exit code is the container's with `--docker`.
async fn run_attach(args: Box<AttachArgs>) -> Result<i32> {
    let options =
        (args.options()).unwrap_or_else(|msg| usage_error(ErrorKind::ArgumentConflict, msg));
    let defaults = defaults(options.cluster.clone(), false).await;
    let clients = aws::clients(defaults.region.as_deref()).await?;
    let interrupts = kite::attach::Interrupts::listen()?;
    let result = kite::attach::run(
        options,
        defaults.cluster,
        clients.ecs(),
        clients.ec2(),
        interrupts,
    )
    .await;
    // Flags that the task definition shows wrong (--container, --subnets).
    if let Some(kite::attach::Usage(msg)) = result.as_ref().err().and_then(|e| e.downcast_ref()) {
        usage_error(ErrorKind::ValueValidation, msg.clone());
    }
    result
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
