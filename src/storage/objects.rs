//! The object-store backend, for every cloud: an [`ObjectStore`] and a [`Signer`] of `object_store` (the
//! Apache Arrow project's crate, which Polars uses too), and a [`StoreDescription`] of where results are.
//! Each cloud is a builder in a file of its own (`objects/s3.rs`, `objects/gcs.rs`, `objects/azure.rs`) that makes these three from the cluster's
//! configuration; everything else is here, the same for all.
//!
//! Create-only writes are `PutMode::Create` (`If-None-Match: *` on S3 and Azure, `ifGenerationMatch=0` on
//! GCS), so racing writers have one winner. Whether the store honours that is checked once at start-up (a
//! store that silently ignores it would let two commits both win): [`ObjectStorage::open`] refuses such a
//! store with an error that says so.
//!
//! Every HTTP request (retries included) is counted, for tests and metrics: [`ObjectStorage::requests`].

pub(super) mod azure;
mod client;
pub(super) mod gcs;
mod key_locks;
mod pins;
mod reach;
mod reads;
pub(super) mod s3;
mod sts;

use std::{
    collections::BTreeMap,
    io,
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
pub use client::install_tls_provider;
use futures::{StreamExt, TryStreamExt};
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    path::Path,
    signer::{SignedUrlOptions, Signer},
};

use super::{
    Backend, Cause, Download, EntryKind, FileRead, Listing, Sink, SinkEntry, StorageError, StorageLocation, StoredKey,
    presign::{BulkSigner, sign_in_bulk},
};
use crate::{
    config::{StorageClientConfig, URL_TTL_LIMIT},
    model::{ManifestFile, Pin, ResultId, Timestamp},
    secret::Secret,
};

/// What the service tells of one object store: where its sinks are, as workers name them, and what they
/// write with.
#[derive(Debug, Clone)]
pub struct StoreDescription {
    /// The bucket's (or container's) root as sink URIs begin: `s3://bucket`.
    pub root_uri: String,
    /// The bucket or container, for messages.
    pub bucket: String,
    /// The key prefix under it, without leading or trailing `/`; empty for its root.
    pub prefix: String,
    /// The `storage_options` a Polars worker writes with (credentials: handed only to workers).
    pub worker_options: BTreeMap<String, Secret>,
    /// Where the store is, for messages: its URL and endpoint, without credentials.
    pub location: StorageLocation,
    /// Configured values redacted from every error text.
    pub secrets: Arc<[Secret]>,
    /// The configuration key naming the bucket, for the message when it is missing.
    pub url_key: &'static str,
    /// What credentials sign download URLs, for the message when these cannot.
    pub signing_credentials: &'static str,
    /// The storage option of a customer-provided encryption key, when one is configured: a URL cannot carry
    /// it, so clients download through the service.
    pub customer_key: Option<&'static str>,
    /// The query parameter that names an object's version in a signed URL (`versionId` on S3, `generation` on
    /// GCS), where the service names versions in URLs.
    pub version_param: Option<&'static str>,
}

/// An object store holding results under a key prefix.
#[derive(Debug)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// Signs the download URLs: for the store, or for the endpoint as clients reach it.
    signer: Arc<dyn Signer>,
    /// Signs them in bulk, when it makes exactly the URLs `signer` makes.
    bulk_signer: Option<Arc<dyn BulkSigner>>,
    description: StoreDescription,
    timeout: Duration,
    requests: Arc<AtomicU64>,
    /// Whether the bucket keeps versions (found at start-up): then Commit pins each file's version, and reads
    /// and URLs name it.
    versions: bool,
    /// Where workers get credentials scoped to their sink (S3's STS), when they do.
    sts: Option<sts::Sts>,
    /// Create-only writes of one key are serialized within this process (writes of other keys never wait):
    /// some S3-compatible stores check `If-None-Match` and then write, not atomically, so writers racing in
    /// one process could otherwise both win. Across processes, exactly-once rests on the store's atomicity.
    write_locks: key_locks::KeyLocks,
}

/// The name the probes of create-only writes start with, under the control folder.
const PROBE_PREFIX: &str = "probe-";
/// The largest record decoded on the runtime's thread; a larger one is decoded on a blocking thread.
const DECODE_INLINE_BYTES: usize = 1 << 20;

/// A record's body as the store sent it, read in order and freed a chunk at a time as it is decoded.
#[derive(Default)]
struct ChunksReader {
    chunks: std::collections::VecDeque<Bytes>,
    len: usize,
}

