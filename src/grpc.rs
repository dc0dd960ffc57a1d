//! The tonic service: decode and validate each request, call the domain core, encode the answer. Every error
//! becomes a gRPC status in one exhaustive match per error type ([`From<Error> for Status`],
//! [`From<AuthError> for Status`], [`From<AdmissionError> for Status`](admission::AdmissionError)).
//!
//! Callers are authorized, and each call's message size bounded, before the request is decoded, by the tower
//! layer in `admission.rs` that wraps this service. Nothing a caller sent is logged before it is validated,
//! and what is logged of it is escaped.

pub mod admission;
pub mod codec;
pub mod deadline;
pub mod spans;

use std::{future::Future, pin::Pin, sync::Arc, time::Instant};

use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};
use tracing::{debug, info, warn};

use crate::{
    auth::{AuthError, Authenticator, Caller, Rpc},
    model::{AbortSpec, AllocateSpec, CommitSpec, ListSpec, RenewSpec, ResolveSpec, ResultId},
    proto::{self, anonymous_results_server::AnonymousResults},
    results::{Error, Results},
    storage::{Storage, StorageError},
    telemetry::{Escaped, traces},
};

/// The `anonymous_results.v1.AnonymousResults` gRPC service over one storage backend.
#[derive(Debug, Clone)]
pub struct GrpcService {
    results: Arc<Results<Storage>>,
    auth: Arc<Authenticator>,
}

impl GrpcService {
    /// Answers `call`, counting it and its latency under `method` and the answer's code.
    async fn observed<T>(&self, method: Rpc, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        let started = Instant::now();
        let (answer, storage) = crate::storage::trace::traced(call).await;
        let code = answer.as_ref().map_or_else(Status::code, |_| Code::Ok);
        spans::record_code(code);
        let metrics = self.results.metrics();
        metrics.rpc(method, code, started.elapsed());
        metrics.rpc_storage(method, storage);
        answer
    }

    /// The metrics the calls are counted in.
    pub fn metrics(&self) -> &std::sync::Arc<crate::metrics::Metrics> {
        self.results.metrics()
    }

    pub fn new(results: Arc<Results<Storage>>, auth: Arc<Authenticator>) -> Self {
        Self { results, auth }
    }

