//! What a call goes through before its request is decoded: the caller's token is checked from the headers
//! alone, so that a caller without a valid token is answered UNAUTHENTICATED or PERMISSION_DENIED before a
//! byte of its body is read; each call's message is held to the size that call needs; and a Commit's file
//! entries are counted before prost turns each one (2 bytes on the wire at the least) into a ~56-byte struct.
//!
//! Each call's request must also arrive whole within `request_timeout` (`deadline.rs`).
//!
//! [`Admission`] wraps the tonic service of the contract and is what [`crate::Service::grpc`] hands out, so
//! these checks hold wherever the service is mounted.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tonic::{Status, body::Body, server::NamedService};
use tower::Service;
use tracing::{Instrument, warn};

use super::GrpcService;
use crate::{
    auth::{Authenticator, Rpc},
    config::Limits,
    metrics::Metrics,
    model::MAX_PATH_BYTES,
    proto::anonymous_results_server::AnonymousResultsServer,
};

/// The largest Allocate (at most `max_message_bytes`, as every call): a 512-byte query id and 64 labels of up to 128 + 1,024 bytes take about 75 KiB.
pub const ALLOCATE_MESSAGE_BYTES: usize = 256 * 1024;
/// The largest Abort: its reason is kept to its first 1 KiB, but a worker's error text may be longer.
pub const ABORT_MESSAGE_BYTES: usize = 1024 * 1024;
/// The largest Resolve, Release, Renew or Watch: an id, a token, a few numbers.
pub const SMALL_MESSAGE_BYTES: usize = 16 * 1024;
/// What one listed file may take in a Commit besides its path: the entry's tag and length, the path's tag
/// and length, and the size and row count as varints.
const FILE_ENTRY_OVERHEAD: usize = 32;
/// What a Commit may take besides its files: the result id, the commit token and their tags.
const COMMIT_OVERHEAD: usize = 1024;
/// The gRPC frame header before each message: a compression flag and a 4-byte length.
const FRAME_HEADER: usize = 5;

/// The largest Commit decoded: `max_files_per_commit` files with paths of [`MAX_PATH_BYTES`], at most
/// `max_message_bytes`.
pub fn commit_message_bytes(limits: &Limits) -> usize {
    let files = limits.max_files_per_commit.saturating_mul(MAX_PATH_BYTES + FILE_ENTRY_OVERHEAD);
    files.saturating_add(COMMIT_OVERHEAD).min(limits.max_message_bytes)
}

/// Why a Commit is refused before its request is decoded. `grpc.rs` maps each to its gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(
        "the Commit is larger than {limit} bytes, the most this service decodes (max_files_per_commit files of \
         paths up to {MAX_PATH_BYTES} bytes, at most max_message_bytes)"
    )]
    TooLarge { limit: usize },
    #[error("files: lists more than {max} files; at most {max} are allowed (max_files_per_commit)")]
    TooManyFiles { max: usize },
    #[error("the request body was cut short: {0}")]
    CutShort(String),
    #[error("{0}")]
    NotInTime(String),
}

/// The contract's tonic service behind its admission checks.
#[derive(Clone)]
pub struct Admission {
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    max_files: usize,
    commit_bytes: usize,
    /// How long a call's request may take to arrive whole.
    request_timeout: Duration,
    /// The same service with each call's message limit.
    allocate: AnonymousResultsServer<GrpcService>,
    commit: AnonymousResultsServer<GrpcService>,
    abort: AnonymousResultsServer<GrpcService>,
    small: AnonymousResultsServer<GrpcService>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("commit_bytes", &self.commit_bytes).finish_non_exhaustive()
    }
}

impl Admission {
    pub fn new(grpc: GrpcService, auth: Arc<Authenticator>, limits: &Limits, request_timeout: Duration) -> Self {
        let metrics = grpc.metrics().clone();
        let grpc = Arc::new(grpc);
        // `max_message_bytes` bounds every call.
        let limited = |bytes: usize| {
            AnonymousResultsServer::from_arc(grpc.clone())
                .max_decoding_message_size(bytes.min(limits.max_message_bytes))
        };
        let commit_bytes = commit_message_bytes(limits);
        Self {
            auth,
            metrics,
            max_files: limits.max_files_per_commit,
            commit_bytes,
            request_timeout,
            allocate: limited(ALLOCATE_MESSAGE_BYTES),
            commit: limited(commit_bytes),
            abort: limited(ABORT_MESSAGE_BYTES),
            small: limited(SMALL_MESSAGE_BYTES),
        }
    }

    fn server(&self, rpc: Option<Rpc>) -> AnonymousResultsServer<GrpcService> {
        match rpc {
            Some(Rpc::Allocate) => self.allocate.clone(),
            Some(Rpc::Commit) => self.commit.clone(),
            Some(Rpc::Abort) => self.abort.clone(),
            Some(
                Rpc::Resolve
                | Rpc::Release
                | Rpc::Renew
                | Rpc::Watch
                | Rpc::RefreshSink
                | Rpc::ListResults
                | Rpc::GetUsage,
            )
            | None => self.small.clone(),
        }
    }
}

impl NamedService for Admission {
    const NAME: &'static str = <AnonymousResultsServer<GrpcService> as NamedService>::NAME;
}

type Answer = Result<http::Response<Body>, Infallible>;

