//! The test harness: a real server on a pre-bound `127.0.0.1:0` listener over real storage, a client for it,
//! and a way to write result files into a sink as a worker would.

#![allow(dead_code)]

pub mod auth;
pub mod azurite;
pub mod delay;
pub mod fault;
pub mod gcs;
pub mod iam;
pub mod otlp;
pub mod process;
pub mod round_trips;
pub mod s3;
mod store;
pub mod strace;
pub mod wire;

pub use store::TestStore;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anonymous_results::{
    Config, Service,
    clock::{Clock, SystemClock},
    proto,
    storage::{Faults, Storage},
};
pub use anonymous_results_client::{Client, RetryPolicy};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// The store the future `$store` makes, or the end of the test when it makes none: outside CI, when the
/// store's server is not installed (said loudly by the store's constructor; under CI it fails instead).
#[macro_export]
macro_rules! store_or_skip {
    ($store:expr) => {
        match $store.await {
            Some(store) => store,
            None => return,
        }
    };
}

pub fn random_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos:x}-{count}", std::process::id())
}

pub fn local_config(root: &Path) -> Config {
    Config::from_toml(&format!(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n",
        root.display().to_string()
    ))
    .expect("a valid local configuration")
}

/// A running server and a client connected to it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: Client,
    pub service: Service,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), anonymous_results::StartError>>>,
}

impl TestServer {
    /// Starts a server for `config` on a listener bound to `127.0.0.1:0` before the server starts.
    pub async fn start(config: &Config) -> Self {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Starts a server whose time is `clock`.
    pub async fn start_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Self {
        Self::serving(Service::with_clock(config, clock).await.expect("service starts")).await
    }

    /// Starts a server for `config` whose storage fails as `faults` says, on `clock`.
    pub async fn start_unreliable(config: &Config, clock: Arc<dyn Clock>, faults: Arc<Faults>) -> Self {
        let metrics = Arc::new(anonymous_results::metrics::Metrics::new());
        let storage = Storage::from_config(config, metrics).await.expect("storage opens").unreliable(faults);
        Self::serving(Service::over(config, clock, storage).await.expect("service starts")).await
    }

    /// Serves `service` on a listener bound to `127.0.0.1:0` before the server starts.
    pub async fn serving(service: Service) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(anonymous_results::serve(service.clone(), listener, async move {
            let _ = stop.await;
        }));
        // What is stored is read before the first call, as a replica that has run a while has: calls then
        // count no storage request of that first read.
        service.usage_loaded().await;
        // No retries: these tests are of the service's answers, each call's first (tests/client.rs tests the
        // client's retries).
        let client =
            Client::builder(format!("http://{addr}")).retry(RetryPolicy::NEVER).connect().await.expect("connect");
        Self { addr, client, service, shutdown: Some(shutdown), task: Some(task) }
    }

    /// How many storage requests the server has made so far.
    pub fn storage_requests(&self) -> u64 {
        self.service.storage_requests()
    }

    /// A fresh channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).expect("uri").connect().await.expect("connect")
    }

    /// Stops the server and waits until it has stopped.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    async fn stop_in_place(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A test's server and storage together.
pub struct Fixture {
    pub store: TestStore,
    pub server: TestServer,
}

impl Fixture {
    pub async fn start(store: TestStore) -> Self {
        let server = TestServer::start(&store.config()).await;
        Self { store, server }
    }

    pub fn client(&self) -> Client {
        self.server.client.clone()
    }

    /// Allocates a result for `query_id` (parquet, no TTL, no labels).
    pub async fn allocate(&self, query_id: &str) -> proto::AllocateResponse {
        self.client()
            .allocate(proto::AllocateRequest { query_id: query_id.into(), ..Default::default() })
            .await
            .expect("allocate")
    }

    /// Writes `bytes` at `path` in the sink of `allocated`.
    pub async fn write(&self, allocated: &proto::AllocateResponse, path: &str, bytes: &[u8]) {
        self.store.write(allocated.sink.as_ref().expect("a sink"), path, bytes).await;
    }