impl ChunksReader {
    /// Adds `chunk`; false if that makes more than `max_bytes`.
    fn push(&mut self, chunk: Bytes, max_bytes: u64) -> bool {
        self.len = self.len.saturating_add(chunk.len());
        self.chunks.push_back(chunk);
        self.len as u64 <= max_bytes
    }
}

impl io::Read for ChunksReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(front) = self.chunks.front_mut() {
            if front.is_empty() {
                self.chunks.pop_front();
                continue;
            }
            let n = front.len().min(buf.len());
            buf[..n].copy_from_slice(&front[..n]);
            bytes::Buf::advance(front, n);
            return Ok(n);
        }
        Ok(0)
    }
}

impl ObjectStorage {
    /// The backend over `store`, whose requests `requests` counts, once it has shown that it honours
    /// create-only writes, and that `workers` (the store with the workers' own credentials, when
    /// `worker_storage_options` are configured) cannot reach the control folder.
    pub(crate) async fn open(
        store: Arc<dyn ObjectStore>,
        signer: Arc<dyn Signer>,
        bulk_signer: Option<Arc<dyn BulkSigner>>,
        workers: Option<Arc<dyn ObjectStore>>,
        description: StoreDescription,
        client: &StorageClientConfig,
        requests: Arc<AtomicU64>,
    ) -> Result<Self, StorageError> {
        tracing::debug!(bulk = bulk_signer.is_some(), "presigning");
        let mut storage = Self {
            store,
            signer,
            bulk_signer,
            description,
            timeout: client.timeout,
            requests,
            versions: false,
            sts: None,
            write_locks: key_locks::KeyLocks::default(),
        };
        storage.versions = storage.check_create_only_writes().await?;
        storage.check_signing().await?;
        if let Some(workers) = &workers {
            storage.check_workers_reach(workers).await?;
        }
        match storage.versions {
            true => tracing::info!(
                "{} keeps object versions: each committed file is pinned by its version, and download URLs name it",
                storage.description.location
            ),
            false => tracing::info!(
                "{} keeps no object versions (or its URLs cannot name one): committed files are pinned by entity \
                 tag, checked on every proxied download and before every redirect; a direct URL reads whatever is \
                 stored at its name",
                storage.description.location
            ),
        }
        Ok(storage)
    }

    /// How many HTTP requests this backend has sent, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Where the results are, for logs and errors (no credential).
    pub fn location(&self) -> &StorageLocation {
        &self.description.location
    }

    /// Writes a probe object twice, create-only: the second write must be refused. Then finds out whether the
    /// bucket keeps versions ([`ObjectStorage::keeps_versions`]), and deletes the probe.
    async fn check_create_only_writes(&self) -> Result<bool, StorageError> {
        const PROBE: &[u8] = b"create-only probe";
        let key = format!("{}/{PROBE_PREFIX}{}", crate::layout::CONTROL, random_hex());
        let first = match self.put_create_versioned(&key, PROBE.to_vec()).await {
            Ok(version) => version,
            Err(error) => {
                return Err(match error {
                    StorageError::NotFound { .. } => StorageError::Config {
                        message: format!(
                            "the bucket `{}` does not exist at {}, or these credentials cannot see it: create it, or fix \
                         {}",
                            self.description.bucket, self.description.location, self.description.url_key
                        ),
                    },
                    other => other,
                });
            }
        };
        let second = self.put_create(&key, PROBE.to_vec()).await;
        let versions =
            matches!(second, Err(StorageError::AlreadyExists { .. })) && self.keeps_versions(&key, first, PROBE).await;
        let _ = self.timed("deleting the probe", self.store.delete(&self.path(&key))).await;
        match second {
            Err(StorageError::AlreadyExists { .. }) => Ok(versions),
            Err(e) => Err(e),
            Ok(()) => Err(StorageError::NoCreateOnlyWrites { location: self.description.location.clone() }),
        }
    }