impl Service<http::Request<Body>> for Admission {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The generated server is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let rpc = Rpc::from_path(request.uri().path());
        let mut server = self.server(rpc);
        // An unknown method is the generated server's to refuse (UNIMPLEMENTED).
        let Some(rpc) = rpc else { return server.call(request) };
        let span = super::spans::server_span(rpc, request.headers());
        let _entered = span.enter();
        match self.auth.authorize(request.headers(), rpc) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
            }
            Err(error) => {
                let status = Status::from(error);
                warn!(code = ?status.code(), method = rpc.name(), "refused: {}", status.message());
                super::spans::record_code(status.code());
                return Box::pin(std::future::ready(Ok(refuse(&self.metrics, rpc, status, started))));
            }
        }
        let request = super::deadline::limit(request, self.request_timeout, &self.metrics);
        if rpc != Rpc::Commit {
            return Box::pin(server.call(request).instrument(span.clone()));
        }
        let (max_files, commit_bytes, metrics) = (self.max_files, self.commit_bytes, self.metrics.clone());
        Box::pin(
            async move {
                match count_files(request, max_files, commit_bytes).await {
                    Ok(request) => server.call(request).await,
                    Err(error) => {
                        let status = Status::from(error);
                        tracing::info!(code = ?status.code(), "Commit refused before decoding: {}", status.message());
                        super::spans::record_code(status.code());
                        Ok(refuse(&metrics, rpc, status, started))
                    }
                }
            }
            .instrument(span.clone()),
        )
    }
}

/// The answer to a call refused here, counted as the call it is.
fn refuse(metrics: &Metrics, rpc: Rpc, status: Status, started: Instant) -> http::Response<Body> {
    metrics.rpc(rpc, status.code(), started.elapsed());
    status.into_http()
}

/// Reads a Commit's body (at most one message of `commit_bytes`) and counts its file entries; more than
/// `max_files` is refused before anything is decoded. Answers the request with the body read.
async fn count_files(
    request: http::Request<Body>,
    max_files: usize,
    commit_bytes: usize,
) -> Result<http::Request<Body>, AdmissionError> {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, FRAME_HEADER + commit_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(AdmissionError::TooLarge { limit: commit_bytes });
        }
        Err(error) => {
            return Err(match error.downcast::<Status>() {
                Ok(status) if status.code() == tonic::Code::DeadlineExceeded => {
                    AdmissionError::NotInTime(status.message().to_owned())
                }
                Ok(status) => AdmissionError::CutShort(status.message().to_owned()),
                Err(error) => AdmissionError::CutShort(error.to_string()),
            });
        }
    };
    if let Some(message) = uncompressed_message(&bytes)
        && count_field(message, COMMIT_FILES_FIELD, max_files + 1) > max_files
    {
        return Err(AdmissionError::TooManyFiles { max: max_files });
    }
    Ok(http::Request::from_parts(parts, Body::new(Full::new(bytes))))
}

/// The field number of `CommitRequest.files`.
const COMMIT_FILES_FIELD: u64 = 3;

/// The message of the first gRPC frame in `bytes`, if it is complete and not compressed (a compressed one is
/// left to the decoder, which refuses it: the service accepts no compression).
fn uncompressed_message(bytes: &Bytes) -> Option<&[u8]> {
    let header = bytes.get(..FRAME_HEADER)?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    (header[0] == 0).then(|| bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(length)?)).flatten()
}

/// How many top-level occurrences of the length-delimited field `field` the protobuf `message` holds,
/// counting at most to `stop`. A malformed message stops the count where it breaks: the decoder refuses it.
pub fn count_field(mut message: &[u8], field: u64, stop: usize) -> usize {
    let mut count = 0;
    while !message.is_empty() && count < stop {
        let Some(key) = varint(&mut message) else { break };
        let skipped = match key & 7 {
            0 => varint(&mut message).map(|_| 0),
            1 => Some(8),
            2 => {
                if key >> 3 == field {
                    count += 1;
                }
                varint(&mut message).and_then(|length| usize::try_from(length).ok())
            }
            5 => Some(4),
            _ => None, // groups, or not protobuf at all
        };
        match skipped.and_then(|n| message.get(n..)) {
            Some(rest) => message = rest,
            None => break,
        }
    }
    count
}

/// Reads a varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto;

    #[test]
    fn file_entries_are_counted_as_prost_would_decode_them() {
        let request = proto::CommitRequest {
            result_id: "r".repeat(26),
            commit_token: "t".repeat(64),
            files: (0..300)
                .map(|i| proto::ResultFile {
                    path: format!("part-{i}.parquet"),
                    size_bytes: Some(i),
                    row_count: (i % 2 == 0).then_some(i * 1000),
                })
                .collect(),
        };
        let bytes = request.encode_to_vec();
        assert_eq!(count_field(&bytes, COMMIT_FILES_FIELD, usize::MAX), 300);
        assert_eq!(count_field(&bytes, COMMIT_FILES_FIELD, 10), 10, "stops counting at the bound");
        let empty_entries = [0x1a, 0x00].repeat(1000);
        assert_eq!(count_field(&empty_entries, COMMIT_FILES_FIELD, usize::MAX), 1000);
        assert_eq!(proto::CommitRequest::decode(empty_entries.as_slice()).unwrap().files.len(), 1000);
        assert_eq!(count_field(&[0x1a, 0xff], COMMIT_FILES_FIELD, usize::MAX), 1, "a truncated entry");
        assert_eq!(count_field(&[0xff; 11], COMMIT_FILES_FIELD, usize::MAX), 0, "not a varint");
    }

    #[test]
    fn the_commit_limit_follows_the_file_limit_and_the_message_limit() {
        let limits = Limits { max_files_per_commit: 1_000, max_message_bytes: 64 << 20 };
        assert_eq!(commit_message_bytes(&limits), 1_000 * (MAX_PATH_BYTES + FILE_ENTRY_OVERHEAD) + COMMIT_OVERHEAD);
        assert_eq!(commit_message_bytes(&Limits::default()), 64 << 20, "capped by max_message_bytes");
    }
}
