//! The gRPC server: the AnonymousResults service with grpc.health.v1 and reflection (v1 and v1alpha, for
//! grpcurl old and new) on one listener, over TLS when configured, with graceful shutdown; and the Prometheus
//! metrics on a listener of their own when `metrics_listen` is set.
//!
//! Connections are held to the configured limits: how many at once and how long a handshake may take
//! (`connections.rs`), how many streams each carries, how large a header block may be, and how long one may
//! sit idle (`serving.rs`).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tower::Layer;
use tracing::{info, warn};

use crate::{
    auth::{Authenticator, TokenFileError},
    clock::{Clock, SystemClock},
    commit_token::{CommitSecretError, CommitTokens},
    config::{BackendConfig, Config, ConnectionConfig, SecurityConfig},
    connections::{self, ConnectionLimits, StreamTracking},
    download::{DownloadService, WithDownloads},
    grpc::{GrpcService, admission::Admission, deadline::RequestDeadline},
    metrics::Metrics,
    model::{DownloadMode, ResultId},
    proto::{self, anonymous_results_server::AnonymousResultsServer},
    results::{PruneReport, Results, SweepReport, Verification},
    serving,
    storage::{Storage, StorageError},
    telemetry::traces,
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
    #[error(
        "download_mode proxy and redirect need the URL clients reach the service at, and the listen address \
         {address} is not one: set download_base_url in [anonymous_results_service] (for example \
         \"https://results.example.com\")"
    )]
    NoDownloadBase { address: SocketAddr },
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error("cannot listen for metrics on {address} (metrics_listen): {source}")]
    MetricsListen { address: SocketAddr, source: std::io::Error },
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The AnonymousResults service, built from a configuration. Mount [`Service::grpc`] in a tonic router of
/// your own, or run everything with [`serve`].
#[derive(Clone)]
pub struct Service {
    results: Arc<Results<Storage>>,
    auth: Arc<Authenticator>,
    security: SecurityConfig,
    connections: ConnectionConfig,
    tls: Option<TlsAcceptor>,
    shutdown_grace: Duration,
    prune_interval: Duration,
    sweep_interval: Duration,
    usage_interval: Duration,
    metrics_listen: Option<SocketAddr>,
    downloads: crate::config::DownloadConfig,
    request_timeout: Duration,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("storage", &self.describe_storage())
            .field("tls", &self.tls.is_some())
            .field("authentication", &self.auth.enabled())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Opens the configured storage (creating a local root if missing), on the system clock.
    pub async fn from_config(config: &Config) -> Result<Self, StartError> {
        Self::with_clock(config, Arc::new(SystemClock)).await
    }

