//! A scheduler's own tonic server with the AnonymousResults service mounted beside its other services.
//!
//! `cargo run --example embed -- [CONFIG_FILE] [ADDR]` serves on ADDR (default 127.0.0.1:50052) until Ctrl-C,
//! with the results configured by CONFIG_FILE (default: the embedded default, under ./data).

use std::{net::SocketAddr, path::PathBuf};

use anonymous_results::{Config, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let config_file = args.next().map(PathBuf::from);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:50052").parse()?;
    let config = Config::load(config_file.as_deref())?;
    // The blocking pool the local backend's classes of filesystem work need.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.service.blocking_threads())
        .build()?;
    runtime.block_on(serve(config, addr))
}

async fn serve(config: Config, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let results = Service::from_config(&config).await?;
    // Retention and leftovers: `serve` runs the pruner and the sweep; a program that mounts the service runs
    // them itself.
    tokio::spawn(results.clone().run_pruner());
    tokio::spawn(results.clone().run_sweeper());
    // The scheduler's own services go beside it; here, its health service.
    let (health, scheduler_health) = tonic_health::server::health_reporter();
    health.set_service_status("my.scheduler.Scheduler", tonic_health::ServingStatus::Serving).await;

    println!("serving anonymous_results.v1.AnonymousResults on {addr} ({})", results.describe_storage());
    tonic::transport::Server::builder()
        .add_service(results.grpc())
        .add_service(scheduler_health)
        .serve_with_shutdown(addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
