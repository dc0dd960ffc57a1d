//! The domain core: allocate, commit and resolve results over a [`Backend`], with every durable state in
//! storage (see `layout.rs`), so that any number of service processes over one storage act as one.
//!
//! State machine: a result is ALLOCATED once its allocation record exists and COMMITTED once its manifest
//! exists. The manifest is written create-only, so of racing commits exactly one wins, and a crash leaves
//! either a committed result or an allocated one, never a half-committed one.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::{Serialize, de::DeserializeOwned};

use crate::{
    cache::ManifestCache,
    config::{ServiceConfig, UrlConfig},
    layout,
    model::{
        AllocateSpec, Allocation, CommitSpec, FileLocation, InvalidArgument, Manifest, ManifestFile, RelPath,
        ResolveSpec, ResultId, ResultInfo, ResultStatus,
    },
    secret::{Secret, constant_time_eq},
    storage::{Backend, EntryKind, Sink, SinkEntry, StorageError},
};

/// How long a worker has to commit after Allocate.
pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Why a call failed. `grpc.rs` maps each variant to its gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidArgument(#[from] InvalidArgument),
    #[error("no result `{result_id}`: it was never allocated here, or it is gone")]
    NotFound { result_id: ResultId },
    #[error("the commit_token does not belong to result `{result_id}`")]
    CommitTokenMismatch { result_id: ResultId },
    #[error(
        "query `{query_id}` was already allocated with a different {field}; Allocate is idempotent only for identical requests"
    )]
    QueryConflict { query_id: String, field: &'static str },
    #[error("`{path}` is not in the sink of result `{result_id}`: write it before committing")]
    FileMissing { result_id: ResultId, path: RelPath },
    #[error("`{path}` in the sink of result `{result_id}` has {actual} bytes, but the commit declares {declared}")]
    SizeMismatch { result_id: ResultId, path: RelPath, declared: u64, actual: u64 },
    #[error(
        "`{path}` in the sink of result `{result_id}` is not a regular file (a result may hold only files, no symbolic links)"
    )]
    NotRegularFile { result_id: ResultId, path: String },
    #[error("the sink of result `{result_id}` holds `{path}`, whose name a result may not use: {reason}")]
    InvalidFileName { result_id: ResultId, path: String, reason: String },
    #[error("the sink of result `{result_id}` is empty: write the result files before committing")]
    EmptySink { result_id: ResultId },
    #[error("result `{result_id}` is already committed with other files; a commit cannot be changed")]
    CommitConflict { result_id: ResultId },
    #[error("the record `{key}` is unreadable: {message}")]
    CorruptRecord { key: String, message: String },
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// What Allocate answers.
#[derive(Debug)]
pub struct Allocated {
    pub allocation: Allocation,
    pub sink: Sink,
    pub status: ResultStatus,
}

/// What Resolve answers: the status and, once committed, one location per file.
#[derive(Debug)]
pub struct Resolved {
    pub status: ResultStatus,
    pub locations: Vec<FileLocation>,
}

/// The results of one storage root.
#[derive(Debug)]
pub struct Results<B> {
    storage: B,
    commit_timeout: Duration,
    urls: UrlConfig,
    manifests: ManifestCache,
}

impl<B: Backend> Results<B> {
    pub fn new(storage: B, config: &ServiceConfig) -> Self {
        Self {
            storage,
            commit_timeout: DEFAULT_COMMIT_TIMEOUT,
            urls: config.urls.clone(),
            manifests: ManifestCache::new(config.manifest_cache_files),
        }
    }

    pub fn storage(&self) -> &B {
        &self.storage
    }

