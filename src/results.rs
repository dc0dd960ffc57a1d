//! The domain core: the life of a result over a [`Backend`], with every durable state in storage (see
//! `layout.rs`), so that any number of service processes over one storage act as one.
//!
//! A result is ALLOCATED once its allocation exists; it is sealed by one outcome record, written create-only
//! by Commit (COMMITTED) or Abort (ABORTED), so of racing commits and aborts exactly one wins and a crash
//! leaves a result either sealed or allocated, never half-committed. It is EXPIRED from the moment its
//! tombstone is written (released, or past its expiry) until its deletion completes; then it is gone.

mod allocations;
mod background;
mod budget;
mod files;
mod index;
mod lifecycle;
mod listing;
mod locations;
mod prune;
mod rebuild;
mod refresh;
mod sealing;
mod sinks;
mod state;
mod sweep;
mod usage;
mod verify;
mod watchers;

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

pub use budget::{BudgetUse, UsageReport};
pub use files::CommittedFile;
pub use lifecycle::{BACKGROUND_DELETIONS, DELETION_TIMEOUT};
pub use listing::Listed;
pub use prune::{PASS_LIMIT, PruneReport};
pub use rebuild::Rebuilt;
pub use refresh::{MAX_CHANGES, Refreshed};
use sealing::{CommitLimits, Refusal, check_commit};
use state::{Noted, State, encode, encode_in};
pub use sweep::{SWEEP_PAGE, SweepReport};
pub use usage::Tally;
pub use verify::{CheckedFile, FileCheck, Verification};
pub use watchers::{Subscription, Watchers};

use tracing::warn;