    /// The caller of `rpc`: as the admission layer found it, or (when this service is mounted without that
    /// layer) from the request's token; a refusal is logged once, with its code.
    fn authorize<T>(&self, request: &Request<T>, rpc: Rpc) -> Result<Caller, Status> {
        if let Some(caller) = request.extensions().get::<Caller>() {
            return Ok(*caller);
        }
        self.auth.authorize(request.metadata().as_ref(), rpc).map_err(|error| {
            let status = Status::from(error);
            warn!(code = ?status.code(), "refused: {}", status.message());
            status
        })
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<proto::ResultStatus, Status>> + Send + 'static>>;

/// Records the validated ids of the call in its span.
fn record_ids(result_id: Option<&ResultId>, query_id: Option<&str>) {
    let span = tracing::Span::current();
    if let Some(id) = result_id {
        span.record("result_id", id.as_str());
    }
    if let Some(query_id) = query_id {
        // Validated, so without control characters; escaped all the same, for invisible ones.
        span.record("query_id", tracing::field::display(Escaped(query_id)));
    }
}

/// The calls, each answered as the contract says; the trait impl below times and counts them.
impl GrpcService {
    async fn answer_allocate(
        &self,
        request: Request<proto::AllocateRequest>,
    ) -> Result<Response<proto::AllocateResponse>, Status> {
        self.authorize(&request, Rpc::Allocate)?;
        let spec = finish(AllocateSpec::try_from(request.into_inner()).map_err(Error::from))?;
        record_ids(None, Some(&spec.query_id));
        let allocated = finish(self.results.allocate(spec).await)?;
        record_ids(Some(&allocated.allocation.info.result_id), None);
        info!(state = ?allocated.status.state, "allocated");
        Ok(Response::new(proto::AllocateResponse {
            result_id: allocated.allocation.info.result_id.to_string(),
            sink: Some(sink_answered(allocated.sink)),
            commit_token: allocated.commit_token.expose().to_owned(),
            commit_deadline: Some(allocated.allocation.commit_deadline.into()),
            status: Some(allocated.status.into()),
        }))
    }

    async fn answer_refresh_sink(
        &self,
        request: Request<proto::RefreshSinkRequest>,
    ) -> Result<Response<proto::RefreshSinkResponse>, Status> {
        self.authorize(&request, Rpc::RefreshSink)?;
        let request = request.into_inner();
        let id = finish(ResultId::parse(&request.result_id).map_err(Error::from))?;
        record_ids(Some(&id), None);
        if request.commit_token.is_empty() {
            let missing =
                crate::model::InvalidArgument::new("commit_token", "is required: the token Allocate answered");
            return finish(Err(missing.into()));
        }
        let (sink, allocation) = finish(self.results.refresh_sink(&id, &request.commit_token).await)?;
        record_ids(None, Some(&allocation.info.query_id));
        info!(expires_at = ?sink.credentials_expire_at.map(humantime::format_rfc3339_seconds), "sink refreshed");
        Ok(Response::new(proto::RefreshSinkResponse {
            sink: Some(sink_answered(sink)),
            commit_deadline: Some(allocation.commit_deadline.into()),
        }))
    }

    async fn answer_list_results(
        &self,
        request: Request<proto::ListResultsRequest>,
    ) -> Result<Response<proto::ListResultsResponse>, Status> {
        self.authorize(&request, Rpc::ListResults)?;
        let spec = finish(ListSpec::try_from(request.into_inner()).map_err(Error::from))?;
        let listed = finish(self.results.list_results(&spec).await)?;
        Ok(Response::new(proto::ListResultsResponse {
            results: listed.results.into_iter().map(proto::ResultStatus::from).collect(),
            next_page_token: listed.next.map(|token| token.text()).unwrap_or_default(),
        }))
    }

    async fn answer_get_usage(
        &self,
        request: Request<proto::GetUsageRequest>,
    ) -> Result<Response<proto::GetUsageResponse>, Status> {
        self.authorize(&request, Rpc::GetUsage)?;
        let report = finish(self.results.usage_report().ok_or(Error::UsageNotRead))?;
        Ok(Response::new(usage_response(report)))
    }

    async fn answer_commit(
        &self,
        request: Request<proto::CommitRequest>,
    ) -> Result<Response<proto::CommitResponse>, Status> {
        self.authorize(&request, Rpc::Commit)?;
        // The admission layer has counted the entries already; this holds where it is not mounted.
        let request = request.into_inner();
        let max = self.results.max_files_per_commit();
        if request.files.len() > max {
            let message =
                format!("lists {} files; at most {max} are allowed (max_files_per_commit)", request.files.len());
            return finish(Err(crate::model::InvalidArgument::new("files", message).into()));
        }
        let spec = finish(CommitSpec::try_from(request).map_err(Error::from))?;
        record_ids(Some(&spec.result_id), None);
        let status = finish(self.results.commit(spec).await)?;
        record_ids(None, Some(&status.info.query_id));
        info!(files = status.file_count, bytes = status.total_bytes, "committed");
        Ok(Response::new(proto::CommitResponse { status: Some(status.into()) }))
    }

    /// The busiest call: its span is at DEBUG (at INFO, making and filling a span per call cost about a
    /// twentieth of a cached Resolve); a failure names the result in its own fields instead.
    async fn answer_resolve(
        &self,
        request: Request<proto::ResolveRequest>,
    ) -> Result<Response<proto::ResolveResponse>, Status> {
        self.authorize(&request, Rpc::Resolve)?;
        let spec = finish(ResolveSpec::try_from(request.into_inner()).map_err(Error::from))?;
        record_ids(Some(&spec.result_id), None);
        let result_id = spec.result_id.clone();
        let resolved = self.results.resolve(spec).await.map_err(|error| {
            tracing::info_span!(target: traces::LOGS_ONLY, "Resolve", %result_id).in_scope(|| failed(error))
        })?;
        record_ids(None, Some(&resolved.status.info.query_id));
        debug!(state = ?resolved.status.state, locations = resolved.locations.len(), "resolved");
        let file_type = proto::FileType::from(resolved.status.info.file_type).into();
        Ok(Response::new(proto::ResolveResponse {
            status: Some(resolved.status.into()),
            file_type,
            locations: resolved.locations.into_iter().map(Into::into).collect(),
            next_page_token: resolved.next.map(|next| next.to_string()).unwrap_or_default(),
        }))
    }

    async fn answer_abort(
        &self,
        request: Request<proto::AbortRequest>,
    ) -> Result<Response<proto::AbortResponse>, Status> {
        let caller = self.authorize(&request, Rpc::Abort)?;
        let spec = finish(AbortSpec::try_from(request.into_inner()).map_err(Error::from))?;
        record_ids(Some(&spec.result_id), None);
        if !caller.scheduler && spec.commit_token.is_empty() {
            let message = "is required: a worker aborts with the token Allocate answered";
            return finish(Err(crate::model::InvalidArgument::new("commit_token", message).into()));
        }
        let status = finish(self.results.abort(&spec.result_id, &spec.commit_token, &spec.reason).await)?;
        Ok(Response::new(proto::AbortResponse { status: Some(status.into()) }))
    }

    async fn answer_release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        self.authorize(&request, Rpc::Release)?;
        let id = finish(ResultId::parse(&request.get_ref().result_id).map_err(Error::from))?;
        record_ids(Some(&id), None);
        let status = finish(self.results.release(&id).await)?;
        info!("released");
        Ok(Response::new(proto::ReleaseResponse { status: Some(status.into()) }))
    }

    async fn answer_renew(
        &self,
        request: Request<proto::RenewRequest>,
    ) -> Result<Response<proto::RenewResponse>, Status> {
        self.authorize(&request, Rpc::Renew)?;
        let spec = finish(RenewSpec::try_from(request.into_inner()).map_err(Error::from))?;
        record_ids(Some(&spec.result_id), None);
        let status = finish(self.results.renew(&spec.result_id, spec.ttl).await)?;
        info!(expires_at = ?status.expires_at, "renewed");
        Ok(Response::new(proto::RenewResponse { status: Some(status.into()) }))
    }

    async fn answer_watch(&self, request: Request<proto::WatchRequest>) -> Result<Response<StatusStream>, Status> {
        self.authorize(&request, Rpc::Watch)?;
        let id = finish(ResultId::parse(&request.get_ref().result_id).map_err(Error::from))?;
        record_ids(Some(&id), None);
        let receiver = finish(crate::watch::watch(self.results.clone(), id).await)?;
        // The current status first, then each change, ending after a final state.
        let updates = futures::stream::unfold((receiver, true, false), |(mut receiver, first, done)| async move {
            if done {
                return None;
            }
            if !first && receiver.changed().await.is_err() {
                return None;
            }
            let status = receiver.borrow_and_update().clone();
            let done = status.is_final();
            Some((Ok(proto::ResultStatus::from(status)), (receiver, false, done)))
        });
        Ok(Response::new(Box::pin(updates)))
    }
}

#[tonic::async_trait]
impl AnonymousResults for GrpcService {
    async fn allocate(
        &self,
        request: Request<proto::AllocateRequest>,
    ) -> Result<Response<proto::AllocateResponse>, Status> {
        self.observed(Rpc::Allocate, self.answer_allocate(request)).await
    }

