//! The test harness: a real server on a pre-bound `127.0.0.1:0` listener over real storage, a client for it,
//! and a way to write result files into a sink as a worker would.

#![allow(dead_code)]

pub mod auth;
pub mod fault;
pub mod process;
pub mod s3;
pub mod wire;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anonymous_results::{
    Config, Service,
    clock::{Clock, SystemClock},
    proto::{self, anonymous_results_client::AnonymousResultsClient},
    storage::{Faults, Storage},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub type Client = AnonymousResultsClient<Channel>;

/// The storage a test runs against, and how a worker writes into it.
pub enum TestStore {
    /// A temporary folder: the shared-filesystem backend.
    Local { dir: tempfile::TempDir },
    /// A fresh bucket on an S3-compatible server, results under a key prefix.
    S3 { server: s3::S3Server, bucket: String, prefix: String, endpoint: String },
}

impl TestStore {
    pub fn local() -> Self {
        Self::Local { dir: tempfile::tempdir().expect("temporary folder") }
    }

    /// A fresh bucket on moto. Outside CI, when moto is not installed, the test is skipped (`None`).
    pub async fn moto() -> Option<Self> {
        Some(Self::on(s3::S3Server::moto()?).await)
    }

    /// A fresh bucket on a new s3s-fs server. Outside CI, when s3s-fs is not installed, the test is skipped.
    pub async fn s3s_fs() -> Option<Self> {
        Some(Self::on(s3::S3Server::s3s_fs()?).await)
    }

    async fn on(server: s3::S3Server) -> Self {
        let bucket = format!("results-{}", random_suffix());
        server.create_bucket(&bucket).await;
        let endpoint = server.endpoint.clone();
        Self::S3 { server, bucket, prefix: "polars/anonymous-results".into(), endpoint }
    }

    /// Whether two service processes racing to create one key have exactly one winner. s3s-fs 0.14.1 checks
    /// `If-None-Match: *` and then writes, not atomically, and so does moto 5.2.5 (its threaded server can
    /// run two checks before either write: seen in a run of the racing-pruners test): the
    /// service serializes such writes within one process, but replicas racing on them may both succeed (the
    /// README says exactly-once across replicas rests on the store). Every store in production use (AWS S3,
    /// MinIO, ...) is atomic here.
    pub fn create_only_is_atomic_across_processes(&self) -> bool {
        !matches!(self, Self::S3 { .. })
    }

    /// Makes the service (and its workers) reach the S3 server at `endpoint`, a link in front of it.
    pub fn reached_at(mut self, new_endpoint: &str) -> Self {
        if let Self::S3 { endpoint, .. } = &mut self {
            *endpoint = new_endpoint.to_owned();
        }
        self
    }

    /// The configuration of a service over this store.
    pub fn config(&self) -> Config {
        Config::from_toml(&self.config_toml("")).expect("a valid configuration")
    }

    /// The configuration file of a service over this store, with `service` as its
    /// `[anonymous_results_service]` section.
    pub fn config_toml(&self, service: &str) -> String {
        self.config_toml_with("", service)
    }

    /// The configuration file with `location` added to the location table (retention keys, e.g.
    /// `retention = "1h"`) and `service` as its `[anonymous_results_service]` section.
    pub fn config_toml_with(&self, location: &str, service: &str) -> String {
        let location: String = location.lines().map(|line| format!("anonymous_results.{line}\n")).collect();
        let scheduler = match self {
            Self::Local { dir } => format!(
                "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n",
                dir.path().join("results").display().to_string()
            ),
            Self::S3 { bucket, prefix, endpoint, .. } => format!(
                "[scheduler]\nanonymous_results.s3.url = \"s3://{bucket}/{prefix}\"\n\
                 anonymous_results.s3.aws_access_key_id = \"{}\"\n\
                 anonymous_results.s3.aws_secret_access_key = \"{}\"\n\
                 anonymous_results.s3.aws_region = \"us-east-1\"\n\
                 anonymous_results.s3.aws_endpoint_url = \"{}\"\n",
                s3::ACCESS_KEY,
                s3::SECRET_KEY,
                endpoint
            ),
        };
        format!("{scheduler}{location}\n[anonymous_results_service]\n{service}\n")
    }

    /// Writes `bytes` at `path` under the sink, as a worker would: with the sink's storage options.
    pub async fn write(&self, sink: &proto::Sink, path: &str, bytes: &[u8]) {
        match self {
            Self::Local { .. } => {
                let file = PathBuf::from(format!("{}{path}", sink.uri));
                std::fs::create_dir_all(file.parent().expect("a parent")).expect("create folders");
                std::fs::write(&file, bytes).expect("write result file");
            }
            Self::S3 { .. } => {
                use object_store::ObjectStoreExt;
                let (store, key) = worker_store(sink, path);
                store.put(&key, bytes.to_vec().into()).await.expect("a worker's write");
            }
        }
    }

    /// Writes `bytes` at `key` under the store's root (a record, or a file of a sink), bypassing the service:
    /// as another release, or a faulty writer, would have.
    pub async fn plant(&self, key: &str, bytes: &[u8]) {
        match self {
            Self::Local { dir } => {
                let file = dir.path().join("results").join(key);
                std::fs::create_dir_all(file.parent().expect("a parent")).expect("create folders");
                std::fs::write(&file, bytes).expect("write a record");
            }
            Self::S3 { bucket, prefix, endpoint, .. } => {
                use object_store::ObjectStoreExt;
                let store = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_endpoint(endpoint)
                    .with_allow_http(true)
                    .with_region("us-east-1")
                    .with_access_key_id(s3::ACCESS_KEY)
                    .with_secret_access_key(s3::SECRET_KEY)
                    .build()
                    .expect("a store");
                let path = object_store::path::Path::parse(format!("{prefix}/{key}")).expect("a key");
                store.put(&path, bytes.to_vec().into()).await.expect("put a record");
            }
        }
    }