use crate::{
    cache::OutcomeCache,
    clock::Clock,
    commit_token::CommitTokens,
    config::{Config, RetentionConfig, UrlConfig},
    layout::{self, IndexEntry},
    metrics::Metrics,
    model::{
        AllocateSpec, Allocation, CommitSpec, FileLocation, InvalidArgument, Manifest, ManifestFile, Outcome, Record,
        RelPath, ResolveSpec, ResultId, ResultInfo, ResultStatus, Timestamp,
    },
    secret::Secret,
    storage::{Backend, SealBounds, Sink, StorageError, Written},
    telemetry::Escaped,
};

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
    #[error("`{path}` is a folder in the sink of result `{result_id}`: list the files in it, not the folder")]
    IsFolder { result_id: ResultId, path: RelPath },
    #[error("`{path}` in the sink of result `{result_id}` has {actual} bytes, but the commit declares {declared}")]
    SizeMismatch { result_id: ResultId, path: RelPath, declared: u64, actual: u64 },
    #[error(
        "`{path}` in the sink of result `{result_id}` is not a regular file of its own (a result may hold only files: no \
         symbolic link, no file with a second name elsewhere, no device or socket)"
    )]
    NotRegularFile { result_id: ResultId, path: String },
    #[error("the sink of result `{result_id}` holds `{path}`, whose name a result may not use: {reason}")]
    InvalidFileName { result_id: ResultId, path: String, reason: String },
    #[error(
        "the store describes `{path}` in the sink of result `{result_id}` with a version this service cannot record \
         ({reason}), so the file cannot be pinned and the result is not committed: the store is not behaving as \
         S3, GCS or Azure do"
    )]
    Unpinnable { result_id: ResultId, path: RelPath, reason: String },
    #[error("the sink of result `{result_id}` is empty: write the result files before committing")]
    EmptySink { result_id: ResultId },
    #[error(
        "the sink of result `{result_id}` holds more than {max} entries (files, folders, links); a commit takes \
         at most {max} files (max_files_per_commit)"
    )]
    TooManyFiles { result_id: ResultId, max: usize },
    #[error("`{path}` in the sink of result `{result_id}` lies deeper than {depth} folders, where no result file may")]
    TooDeep { result_id: ResultId, path: String, depth: usize },
    #[error("the files of result `{result_id}` add up to more than {max} bytes", max = crate::model::MAX_COUNT)]
    TooLarge { result_id: ResultId },
    #[error(
        "the byte budget {budget} is full: {used} bytes in {results} committed result(s), of at most {max}; \
         Allocate again once results are released or expire, or raise [scheduler] anonymous_results.{key}"
    )]
    BudgetFull { budget: String, used: u64, results: u64, max: u64, key: &'static str },
    #[error(
        "result `{result_id}` holds {bytes} bytes, more than max_result_bytes ({max}): it is not committed and \
         stays allocated (abort it), or raise [scheduler] anonymous_results.max_result_bytes"
    )]
    ResultTooLarge { result_id: ResultId, bytes: u64, max: u64 },
    #[error("this replica has not read what is stored yet (it does once it starts): ask again in a moment")]
    UsageNotRead,
    #[error("result `{result_id}` is already committed with other files; a commit cannot be changed")]
    CommitConflict { result_id: ResultId },
    #[error("result `{result_id}` was aborted ({reason}): it can no longer be committed")]
    Aborted { result_id: ResultId, reason: String },
    #[error("result `{result_id}` is already committed: it can no longer be aborted")]
    AlreadyCommitted { result_id: ResultId },
    #[error("result `{result_id}` is {state}: its sink takes no more files, and gets no fresh credentials")]
    SinkClosed { result_id: ResultId, state: &'static str },
    #[error("result `{result_id}` passed its commit_deadline: it is abandoned")]
    DeadlinePassed { result_id: ResultId },
    #[error("result `{result_id}` is {state}: only a committed result has files to verify")]
    NotCommitted { result_id: ResultId, state: &'static str },
    #[error("result `{result_id}` is {state}: only a committed result can be renewed")]
    NotRenewable { result_id: ResultId, state: &'static str },
    #[error("the record `{key}` is unreadable: {message}")]
    CorruptRecord { key: String, message: String },
    #[error(
        "files stored with a customer-provided encryption key (`{option}`) cannot be downloaded from a URL alone \
         (the client would need the key): ask DOWNLOAD_MODE_PROXY, or set download_mode = \"proxy\" in \
         [anonymous_results_service]"
    )]
    UrlsNeedKey { option: &'static str },
    #[error(
        "proxy and redirect downloads need the URL clients reach the service at: set download_base_url in \
         [anonymous_results_service]"
    )]
    NoDownloadBase,
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl Error {
    /// The whole story, for the operator's log: the message and, for a storage failure, what only the
    /// operator should see (see [`StorageError::detail`]).
    pub fn detail(&self) -> String {
        match self {
            Self::Storage(storage) => format!("storage: {}", storage.detail()),
            other => other.to_string(),
        }
    }
}

/// What Allocate answers.
#[derive(Debug)]
pub struct Allocated {
    pub allocation: Allocation,
    /// What the worker presents with Commit (and Abort).
    pub commit_token: Secret,
    pub sink: Sink,
    pub status: ResultStatus,
}

/// What Resolve answers: the status and, once committed, one location per file.
#[derive(Debug)]
pub struct Resolved {
    pub status: ResultStatus,
    pub locations: Vec<FileLocation>,
    /// Where the next page starts, if the answer is one page and not the last.
    pub next: Option<usize>,
}

/// The results of one storage root.
#[derive(Debug)]
pub struct Results<B> {
    storage: B,
    clock: Arc<dyn Clock>,
    retention: RetentionConfig,
    urls: UrlConfig,
    /// How long a cached outcome is trusted before storage is asked again; also how often watchers poll.
    refresh: Duration,
    /// This, for the refreshes that run in the background.
    me: Weak<Self>,
    /// The most files one commit takes.
    max_files: usize,
    outcomes: OutcomeCache,
    allocations: allocations::Allocations,
    watchers: Watchers,
    tokens: CommitTokens,
    /// Results whose expiry lies past the year 9999, logged once each.
    beyond_range: Noted,
    /// Results whose records cannot be interpreted, logged once each.
    corrupt: Noted,
    prune_cursor: std::sync::Mutex<prune::PruneCursor>,
    /// Where the sweep's next pass starts reading.
    sweep_cursor: std::sync::Mutex<Option<String>>,
    /// The longest one storage operation may take: a temporary file twice as old is a crash's.
    storage_timeout: Duration,
    /// The deletions that run after their call's answer (see [`lifecycle::BACKGROUND_DELETIONS`]).
    background: Arc<background::Background>,
    /// The index entries written after their call's answer (a seal's: `index.rs`).
    indexing: Arc<background::Background>,
    /// What is stored, as this replica knows it, and the byte budget (`usage.rs`, `budget.rs`).
    usage: refresh::Usage,
    metrics: Arc<Metrics>,
    /// How download links are made.
    links: locations::LinkSettings,
}