    async fn commit(&self, request: Request<proto::CommitRequest>) -> Result<Response<proto::CommitResponse>, Status> {
        self.observed(Rpc::Commit, self.answer_commit(request)).await
    }

    async fn resolve(
        &self,
        request: Request<proto::ResolveRequest>,
    ) -> Result<Response<proto::ResolveResponse>, Status> {
        self.observed(Rpc::Resolve, self.answer_resolve(request)).await
    }

    async fn abort(&self, request: Request<proto::AbortRequest>) -> Result<Response<proto::AbortResponse>, Status> {
        self.observed(Rpc::Abort, self.answer_abort(request)).await
    }

    async fn release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        self.observed(Rpc::Release, self.answer_release(request)).await
    }

    async fn renew(&self, request: Request<proto::RenewRequest>) -> Result<Response<proto::RenewResponse>, Status> {
        self.observed(Rpc::Renew, self.answer_renew(request)).await
    }

    async fn refresh_sink(
        &self,
        request: Request<proto::RefreshSinkRequest>,
    ) -> Result<Response<proto::RefreshSinkResponse>, Status> {
        self.observed(Rpc::RefreshSink, self.answer_refresh_sink(request)).await
    }

    async fn list_results(
        &self,
        request: Request<proto::ListResultsRequest>,
    ) -> Result<Response<proto::ListResultsResponse>, Status> {
        self.observed(Rpc::ListResults, self.answer_list_results(request)).await
    }

    async fn get_usage(
        &self,
        request: Request<proto::GetUsageRequest>,
    ) -> Result<Response<proto::GetUsageResponse>, Status> {
        self.observed(Rpc::GetUsage, self.answer_get_usage(request)).await
    }

    type WatchStream = StatusStream;

    async fn watch(&self, request: Request<proto::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.observed(Rpc::Watch, self.answer_watch(request)).await
    }
}

/// A sink as a worker is answered it: its credentials exposed, to the worker alone.
fn sink_answered(sink: crate::storage::Sink) -> proto::Sink {
    proto::Sink {
        uri: sink.uri,
        storage_options: sink
            .storage_options
            .into_iter()
            .map(|(key, value)| (key, value.expose().to_owned()))
            .collect(),
        credentials_expire_at: sink.credentials_expire_at.map(prost_types::Timestamp::from),
    }
}