    /// Opens the configured storage and reads the token, secret and TLS files, reading time from `clock`
    /// (tests move a [`crate::clock::ManualClock`]). What [`check_files`] warns of is logged.
    pub async fn with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        // The files first: a mistake in them is cheaper to hear of than a storage probe.
        check_files(config)?;
        let storage = Storage::from_config(config, Arc::new(Metrics::new())).await?;
        Self::over(config, clock, storage).await
    }

    /// The service over `storage`, opened by the caller ([`Storage::from_config`], perhaps made
    /// [`Storage::unreliable`] to see how the service answers a failing store), its metrics the storage's.
    pub async fn over(config: &Config, clock: Arc<dyn Clock>, storage: Storage) -> Result<Self, StartError> {
        let security = &config.service.security;
        let auth = Authenticator::open(&security.auth)?;
        let tls = security.tls.as_ref().map(tls::acceptor).transpose()?;
        for warning in warnings(config) {
            warn!("{warning}");
        }
        let tokens = CommitTokens::load(&security.auth, &storage).await?;
        let metrics = storage.metrics().clone();
        Ok(Self {
            results: Results::new(storage, config, clock, tokens, metrics),
            auth: Arc::new(auth),
            security: security.clone(),
            connections: config.service.connections,
            tls,
            shutdown_grace: config.service.shutdown_grace,
            prune_interval: config.retention.prune_interval,
            sweep_interval: config.retention.sweep_interval,
            usage_interval: config.budget.usage_interval,
            metrics_listen: config.service.metrics_listen,
            downloads: config.service.downloads.clone(),
            request_timeout: config.service.request_timeout,
        })
    }

    /// The metrics the service counts in (what `metrics_listen` serves), for a program that mounts the
    /// service and exports them itself: [`Metrics::render`].
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.results.metrics()
    }

    /// One pruning pass now (see [`Results::prune`]); with `dry_run`, only says what would go.
    pub async fn prune(&self, dry_run: bool) -> Result<PruneReport, crate::results::Error> {
        self.results.prune(dry_run).await
    }

    /// Checks every file of committed result `id` against its manifest (see [`Results::verify`]).
    pub async fn verify(&self, id: &ResultId) -> Result<Verification, crate::results::Error> {
        self.results.verify(id).await
    }

    /// [`Service::verify`] of every committed result, each handed to `each` as it is checked.
    pub async fn verify_all(&self, each: impl FnMut(Verification)) -> Result<(), crate::results::Error> {
        self.results.verify_all(each).await
    }

    /// Prunes every `prune_interval`, forever, logging (and surviving) failures; a pass that stopped with work
    /// left is followed at once. [`serve`] runs it; a program that mounts [`Service::grpc`] itself spawns it:
    /// `tokio::spawn(service.clone().run_pruner())`.
    pub async fn run_pruner(self) {
        let mut next = tokio::time::Instant::now() + self.prune_interval;
        loop {
            tokio::time::sleep_until(next).await;
            next = tokio::time::Instant::now() + self.prune_interval;
            let pass = traces::span!(traces::starts(), info_span, parent: None, "prune pass");
            match tracing::Instrument::instrument(self.prune(false), pass).await {
                Ok(report) if report.more => next = tokio::time::Instant::now(),
                Ok(_) => {}
                Err(e) => warn!(
                    "pruning failed; trying again in {:?}: {}",
                    self.prune_interval,
                    crate::telemetry::Escaped(&e.detail())
                ),
            }
        }
    }

    /// One sweep pass now (see [`Results::sweep`]): a page of the control folders cleared of what crashes
    /// left; with `dry_run`, only says what would go.
    pub async fn sweep(&self, dry_run: bool) -> Result<SweepReport, crate::results::Error> {
        self.results.sweep(dry_run).await
    }

    /// Every sweep pass from the start of the control folders to their end (what `prune` runs): with
    /// `dry_run`, only says what would go.
    pub async fn sweep_all(&self, dry_run: bool) -> Result<SweepReport, crate::results::Error> {
        let mut all = SweepReport::default();
        loop {
            let page = self.results.sweep_page(all.next.as_deref(), dry_run).await?;
            all.temporaries.extend(page.temporaries);
            all.orphan_claims.extend(page.orphan_claims);
            all.deletions.extend(page.deletions);
            all.stray_index.extend(page.stray_index);
            all.keys_read += page.keys_read;
            all.failed += page.failed;
            all.next = page.next;
            if all.next.is_none() {
                return Ok(all);
            }
        }
    }

    /// Sweeps a page every `sweep_interval`, forever, logging (and surviving) failures. [`serve`] runs it; a
    /// program that mounts [`Service::grpc`] itself spawns it beside the pruner:
    /// `tokio::spawn(service.clone().run_sweeper())`.
    pub async fn run_sweeper(self) {
        loop {
            tokio::time::sleep(self.sweep_interval).await;
            let pass = traces::span!(traces::starts(), info_span, parent: None, "sweep pass");
            if let Err(e) = tracing::Instrument::instrument(self.sweep(false), pass).await {
                warn!(
                    "sweeping failed; trying again in {:?}: {}",
                    self.sweep_interval,
                    crate::telemetry::Escaped(&e.detail())
                );
            }
        }
    }

    /// Brings this replica's knowledge of what is stored up to date now (see [`Results::refresh_usage`]);
    /// [`Service::run_usage`] does it every `usage_interval`.
    pub async fn refresh_usage(&self) -> Result<crate::results::Refreshed, crate::results::Error> {
        self.results.refresh_usage().await
    }

    /// Completes once this replica has read what is stored once (GetUsage answers, and budgets hold, from
    /// then on).
    pub async fn usage_loaded(&self) {
        self.results.usage_loaded().await
    }

    /// Indexes what an earlier release stored, once per store (see [`Results::rebuild_index`]).
    pub async fn rebuild_index(&self) -> Result<Option<crate::results::Rebuilt>, crate::results::Error> {
        self.results.rebuild_index().await
    }

    /// Indexes what an earlier release stored (once per store), then reads what is stored, and again every
    /// `usage_interval`, forever, logging (and surviving) failures. [`serve`] runs it; a program that mounts
    /// [`Service::grpc`] itself spawns it beside the pruner: `tokio::spawn(service.clone().run_usage())`.
    pub async fn run_usage(self) {
        let mut indexed = false;
        loop {
            if !indexed {
                match self.rebuild_index().await {
                    Ok(_) => indexed = true,
                    Err(e) => warn!(
                        "indexing what an earlier release stored failed; trying again in {:?}: {}",
                        self.usage_interval,
                        crate::telemetry::Escaped(&e.detail())
                    ),
                }
            }
            let refresh = traces::span!(traces::starts(), info_span, parent: None, "usage refresh");
            if let Err(e) = tracing::Instrument::instrument(self.refresh_usage(), refresh).await {
                warn!(
                    "reading what is stored failed; GetUsage and the budgets keep what they knew, trying again in {:?}: {}",
                    self.usage_interval,
                    crate::telemetry::Escaped(&e.detail())
                );
            }
            tokio::time::sleep(self.usage_interval).await;
        }
    }

    /// The classes of blocking work of a local backend (`None` on an object store), for tests that make one
    /// class hang.
    pub fn blocking_classes(&self) -> Option<std::sync::Arc<crate::storage::BlockingClasses>> {
        self.results.storage().blocking_classes()
    }

    /// The tonic service, ready for `Server::builder().add_service(...)` or a `Routes`. Wherever it is
    /// mounted, every call is authorized by the configured tokens before its request is read, and held to
    /// its message limit.
    pub fn grpc(&self) -> Admission {
        let grpc = GrpcService::new(self.results.clone(), self.auth.clone());
        Admission::new(grpc, self.auth.clone(), &self.security.limits, self.request_timeout)
    }

    /// The download routes (`GET`/`HEAD` of the links Resolve answers in proxy and redirect modes), a tower
    /// service of HTTP requests: [`serve`] mounts them on the gRPC port; a program that mounts
    /// [`Service::grpc`] in its own router mounts these beside it (any path under `/v1/results/`), with
    /// `download_base_url` set to where clients reach them.
    pub fn downloads(&self) -> DownloadService {
        DownloadService::new(self.results.clone(), &self.downloads)
    }

    /// Makes links to `address` (the listener's) when no `download_base_url` is configured and clients can
    /// reach it (not `0.0.0.0` or `::`); refuses a default download mode that needs links it cannot make.
    fn check_download_base(&self, address: SocketAddr) -> Result<(), StartError> {
        if !address.ip().is_unspecified() {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            self.results.set_download_base(&format!("{scheme}://{address}"));
        }
        match self.results.has_download_base() || self.results.download_mode() == DownloadMode::Direct {
            true => Ok(()),
            false => Err(StartError::NoDownloadBase { address }),
        }
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

    /// Completes once the deletions that Release and Abort left running after their answers are done (those
    /// started meanwhile included): for tests, and for a program that mounts the service and stops it.
    pub async fn deletions_done(&self) {
        self.results.deletions_done().await;
    }

    /// The deletions left running after their calls' answers: how many are not done (queued included), and
    /// how many run now.
    pub fn deletions_running(&self) -> (usize, usize) {
        self.results.deletions_running()
    }

    /// How many storage requests the service has made since it started (see [`Storage::requests`]).
    pub fn storage_requests(&self) -> u64 {
        self.results.storage().requests()
    }
}