    /// Signs a probe URL with `object_store`'s signer when the service's own does not sign: credentials that
    /// cannot sign (an Azure SAS token, a GCS bearer token) are refused now, not at the first Resolve. With a
    /// customer-provided key no URL is signed (files are downloaded through the service).
    async fn check_signing(&self) -> Result<(), StorageError> {
        if self.bulk_signer.is_some() || self.description.customer_key.is_some() {
            return Ok(());
        }
        let probe = self.path(&format!("{}/signing-probe", crate::layout::CONTROL));
        let signing = self.signer.signed_url(reqwest::Method::GET, &probe, Duration::from_secs(60));
        match self.timed("signing a URL", signing).await {
            Ok(_) => Ok(()),
            Err(error) => Err(StorageError::Config {
                message: format!(
                    "download URLs cannot be signed for {} with the configured credentials ({error}): configure {}",
                    self.description.location, self.description.signing_credentials
                ),
            }),
        }
    }

    /// [`Backend::put_create`], answering the version the store gave the object, if it gave one.
    async fn put_create_versioned(&self, key: &str, bytes: Vec<u8>) -> Result<Option<String>, StorageError> {
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        // The wait for the lock counts against the timeout: behind a stalled store, writers queue here.
        let put = async {
            let _serialized = self.write_locks.lock(key).await;
            self.store.put_opts(&self.path(key), PutPayload::from(bytes), options).await
        };
        self.timed("writing a record", put).await.map(|written| written.version)
    }

    fn key_prefix(&self) -> String {
        match self.description.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.description.prefix),
        }
    }

    /// The object path of `key`, a `/`-separated path made by the service (see `layout.rs`), validated (a
    /// [`RelPath`] in a sink) or listed. Taken as it is, not percent-encoded: the object's key is exactly
    /// `key`, whatever `%`, `#`, `?` or non-ASCII letters it holds, as a worker wrote it (a presigned URL then
    /// encodes it once).
    fn path(&self, key: &str) -> Path {
        let full = format!("{}{key}", self.key_prefix());
        // Only a key with a control character or an empty, `.` or `..` segment fails to parse, and validation
        // keeps those out; should one come from a listing, it is encoded rather than refused.
        Path::parse(&full).unwrap_or_else(|_| Path::from_iter(full.split('/').filter(|part| !part.is_empty())))
    }

    /// Runs one storage operation within the configured timeout.
    async fn timed<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(result) => result.map_err(|e| self.error(operation, e)),
            Err(_) => Err(StorageError::Timeout { location: self.description.location.clone(), timeout: self.timeout }),
        }
    }

    /// The keys under `prefix` as far as `range` says (see [`Backend::list_keys`]), each with when it was
    /// last modified.
    async fn list_objects(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<(String, SystemTime)>, StorageError> {
        let folder = self.path(prefix);
        let strip = self.key_prefix();
        // Stores list in key order, a page at a time, from just after an offset: starting after `after` and
        // stopping at `until` fetches no page outside the range. A store that ignores the offset (Azurite
        // 3.35 ignores Azure's `startFrom`) lists from the start: what it lists up to `after` is skipped.
        let after = range.after.map(|after| self.path(after));
        let listing = match &after {
            Some(after) => self.store.list_with_offset(Some(&folder), after),
            None => self.store.list(Some(&folder)),
        };
        let keys = listing
            .try_filter(move |object| {
                futures::future::ready(after.as_ref().is_none_or(|after| object.location > *after))
            })
            .map_ok(move |object| {
                let key = object.location.as_ref().strip_prefix(strip.as_str()).unwrap_or(object.location.as_ref());
                (key.to_owned(), SystemTime::from(object.last_modified))
            })
            .try_take_while(|(key, _)| futures::future::ready(Ok(range.until.is_none_or(|until| key.as_str() < until))))
            .take(range.limit.unwrap_or(usize::MAX));
        self.timed("listing records", keys.try_collect()).await
    }

    /// The key (relative to the configured prefix, as the service names it) of an object's `path`.
    fn key_of(&self, path: String) -> String {
        match path.strip_prefix(&self.key_prefix()) {
            Some(key) => key.to_owned(),
            None => path,
        }
    }

    fn error(&self, operation: &'static str, error: object_store::Error) -> StorageError {
        match error {
            object_store::Error::NotFound { path, .. } => StorageError::NotFound { key: self.key_of(path) },
            object_store::Error::AlreadyExists { path, .. } => StorageError::AlreadyExists { key: self.key_of(path) },
            object_store::Error::Precondition { path, .. } => StorageError::AlreadyExists { key: self.key_of(path) },
            // A store told not to use conditional writes (`aws_conditional_put = "disabled"`).
            object_store::Error::NotImplemented { .. } => {
                StorageError::NoCreateOnlyWrites { location: self.description.location.clone() }
            }
            other => StorageError::Unavailable {
                location: self.description.location.clone(),
                operation,
                cause: Cause::new(other, self.description.secrets.clone()),
            },
        }
    }
}