/// Maps a domain result to the answer, logging a failure once with its code: in the log, the whole story
/// (a storage failure's path, say); in the answer, only what the caller may see.
fn finish<T>(result: Result<T, Error>) -> Result<T, Status> {
    result.map_err(failed)
}

/// The answer to a call that failed with `error`, logged once with its code.
fn failed(error: Error) -> Status {
    let detail = error.detail();
    let status = Status::from(error);
    match status.code() {
        Code::Internal | Code::DataLoss | Code::Unavailable => warn!(code = ?status.code(), "{}", Escaped(&detail)),
        code => info!(?code, "{}", Escaped(&detail)),
    }
    status
}

/// What GetUsage answers of `report`.
fn usage_response(report: crate::results::UsageReport) -> proto::GetUsageResponse {
    let states = report
        .by_state
        .into_iter()
        .map(|(state, tally)| proto::StateUsage {
            state: proto::ResultState::from(state).into(),
            results: tally.results,
            bytes: tally.bytes,
        })
        .collect();
    let budgets = report
        .budgets
        .into_iter()
        .map(|budget| {
            let (label_key, label_value) = budget.label.unwrap_or_default();
            proto::BudgetUsage {
                key: budget.key.to_owned(),
                label_key,
                label_value,
                max_bytes: budget.max_bytes,
                used_results: budget.used.results,
                used_bytes: budget.used.bytes,
            }
        })
        .collect();
    proto::GetUsageResponse {
        states,
        budgets,
        label_values: report.label_values,
        max_result_bytes: report.max_result_bytes.unwrap_or(0),
        as_of: Some(report.as_of.into()),
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        let code = match error {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::CommitTokenMismatch { .. } => Code::PermissionDenied,
            Error::QueryConflict { .. } | Error::CommitConflict { .. } => Code::AlreadyExists,
            Error::FileMissing { .. }
            | Error::IsFolder { .. }
            | Error::SizeMismatch { .. }
            | Error::NotRegularFile { .. }
            | Error::InvalidFileName { .. }
            | Error::EmptySink { .. }
            | Error::Unpinnable { .. }
            | Error::TooManyFiles { .. }
            | Error::TooDeep { .. }
            | Error::TooLarge { .. }
            | Error::Aborted { .. }
            | Error::AlreadyCommitted { .. }
            | Error::DeadlinePassed { .. }
            | Error::SinkClosed { .. }
            | Error::NotRenewable { .. }
            | Error::NotCommitted { .. }
            | Error::UrlsNeedKey { .. }
            | Error::NoDownloadBase => Code::FailedPrecondition,
            Error::CorruptRecord { .. } => Code::DataLoss,
            Error::BudgetFull { .. } | Error::ResultTooLarge { .. } => Code::ResourceExhausted,
            Error::UsageNotRead => Code::Unavailable,
            Error::Random(_) => Code::Internal,
            Error::Storage(storage) => match storage {
                // A record that a create-only write found vanished before it could be read: a concurrent
                // delete; the caller may retry.
                StorageError::NotFound { .. } | StorageError::AlreadyExists { .. } => Code::Aborted,
                StorageError::Unavailable { .. } => Code::Unavailable,
                StorageError::Timeout { .. } => Code::DeadlineExceeded,
                // A stored file shorter than its manifest says, or another than the one committed.
                StorageError::RangeNotSatisfiable { .. } | StorageError::Changed { .. } => Code::DataLoss,
                // What is stored where a record should be is not one.
                StorageError::Unreadable { .. } => Code::DataLoss,
                // Start-up errors: they never reach a call.
                StorageError::NoCreateOnlyWrites { .. } | StorageError::Config { .. } => Code::FailedPrecondition,
            },
        };
        Status::new(code, message)
    }
}

impl From<admission::AdmissionError> for Status {
    fn from(error: admission::AdmissionError) -> Self {
        use admission::AdmissionError;
        let code = match error {
            AdmissionError::TooLarge { .. } => Code::OutOfRange,
            AdmissionError::TooManyFiles { .. } => Code::InvalidArgument,
            AdmissionError::CutShort(_) => Code::Cancelled,
            AdmissionError::NotInTime(_) => Code::DeadlineExceeded,
        };
        Status::new(code, error.to_string())
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        let code = match error {
            AuthError::Missing | AuthError::Malformed | AuthError::UnknownToken => Code::Unauthenticated,
            AuthError::WrongRole { .. } => Code::PermissionDenied,
        };
        Status::new(code, error.to_string())
    }
}
