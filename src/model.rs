//! The domain: result ids, query ids, paths inside a sink, and the two durable records of a result (its
//! [`Allocation`] and, once committed, its [`Manifest`]). Everything a request carries is validated here, on
//! receive, into these types; `convert.rs` beside this file maps them to and from the proto messages.

mod convert;
mod pin;
mod records;
mod summary;
mod time;

pub use pin::{MAX_PIN_TEXT_BYTES, Pin};
pub use records::{
    Aborted, Allocation, BASE_FORMAT, MAX_OUTCOME_BYTES, MAX_SMALL_RECORD_BYTES, Manifest, ManifestFile, Outcome,
    PINS_FORMAT, RECORD_FORMAT, Record, ResultInfo, ResultStatus, Stored, Tombstone, sum_counts,
};
pub use summary::{Sealing, Summary};
pub use time::{MAX_DURATION, MAX_DURATION_TEXT, Timestamp, bounded};

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// A request field that fails validation: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidArgument {
    pub field: String,
    pub message: String,
}

impl InvalidArgument {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Files whose names start with this are the service's own; a commit may not list them.
pub const RESERVED_PREFIX: &str = ".anonymous-results";

/// The longest path of a result file, relative to its sink, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// The longest query id, in bytes.
pub const MAX_QUERY_ID_BYTES: usize = 512;
/// The most labels one result may carry.
pub const MAX_LABELS: usize = 64;
/// The longest abort reason kept, in bytes: a longer one is cut to this.
pub const MAX_ABORT_REASON_BYTES: usize = 1024;
/// The longest label key and value, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 128;
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
/// The most files one result may hold: the hard maximum of `max_files_per_commit`, and what bounds the size of
/// a manifest any release writes.
pub const MAX_FILES_PER_RESULT: usize = 1_000_000;
/// The largest size, row count, or sum of either, a result may report: what a signed 64-bit integer holds, so
/// that every client can take it.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// The conversions of a string newtype whose every value was validated: from `String` through `$parse` (so
/// that a stored record is validated as it is read), into `String`, `Display` as the text, `Debug` quoted.
macro_rules! validated_string {
    ($name:ident, $parse:expr) => {
        impl TryFrom<String> for $name {
            type Error = InvalidArgument;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                ($parse)(&text)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

const ID_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const ID_LEN: usize = 26;

/// The id of one result: 128 random bits in 26 lowercase base32 characters, so it cannot be guessed and is
/// safe as a file name and an object key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResultId(String);

impl ResultId {
    /// A fresh id from the operating system's random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        let value = u128::from_be_bytes(bytes);
        let id = (0..ID_LEN).rev().map(|i| ID_ALPHABET[((value >> (i * 5)) & 31) as usize] as char).collect();
        Ok(Self(id))
    }

    /// Parses an id given by a caller; anything not shaped like one of ours is refused.
    pub fn parse(text: &str) -> Result<Self, InvalidArgument> {
        let well_formed = text.len() == ID_LEN
            && text.bytes().all(|b| ID_ALPHABET.contains(&b))
            // 26 characters carry 130 bits; ours hold 128, so the first character encodes only 3 (a to h).
            && text.as_bytes()[0] <= b'h';
        match well_formed {
            true => Ok(Self(text.to_owned())),
            false if text.is_empty() => Err(InvalidArgument::new("result_id", "is required")),
            false => Err(InvalidArgument::new(
                "result_id",
                format!("`{}` is not a result id issued by this service", printable(text)),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

validated_string!(ResultId, |text: &str| ResultId::parse(text));

/// The scheduler's id of a query: 1 to 512 bytes of printable text.
pub fn validate_query_id(text: &str) -> Result<(), InvalidArgument> {
    if text.is_empty() {
        return Err(InvalidArgument::new("query_id", "is required"));
    }
    if text.len() > MAX_QUERY_ID_BYTES {
        return Err(InvalidArgument::new("query_id", format!("is longer than {MAX_QUERY_ID_BYTES} bytes")));
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidArgument::new("query_id", "contains a control character"));
    }
    Ok(())
}

/// Labels of a result: at most [`MAX_LABELS`], each key 1 to [`MAX_LABEL_KEY_BYTES`] bytes of printable text,
/// each value at most [`MAX_LABEL_VALUE_BYTES`] bytes.
pub fn validate_labels<'a>(
    labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), InvalidArgument> {
    if labels.len() > MAX_LABELS {
        return Err(InvalidArgument::new("labels", format!("has {} entries; at most {MAX_LABELS}", labels.len())));
    }
    for (key, value) in labels {
        if key.is_empty() || key.len() > MAX_LABEL_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(InvalidArgument::new(
                "labels",
                format!("a key must be 1 to {MAX_LABEL_KEY_BYTES} bytes of printable text"),
            ));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(InvalidArgument::new(
                format!("labels[{}]", printable(key)),
                format!("is longer than {MAX_LABEL_VALUE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// A path relative to a sink: `/`-separated, no empty, `.` or `..` segment, no leading `/`, no backslash, no
/// control character (NUL included), not one of the service's reserved names, at most 1024 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Validates `text`; the error names `field` and what is wrong.
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidArgument> {
        let fail = |message: String| Err(InvalidArgument::new(field, message));
        let shown = printable(text);
        if text.is_empty() {
            return fail("is empty".into());
        }
        if text.len() > MAX_PATH_BYTES {
            return fail(format!("is longer than {MAX_PATH_BYTES} bytes"));
        }
        if text.chars().any(char::is_control) {
            return fail(format!("`{shown}` contains a control character"));
        }
        if text.contains('\\') {
            return fail(format!("`{shown}` contains a backslash; separate folders with `/`"));
        }
        if text.starts_with('/') {
            return fail(format!("`{shown}` is absolute; give the path relative to the sink"));
        }
        for segment in text.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return fail(format!("`{shown}` has an empty, `.` or `..` segment"));
            }
            if segment.len() > 255 {
                return fail(format!("`{shown}` has a name longer than 255 bytes"));
            }
            if segment.starts_with(RESERVED_PREFIX) {
                return fail(format!("`{shown}` uses the reserved name prefix `{RESERVED_PREFIX}`"));
            }
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

validated_string!(RelPath, |text: &str| RelPath::parse("path", text));

/// Text for an error message or a log line: control characters escaped, at most 200 characters.
pub fn printable(text: &str) -> String {
    let mut shown: String = text.chars().take(200).flat_map(char::escape_debug).collect();
    if text.chars().nth(200).is_some() {
        shown.push('…');
    }
    shown
}

/// The format of a result's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    Parquet,
    Ipc,
    Csv,
    Ndjson,
}

/// Where a result is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultState {
    Allocated,
    Committed,
    Aborted,
    Expired,
}

impl ResultState {
    /// As the proto's enum names it, without its prefix: `ALLOCATED`, `COMMITTED`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allocated => "ALLOCATED",
            Self::Committed => "COMMITTED",
            Self::Aborted => "ABORTED",
            Self::Expired => "EXPIRED",
        }
    }
}

/// A file a worker lists in Commit: its path and, when given, the size and row count it declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredFile {
    pub path: RelPath,
    pub size_bytes: Option<u64>,
    pub row_count: Option<u64>,
}

/// A validated Allocate request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocateSpec {
    pub query_id: String,
    pub file_type: FileType,
    pub ttl: Option<Duration>,
    pub labels: BTreeMap<String, String>,
}

/// A validated Commit request. An empty `files` means "every file under the sink".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitSpec {
    pub result_id: ResultId,
    pub commit_token: String,
    pub files: Vec<DeclaredFile>,
}

/// A validated ListResults request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListSpec {
    /// Only results in this state.
    pub state: Option<ResultState>,
    /// Only results carrying every one of these labels (at most [`MAX_SELECTOR_LABELS`]).
    pub labels: BTreeMap<String, String>,
    /// Only results created at or after this instant.
    pub created_after: Option<Timestamp>,
    /// Only results created before this instant.
    pub created_before: Option<Timestamp>,
    /// At most this many results: 1 to [`MAX_PAGE`].
    pub page_size: usize,
    /// Where the page starts: after the result a page ended with.
    pub page_token: Option<PageToken>,
}

/// The most results a ListResults page holds, and what it holds when its request says nothing.
pub const MAX_PAGE: usize = 1000;
pub const DEFAULT_PAGE: usize = 100;
/// The most labels a ListResults selector may name.
pub const MAX_SELECTOR_LABELS: usize = 16;

/// Where a page of ListResults ended: the last result it covered, `<created ms, 16 digits>-<result id>` (as
/// its index folder is named).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageToken {
    created: Timestamp,
    id: ResultId,
}

impl PageToken {
    /// The token of the result `id`, created at `created` (to the millisecond, as the index names it).
    pub fn of(created: Timestamp, id: &ResultId) -> Self {
        let created = Timestamp::from_millis(created.millis()).unwrap_or(created);
        Self { created, id: id.clone() }
    }

    /// A token a caller sent back.
    pub fn parse(text: &str) -> Result<Self, InvalidArgument> {
        let refused = || InvalidArgument::new("page_token", "is not a next_page_token this service answered");
        let (ms, id) = text.split_once('-').ok_or_else(refused)?;
        let digits = ms.len() == 16 && ms.bytes().all(|b| b.is_ascii_digit());
        let at = ms.parse().ok().and_then(Timestamp::from_millis);
        match (digits, at, ResultId::parse(id)) {
            (true, Some(created), Ok(id)) => Ok(Self { created, id }),
            _ => Err(refused()),
        }
    }

    /// The token as the caller is handed it.
    pub fn text(&self) -> String {
        format!("{:016}-{}", self.created.millis(), self.id)
    }

    /// The result it names: its creation and id.
    pub fn result(&self) -> (Timestamp, &ResultId) {
        (self.created, &self.id)
    }
}

/// A validated Renew request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewSpec {
    pub result_id: ResultId,
    /// Positive, at most [`MAX_DURATION`].
    pub ttl: Duration,
}

/// A validated Abort request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbortSpec {
    pub result_id: ResultId,
    /// Empty when the scheduler aborts.
    pub commit_token: String,
    /// At most [`MAX_ABORT_REASON_BYTES`]; may hold any text (a worker's error output), so it is logged escaped.
    pub reason: String,
}

