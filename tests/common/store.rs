//! The storage a test runs against, and what a worker (or another release) does to it: a temporary folder,
//! or a fresh bucket or container on a real store server on loopback (S3: moto, s3s-fs; Azure: Azurite;
//! GCS: the GCS test server).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use anonymous_results::{Config, proto};
use object_store::ObjectStore;

use super::{azurite, gcs, random_suffix, s3};

/// The storage a test runs against, and how a worker writes into it.
pub enum TestStore {
    /// A temporary folder: the shared-filesystem backend.
    Local { dir: tempfile::TempDir },
    /// A fresh bucket on an S3-compatible server, results under a key prefix.
    S3 { server: s3::S3Server, bucket: String, prefix: String, endpoint: String },
    /// A fresh container on Azurite, configured as `az://container/prefix`; `endpoint` is the Blob
    /// service's (`http://127.0.0.1:PORT/devstoreaccount1`).
    Azure { server: azurite::Azurite, container: String, prefix: String, endpoint: String },
    /// A fresh bucket on the GCS test server, configured as `gs://bucket/prefix`; `endpoint` is the
    /// `google_base_url`.
    Gcs { server: gcs::GcsServer, bucket: String, prefix: String, endpoint: String },
}

/// The key prefix results are kept under in every bucket or container.
const PREFIX: &str = "polars/anonymous-results";

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

    /// A fresh bucket on `server`.
    pub async fn on(server: s3::S3Server) -> Self {
        let bucket = format!("results-{}", random_suffix());
        server.create_bucket(&bucket).await;
        let endpoint = server.endpoint.clone();
        Self::S3 { server, bucket, prefix: PREFIX.into(), endpoint }
    }

    /// A fresh container on the shared Azurite. Outside CI, when Azurite is not installed, skipped.
    pub async fn azurite() -> Option<Self> {
        Some(Self::on_azurite(azurite::Azurite::shared()?).await)
    }

    /// A fresh container on `server`.
    pub async fn on_azurite(server: azurite::Azurite) -> Self {
        // Container names: 3 to 63 lowercase letters, digits and single hyphens.
        let container = format!("results-{}", random_suffix().replace('-', "x"));
        server.create_container(&container).await;
        let endpoint = server.blob_endpoint();
        Self::Azure { server, container, prefix: PREFIX.into(), endpoint }
    }

    /// A fresh bucket on the shared GCS test server. Outside CI, when Python is missing, skipped.
    pub async fn gcs() -> Option<Self> {
        Some(Self::on_gcs(gcs::GcsServer::shared()?).await)
    }

    /// A fresh bucket on `server`.
    pub async fn on_gcs(server: gcs::GcsServer) -> Self {
        Self::on_gcs_with(server, false).await
    }

    /// A fresh bucket on `server`, keeping noncurrent versions if `versioning`.
    pub async fn on_gcs_with(server: gcs::GcsServer, versioning: bool) -> Self {
        let bucket = format!("results-{}", random_suffix());
        server.create_bucket_with(&bucket, versioning).await;
        let endpoint = server.endpoint.clone();
        Self::Gcs { server, bucket, prefix: PREFIX.into(), endpoint }
    }

    /// Whether two service processes racing to create one key have exactly one winner. s3s-fs 0.14.1 checks
    /// `If-None-Match: *` and then writes, not atomically, and so does moto 5.2.5 (its threaded server can
    /// run two checks before either write: seen in a run of the racing-pruners test): the
    /// service serializes such writes within one process, but replicas racing on them may both succeed (the
    /// README says exactly-once across replicas rests on the store). Every store in production use (AWS S3,
    /// MinIO, ...) is atomic here, and so are Azurite and the GCS test server.
    pub fn create_only_is_atomic_across_processes(&self) -> bool {
        !matches!(self, Self::S3 { .. })
    }

    /// Whether the store's listings carry each object's entity tag (s3s-fs's do not).
    pub fn lists_entity_tags(&self) -> bool {
        !matches!(self, Self::S3 { server, .. } if server.kind == s3::S3Kind::S3sFs)
    }

    /// Whether the store's server checks the signature and expiry of a presigned URL (moto checks neither).
    pub fn checks_signed_urls(&self) -> bool {
        !matches!(self, Self::S3 { server, .. } if server.kind == s3::S3Kind::Moto)
    }

    /// Makes the service (and its workers) reach the store's server at `endpoint`, a link in front of it.
    pub fn reached_at(mut self, new_endpoint: &str) -> Self {
        match &mut self {
            Self::Local { .. } => {}
            Self::S3 { endpoint, .. } | Self::Gcs { endpoint, .. } => new_endpoint.clone_into(endpoint),
            Self::Azure { endpoint, .. } => *endpoint = format!("{new_endpoint}/{}", azurite::ACCOUNT),
        }
        self
    }

    /// The server's own address (`http://127.0.0.1:PORT`), for a link in front of it.
    pub fn server_endpoint(&self) -> Option<String> {
        match self {
            Self::Local { .. } => None,
            Self::S3 { server, .. } => Some(server.endpoint.clone()),
            Self::Azure { server, .. } => Some(server.endpoint.clone()),
            Self::Gcs { server, .. } => Some(server.endpoint.clone()),
        }
    }

    /// The endpoint the service and workers are configured with (S3's `aws_endpoint_url`, Azure's
    /// `azure_endpoint`, GCS's `google_base_url`).
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Self::Local { .. } => None,
            Self::S3 { endpoint, .. } | Self::Azure { endpoint, .. } | Self::Gcs { endpoint, .. } => Some(endpoint),
        }
    }

    /// Stops the store's server, as a crash would (only a server this test started).
    pub fn stop_server(&mut self) {
        match self {
            Self::Local { .. } => panic!("a local store has no server"),
            Self::S3 { server, .. } => server.stop(),
            Self::Azure { server, .. } => server.stop(),
            Self::Gcs { server, .. } => server.stop(),
        }
    }

    /// Starts the stopped server again, on its port, over its data.
    pub fn restart_server(&mut self) {
        match self {
            Self::Local { .. } => panic!("a local store has no server"),
            Self::S3 { server, .. } => server.restart(),
            Self::Azure { server, .. } => server.restart(),
            Self::Gcs { server, .. } => server.restart(),
        }
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
            Self::S3 { server, bucket, prefix, endpoint } => format!(
                "[scheduler]\nanonymous_results.s3.url = \"s3://{bucket}/{prefix}\"\n\
                 anonymous_results.s3.aws_access_key_id = \"{}\"\n\
                 anonymous_results.s3.aws_secret_access_key = \"{}\"\n\
                 anonymous_results.s3.aws_region = \"us-east-1\"\n\
                 anonymous_results.s3.aws_endpoint_url = \"{}\"\n",
                server.credentials.access_key_id, server.credentials.secret_access_key, endpoint
            ),
            Self::Azure { container, prefix, endpoint, .. } => format!(
                "[scheduler]\nanonymous_results.abs.url = \"az://{container}/{prefix}\"\n\
                 anonymous_results.abs.azure_storage_account_name = \"{}\"\n\
                 anonymous_results.abs.azure_storage_account_key = \"{}\"\n\
                 anonymous_results.abs.azure_endpoint = \"{endpoint}\"\n",
                azurite::ACCOUNT,
                azurite::KEY,
            ),
            Self::Gcs { bucket, prefix, endpoint, .. } => format!(
                "[scheduler]\nanonymous_results.gcs.url = \"gs://{bucket}/{prefix}\"\n\
                 anonymous_results.gcs.google_service_account_path = {:?}\n\
                 anonymous_results.gcs.google_base_url = \"{endpoint}\"\n",
                gcs::SERVICE_ACCOUNT,
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
            _ => {
                use object_store::ObjectStoreExt;
                let (store, key) = worker_store(sink, path);
                store.put(&key, bytes.to_vec().into()).await.expect("a worker's write");
            }
        }
    }

    /// Writes `bytes` at `key` under the store's root (a record, or a file of a sink), bypassing the service:
    /// as another release, or a faulty writer, would have.
    pub async fn plant(&self, key: &str, bytes: &[u8]) {
        use object_store::ObjectStoreExt;
        if let Self::Local { dir } = self {
            let file = dir.path().join("results").join(key);
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("create folders");
            std::fs::write(&file, bytes).expect("write a record");
            return;
        }
        let (store, prefix) = self.own_store().expect("an object store");
        let path = object_store::path::Path::parse(format!("{prefix}/{key}")).expect("a key");
        store.put(&path, bytes.to_vec().into()).await.expect("put a record");
    }

    /// Deletes the object (or file) at `key` under the store's root, bypassing the service.
    pub async fn delete(&self, key: &str) {
        use object_store::ObjectStoreExt;
        if let Self::Local { dir } = self {
            std::fs::remove_file(dir.path().join("results").join(key)).expect("delete a file");
            return;
        }
        let (store, prefix) = self.own_store().expect("an object store");
        let path = object_store::path::Path::parse(format!("{prefix}/{key}")).expect("a key");
        store.delete(&path).await.expect("delete an object");
    }

    /// How many results are stored: the sink folders under the root (every name but `_control`), counted from
    /// a listing of the store, not from the service.
    pub async fn stored_results(&self) -> usize {
        if let Some(root) = self.local_root() {
            let listing = std::fs::read_dir(root).expect("list the root");
            return listing.filter(|entry| entry.as_ref().is_ok_and(|e| e.file_name() != "_control")).count();
        }
        let (store, prefix) = self.own_store().expect("an object store");
        let root = object_store::path::Path::parse(prefix).expect("a prefix");
        let listing = store.list_with_delimiter(Some(&root)).await.expect("list the root");
        listing.common_prefixes.iter().filter(|folder| folder.filename() != Some("_control")).count()
    }

    /// The keys under `folder` (relative to the root, ending in `/`) of an object store, sorted, from a
    /// listing with the service's own credentials.
    pub async fn keys_under(&self, folder: &str) -> Vec<String> {
        use futures::TryStreamExt;
        if let Some(root) = self.local_root() {
            let mut keys = Vec::new();
            let mut folders = vec![root.join(folder)];
            while let Some(dir) = folders.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for entry in entries.map(|entry| entry.expect("an entry")) {
                    match entry.file_type().expect("a type").is_dir() {
                        true => folders.push(entry.path()),
                        false => {
                            keys.push(entry.path().strip_prefix(&root).expect("under the root").display().to_string())
                        }
                    }
                }
            }
            keys.sort();
            return keys;
        }
        let (store, prefix) = self.own_store().expect("an object store");
        let folder = object_store::path::Path::parse(format!("{prefix}/{folder}")).expect("a folder");
        let listed: Vec<_> = store.list(Some(&folder)).try_collect().await.expect("a listing");
        let mut keys: Vec<String> = listed.into_iter().map(|object| object.location.to_string()).collect();
        keys.sort();
        keys
    }

    /// A client of the object store under test with the service's own credentials, and the prefix results
    /// are kept under; `None` for the local backend.
    fn own_store(&self) -> Option<(Box<dyn ObjectStore>, &str)> {
        Some(match self {
            Self::Local { .. } => return None,
            Self::S3 { server, bucket, prefix, endpoint } => {
                let store = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_endpoint(endpoint)
                    .with_allow_http(true)
                    .with_region("us-east-1")
                    .with_access_key_id(&server.credentials.access_key_id)
                    .with_secret_access_key(&server.credentials.secret_access_key)
                    .build()
                    .expect("a store");
                (Box::new(store) as Box<dyn ObjectStore>, prefix.as_str())
            }
            Self::Azure { container, prefix, endpoint, .. } => {
                let store = object_store::azure::MicrosoftAzureBuilder::new()
                    .with_account(azurite::ACCOUNT)
                    .with_access_key(azurite::KEY)
                    .with_container_name(container)
                    .with_endpoint(endpoint.clone())
                    .with_allow_http(true)
                    .build()
                    .expect("a store");
                (Box::new(store) as Box<dyn ObjectStore>, prefix.as_str())
            }
            Self::Gcs { bucket, prefix, endpoint, .. } => {
                let store = object_store::gcp::GoogleCloudStorageBuilder::new()
                    .with_bucket_name(bucket)
                    .with_service_account_path(gcs::SERVICE_ACCOUNT)
                    .with_base_url(endpoint)
                    .build()
                    .expect("a store");
                (Box::new(store) as Box<dyn ObjectStore>, prefix.as_str())
            }
        })
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
            _ => {
                use futures::TryStreamExt;
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
            _ => {
                let response = reqwest::get(url).await.expect("GET a signed URL");
                let status = response.status();
                let body = response.bytes().await.expect("the body").to_vec();
                assert!(status.is_success(), "GET {url}: {status}: {}", String::from_utf8_lossy(&body));
                body
            }
        }
    }

    /// The local root folder, for tests that look at the filesystem.
    pub fn local_root(&self) -> Option<PathBuf> {
        match self {
            Self::Local { dir } => Some(dir.path().join("results")),
            _ => None,
        }
    }
}

