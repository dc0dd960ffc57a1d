//! The gRPC server: the AnonymousResults service with grpc.health.v1 and reflection (v1 and v1alpha, for
//! grpcurl old and new) on one listener, with graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{service::Routes, transport::Server};
use tracing::{info, warn};

use crate::{
    clock::{Clock, SystemClock},
    config::Config,
    grpc::GrpcService,
    proto::{self, anonymous_results_server::AnonymousResultsServer},
    results::{PruneReport, Results},
    storage::{Storage, StorageError},
};

/// The largest request the service decodes: a Commit listing 100,000 files fits.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the result storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The AnonymousResults service, built from a configuration. Mount [`Service::grpc`] in a tonic router of
/// your own, or run everything with [`serve`].
#[derive(Debug, Clone)]
pub struct Service {
    results: Arc<Results<Storage>>,
    shutdown_grace: Duration,
    prune_interval: Duration,
}

impl Service {
    /// Opens the configured storage (creating a local root if missing), on the system clock.
    pub async fn from_config(config: &Config) -> Result<Self, StartError> {
        Self::with_clock(config, Arc::new(SystemClock)).await
    }

    /// Opens the configured storage, reading time from `clock` (tests move a [`crate::clock::ManualClock`]).
    pub async fn with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let storage = Storage::from_config(config).await?;
        Ok(Self {
            results: Arc::new(Results::new(storage, config, clock)),
            shutdown_grace: config.service.shutdown_grace,
            prune_interval: config.retention.prune_interval,
        })
    }

    /// One pruning pass now (see [`Results::prune`]); with `dry_run`, only says what would go.
    pub async fn prune(&self, dry_run: bool) -> Result<PruneReport, crate::results::Error> {
        self.results.prune(dry_run).await
    }

    /// The tonic service, ready for `Server::builder().add_service(...)` or a `Routes`.
    pub fn grpc(&self) -> AnonymousResultsServer<GrpcService> {
        AnonymousResultsServer::new(GrpcService::new(self.results.clone())).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// Where the results are stored, without credentials.
    pub fn describe_storage(&self) -> String {
        self.results.storage().describe()
    }

    /// How many storage requests the service has made since it started (see [`Storage::requests`]).
    pub fn storage_requests(&self) -> u64 {
        self.results.storage().requests()
    }
}

/// Serves `service`, health and reflection on `listener` until `shutdown` completes; then health turns
/// NOT_SERVING, new connections are refused, and calls in flight get the configured grace period to finish
/// before this returns.
pub async fn serve(
    service: Service,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AnonymousResultsServer<GrpcService>>().await;
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    let routes = Routes::new(service.grpc())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    if let Ok(address) = listener.local_addr() {
        info!(%address, storage = %service.describe_storage(), "serving anonymous_results.v1.AnonymousResults");
    }
    let stopping = Arc::new(tokio::sync::Notify::new());
    let draining = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            info!(grace = ?service.shutdown_grace, "shutting down: finishing calls in flight");
            health.set_not_serving::<AnonymousResultsServer<GrpcService>>().await;
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            stopping.notify_one();
        }
    };
    let pruner = tokio::spawn(prune_every(service.clone()));
    let server =
        Server::builder().add_routes(routes).serve_with_incoming_shutdown(TcpListenerStream::new(listener), draining);
    let served = tokio::select! {
        served = server => served,
        () = async { stopping.notified().await; tokio::time::sleep(service.shutdown_grace).await } => {
            warn!(grace = ?service.shutdown_grace, "calls still in flight after the grace period; stopping anyway");
            Ok(())
        }
    };
    pruner.abort();
    served?;
    info!("stopped");
    Ok(())
}

/// Runs the pruner every `prune_interval`, logging (and surviving) its failures.
async fn prune_every(service: Service) {
    let first = tokio::time::Instant::now() + service.prune_interval;
    let mut ticks = tokio::time::interval_at(first, service.prune_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = service.prune(false).await {
            warn!("pruning failed; trying again in {:?}: {e}", service.prune_interval);
        }
    }
}

/// The reflection services, v1 and v1alpha, over the contract and the health service.
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    StartError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