/// Reads every file the configuration names (token files, commit secret, TLS certificates and keys) and
/// checks each is usable, as the service would when it starts; storage is not touched. Answers what the
/// service would warn of at start-up (see [`warnings`]).
pub fn check_files(config: &Config) -> Result<Vec<String>, StartError> {
    let security = &config.service.security;
    Authenticator::open(&security.auth)?;
    if let Some(path) = &security.auth.commit_secret_file {
        CommitTokens::from_files(path, security.auth.previous_commit_secret_file.as_deref())?;
    }
    if let Some(tls) = &security.tls {
        tls::acceptor(tls)?;
    }
    Ok(warnings(config))
}

/// What in the configuration lets someone other than the service read what only it should: a token or
/// secret file that its group or everyone may read, a local root whose permissions let others in, and
/// workers handed the service's own storage credentials (with the commit secret in the store, where those
/// reach it).
pub fn warnings(config: &Config) -> Vec<String> {
    let auth = &config.service.security.auth;
    let mut warnings = Vec::new();
    let mut files: Vec<(&str, &std::path::Path)> = Vec::new();
    if let Some(token_files) = &auth.token_files {
        files.push(("auth.scheduler_token_file", &token_files.scheduler));
        files.push(("auth.worker_token_file", &token_files.worker));
    }
    if let Some(path) = &auth.commit_secret_file {
        files.push(("auth.commit_secret_file", path));
    }
    for (key, path) in files {
        if crate::secret::readable_by_others(path) {
            warnings.push(format!(
                "{key} {} may be read by users other than the service's (its group or everyone): whoever reads \
                 it can call as its role, or forge commit tokens; make it readable by its owner only (chmod 600)",
                path.display()
            ));
        }
    }
    let customer_key = match &config.backend {
        BackendConfig::S3(s3) => s3
            .options
            .get("aws_server_side_encryption")
            .is_some_and(|value| value.expose().eq_ignore_ascii_case("sse-c"))
            .then_some("aws_sse_customer_key_base64"),
        BackendConfig::Azure(azure) => {
            azure.options.contains_key("azure_storage_encryption_key").then_some("azure_storage_encryption_key")
        }
        _ => None,
    };
    if let Some(option) = customer_key
        && config.service.downloads.mode != DownloadMode::Proxy
    {
        warnings.push(format!(
            "files are stored with a customer-provided key ({option}), which no download URL can carry: a Resolve \
             that asks no download mode will be refused. Set download_mode = \"proxy\" in [anonymous_results_service]"
        ));
    }
    if let BackendConfig::Local(local) = &config.backend {
        let uid = crate::storage::permissions::effective_uid();
        warnings.extend(crate::storage::permissions::warnings(&local.path, &config.service.sinks, uid));
    }
    let shared = config.service.worker_credentials == crate::config::WorkerCredentials::Shared;
    if shared && config.service.worker_storage_options.is_none() && !matches!(config.backend, BackendConfig::Local(_)) {
        let secret = match auth.commit_secret_file {
            None => {
                " They can read the commit secret too (_control/commit-secret) and forge the commit token of any \
                 result: auth.commit_secret_file keeps it out of the store (the same file on every replica)."
            }
            Some(_) => "",
        };
        warnings.push(format!(
            "workers are handed the service's own storage credentials: the users' code a worker runs can read, \
             rewrite or delete every result and the service's records (_control/).{secret} Set \
             worker_storage_options in [anonymous_results_service] to credentials denied `_control/` (the README \
             shows the policies)"
        ));
    }
    warnings
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
    service.check_download_base(address)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AnonymousResultsServer<GrpcService>>().await;
    let mut routes = Routes::new(service.grpc()).add_service(health_service);
    if service.security.reflection {
        let (reflection_v1, reflection_v1alpha) = reflection()?;
        routes = routes.add_service(reflection_v1).add_service(reflection_v1alpha);
    }
    let connections = service.connections;
    let limits = ConnectionLimits {
        max_connections: connection_budget(connections.max_connections),
        handshake_timeout: connections.handshake_timeout,
    };
    info!(
        %address,
        storage = %service.describe_storage(),
        tls = service.tls.is_some(),
        authentication = service.auth.enabled(),
        max_connections = limits.max_connections,
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
        Some(address) => Some(metrics_exporter(address, service.metrics().clone()).await?),
        None => None,
    };
    let pruner = tokio::spawn(service.clone().run_pruner());
    let sweeper = tokio::spawn(service.clone().run_sweeper());
    let usage = tokio::spawn(service.clone().run_usage());
    let incoming = connections::accept(listener, service.tls.clone(), limits);
    let routes = WithDownloads::new(routes, service.downloads());
    let routes = RequestDeadline::new(service.request_timeout, service.metrics().clone()).layer(routes);
    let server = serving::serve(incoming, StreamTracking.layer(routes), &connections, draining);
    // The calls in flight, then the deletions their answers left running, within the grace period. A deletion
    // cut short is finished by the pruner later.
    let finished = async {
        server.await;
        service.results.deletions_done().await;
    };
    tokio::select! {
        () = finished => {}
        () = async { stopping.notified().await; tokio::time::sleep(service.shutdown_grace).await } => {
            let (deletions, _) = service.results.deletions_running();
            warn!(grace = ?service.shutdown_grace, deletions, "calls or deletions still in flight after the grace period; stopping anyway (the pruner finishes the deletions)");
        }
    }
    pruner.abort();
    sweeper.abort();
    usage.abort();
    if let Some(exporter) = exporter {
        exporter.abort();
    }
    info!("stopped");
    Ok(())
}

/// `configured`, or fewer connections if the process may not open that many descriptors: an eighth of them
/// (at least 256) stays for storage, files and the metrics listener.
fn connection_budget(configured: usize) -> usize {
    let Some(limit) = open_files_limit() else { return configured };
    let budget = limit.saturating_sub((limit / 8).max(256)).max(16);
    if budget < configured {
        warn!(
            max_connections = configured,
            open_files_limit = limit,
            "holding at most {budget} connections: the process may open {limit} descriptors (raise it with \
             `ulimit -n`, or LimitNOFILE= under systemd)"
        );
    }
    budget.min(configured)
}

/// The process's soft limit of open descriptors, from `/proc/self/limits` (Linux).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves the Prometheus metrics on `address` until the task is aborted.
async fn metrics_exporter(
    address: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let bound = |source| StartError::MetricsListen { address, source };
    let listener = TcpListener::bind(address).await.map_err(bound)?;
    let metrics_address = listener.local_addr().map_err(bound)?;
    info!(%metrics_address, "Prometheus metrics at http://{metrics_address}/metrics");
    Ok(tokio::spawn(crate::metrics::exporter::serve(listener, metrics)))
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
