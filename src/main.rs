//! The `anonymous-results` command: `serve` runs the service; `check-config` validates a configuration and
//! prints it, secrets redacted.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anonymous_results::{Config, Service, serve, telemetry};
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
    /// Validates the configuration and prints it with secrets redacted; exits non-zero with the error.
    CheckConfig {
        /// The cluster's TOML config file; without it, the embedded default.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { config } => Config::load(config.as_deref()).map(|config| print!("{config}")),
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
    telemetry::init(config.service.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
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
        match serve(service, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    });
    // Storage work abandoned after the grace period must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
