//! The `anonymous-results` command: `serve` runs the service; `prune` runs one pruning pass (or lists what
//! it would delete); `verify` checks committed results' files against their manifests; `check-config`
//! validates a configuration and prints it, secrets redacted; `health` asks a running service whether it is
//! serving (for container health checks); `results list | show | release` and `usage` ask a running service
//! what it stores (`cli/`).

mod cli;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anonymous_results::{
    Config, Service, check_files,
    model::ResultId,
    results::{FileCheck, Verification},
    serve, telemetry,
};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "anonymous-results", version, about = "A place for the results of queries that have no output sink")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gRPC service until SIGINT or SIGTERM.
    Serve {
        /// The cluster's TOML config file; without it, the embedded default (local results under ./data).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The address to listen on, over `[anonymous_results_service] listen` (default 127.0.0.1:50051).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Runs one pruning pass now: deletes expired results and abandons allocations past their commit
    /// deadline, then prints what went. The service prunes by itself every `prune_interval`; this is for a
    /// look first (`--dry-run`) or a one-off clean-up.
    Prune {
        /// The cluster's TOML config file; without it, the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Lists what would go, changing nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Checks each file of a committed result (or of every one) against what its commit recorded, in the
    /// configured storage, without reading the files' bytes: intact, changed (rewritten or replaced after its
    /// commit) or missing. Exits 0 only if every file is intact.
    Verify {
        /// The result to check.
        #[arg(value_name = "RESULT_ID", required_unless_present = "all", conflicts_with = "all")]
        result_id: Option<String>,
        /// Checks every committed result.
        #[arg(long)]
        all: bool,
        /// Prints one JSON object per result (a line each), for scripts.
        #[arg(long)]
        json: bool,
        /// The cluster's TOML config file; without it, the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validates the configuration and the files it names (tokens, secret, TLS), and prints it with secrets
    /// redacted; exits non-zero with the error.
    CheckConfig {
        /// The cluster's TOML config file; without it, the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Asks the service's grpc.health.v1 Check whether it is serving: exits 0 if it is, 1 otherwise (a
    /// container health check). Plain gRPC only: a service with TLS is probed with a TLS-capable client.
    Health {
        /// The service's address; by default the configured `listen` (an unspecified IP is probed on
        /// loopback).
        #[arg(long, value_name = "ADDR")]
        addr: Option<SocketAddr>,
        /// The cluster's TOML config file, for its `listen`; without it, the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Asks a running service what it stores (the scheduler's calls): `list`, `show RESULT_ID`, `release
    /// RESULT_ID`.
    Results {
        #[command(subcommand)]
        action: cli::results::Action,
        #[command(flatten)]
        connection: cli::connection::Connection,
    },
    /// Asks a running service what it stores and how full its byte budgets are (GetUsage).
    Usage {
        /// Prints one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: cli::connection::Connection,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(config) => {
                match check_files(&config) {
                    Ok(warnings) => warnings.iter().for_each(|warning| eprintln!("warning: {warning}")),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                print!("{config}");
                Ok(())
            }
            Err(e) => Err(e),
        },
        Command::Health { addr, config } => match addr {
            Some(addr) => return health(addr),
            None => match Config::load(config.as_deref()) {
                Ok(config) => return health(config.service.listen),
                Err(e) => Err(e),
            },
        },
        Command::Results { action, connection } => return cli::results::run(connection, action),
        Command::Usage { json, connection } => return cli::usage::run(connection, json),
        Command::Prune { config, dry_run } => match Config::load(config.as_deref()) {
            Ok(config) => return prune(config, dry_run),
            Err(e) => Err(e),
        },
        Command::Verify { result_id, all: _, json, config } => match Config::load(config.as_deref()) {
            Ok(config) => return verify(config, result_id, json),
            Err(e) => Err(e),
        },
        Command::Serve { config, listen } => match Config::load(config.as_deref()) {
            Ok(mut config) => {
                if let Some(listen) = listen {
                    config.service.listen = listen;
                }
                return run(config);
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: invalid configuration: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> ExitCode {
    let _flush = telemetry::init(config.service.log_format, &config.service.traces);
    let Some(runtime) = runtime(config.service.blocking_threads()) else { return ExitCode::FAILURE };
    let code = runtime.block_on(async {
        if let Err(e) = telemetry::traces::start_export(&config.service.traces) {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
        let shutdown = match shutdown_signal() {
            Ok(shutdown) => shutdown,
            Err(e) => {
                tracing::error!("cannot install the SIGINT/SIGTERM handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match TcpListener::bind(config.service.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!("cannot listen on {}: {e}", config.service.listen);
                return ExitCode::FAILURE;
            }
        };
        let service = match Service::from_config(&config).await {
            Ok(service) => service,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let served = match serve(service, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
        // The spans of the last calls, to the collector if it takes them soon.
        telemetry::traces::drain(Duration::from_secs(2)).await;
        served
    });
    // Storage work abandoned after the grace period must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// One pruning pass; prints a line per result that went (or, dry, would go), then a summary.
fn prune(config: Config, dry_run: bool) -> ExitCode {
    // Logs only: a pass run by hand is not traced.
    let _flush = telemetry::init(config.service.log_format, &Default::default());
    let Some(runtime) = runtime(config.service.blocking_threads()) else { return ExitCode::FAILURE };
    let pruned = runtime.block_on(async {
        let service = Service::from_config(&config).await?;
        let report = service.prune(dry_run).await?;
        let swept = service.sweep_all(dry_run).await?;
        Ok::<_, Box<dyn std::error::Error>>((service.describe_storage(), report, swept))
    });
    let (storage, report, swept) = match pruned {
        Ok(pruned) => pruned,
        Err(e) => {
            eprintln!("error: pruning failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    for id in &report.expired {
        println!("expired\t{id}");
    }
    for id in &report.abandoned {
        println!("abandoned\t{id}");
    }
    let (expired, abandoned) = (report.expired.len(), report.abandoned.len());
    match dry_run {
        true => println!("{storage}: would delete {expired} expired result(s) and abandon {abandoned} allocation(s)"),
        false => println!(
            "{storage}: deleted {expired} expired result(s), abandoned {abandoned} allocation(s), {} could not be \
             handled now (see the log)",
            report.failed
        ),
    }
    if report.corrupt > 0 {
        println!("{storage}: skipped {} result(s) whose records cannot be interpreted (see the log)", report.corrupt);
    }
    for key in &swept.temporaries {
        println!("temporary\t{key}");
    }
    for (key, id) in &swept.orphan_claims {
        println!("orphan-claim\t{key}\t{id}");
    }
    for id in &swept.deletions {
        println!("deletion\t{id}");
    }
    for id in &swept.stray_index {
        println!("stray-index\t{id}");
    }
    if !swept.deletions.is_empty() {
        let verb = if dry_run { "would finish" } else { "finished" };
        println!(
            "{storage}: {verb} {} deletion(s) cut short (tombstones older than 10 minutes)",
            swept.deletions.len()
        );
    }
    let (temporaries, orphans) = (swept.temporaries.len(), swept.orphan_claims.len());
    match dry_run {
        true => println!(
            "{storage}: would sweep {temporaries} temporary file(s) and {orphans} claim(s) without an allocation, \
             with their sinks"
        ),
        false => println!(
            "{storage}: swept {temporaries} temporary file(s) and {orphans} claim(s) without an allocation, with \
             their sinks"
        ),
    }
    match report.failed + swept.failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Checks result `result_id` (or, without one, every committed result); prints a line per file (or a JSON
/// object per result), then, for people, a summary. Exits 0 only if every file checked is intact.
fn verify(config: Config, result_id: Option<String>, json: bool) -> ExitCode {
    let id = match result_id.as_deref().map(ResultId::parse).transpose() {
        Ok(id) => id,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _flush = telemetry::init(config.service.log_format, &Default::default());
    let Some(runtime) = runtime(config.service.blocking_threads()) else { return ExitCode::FAILURE };
    let mut tally = Tally::default();
    let mut print = |verification: Verification| tally.print(&verification, json);
    let checked = runtime.block_on(async {
        let service = Service::from_config(&config).await?;
        match &id {
            Some(id) => print(service.verify(id).await?),
            None => service.verify_all(&mut print).await?,
        }
        Ok::<_, Box<dyn std::error::Error>>(service.describe_storage())
    });
    let storage = match checked {
        Ok(storage) => storage,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !json {
        println!(
            "{storage}: {} file(s) of {} result(s): {} intact, {} changed, {} missing",
            tally.files, tally.results, tally.intact, tally.changed, tally.missing
        );
        if tally.unpinned > 0 {
            println!(
                "{storage}: {} file(s) committed by a release before pins were checked by their size alone",
                tally.unpinned
            );
        }
    }
    match tally.files == tally.intact {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

/// What `verify` found, counted as it prints.
#[derive(Default)]
struct Tally {
    results: usize,
    files: usize,
    intact: usize,
    changed: usize,
    missing: usize,
    unpinned: usize,
}

impl Tally {
    fn print(&mut self, verification: &Verification, json: bool) {
        self.results += 1;
        for file in &verification.files {
            self.files += 1;
            self.unpinned += usize::from(!file.pinned);
            match file.check {
                FileCheck::Intact => self.intact += 1,
                FileCheck::Changed => self.changed += 1,
                FileCheck::Missing => self.missing += 1,
            }
        }
        if json {
            let files: Vec<serde_json::Value> = verification
                .files
                .iter()
                .map(|file| {
                    serde_json::json!({"path": file.path.as_str(), "status": file.check.as_str(), "pinned": file.pinned})
                })
                .collect();
            let line = serde_json::json!({
                "result_id": verification.result_id.as_str(),
                "intact": verification.intact(),
                "files": files,
            });
            println!("{line}");
            return;
        }
        for file in &verification.files {
            let path = anonymous_results::model::printable(file.path.as_str());
            println!("{}	{}	{path}", file.check.as_str(), verification.result_id);
        }
    }
}

/// Probes the health service at `addr` (on loopback when `addr` is unspecified, as `0.0.0.0:PORT` is);
/// prints its status.
fn health(mut addr: SocketAddr) -> ExitCode {
    use anonymous_results_client::{Client, RetryPolicy, ServingStatus};
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let Some(runtime) = runtime(anonymous_results::config::BLOCKING_RESERVE) else { return ExitCode::FAILURE };
    // One try in 5 s: a container's health check has its own retries.
    let answer = runtime.block_on(async {
        Client::builder(format!("http://{addr}"))
            .connect_timeout(Duration::from_secs(5))
            .deadline(Duration::from_secs(5))
            .retry(RetryPolicy::NEVER)
            .connect()
            .await?
            .health()
            .await
    });
    match answer {
        Ok(ServingStatus::Serving) => {
            println!("{addr}: SERVING");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("{addr}: {}", status.as_str_name());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: no health answer from {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed before this returns, so a signal that comes
/// while the service is still starting is not lost (nor does it kill the process).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// The async runtime, with `blocking_threads` in its blocking pool (what the classes of blocking work need:
/// [`anonymous_results::config::ServiceConfig::blocking_threads`]); `None` (logged) if the operating system
/// refuses one.
fn runtime(blocking_threads: usize) -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .build()
        .map_err(|e| tracing::error!("cannot start the async runtime: {e}"))
        .ok()
}