    /// Reserves a sink for `spec.query_id`, or answers the allocation already made for it.
    ///
    /// Two create-only writes: the query record (the allocation keyed by query id) decides which of racing
    /// Allocates wins; the allocation record (keyed by result id) follows. A crash between the two is repaired
    /// by the next Allocate of the same query, the only caller who could know the id.
    pub async fn allocate(&self, spec: AllocateSpec) -> Result<Allocated, Error> {
        let result_id = ResultId::generate().map_err(Error::Random)?;
        let created_at = SystemTime::now();
        let allocation = Allocation {
            info: ResultInfo {
                result_id,
                query_id: spec.query_id.clone(),
                file_type: spec.file_type,
                created_at,
                ttl: spec.ttl,
                labels: spec.labels.clone(),
            },
            commit_deadline: created_at + self.commit_timeout,
            commit_token: random_token().map_err(Error::Random)?,
        };
        let query_key = layout::query(&spec.query_id);
        let (allocation, fresh) = match self.storage.put_create(&query_key, encode(&query_key, &allocation)?).await {
            Ok(()) => (allocation, true),
            Err(StorageError::AlreadyExists { .. }) => {
                let existing: Allocation = self.read_existing(&query_key).await?;
                check_same_request(&existing, &spec)?;
                (existing, false)
            }
            Err(e) => return Err(e.into()),
        };
        let id = &allocation.info.result_id;
        self.storage.prepare_sink(id).await?;
        let allocation_key = layout::allocation(id);
        match self.storage.put_create(&allocation_key, encode(&allocation_key, &allocation)?).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let status = match fresh {
            true => ResultStatus::allocated(&allocation),
            false => self.status_of(&allocation).await?,
        };
        let sink = self.storage.sink(id);
        Ok(Allocated { allocation, sink, status })
    }

    /// Seals result `spec.result_id` with the listed files (or, for an empty list, every file in the sink),
    /// after checking each is a regular file of the declared size. Exactly once: repeating an identical commit
    /// answers the committed status; a commit with other files fails with [`Error::CommitConflict`].
    pub async fn commit(&self, spec: CommitSpec) -> Result<ResultStatus, Error> {
        let id = spec.result_id.clone();
        let allocation = self.allocation(&id).await?;
        if !constant_time_eq(spec.commit_token.as_bytes(), allocation.commit_token.expose().as_bytes()) {
            return Err(Error::CommitTokenMismatch { result_id: id });
        }
        let entries = self.storage.list_sink(&id).await?;
        let files = match spec.files.is_empty() {
            true => discover(&id, entries)?,
            false => verify(&id, spec.files, entries)?,
        };
        let manifest = Manifest { info: allocation.info, committed_at: SystemTime::now(), files };
        let key = layout::manifest(&id);
        let committed = match self.storage.put_create(&key, encode(&key, &manifest)?).await {
            Ok(()) => manifest,
            Err(StorageError::AlreadyExists { .. }) => {
                let existing: Manifest = self.read_existing(&key).await?;
                if existing.files != manifest.files {
                    return Err(Error::CommitConflict { result_id: id });
                }
                existing
            }
            Err(e) => return Err(e.into()),
        };
        let status = ResultStatus::committed(&committed);
        self.manifests.insert(Arc::new(committed));
        Ok(status)
    }

    /// The status of a result and, once committed, where to download each file. A committed result in the
    /// cache costs no storage request; presigned URLs live `spec.url_ttl` (or the default), at most the
    /// configured maximum.
    pub async fn resolve(&self, spec: ResolveSpec) -> Result<Resolved, Error> {
        let id = &spec.result_id;
        let Some(manifest) = self.committed(id).await? else {
            let allocation = self.allocation(id).await?;
            return Ok(Resolved { status: ResultStatus::allocated(&allocation), locations: Vec::new() });
        };
        let url_ttl = spec.url_ttl.unwrap_or(self.urls.default_ttl).min(self.urls.max_ttl);
        let paths: Vec<&RelPath> = manifest.files.iter().map(|file| &file.path).collect();
        let downloads = self.storage.downloads(id, &paths, url_ttl).await?;
        let locations = manifest
            .files
            .iter()
            .zip(downloads)
            .map(|(file, download)| FileLocation {
                path: file.path.clone(),
                url: download.url,
                size_bytes: file.size_bytes,
                row_count: file.row_count,
                expires_at: download.expires_at,
            })
            .collect();
        Ok(Resolved { status: ResultStatus::committed(&manifest), locations })
    }

    /// The manifest of `id` if it is committed: from the cache, else read once and cached.
    async fn committed(&self, id: &ResultId) -> Result<Option<Arc<Manifest>>, Error> {
        if let Some(manifest) = self.manifests.get(id) {
            return Ok(Some(manifest));
        }
        let Some(manifest) = self.read::<Manifest>(&layout::manifest(id)).await? else { return Ok(None) };
        let manifest = Arc::new(manifest);
        self.manifests.insert(manifest.clone());
        Ok(Some(manifest))
    }