    /// The paths of the files in a sink, sorted.
    pub async fn sink_files(&self, sink: &proto::Sink) -> Vec<String> {
        match self {
            Self::Local { .. } => {
                let mut files = Vec::new();
                let root = PathBuf::from(&sink.uri);
                let mut pending = vec![root.clone()];
                while let Some(dir) = pending.pop() {
                    let Ok(listing) = std::fs::read_dir(&dir) else { continue };
                    for entry in listing.map(|e| e.expect("an entry")) {
                        match entry.file_type().expect("a type").is_dir() {
                            true => pending.push(entry.path()),
                            false => files.push(entry.path().strip_prefix(&root).unwrap().display().to_string()),
                        }
                    }
                }
                files.sort();
                files
            }
            Self::S3 { .. } => {
                use futures::TryStreamExt;
                use object_store::ObjectStore;
                let (store, prefix) = worker_store(sink, "");
                let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list a sink");
                let mut files: Vec<String> = objects
                    .into_iter()
                    .map(|o| o.location.as_ref().trim_start_matches(&format!("{prefix}/")).to_owned())
                    .collect();
                files.sort();
                files
            }
        }
    }

    /// The bytes at a location Resolve answered: a local path read from disk, a URL fetched with a plain GET.
    pub async fn fetch(&self, url: &str) -> Vec<u8> {
        match self {
            Self::Local { .. } => std::fs::read(url).expect("read a resolved path"),
            Self::S3 { .. } => {
                let response = reqwest::get(url).await.expect("GET a presigned URL");
                assert!(response.status().is_success(), "GET {url}: {}", response.status());
                response.bytes().await.expect("the body").to_vec()
            }
        }
    }

    /// The local root folder, for tests that look at the filesystem.
    pub fn local_root(&self) -> Option<PathBuf> {
        match self {
            Self::Local { dir } => Some(dir.path().join("results")),
            Self::S3 { .. } => None,
        }
    }
}

/// An object store built from a sink's `storage_options` alone, as a worker builds it, and the key of `path`.
fn worker_store(sink: &proto::Sink, path: &str) -> (object_store::aws::AmazonS3, object_store::path::Path) {
    use std::str::FromStr;
    let rest = sink.uri.strip_prefix("s3://").expect("an s3:// sink");
    let (bucket, prefix) = rest.split_once('/').expect("a bucket and a prefix");
    // Nothing but the options: they must be enough (aws_allow_http included, for the test servers' http://).
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
    for (key, value) in &sink.storage_options {
        builder = builder.with_config(object_store::aws::AmazonS3ConfigKey::from_str(key).expect("an AWS key"), value);
    }
    let key = object_store::path::Path::parse(format!("{prefix}{path}")).expect("a key");
    (builder.build().expect("a worker's store"), key)
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
        let client = Client::connect(format!("http://{addr}")).await.expect("connect");
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
            .into_inner()
    }

    /// Writes `bytes` at `path` in the sink of `allocated`.
    pub async fn write(&self, allocated: &proto::AllocateResponse, path: &str, bytes: &[u8]) {
        self.store.write(allocated.sink.as_ref().expect("a sink"), path, bytes).await;
    }

    pub async fn commit(
        &self,
        allocated: &proto::AllocateResponse,
        files: Vec<proto::ResultFile>,
    ) -> Result<proto::ResultStatus, tonic::Status> {
        self.client()
            .commit(proto::CommitRequest {
                result_id: allocated.result_id.clone(),
                commit_token: allocated.commit_token.clone(),
                files,
            })
            .await
            .map(|r| r.into_inner().status.expect("a status"))
    }

    pub async fn resolve(&self, result_id: &str) -> Result<proto::ResolveResponse, tonic::Status> {
        self.client()
            .resolve(proto::ResolveRequest { result_id: result_id.into(), url_ttl: None, ..Default::default() })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// A declared result file.
pub fn file(path: &str, size: u64, rows: Option<u64>) -> proto::ResultFile {
    proto::ResultFile { path: path.into(), size_bytes: Some(size), row_count: rows }
}

/// Asserts that `result` failed with `code` and a message containing each of `needles`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code, needles: &[&str]) {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{}", status.message());
            for needle in needles {
                assert!(status.message().contains(needle), "`{needle}` missing from: {}", status.message());
            }
        }
    }
}

pub fn state(status: &proto::ResultStatus) -> proto::ResultState {
    proto::ResultState::try_from(status.state).expect("a known state")
}

/// The folder where the test command installs outside tools (a Python virtualenv).
pub const TEST_ENV_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.test-env/venv/bin");

/// An outside tool the test command installs (`grpcurl`, ...): from the test virtualenv, else from `PATH`.
/// When it is missing the test fails under `CI=true`; elsewhere it is skipped with a loud message.
pub fn outside_tool(name: &str) -> Option<PathBuf> {
    let in_env = Path::new(TEST_ENV_BIN).join(name);
    let found = if in_env.is_file() {
        Some(in_env)
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