    pub async fn commit(
        &self,
        allocated: &proto::AllocateResponse,
        files: Vec<proto::ResultFile>,
    ) -> Result<proto::ResultStatus, anonymous_results_client::Error> {
        self.client()
            .commit(proto::CommitRequest {
                result_id: allocated.result_id.clone(),
                commit_token: allocated.commit_token.clone(),
                files,
            })
            .await
            .map(|r| r.status.expect("a status"))
    }

    pub async fn resolve(&self, result_id: &str) -> Result<proto::ResolveResponse, anonymous_results_client::Error> {
        self.client()
            .resolve(proto::ResolveRequest { result_id: result_id.into(), url_ttl: None, ..Default::default() })
            .await
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// A declared result file.
pub fn file(path: &str, size: u64, rows: Option<u64>) -> proto::ResultFile {
    proto::ResultFile { path: path.into(), size_bytes: Some(size), row_count: rows }
}

/// Asserts that `result` failed with `code` and a message containing each of `needles` (a call through the
/// client, or a raw one).
#[track_caller]
pub fn assert_status<T: std::fmt::Debug, E: Into<tonic::Status>>(
    result: Result<T, E>,
    code: tonic::Code,
    needles: &[&str],
) {
    match result.map_err(Into::into) {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{}", status.message());
            for needle in needles {
                assert!(status.message().contains(needle), "`{needle}` missing from: {}", status.message());
            }
        }
    }
}

/// Asserts that a Resolve answered a released (or deleted) result: EXPIRED without locations while its
/// tombstone stays, NOT_FOUND after.
#[track_caller]
pub fn assert_released(answer: Result<proto::ResolveResponse, anonymous_results_client::Error>) {
    match answer {
        Ok(resolved) => {
            assert_eq!(state(resolved.status.as_ref().expect("a status")), proto::ResultState::Expired);
            assert!(resolved.locations.is_empty(), "a released result has locations: {resolved:?}");
        }
        Err(e) => assert_eq!(e.code(), tonic::Code::NotFound, "{e}"),
    }
}

pub fn state(status: &proto::ResultStatus) -> proto::ResultState {
    proto::ResultState::try_from(status.state).expect("a known state")
}

/// The folder where the test command installs outside tools (a Python virtualenv).
pub const TEST_ENV_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.test-env/venv/bin");

/// Where the test command unpacks Debian's `prometheus` package (Prometheus and promtool).
pub const TEST_ENV_PROMETHEUS_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.test-env/debs/prometheus/usr/bin");

/// An outside tool the test command installs (`grpcurl`, `prometheus`, ...): from the test virtualenv (or the
/// Debian packages it unpacks), else from `PATH`. When it is missing the test fails under `CI=true`;
/// elsewhere it is skipped with a loud message.
pub fn outside_tool(name: &str) -> Option<PathBuf> {
    let in_env =
        [TEST_ENV_BIN, TEST_ENV_PROMETHEUS_BIN].iter().map(|dir| Path::new(dir).join(name)).find(|p| p.is_file());
    let found = if in_env.is_some() {
        in_env
    } else {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()))
    };
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`{name}` is not installed, and CI=true forbids skipping: run the test command, scripts/test.sh"
        );
        eprintln!("SKIPPED: `{name}` is not installed; run scripts/test.sh to install it and run every test");
    }
    found
}

/// Everything this test process logs (at INFO and above) from the moment this is first called, as text:
/// for tests of what the operator's log says. One buffer for the whole process.
pub fn captured_logs() -> String {
    use std::sync::{Mutex, OnceLock};
    static LOGS: OnceLock<std::sync::Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = std::sync::Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let logs = logs.clone();
            move || Capture(logs.clone())
        };
        let _ = tracing_subscriber::fmt().with_writer(writer).with_ansi(false).try_init();
        logs
    });
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

/// Where the captured log lines go.
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