impl Backend for ObjectStorage {
    fn sink(&self, id: &ResultId) -> Sink {
        Sink {
            uri: format!("{}/{}{id}/", self.description.root_uri, self.key_prefix()),
            storage_options: self.description.worker_options.clone(),
            credentials_expire_at: None,
        }
    }

    async fn worker_sink(&self, id: &ResultId, valid_for: Duration) -> Result<Sink, StorageError> {
        let sink = self.sink(id);
        let Some(sts) = &self.sts else { return Ok(sink) };
        let session = sts.assume(id, valid_for).await?;
        let expires_at = Some(session.expires_at);
        Ok(Sink {
            storage_options: s3::with_session(sink.storage_options, session),
            credentials_expire_at: expires_at,
            ..sink
        })
    }

    async fn prepare_sink(&self, _id: &ResultId) -> Result<(), StorageError> {
        Ok(())
    }

    async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.put_create_versioned(key, bytes).await.map(drop)
    }

    /// One GET: refused by the size the store answers before its body is read, if that is over `max_bytes`
    /// (the body is then never read), else read to its end (and refused if it turns out longer). A record
    /// over [`DECODE_INLINE_BYTES`] is decoded on a blocking thread.
    async fn read_record<T: Send + 'static>(
        &self,
        key: &str,
        max_bytes: u64,
        decode: impl FnOnce(&mut dyn io::Read) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        let path = self.path(key);
        let read = async {
            let got = self.store.get(&path).await?;
            if got.meta.size > max_bytes {
                return Ok(None);
            }
            let mut chunks = ChunksReader::default();
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                if !chunks.push(chunk?, max_bytes) {
                    return Ok(None);
                }
            }
            Ok(Some(chunks))
        };
        let Some(mut chunks) = self.timed("reading a record", read).await? else {
            let reason = format!("it is larger than {max_bytes} bytes, the most any release writes");
            return Err(StorageError::unreadable(key, reason));
        };
        if chunks.len <= DECODE_INLINE_BYTES {
            return Ok(decode(&mut chunks));
        }
        tokio::task::spawn_blocking(move || decode(&mut chunks)).await.map_err(|join| StorageError::Unavailable {
            location: self.description.location.clone(),
            operation: "decoding a record",
            cause: Cause::new(join.to_string(), Arc::new([])),
        })
    }

    async fn list_sink(&self, id: &ResultId, limit: usize) -> Result<Vec<SinkEntry>, StorageError> {
        let sink = self.path(id.as_str());
        let strip = format!("{sink}/");
        let listing = self.store.list(Some(&sink)).take(limit).try_collect();
        let objects: Vec<_> = self.timed("listing a sink", listing).await?;
        Ok(objects
            .into_iter()
            .filter_map(|object| {
                let path = object.location.as_ref().strip_prefix(&strip)?.to_owned();
                let pin = (object.e_tag.is_some() || object.version.is_some())
                    .then_some(crate::model::Pin::Object { e_tag: object.e_tag, version: object.version });
                Some(SinkEntry { path, size_bytes: object.size, kind: EntryKind::File, pin })
            })
            .collect())
    }

    async fn list_keys(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
        let keys = self.list_objects(prefix, range).await?;
        Ok(keys.into_iter().map(|(key, _)| key).collect())
    }

    /// The probes of create-only writes (`_control/probe-...`) are what a crash can leave behind here: they
    /// are listed as temporary.
    async fn list_stored(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<StoredKey>, StorageError> {
        let probes = format!("{}/{PROBE_PREFIX}", crate::layout::CONTROL);
        let keys = self.list_objects(prefix, range).await?;
        Ok(keys
            .into_iter()
            .map(|(key, modified)| StoredKey { temporary: key.starts_with(&probes), key, modified: Some(modified) })
            .collect())
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        let paths: Vec<object_store::Result<Path>> = keys.iter().map(|key| Ok(self.path(key))).collect();
        let paths = futures::stream::iter(paths).boxed();
        // One result per key, many keys a request: every one is looked at (stopping at the first error would
        // leave the later batches undeleted); a key already gone is fine, any other failure is reported.
        let deleted = self.store.delete_stream(paths).fold(Ok(()), |first, deleted| {
            futures::future::ready(match (first, deleted) {
                (Err(e), _) => Err(e),
                (Ok(()), Ok(_) | Err(object_store::Error::NotFound { .. })) => Ok(()),
                (Ok(()), Err(e)) => Err(e),
            })
        });
        self.timed("deleting", deleted).await
    }

    async fn delete_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        self.delete_result(id, Vec::new()).await
    }

    /// One listing of the sink, then its files and `keys` in one batch delete.
    async fn delete_result(&self, id: &ResultId, keys: Vec<String>) -> Result<(), StorageError> {
        self.delete_results(vec![(id.clone(), keys)]).await
    }

    /// Each sink listed ([`DELETE_LISTINGS`](super::DELETE_LISTINGS) at once), then all the files and keys in
    /// batch deletes.
    async fn delete_results(&self, results: Vec<(ResultId, Vec<String>)>) -> Result<(), StorageError> {
        let listings = futures::stream::iter(results)
            .map(|(id, mut keys)| async move {
                let entries = self.list_sink(&id, usize::MAX).await?;
                keys.extend(entries.into_iter().map(|entry| format!("{id}/{}", entry.path)));
                Ok::<_, StorageError>(keys)
            })
            .buffer_unordered(super::DELETE_LISTINGS);
        let listed: Vec<Result<Vec<String>, StorageError>> = listings.collect().await;
        let mut keys = Vec::new();
        let mut failed = None;
        for listing in listed {
            match listing {
                Ok(listed) => keys.extend(listed),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        // What could be listed goes; a failed listing fails the whole, for the caller to try again.
        self.delete_keys(keys).await?;
        failed.map_or(Ok(()), Err)
    }

    async fn downloads(
        &self,
        id: &ResultId,
        files: &[&ManifestFile],
        url_ttl: Duration,
    ) -> Result<Vec<Download>, StorageError> {
        // A URL is valid from its signing time, in whole seconds, for the time it says: signing for one second
        // more makes it valid at least `url_ttl` from now. `expires_at` is a lower bound.
        let signed_from = Timestamp::clamped(SystemTime::now()).whole_seconds();
        let signed_ttl = url_ttl.saturating_add(Duration::from_secs(1)).min(URL_TTL_LIMIT);
        let expires_at = signed_from.saturating_add(signed_ttl);
        let objects: Vec<(Path, Option<String>)> = files
            .iter()
            .map(|file| {
                let version = match &file.pin {
                    Some(Pin::Object { version, .. }) if self.names_version(file) => version.clone(),
                    _ => None,
                };
                (self.file_path(id, file.path.as_str()), version)
            })
            .collect();
        let urls: Vec<String> = match (&self.bulk_signer, self.description.version_param) {
            (Some(bulk), _) => sign_in_bulk(bulk, objects, signed_from.system_time(), signed_ttl).await,
            (None, param) => {
                let mut urls = Vec::with_capacity(objects.len());
                for (path, version) in &objects {
                    let query = version.as_ref().zip(param).map(|(version, param)| (param, version.as_str()));
                    let options = SignedUrlOptions::default().with_query(query);
                    let signing = self.signer.signed_url_opts(reqwest::Method::GET, path, signed_ttl, &options);
                    urls.push(String::from(self.timed("signing URLs", signing).await?));
                }
                urls
            }
        };
        Ok(urls.into_iter().map(|url| Download { url, expires_at: Some(expires_at) }).collect())
    }

    fn url_downloads(&self) -> super::UrlDownloads {
        match self.description.customer_key {
            Some(option) => super::UrlDownloads::NeedsKey(option),
            None => super::UrlDownloads::Presigned,
        }
    }

    async fn read_range(
        &self,
        id: &ResultId,
        file: &ManifestFile,
        range: Range<u64>,
    ) -> Result<FileRead, StorageError> {
        self.read_file(id, file, range).await
    }

    async fn complete_pins(&self, id: &ResultId, entries: Vec<SinkEntry>) -> Result<Vec<SinkEntry>, StorageError> {
        self.pin_entries(id, entries).await
    }

    async fn check_file(&self, id: &ResultId, file: &ManifestFile) -> Result<(), StorageError> {
        self.check_object(id, file).await
    }

    fn names_version(&self, file: &ManifestFile) -> bool {
        self.versions && matches!(&file.pin, Some(Pin::Object { version: Some(_), .. }))
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    crate::hex::encode(&bytes)
}