    /// The current status of an allocated result: committed if its manifest exists.
    async fn status_of(&self, allocation: &Allocation) -> Result<ResultStatus, Error> {
        Ok(match self.committed(&allocation.info.result_id).await? {
            Some(manifest) => ResultStatus::committed(&manifest),
            None => ResultStatus::allocated(allocation),
        })
    }

    async fn allocation(&self, id: &ResultId) -> Result<Allocation, Error> {
        self.read(&layout::allocation(id)).await?.ok_or_else(|| Error::NotFound { result_id: id.clone() })
    }

    /// Reads and decodes the record at `key`, `None` if there is none.
    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.storage.get(key).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::CorruptRecord { key: key.to_owned(), message: e.to_string() }),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a record that a create-only write just found in place. It can vanish only if deleted meanwhile.
    async fn read_existing<T: DeserializeOwned>(&self, key: &str) -> Result<T, Error> {
        self.read(key).await?.ok_or_else(|| StorageError::NotFound { key: key.to_owned() }.into())
    }
}

/// An Allocate repeated for a query must ask for the same result.
fn check_same_request(existing: &Allocation, spec: &AllocateSpec) -> Result<(), Error> {
    let conflict = |field| Err(Error::QueryConflict { query_id: spec.query_id.clone(), field });
    if existing.info.query_id != spec.query_id {
        // Two query ids with one SHA-256: never expected; refuse rather than answer another query's result.
        return conflict("query_id");
    }
    if existing.info.file_type != spec.file_type {
        return conflict("file_type");
    }
    if existing.info.ttl != spec.ttl {
        return conflict("ttl");
    }
    if existing.info.labels != spec.labels {
        return conflict("labels");
    }
    Ok(())
}

/// Every file in the sink, sorted by path; anything but a regular file with a valid name is refused.
fn discover(id: &ResultId, entries: Vec<SinkEntry>) -> Result<Vec<ManifestFile>, Error> {
    let mut files = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.kind != EntryKind::File {
            return Err(Error::NotRegularFile { result_id: id.clone(), path: entry.path });
        }
        let path = RelPath::parse("path", &entry.path).map_err(|e| Error::InvalidFileName {
            result_id: id.clone(),
            path: entry.path.clone(),
            reason: e.message,
        })?;
        files.push(ManifestFile { path, size_bytes: entry.size_bytes, row_count: None });
    }
    if files.is_empty() {
        return Err(Error::EmptySink { result_id: id.clone() });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The declared files, in their order, each checked against the sink's listing.
fn verify(
    id: &ResultId,
    declared: Vec<crate::model::DeclaredFile>,
    entries: Vec<SinkEntry>,
) -> Result<Vec<ManifestFile>, Error> {
    let found: HashMap<String, SinkEntry> = entries.into_iter().map(|e| (e.path.clone(), e)).collect();
    declared
        .into_iter()
        .map(|file| {
            let Some(entry) = found.get(file.path.as_str()) else {
                return Err(Error::FileMissing { result_id: id.clone(), path: file.path });
            };
            if entry.kind != EntryKind::File {
                return Err(Error::NotRegularFile { result_id: id.clone(), path: file.path.into() });
            }
            if let Some(declared) = file.size_bytes.filter(|&size| size != entry.size_bytes) {
                return Err(Error::SizeMismatch {
                    result_id: id.clone(),
                    path: file.path,
                    declared,
                    actual: entry.size_bytes,
                });
            }
            Ok(ManifestFile { path: file.path, size_bytes: entry.size_bytes, row_count: file.row_count })
        })
        .collect()
}

/// The bytes of the record to be stored at `key`.
fn encode<T: Serialize>(key: &str, record: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec_pretty(record).map_err(|e| Error::CorruptRecord { key: key.to_owned(), message: e.to_string() })
}

/// A commit token: 160 random bits as 40 hex digits.
fn random_token() -> Result<Secret, getrandom::Error> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes)?;
    Ok(Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}
