//! The gRPC server: the AnonymousResults service with grpc.health.v1 and reflection (v1 and v1alpha, for
//! grpcurl old and new) on one listener, over TLS when configured, with graceful shutdown; and the Prometheus
//! metrics on a listener of their own when `metrics_listen` is set.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    service::Routes,
    transport::{Server, ServerTlsConfig, server::TcpIncoming},
};
use tracing::{info, warn};

use crate::{
    auth::{Authenticator, TokenFileError},
    clock::{Clock, SystemClock},
    commit_token::{CommitSecretError, CommitTokens},
    config::{Config, SecurityConfig},
    grpc::GrpcService,
    proto::{self, anonymous_results_server::AnonymousResultsServer},
    results::{PruneReport, Results},
    storage::{Storage, StorageError},
    tls::{self, TlsError},
};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the result storage: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    CommitSecret(#[from] CommitSecretError),
    #[error(transparent)]
    TokenFile(#[from] TokenFileError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "refusing to serve on {address} without authentication: anyone who reaches it could read every result \
         and get the workers' storage credentials. Set `auth.scheduler_token_file` and `auth.worker_token_file` \
         in [anonymous_results_service], listen on a loopback address, or set `allow_unauthenticated = true` \
         there to serve anyway"
    )]
    Unauthenticated { address: SocketAddr },
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error("cannot listen for metrics on {address} (metrics_listen): {source}")]
    MetricsListen { address: SocketAddr, source: std::io::Error },
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
    auth: Arc<Authenticator>,
    security: SecurityConfig,
    tls: Option<ServerTlsConfig>,
    shutdown_grace: Duration,
    prune_interval: Duration,
    metrics_listen: Option<SocketAddr>,
}

impl Service {
    /// Opens the configured storage (creating a local root if missing), on the system clock.
    pub async fn from_config(config: &Config) -> Result<Self, StartError> {
        Self::with_clock(config, Arc::new(SystemClock)).await
    }

    /// Opens the configured storage and reads the token, secret and TLS files, reading time from `clock`
    /// (tests move a [`crate::clock::ManualClock`]).
    pub async fn with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let security = &config.service.security;
        let auth = Authenticator::open(&security.auth)?;
        let tls = security.tls.as_ref().map(tls::server_config).transpose()?;
        let storage = Storage::from_config(config).await?;
        let tokens = CommitTokens::load(&security.auth, &storage).await?;
        Ok(Self {
            results: Results::new(storage, config, clock, tokens),
            auth: Arc::new(auth),
            security: security.clone(),
            tls,
            shutdown_grace: config.service.shutdown_grace,
            prune_interval: config.retention.prune_interval,
            metrics_listen: config.service.metrics_listen,
        })
    }

    /// One pruning pass now (see [`Results::prune`]); with `dry_run`, only says what would go.
    pub async fn prune(&self, dry_run: bool) -> Result<PruneReport, crate::results::Error> {
        self.results.prune(dry_run).await
    }

    /// Prunes every `prune_interval`, forever, logging (and surviving) failures; a pass that stopped with work
    /// left is followed at once. [`serve`] runs it; a program that mounts [`Service::grpc`] itself spawns it:
    /// `tokio::spawn(service.clone().run_pruner())`.
    pub async fn run_pruner(self) {
        let mut next = tokio::time::Instant::now() + self.prune_interval;
        loop {
            tokio::time::sleep_until(next).await;
            next = tokio::time::Instant::now() + self.prune_interval;
            match self.prune(false).await {
                Ok(report) if report.more => next = tokio::time::Instant::now(),
                Ok(_) => {}
                Err(e) => warn!("pruning failed; trying again in {:?}: {e}", self.prune_interval),
            }
        }
    }

    /// The tonic service, ready for `Server::builder().add_service(...)` or a `Routes`.
    /// Every call is authorized by the configured tokens, wherever the service is mounted.
    pub fn grpc(&self) -> AnonymousResultsServer<GrpcService> {
        let grpc = GrpcService::new(self.results.clone(), self.auth.clone(), self.security.limits);
        AnonymousResultsServer::new(grpc).max_decoding_message_size(self.security.limits.max_message_bytes)
    }

    /// Refuses an address off this machine when no token is configured, unless `allow_unauthenticated`.
    fn check_exposure(&self, address: SocketAddr) -> Result<(), StartError> {
        if self.auth.enabled() || address.ip().is_loopback() {
            return Ok(());
        }
        match self.security.allow_unauthenticated {
            true => {
                warn!(%address, "serving WITHOUT authentication (allow_unauthenticated = true): anyone who reaches this address can call everything");
                Ok(())
            }
            false => Err(StartError::Unauthenticated { address }),
        }
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

/// Reads every file the configuration names (token files, commit secret, TLS certificates and keys) and
/// checks each is usable, as the service would when it starts; storage is not touched.
pub fn check_files(config: &Config) -> Result<(), StartError> {
    let security = &config.service.security;
    Authenticator::open(&security.auth)?;
    if let Some(path) = &security.auth.commit_secret_file {
        CommitTokens::from_file(path)?;
    }
    if let Some(tls) = &security.tls {
        tls::server_config(tls)?;
    }
    Ok(())
}

/// Serves `service`, health and reflection on `listener` until `shutdown` completes; then health turns
/// NOT_SERVING, new connections are refused, and calls in flight get the configured grace period to finish
/// before this returns.
pub async fn serve(
    service: Service,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let address = listener.local_addr().map_err(StartError::Listener)?;
    service.check_exposure(address)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AnonymousResultsServer<GrpcService>>().await;
    let mut routes = Routes::new(service.grpc()).add_service(health_service);
    if service.security.reflection {
        let (reflection_v1, reflection_v1alpha) = reflection()?;
        routes = routes.add_service(reflection_v1).add_service(reflection_v1alpha);
    }
    let mut builder = Server::builder();
    if let Some(tls) = service.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    info!(
        %address,
        storage = %service.describe_storage(),
        tls = service.tls.is_some(),
        authentication = service.auth.enabled(),
        "serving anonymous_results.v1.AnonymousResults"
    );
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
    let exporter = match service.metrics_listen {
        Some(address) => Some(metrics_exporter(address).await?),
        None => None,
    };
    let pruner = tokio::spawn(service.clone().run_pruner());
    // Without TCP_NODELAY, a small answer written after another waits for the client's delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = builder.add_routes(routes).serve_with_incoming_shutdown(incoming, draining);
    let served = tokio::select! {
        served = server => served,
        () = async { stopping.notified().await; tokio::time::sleep(service.shutdown_grace).await } => {
            warn!(grace = ?service.shutdown_grace, "calls still in flight after the grace period; stopping anyway");
            Ok(())
        }
    };
    pruner.abort();
    if let Some(exporter) = exporter {
        exporter.abort();
    }
    served?;
    info!("stopped");
    Ok(())
}

/// Serves the Prometheus metrics on `address` until the task is aborted.
async fn metrics_exporter(address: SocketAddr) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let bound = |source| StartError::MetricsListen { address, source };
    let listener = TcpListener::bind(address).await.map_err(bound)?;
    let metrics_address = listener.local_addr().map_err(bound)?;
    info!(%metrics_address, "Prometheus metrics at http://{metrics_address}/metrics");
    Ok(tokio::spawn(crate::metrics::exporter::serve(listener)))
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
