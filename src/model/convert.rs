//! Proto <-> domain, in one place. Requests are validated on receive (`TryFrom`, failing with
//! [`InvalidArgument`] naming the field); answers are built from domain values (`From`).

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use super::{
    AbortSpec, AllocateSpec, CommitSpec, DEFAULT_PAGE, DeclaredFile, DownloadMode, FileLocation, FileType,
    InvalidArgument, ListSpec, MAX_ABORT_REASON_BYTES, MAX_COUNT, MAX_PAGE, MAX_SELECTOR_LABELS, PageToken, RelPath,
    RenewSpec, ResolveSpec, ResultId, ResultState, ResultStatus, Timestamp, bounded, validate_labels,
    validate_query_id,
};
use crate::proto;

impl TryFrom<proto::AllocateRequest> for AllocateSpec {
    type Error = InvalidArgument;

    fn try_from(request: proto::AllocateRequest) -> Result<Self, Self::Error> {
        validate_query_id(&request.query_id)?;
        let file_type = match proto::FileType::try_from(request.file_type) {
            Ok(file_type) => FileType::from(file_type),
            Err(_) => {
                return Err(InvalidArgument::new(
                    "file_type",
                    format!("{} is not a known file type", request.file_type),
                ));
            }
        };
        let ttl = request.ttl.map(|value| ttl("ttl", value)).transpose()?;
        Ok(Self { query_id: request.query_id, file_type, ttl, labels: labels(request.labels)? })
    }
}

impl TryFrom<proto::CommitRequest> for CommitSpec {
    type Error = InvalidArgument;

    fn try_from(request: proto::CommitRequest) -> Result<Self, Self::Error> {
        let result_id = ResultId::parse(&request.result_id)?;
        if request.commit_token.is_empty() {
            return Err(InvalidArgument::new("commit_token", "is required: the token Allocate answered"));
        }
        let mut files = Vec::with_capacity(request.files.len());
        let mut rows = 0u64;
        for (i, file) in request.files.into_iter().enumerate() {
            let path = RelPath::parse(&format!("files[{i}].path"), &file.path)?;
            let too_large = |field: &str| {
                InvalidArgument::new(format!("files[{i}].{field}"), format!("is more than {MAX_COUNT} (2^63 - 1)"))
            };
            if file.size_bytes.is_some_and(|size| size > MAX_COUNT) {
                return Err(too_large("size_bytes"));
            }
            if let Some(count) = file.row_count {
                rows =
                    rows.checked_add(count).filter(|rows| *rows <= MAX_COUNT).ok_or_else(|| too_large("row_count"))?;
            }
            files.push(DeclaredFile { path, size_bytes: file.size_bytes, row_count: file.row_count });
        }
        // By reference: a Commit's paths may take tens of MiB, not to be copied again.
        let mut seen = HashSet::with_capacity(files.len());
        if let Some((i, file)) = files.iter().enumerate().find(|(_, file)| !seen.insert(file.path.as_str())) {
            return Err(InvalidArgument::new(format!("files[{i}].path"), format!("`{}` is listed twice", file.path)));
        }
        Ok(Self { result_id, commit_token: request.commit_token, files })
    }
}

impl TryFrom<proto::ResolveRequest> for ResolveSpec {
    type Error = InvalidArgument;

    fn try_from(request: proto::ResolveRequest) -> Result<Self, Self::Error> {
        let result_id = ResultId::parse(&request.result_id)?;
        let url_ttl = request.url_ttl.map(|ttl| duration("url_ttl", ttl)).transpose()?;
        if url_ttl.is_some_and(|ttl| ttl < Duration::from_secs(1)) {
            return Err(InvalidArgument::new("url_ttl", "must be at least 1s"));
        }
        let page_size = (request.page_size > 0).then_some(request.page_size as usize);
        let start = match request.page_token.as_str() {
            "" => 0,
            token => token
                .parse()
                .map_err(|_| InvalidArgument::new("page_token", "is not a next_page_token this service answered"))?,
        };
        let download_mode = match proto::DownloadMode::try_from(request.download_mode) {
            Ok(proto::DownloadMode::Unspecified) => None,
            Ok(proto::DownloadMode::Direct) => Some(DownloadMode::Direct),
            Ok(proto::DownloadMode::Proxy) => Some(DownloadMode::Proxy),
            Ok(proto::DownloadMode::Redirect) => Some(DownloadMode::Redirect),
            Err(_) => {
                let message = format!("{} is not a DownloadMode (0 to 3)", request.download_mode);
                return Err(InvalidArgument::new("download_mode", message));
            }
        };
        Ok(Self { result_id, url_ttl, download_mode, page_size, start })
    }
}

impl TryFrom<proto::ListResultsRequest> for ListSpec {
    type Error = InvalidArgument;

    fn try_from(request: proto::ListResultsRequest) -> Result<Self, Self::Error> {
        let state = match proto::ResultState::try_from(request.state) {
            Ok(proto::ResultState::Unspecified) => None,
            Ok(proto::ResultState::Allocated) => Some(ResultState::Allocated),
            Ok(proto::ResultState::Committed) => Some(ResultState::Committed),
            Ok(proto::ResultState::Aborted) => Some(ResultState::Aborted),
            Ok(proto::ResultState::Expired) => Some(ResultState::Expired),
            Err(_) => {
                return Err(InvalidArgument::new("state", format!("{} is not a ResultState (0 to 4)", request.state)));
            }
        };
        if request.labels.len() > MAX_SELECTOR_LABELS {
            let message =
                format!("names {} labels; a selector names at most {MAX_SELECTOR_LABELS}", request.labels.len());
            return Err(InvalidArgument::new("labels", message));
        }
        let labels = labels(request.labels)?;
        let created_after = request.created_after.map(|at| instant("created_after", at)).transpose()?;
        let created_before = request.created_before.map(|at| instant("created_before", at)).transpose()?;
        let page_size = match request.page_size as usize {
            0 => DEFAULT_PAGE,
            size if size > MAX_PAGE => {
                return Err(InvalidArgument::new("page_size", format!("is {size}; a page holds at most {MAX_PAGE}")));
            }
            size => size,
        };
        let page_token = match request.page_token.as_str() {
            "" => None,
            token => Some(PageToken::parse(token)?),
        };
        Ok(Self { state, labels, created_after, created_before, page_size, page_token })
    }
}