/// An object store built from a sink's URI and `storage_options` alone, as a worker (Polars) builds it, and
/// the key of `path` in the sink. One store per sink and options, kept for the process: building a client
/// costs tens of milliseconds of CPU (its TLS roots), which a test writing thousands of files would pay each
/// time.
fn worker_store(sink: &proto::Sink, path: &str) -> (Arc<dyn ObjectStore>, object_store::path::Path) {
    /// A worker's store and the sink's prefix in it, by sink and options.
    type Stores = HashMap<String, (Arc<dyn ObjectStore>, String)>;
    static STORES: OnceLock<Mutex<Stores>> = OnceLock::new();
    let id = format!("{}{:?}", sink.uri, sink.storage_options.iter().collect::<std::collections::BTreeMap<_, _>>());
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let (store, prefix) = stores
        .entry(id)
        .or_insert_with(|| {
            // Polars reads `gcs://` as `gs://`; object_store's URL parser knows only the latter.
            let uri = sink.uri.strip_prefix("gcs://").map_or(sink.uri.clone(), |rest| format!("gs://{rest}"));
            let url = url::Url::parse(&uri).expect("a sink URL");
            // Nothing but the options: they must be enough (`*_allow_http` included, for the test servers'
            // http://).
            let (store, prefix) =
                object_store::parse_url_opts(&url, sink.storage_options.iter()).expect("a worker's store");
            (Arc::from(store), prefix.to_string())
        })
        .clone();
    let key = object_store::path::Path::parse(format!("{prefix}/{path}").trim_end_matches('/')).expect("a key");
    (store, key)
}