/// A validated Resolve request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveSpec {
    pub result_id: ResultId,
    pub url_ttl: Option<Duration>,
    /// How the client downloads; `None`: the configured `download_mode`.
    pub download_mode: Option<DownloadMode>,
    /// The most locations answered; `None`: all.
    pub page_size: Option<usize>,
    /// The index of the first file answered (from a page token).
    pub start: usize,
}

/// How clients download a result's files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DownloadMode {
    /// Presigned store URLs, or paths on the shared filesystem.
    #[default]
    Direct,
    /// Links to the service, which streams the bytes from storage; they live `url_ttl`.
    Proxy,
    /// Links to the service, which answers each GET with a redirect to a freshly signed store URL; they work
    /// as long as the result exists. On a shared filesystem, served as `Proxy`.
    Redirect,
}

/// One file of a resolved result: where the client downloads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLocation {
    pub path: RelPath,
    /// An absolute local path, or a presigned URL.
    pub url: String,
    pub size_bytes: u64,
    pub row_count: Option<u64>,
    /// When a presigned URL stops working; `None` for a local path.
    pub expires_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let ids: std::collections::HashSet<ResultId> = (0..1000).map(|_| ResultId::generate().unwrap()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.as_str().len(), 26);
            assert_eq!(&ResultId::parse(id.as_str()).unwrap(), id);
        }
        // Every leading character a 128-bit id can start with is seen, and accepted.
        let leading: std::collections::HashSet<char> =
            ids.iter().map(|id| id.as_str().chars().next().unwrap()).collect();
        assert_eq!(leading.len(), 8, "{leading:?}");
    }

    #[test]
    fn foreign_ids_are_refused() {
        for bad in
            ["", "short", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "zzzzzzzzzzzzzzzzzzzzzzzzzz", "../aaaaaaaaaaaaaaaaaaaaaaa"]
        {
            assert!(ResultId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn paths_are_validated() {
        for good in ["part-0.parquet", "year=2024/part-0.parquet", "a b/c.csv", "_SUCCESS"] {
            assert!(RelPath::parse("path", good).is_ok(), "{good:?} was refused");
        }
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a\0b", ".anonymous-results-x", &long] {
            assert!(RelPath::parse("path", bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn total_rows_needs_every_count() {
        let info = ResultInfo {
            result_id: ResultId::generate().unwrap(),
            query_id: "q".into(),
            file_type: FileType::Parquet,
            created_at: Timestamp::UNIX_EPOCH,
            ttl: None,
            labels: BTreeMap::new(),
        };
        let file =
            |rows| ManifestFile { path: RelPath::parse("p", "a").unwrap(), size_bytes: 2, row_count: rows, pin: None };
        let manifest =
            Manifest { info, committed_at: Timestamp::UNIX_EPOCH, files: vec![file(Some(3)), file(Some(4))] };
        assert_eq!(manifest.total_rows(), Some(7));
        assert_eq!(manifest.total_bytes(), 4);
        let partial = Manifest { files: vec![file(Some(3)), file(None)], ..manifest };
        assert_eq!(partial.total_rows(), None);
    }
}