/// An instant a request names, within the years 1970 to 9999.
fn instant(field: &str, at: prost_types::Timestamp) -> Result<Timestamp, InvalidArgument> {
    std::time::SystemTime::try_from(at)
        .ok()
        .and_then(Timestamp::new)
        .ok_or_else(|| InvalidArgument::new(field, "is not an instant within the years 1970 to 9999"))
}

impl TryFrom<proto::RenewRequest> for RenewSpec {
    type Error = InvalidArgument;

    fn try_from(request: proto::RenewRequest) -> Result<Self, Self::Error> {
        let result_id = ResultId::parse(&request.result_id)?;
        match request.ttl.map(|value| ttl("ttl", value)).transpose()? {
            Some(ttl) if !ttl.is_zero() => Ok(Self { result_id, ttl }),
            _ => Err(InvalidArgument::new("ttl", "is required: a positive duration")),
        }
    }
}

impl TryFrom<proto::AbortRequest> for AbortSpec {
    type Error = InvalidArgument;

    /// The reason is kept to its first [`MAX_ABORT_REASON_BYTES`] (cut at a character boundary, marked `…`).
    fn try_from(request: proto::AbortRequest) -> Result<Self, Self::Error> {
        let result_id = ResultId::parse(&request.result_id)?;
        let mut reason = request.reason;
        if reason.len() > MAX_ABORT_REASON_BYTES {
            let mut end = MAX_ABORT_REASON_BYTES - '…'.len_utf8();
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        Ok(Self { result_id, commit_token: request.commit_token, reason })
    }
}

/// A non-negative duration, as protobuf defines one: nanoseconds from 0 to 999,999,999, of the same sign as
/// the seconds (`{seconds: 1, nanos: -1}` is not a duration, though it could be read as 0.999999999 s).
fn duration(field: &str, value: prost_types::Duration) -> Result<Duration, InvalidArgument> {
    let well_formed = (-999_999_999..=999_999_999).contains(&value.nanos)
        && !(value.seconds > 0 && value.nanos < 0)
        && !(value.seconds < 0 && value.nanos > 0);
    if !well_formed {
        let message = "is not a valid duration: nanos must be within ±999,999,999 and of the sign of seconds";
        return Err(InvalidArgument::new(field, message));
    }
    Duration::try_from(value).map_err(|_| InvalidArgument::new(field, "must be a non-negative duration"))
}

/// How long a result is to be kept: a non-negative duration of at most [`super::MAX_DURATION`].
fn ttl(field: &str, value: prost_types::Duration) -> Result<Duration, InvalidArgument> {
    bounded(duration(field, value)?).map_err(|message| InvalidArgument::new(field, message))
}

fn labels(labels: std::collections::HashMap<String, String>) -> Result<BTreeMap<String, String>, InvalidArgument> {
    validate_labels(labels.iter())?;
    Ok(labels.into_iter().collect())
}

impl From<proto::FileType> for FileType {
    fn from(file_type: proto::FileType) -> Self {
        match file_type {
            proto::FileType::Unspecified | proto::FileType::Parquet => Self::Parquet,
            proto::FileType::Ipc => Self::Ipc,
            proto::FileType::Csv => Self::Csv,
            proto::FileType::Ndjson => Self::Ndjson,
        }
    }
}

impl From<FileType> for proto::FileType {
    fn from(file_type: FileType) -> Self {
        match file_type {
            FileType::Parquet => Self::Parquet,
            FileType::Ipc => Self::Ipc,
            FileType::Csv => Self::Csv,
            FileType::Ndjson => Self::Ndjson,
        }
    }
}

impl From<ResultState> for proto::ResultState {
    fn from(state: ResultState) -> Self {
        match state {
            ResultState::Allocated => Self::Allocated,
            ResultState::Committed => Self::Committed,
            ResultState::Aborted => Self::Aborted,
            ResultState::Expired => Self::Expired,
        }
    }
}

fn timestamp(time: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

impl From<ResultStatus> for proto::ResultStatus {
    fn from(status: ResultStatus) -> Self {
        Self {
            result_id: status.info.result_id.into(),
            query_id: status.info.query_id,
            state: proto::ResultState::from(status.state).into(),
            created_at: Some(timestamp(status.info.created_at)),
            committed_at: status.committed_at.map(timestamp),
            expires_at: status.expires_at.map(timestamp),
            file_count: status.file_count,
            total_bytes: status.total_bytes,
            total_rows: status.total_rows,
            abort_reason: status.abort_reason,
            labels: status.info.labels.into_iter().collect(),
            file_type: proto::FileType::from(status.info.file_type).into(),
        }
    }
}

impl From<FileLocation> for proto::Location {
    fn from(location: FileLocation) -> Self {
        Self {
            url: location.url,
            size_bytes: location.size_bytes,
            row_count: location.row_count,
            expires_at: location.expires_at.map(timestamp),
            path: location.path.into(),
        }
    }
}