impl<B: Backend> Results<B> {
    /// The results of `storage`, counted in `metrics`.
    pub fn new(
        storage: B,
        config: &Config,
        clock: Arc<dyn Clock>,
        tokens: CommitTokens,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            storage,
            clock,
            retention: config.retention.clone(),
            urls: config.service.urls.clone(),
            refresh: config.service.refresh_interval,
            max_files: config.service.security.limits.max_files_per_commit,
            outcomes: OutcomeCache::new(config.service.manifest_cache_bytes),
            allocations: Default::default(),
            watchers: Watchers::default(),
            tokens,
            beyond_range: Noted::default(),
            corrupt: Noted::default(),
            prune_cursor: Default::default(),
            sweep_cursor: Default::default(),
            storage_timeout: config.service.storage.timeout,
            background: Arc::new(background::Background::new(lifecycle::BACKGROUND_DELETIONS)),
            indexing: Arc::new(background::Background::new(index::BACKGROUND_INDEXING)),
            usage: refresh::Usage::new(config.budget.clone(), config.service.storage.timeout),
            metrics,
            links: locations::LinkSettings {
                mode: config.service.downloads.mode,
                base: config
                    .service
                    .downloads
                    .base_url
                    .as_ref()
                    .map(|url| std::sync::OnceLock::from(url.expose().trim_end_matches('/').to_owned()))
                    .unwrap_or_default(),
            },
        })
    }

    /// The metrics this counts in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// How long download URLs live.
    pub fn url_config(&self) -> &UrlConfig {
        &self.urls
    }

    /// The commit tokens, and the keys of download links.
    pub(crate) fn tokens(&self) -> &CommitTokens {
        &self.tokens
    }

    pub fn storage(&self) -> &B {
        &self.storage
    }

    /// The most files one commit takes (`max_files_per_commit`).
    pub fn max_files_per_commit(&self) -> usize {
        self.max_files
    }

    pub fn retention(&self) -> &RetentionConfig {
        &self.retention
    }

    pub(crate) fn watchers(&self) -> &Watchers {
        &self.watchers
    }

    pub(crate) fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    /// The clock's time, within the range every answer can carry.
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::clamped(self.clock.now())
    }

    /// Reserves a sink for `spec.query_id`, or answers the allocation already made for it.
    ///
    /// One record written under two keys (see [`Backend::create_allocation`]): the pending record (keyed by
    /// result id) first, then the query record (the allocation keyed by query id), which decides which of
    /// racing Allocates wins. A crash between the two leaves a pending record that nobody was told of, which
    /// the pruner abandons after its commit deadline; the loser of a race removes its own pending record and
    /// sink, after answering the winner's allocation. Where workers get credentials scoped to their sink, those
    /// are made before either write (and, for a repeated Allocate, again for the allocation it answers).
    pub async fn allocate(&self, spec: AllocateSpec) -> Result<Allocated, Error> {
        self.admit(&spec.labels)?;
        if let (Some(ttl), Some(max)) = (spec.ttl, self.retention.max_retention)
            && ttl > max
        {
            return Err(InvalidArgument::new(
                "ttl",
                format!(
                    "asks for {}, more than max_retention ({})",
                    humantime::format_duration(ttl),
                    humantime::format_duration(max)
                ),
            )
            .into());
        }
        let result_id = ResultId::generate().map_err(Error::Random)?;
        let created_at = self.now();
        let allocation = Allocation {
            info: ResultInfo {
                result_id: result_id.clone(),
                query_id: spec.query_id.clone(),
                file_type: spec.file_type,
                created_at,
                ttl: spec.ttl,
                labels: spec.labels.clone(),
            },
            commit_deadline: created_at.saturating_add(self.retention.commit_timeout),
        };
        let query_key = layout::query(&spec.query_id);
        let pending_key = layout::pending(&result_id);
        let record = encode(&query_key, &allocation)?;
        // Credentials scoped to the sink are made before anything is written: a store (or STS) that cannot
        // make them leaves nothing allocated.
        let sink = self.worker_sink(&allocation).await?;
        // The result index's entry goes beside the pending record (the same bytes); the claim decides whether
        // it stands.
        let index = self.index(&allocation.info, IndexEntry::Allocated, record.clone());
        let create = self.storage.create_allocation(&result_id, &pending_key, &query_key, record);
        let (created, indexed) = futures::join!(create, index);
        if let (Ok(()), Err(e)) = (&created, &indexed) {
            // The allocation stands: it is answered, and its seal's entry names it in the index.
            warn!(result_id = %result_id, "the result index lacks this allocation until it is sealed: {}", Escaped(&e.detail()));
        }
        let (allocation, status, sink) = match created.map_err(Error::from) {
            Ok(()) => {
                self.metrics.allocated();
                self.note_usage(&allocation.info, Some(crate::model::ResultState::Allocated), 0);
                let status = ResultStatus::allocated(&allocation);
                (allocation, status, sink)
            }
            Err(Error::Storage(StorageError::AlreadyExists { key })) if key == query_key => {
                self.remove_lost(allocation.info);
                let (existing, status) = self.allocated_before(&query_key, &spec).await?;
                // Its own sink's credentials: made again, if they are made per sink, while it takes files.
                let sink = match status.state {
                    crate::model::ResultState::Allocated => self.worker_sink(&existing).await?,
                    _ => self.storage.sink(&existing.info.result_id),
                };
                (existing, status, sink)
            }
            Err(e) => {
                // Not allocated: the index entry written beside it goes (one left by a crash, the sweep
                // removes).
                self.remove_index_entry(&allocation.info);
                return Err(e);
            }
        };
        let id = &allocation.info.result_id;
        if status.state == crate::model::ResultState::Allocated {
            self.allocations.insert(&allocation);
        }
        let commit_token = self.tokens.issue(id);
        Ok(Allocated { allocation, commit_token, sink, status })
    }

    /// Removes, in the background, the sink, the pending record and the index entry of `info`'s result, an
    /// Allocate that lost the race for its query's claim (nobody was told of it); a crash before that leaves
    /// them to the pruner.
    fn remove_lost(&self, info: ResultInfo) {
        let Some(results) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let id = &info.result_id;
            let index = layout::index_entry(info.created_at, id, IndexEntry::Allocated);
            let removed = match results.storage.delete_sink(id).await {
                Ok(()) => results.storage.delete_keys(vec![layout::pending(id), index]).await.map_err(Error::from),
                Err(e) => Err(e.into()),
            };
            let removed = match removed {
                Ok(()) => results.journal(info.created_at, id).await,
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                tracing::debug!(result_id = %id, "the allocation that lost a race stays for the pruner: {e}");
            }
        });
    }

    /// Removes, in the background, the index entry of `info`'s allocation, which failed.
    fn remove_index_entry(&self, info: &ResultInfo) {
        let Some(results) = self.me.upgrade() else { return };
        let (created, id) = (info.created_at, info.result_id.clone());
        tokio::spawn(async move {
            let entry = layout::index_entry(created, &id, IndexEntry::Allocated);
            let removed = match results.storage.delete_keys(vec![entry]).await {
                Ok(()) => results.journal(created, &id).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = removed {
                tracing::debug!(result_id = %id, "the index entry of a failed allocation stays for the sweep: {e}");
            }
        });
    }

    /// The answer to a repeated Allocate of `spec.query_id`, whose allocation is at `query_key`: the same one,
    /// if the request is the same, its pending record and sink made if an interrupted Allocate left them out.
    async fn allocated_before(
        &self,
        query_key: &str,
        spec: &AllocateSpec,
    ) -> Result<(Allocation, ResultStatus), Error> {
        let existing: Allocation = self.read_existing(query_key).await?;
        check_same_request(&existing, spec)?;
        let id = &existing.info.result_id;
        self.storage.prepare_sink(id).await?;
        let status = match self.state(id, false).await? {
            // The pending record (and index entry) of an interrupted Allocate: written now, by its repeat.
            State::Unknown => {
                let key = layout::pending(id);
                let record = encode(&key, &existing)?;
                let index = self.index(&existing.info, IndexEntry::Allocated, record.clone());
                let (written, indexed) = futures::join!(self.storage.put_create(&key, record), index);
                match written {
                    Ok(()) | Err(StorageError::AlreadyExists { .. }) => {
                        indexed.map(|()| ResultStatus::allocated(&existing))?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            state => self.status_from(&state).unwrap_or_else(|| ResultStatus::allocated(&existing)),
        };
        Ok((existing, status))
    }

    /// Seals result `spec.result_id` with the listed files (or, for an empty list, every file in the sink),
    /// after checking each is a regular file of the declared size. Exactly once: repeating an identical commit
    /// answers the committed status; a commit with other files fails with [`Error::CommitConflict`]; after an
    /// abort, or past the commit deadline, it fails.
    pub async fn commit(&self, spec: CommitSpec) -> Result<ResultStatus, Error> {
        let id = spec.result_id.clone();
        // Checked before any storage request: a forged token costs nothing and learns nothing.
        if !self.tokens.verify(&id, &spec.commit_token) {
            return Err(Error::CommitTokenMismatch { result_id: id });
        }
        let (now, max_files, declared) = (self.now(), self.max_files, spec.files.clone());
        let limits = CommitLimits { max_files, max_result_bytes: self.usage.budget.max_result_bytes };
        let (pending, outcome) = (layout::pending(&id), layout::outcome(&id));
        let (checked_id, record_key, outcome_key) = (id.clone(), pending.clone(), outcome.clone());
        // One pass of storage work: the allocation read, the sink listed, checked, and the outcome written.
        let bounds = SealBounds { record_bytes: Allocation::MAX_BYTES, max_entries: max_files.saturating_add(1) };
        let sealed = self
            .storage
            .seal_with(&id, &pending, &outcome, &layout::tombstone(&id), bounds, move |found| {
                let (record, entries) = found.ok_or(Refusal::NotPending)?;
                let sealing = check_commit(&checked_id, &record_key, &record, entries, now, limits, declared)?;
                let bytes = encode_in(&outcome_key, sealing.format(), &sealing).map_err(Refusal::Refused)?;
                Ok((sealing, bytes))
            })
            .await?;
        let Written { value: outcome, result } = match sealed {
            Ok(written) => written,
            // The pruner has seen the outcome already, or there is none.
            Err(Refusal::NotPending) => return self.commit_sealed(&id, spec, None).await,
            Err(Refusal::Refused(e)) => return Err(e),
            // The files may be gone because the result was aborted (or committed, or deleted) meanwhile: say
            // that instead.
            Err(Refusal::Files(e)) => {
                return match self.state(&id, true).await? {
                    State::Sealed(_) => self.commit_sealed(&id, spec, None).await,
                    State::Deleting(_) | State::Unknown => Err(Error::NotFound { result_id: id }),
                    State::Allocated(_) => Err(e),
                };
            }
        };
        match result {
            Ok(()) => {
                self.allocations.remove(&id);
                let sealed = self.seal(&id, outcome, Vec::new());
                self.index_sealed_in_background(sealed.outcome.clone());
                let status = self.sealed_status(&sealed);
                self.metrics.committed(status.total_bytes);
                self.note_usage(sealed.outcome.info(), Some(crate::model::ResultState::Committed), status.total_bytes);
                self.make_room();
                self.watchers.publish(&id, &status);
                Ok(status)
            }
            Err(StorageError::AlreadyExists { .. }) => {
                let attempt = match outcome {
                    Outcome::Committed(manifest) => Some(manifest),
                    Outcome::Aborted(_) => None,
                };
                self.commit_sealed(&id, CommitSpec { files: Vec::new(), ..spec }, attempt).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Answers a Commit of a result that is sealed already: OK if it is committed with the same files
    /// (`attempt`, when this commit got as far as building its manifest; else only the token is checked).
    async fn commit_sealed(
        &self,
        id: &ResultId,
        spec: CommitSpec,
        attempt: Option<Manifest>,
    ) -> Result<ResultStatus, Error> {
        let mut state = self.state(id, false).await?;
        if let State::Allocated(_) = state {
            // The commit found no pending record, and this read (whose reads go together) one: a deletion that
            // ran between its listing and its read, or the record's repair by a repeated Allocate. A second
            // read tells them apart.
            state = self.state(id, true).await?;
        }
        let sealed = match state {
            State::Sealed(sealed) => sealed,
            State::Unknown | State::Deleting(_) => return Err(Error::NotFound { result_id: id.clone() }),
            // The pending record vanished and came back: a concurrent repair; the caller retries.
            State::Allocated(_) => return Err(StorageError::NotFound { key: layout::pending(id) }.into()),
        };
        match sealed.outcome.as_ref() {
            Outcome::Aborted(aborted) => Err(Error::Aborted { result_id: id.clone(), reason: aborted.reason.clone() }),
            Outcome::Committed(existing) => {
                let same = match &attempt {
                    // The files as declared and found, not their pins: an identical commit repeated after a
                    // file was written again answers the committed status (whose pin keeps the file from
                    // being served).
                    Some(attempt) => {
                        attempt.files.len() == existing.files.len()
                            && attempt.files.iter().zip(&existing.files).all(|(tried, committed)| {
                                (&tried.path, tried.size_bytes, tried.row_count)
                                    == (&committed.path, committed.size_bytes, committed.row_count)
                            })
                    }
                    None => spec.files.is_empty() || same_files(&spec, existing),
                };
                match same {
                    true => Ok(self.sealed_status(&sealed)),
                    false => Err(Error::CommitConflict { result_id: id.clone() }),
                }
            }
        }
    }

    /// The status of a result and, once committed, where to download each file. A recently checked result
    /// costs no storage request; presigned URLs live `spec.url_ttl` (or the default), at most the maximum.
    pub async fn resolve(&self, spec: ResolveSpec) -> Result<Resolved, Error> {
        let id = &spec.result_id;
        let state = self.state(id, false).await?;
        let status = self.status_from(&state).ok_or_else(|| Error::NotFound { result_id: id.clone() })?;
        let no_locations = |status| Ok(Resolved { status, locations: Vec::new(), next: None });
        let State::Sealed(sealed) = &state else { return no_locations(status) };
        let Outcome::Committed(manifest) = sealed.outcome.as_ref() else { return no_locations(status) };
        if status.state != crate::model::ResultState::Committed {
            return no_locations(status);
        }
        let total = manifest.files.len();
        if spec.start > total {
            let message = "is not a next_page_token this service answered for this result";
            return Err(InvalidArgument::new("page_token", message).into());
        }
        let end = spec.page_size.map_or(total, |size| spec.start.saturating_add(size).min(total));
        let files = &manifest.files[spec.start..end];
        let url_ttl = spec.url_ttl.unwrap_or(self.urls.default_ttl).min(self.urls.max_ttl);
        let committed: Vec<&ManifestFile> = files.iter().collect();
        let downloads = self.locations(id, &committed, url_ttl, spec.download_mode).await?;
        let locations = files
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
        Ok(Resolved { status, locations, next: (end < total).then_some(end) })
    }
}

/// Whether a repeated explicit commit lists the committed files (paths and declared sizes and rows).
fn same_files(spec: &CommitSpec, existing: &Manifest) -> bool {
    spec.files.len() == existing.files.len()
        && spec.files.iter().zip(&existing.files).all(|(declared, file)| {
            declared.path == file.path
                && declared.size_bytes.is_none_or(|size| size == file.size_bytes)
                && declared.row_count == file.row_count
        })
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
