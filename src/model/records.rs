//! The durable records of a result, as stored (JSON), and the status derived from them.
//!
//! Every record is written once, create-only, and never changed: an allocation; then one outcome (the seal:
//! committed or aborted, whichever is written first); renewals; and, while the result is being deleted, a
//! tombstone.
//!
//! Every record carries the version of its format (`format`), so that a release can tell the records of every
//! earlier one: it reads each format ever written and refuses only one written by a later release.
//!
//! | format | written by | shape |
//! |---|---|---|
//! | 0 (no `format` field) | 0.1.0 | the fields below |
//! | 1 | later releases | the same fields, with `format` |
//! | 2 | later releases, for a manifest whose files are pinned | each file may carry a `pin` |
//!
//! A record is written in the earliest format that holds it ([`Stored::new`]): every record but a manifest
//! with pins is still format 1, so that during a rolling upgrade the replicas of the release before read all
//! of them but the manifests committed by upgraded replicas.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    FileType, MAX_ABORT_REASON_BYTES, MAX_COUNT, MAX_DURATION, MAX_FILES_PER_RESULT, MAX_PATH_BYTES, RelPath, ResultId,
    ResultState, Timestamp,
    pin::{MAX_PIN_BYTES, Pin},
    validate_labels, validate_query_id,
};

/// The most bytes of a record that holds a result's description and little else (an allocation, an aborted
/// outcome, a tombstone): a query id and 64 labels at their longest, every character escaped, take about
/// 160 KiB.
pub const MAX_SMALL_RECORD_BYTES: u64 = 512 * 1024;
/// The most bytes one file takes in a manifest as any release writes it (indented JSON): its path with every
/// character escaped, its size and row count at their longest, its pin, and the keys around them.
pub const MAX_MANIFEST_ENTRY_BYTES: u64 = 2 * MAX_PATH_BYTES as u64 + 256 + MAX_PIN_BYTES;
/// The first format whose manifests may pin their files.
pub const PINS_FORMAT: u32 = 2;
/// The most bytes of an outcome record: a manifest of [`MAX_FILES_PER_RESULT`] files at their longest, with
/// the rest of a small record.
pub const MAX_OUTCOME_BYTES: u64 = MAX_FILES_PER_RESULT as u64 * MAX_MANIFEST_ENTRY_BYTES + MAX_SMALL_RECORD_BYTES;

/// A kind of record as stored: the most bytes any release writes of one (fixed, never derived from the
/// configuration: an operator who lowers a limit must still read what was written before), and the checks
/// that make a record read one the service could have written. Serde checks the shape and each value's type
/// (an instant within the years 1970 to 9999, a path that is a valid committed path); these check the rest.
pub trait Record: DeserializeOwned + Send + 'static {
    const MAX_BYTES: u64;

    /// The description of the result the record belongs to.
    fn info(&self) -> &ResultInfo;

    /// Whether every value lies within what a release writing `format` could have written.
    fn validate(&self, format: u32) -> Result<(), String>;

    /// A stored record of this kind read from `reader`, with its format (see [`Stored`]).
    fn read_stored(reader: impl std::io::Read) -> serde_json::Result<Stored<Self>> {
        serde_json::from_reader(reader)
    }
}

impl ResultInfo {
    /// The checks of Allocate's request, as they were when `format` was written.
    pub(super) fn validate(&self, format: u32) -> Result<(), String> {
        validate_query_id(&self.query_id).map_err(|e| e.to_string())?;
        validate_labels(self.labels.iter()).map_err(|e| e.to_string())?;
        // Release 0.1.0 (format 0) took any TTL: such a one is kept until released.
        if format > 0 && self.ttl.is_some_and(|ttl| ttl > MAX_DURATION) {
            return Err("ttl: longer than 100 years, which no release writing this format allows".into());
        }
        Ok(())
    }
}

impl Record for Allocation {
    const MAX_BYTES: u64 = MAX_SMALL_RECORD_BYTES;

    fn info(&self) -> &ResultInfo {
        &self.info
    }

    fn validate(&self, format: u32) -> Result<(), String> {
        self.info.validate(format)?;
        match self.commit_deadline >= self.info.created_at {
            true => Ok(()),
            false => Err("commit_deadline: before created_at".into()),
        }
    }
}

impl Record for Outcome {
    const MAX_BYTES: u64 = MAX_OUTCOME_BYTES;

    /// Read field by field, as [`StoredOutcome`]: the derived reading of a flattened, internally tagged record
    /// first copies all of it into serde's buffers, twice, which for a manifest of a million files is gigabytes.
    fn read_stored(reader: impl std::io::Read) -> serde_json::Result<Stored<Self>> {
        let stored: StoredOutcome = serde_json::from_reader(reader)?;
        stored.into_stored().map_err(serde::de::Error::custom)
    }

    fn info(&self) -> &ResultInfo {
        Outcome::info(self)
    }

    fn validate(&self, format: u32) -> Result<(), String> {
        self.info().validate(format)?;
        match self {
            Self::Committed(manifest)
                if format < PINS_FORMAT && manifest.files.iter().any(|file| file.pin.is_some()) =>
            {
                Err(format!("files: a pin, which no manifest of format {format} has"))
            }
            Self::Committed(manifest) => manifest.validate(),
            // Release 0.1.0 (format 0) kept any reason.
            Self::Aborted(aborted) if format > 0 && aborted.reason.len() > MAX_ABORT_REASON_BYTES => {
                Err(format!("reason: longer than {MAX_ABORT_REASON_BYTES} bytes"))
            }
            Self::Aborted(_) => Ok(()),
        }
    }
}

impl Record for Tombstone {
    const MAX_BYTES: u64 = MAX_SMALL_RECORD_BYTES;

    fn info(&self) -> &ResultInfo {
        &self.info
    }

    fn validate(&self, format: u32) -> Result<(), String> {
        self.info.validate(format)?;
        match self.reason.len() <= 64 && !self.reason.chars().any(char::is_control) {
            true => Ok(()),
            false => Err("reason: not one this service gives".into()),
        }
    }
}

/// An outcome record as stored, every field of either kind at the top level (as [`Stored`] of an [`Outcome`]
/// writes them), read without buffering.
#[derive(Deserialize)]
struct StoredOutcome {
    #[serde(default)]
    format: u32,
    outcome: OutcomeKind,
    result_id: ResultId,
    query_id: String,
    file_type: FileType,
    created_at: Timestamp,
    ttl: Option<Duration>,
    labels: BTreeMap<String, String>,
    committed_at: Option<Timestamp>,
    files: Option<Vec<ManifestFile>>,
    aborted_at: Option<Timestamp>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum OutcomeKind {
    Committed,
    Aborted,
}

impl StoredOutcome {
    fn into_stored(self) -> Result<Stored<Outcome>, &'static str> {
        let info = ResultInfo {
            result_id: self.result_id,
            query_id: self.query_id,
            file_type: self.file_type,
            created_at: self.created_at,
            ttl: self.ttl,
            labels: self.labels,
        };
        let record = match self.outcome {
            OutcomeKind::Committed => Outcome::Committed(Manifest {
                info,
                committed_at: self.committed_at.ok_or("missing field `committed_at`")?,
                files: self.files.ok_or("missing field `files`")?,
            }),
            OutcomeKind::Aborted => Outcome::Aborted(Aborted {
                info,
                aborted_at: self.aborted_at.ok_or("missing field `aborted_at`")?,
                reason: self.reason.ok_or("missing field `reason`")?,
            }),
        };
        Ok(Stored { format: self.format, record })
    }
}

/// The sum of `counts`, if it is at most [`MAX_COUNT`] (and each is).
pub fn sum_counts(counts: impl IntoIterator<Item = u64>) -> Option<u64> {
    counts.into_iter().try_fold(0u64, |sum, count| sum.checked_add(count).filter(|sum| *sum <= MAX_COUNT))
}

/// The format of every record that needs nothing newer.
pub const BASE_FORMAT: u32 = 1;
/// The newest format this release reads, and writes for a manifest with pins.
pub const RECORD_FORMAT: u32 = PINS_FORMAT;

/// A record as stored: the version of its format, then its own fields.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stored<T> {
    /// Absent in the records of release 0.1.0: format 0.
    #[serde(default)]
    pub format: u32,
    #[serde(flatten)]
    pub record: T,
}

impl<T> Stored<T> {
    /// `record` in [`BASE_FORMAT`], what holds every record but a manifest with pins.
    pub fn new(record: T) -> Self {
        Self { format: BASE_FORMAT, record }
    }

    /// `record` in `format`, the earliest that holds it (see [`Outcome::format`]).
    pub fn in_format(format: u32, record: T) -> Self {
        Self { format, record }
    }

    /// The record, if this release reads its format; else what to say of it.
    pub fn into_record(self) -> Result<T, String> {
        match self.format <= RECORD_FORMAT {
            true => Ok(self.record),
            false => Err(format!(
                "it has format {}, written by a later release; this one reads formats 0 to {RECORD_FORMAT}",
                self.format
            )),
        }
    }
}

/// What Allocate records about a result and its query; kept in every record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInfo {
    pub result_id: ResultId,
    pub query_id: String,
    pub file_type: FileType,
    pub created_at: Timestamp,
    /// The TTL the scheduler asked for, if any.
    pub ttl: Option<Duration>,
    pub labels: BTreeMap<String, String>,
}

/// The allocation record, written create-only when a result is allocated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    #[serde(flatten)]
    pub info: ResultInfo,
    pub commit_deadline: Timestamp,
}

/// One committed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: RelPath,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<u64>,
    /// The exact version committed (format [`PINS_FORMAT`] on; none in earlier manifests, which are served as
    /// they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
}

/// The manifest of a committed result. Writing it, create-only, is the commit: it never changes afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(flatten)]
    pub info: ResultInfo,
    pub committed_at: Timestamp,
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// The sum of the sizes (at most [`MAX_COUNT`] in a manifest that passed [`Manifest::validate`]).
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().fold(0u64, |sum, file| sum.saturating_add(file.size_bytes))
    }

    /// The sum of the row counts, if every file gave one.
    pub fn total_rows(&self) -> Option<u64> {
        self.files.iter().try_fold(0u64, |sum, file| Some(sum.saturating_add(file.row_count?)))
    }

    /// Whether the files are ones a Commit could have sealed: at least one and at most
    /// [`MAX_FILES_PER_RESULT`], no path twice, and sizes and row counts (each and their sums) at most
    /// [`MAX_COUNT`].
    pub fn validate(&self) -> Result<(), String> {
        if self.files.is_empty() || self.files.len() > MAX_FILES_PER_RESULT {
            return Err(format!("files: {} of them; a result holds 1 to {MAX_FILES_PER_RESULT}", self.files.len()));
        }
        if sum_counts(self.files.iter().map(|file| file.size_bytes)).is_none() {
            return Err(format!("size_bytes: the sizes (or one of them) add up to more than {MAX_COUNT}"));
        }
        if sum_counts(self.files.iter().filter_map(|file| file.row_count)).is_none() {
            return Err(format!("row_count: the row counts (or one of them) add up to more than {MAX_COUNT}"));
        }
        for file in &self.files {
            if let Some(Err(e)) = file.pin.as_ref().map(Pin::validate) {
                return Err(format!("pin of `{}`: {e}", super::printable(file.path.as_str())));
            }
        }
        let mut paths: Vec<&RelPath> = self.files.iter().map(|file| &file.path).collect();
        paths.sort_unstable();
        match paths.windows(2).find(|pair| pair[0] == pair[1]) {
            Some(pair) => Err(format!("files: `{}` is listed twice", super::printable(pair[0].as_str()))),
            None => Ok(()),
        }
    }
}

/// The status of one result, as every RPC answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultStatus {
    pub info: ResultInfo,
    pub state: ResultState,
    pub committed_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub file_count: u64,
    pub total_bytes: u64,
    pub total_rows: Option<u64>,
    pub abort_reason: String,
}

impl ResultStatus {
    /// Allocated, not committed yet: `expires_at` is the commit deadline, after which it is abandoned.
    pub fn allocated(allocation: &Allocation) -> Self {
        Self::of(&allocation.info, ResultState::Allocated, Some(allocation.commit_deadline))
    }

    /// Committed, kept until `expires_at` (`None`: until released).
    pub fn committed(manifest: &Manifest, expires_at: Option<Timestamp>) -> Self {
        Self {
            committed_at: Some(manifest.committed_at),
            file_count: manifest.files.len() as u64,
            total_bytes: manifest.total_bytes(),
            total_rows: manifest.total_rows(),
            ..Self::of(&manifest.info, ResultState::Committed, expires_at)
        }
    }

    /// Aborted; its record is kept until `expires_at`.
    pub fn aborted(aborted: &Aborted, expires_at: Option<Timestamp>) -> Self {
        Self { abort_reason: aborted.reason.clone(), ..Self::of(&aborted.info, ResultState::Aborted, expires_at) }
    }

    /// Expired or released: its files are gone or going.
    pub fn expired(info: &ResultInfo, at: Timestamp) -> Self {
        Self::of(info, ResultState::Expired, Some(at))
    }

    fn of(info: &ResultInfo, state: ResultState, expires_at: Option<Timestamp>) -> Self {
        Self {
            info: info.clone(),
            state,
            committed_at: None,
            expires_at,
            file_count: 0,
            total_bytes: 0,
            total_rows: None,
            abort_reason: String::new(),
        }
    }

    /// Whether the state is final for Watch: committed, aborted or expired.
    pub fn is_final(&self) -> bool {
        self.state != ResultState::Allocated
    }
}

/// Why a result will never commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aborted {
    #[serde(flatten)]
    pub info: ResultInfo,
    pub aborted_at: Timestamp,
    pub reason: String,
}

/// The outcome record: written once, create-only, by Commit, Abort or the pruner (abandoning an allocation
/// past its deadline). Whichever is written first decides the result's fate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    Committed(Manifest),
    Aborted(Aborted),
}

impl Outcome {
    pub fn info(&self) -> &ResultInfo {
        match self {
            Self::Committed(manifest) => &manifest.info,
            Self::Aborted(aborted) => &aborted.info,
        }
    }

    /// The earliest format that holds this outcome: [`PINS_FORMAT`] for a manifest with a pinned file,
    /// [`BASE_FORMAT`] for any other.
    pub fn format(&self) -> u32 {
        match self {
            Self::Committed(manifest) if manifest.files.iter().any(|file| file.pin.is_some()) => PINS_FORMAT,
            Self::Committed(_) | Self::Aborted(_) => BASE_FORMAT,
        }
    }
}

/// Written create-only before a result's files and records are deleted (released or expired): from then on
/// the result is EXPIRED everywhere, and a deletion cut short is finished by the next pruner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    #[serde(flatten)]
    pub info: ResultInfo,
    pub at: Timestamp,
    /// `released`, `expired` or `abandoned`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ResultInfo {
        ResultInfo {
            result_id: ResultId::generate().unwrap(),
            query_id: "q \"1\"".into(),
            file_type: FileType::Csv,
            created_at: Timestamp::from_millis(1_800_000_000_000).unwrap(),
            ttl: Some(Duration::from_secs(60)),
            labels: [("team".to_owned(), "data".to_owned())].into(),
        }
    }

    #[test]
    fn an_outcome_read_field_by_field_is_the_one_written_and_the_derived_reading_agrees() {
        let at = Timestamp::from_millis(1_800_000_001_000).unwrap();
        let files = vec![ManifestFile {
            path: RelPath::parse("path", "a/b.csv").unwrap(),
            size_bytes: 3,
            row_count: None,
            pin: None,
        }];
        let pinned_files = vec![ManifestFile {
            pin: Some(Pin::Object { e_tag: Some("\"abc\"".into()), version: Some("v1".into()) }),
            ..files[0].clone()
        }];
        let committed = Outcome::Committed(Manifest { info: info(), committed_at: at, files });
        let pinned = Outcome::Committed(Manifest { info: info(), committed_at: at, files: pinned_files });
        let aborted =
            Outcome::Aborted(Aborted { info: ResultInfo { ttl: None, ..info() }, aborted_at: at, reason: "x".into() });
        for (outcome, format) in [(committed, BASE_FORMAT), (pinned, PINS_FORMAT), (aborted, BASE_FORMAT)] {
            assert_eq!(outcome.format(), format, "the earliest format that holds it");
            let bytes = serde_json::to_vec_pretty(&Stored::in_format(outcome.format(), &outcome)).unwrap();
            let read = Outcome::read_stored(bytes.as_slice()).unwrap();
            assert_eq!((read.format, &read.record), (format, &outcome));
            read.record.validate(read.format).unwrap();
            let derived: Stored<Outcome> = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(derived.record, outcome);
        }
        let wrong = br#"{"format": 1, "outcome": "committed", "result_id": "x"}"#;
        assert!(Outcome::read_stored(&wrong[..]).is_err());
    }

    #[test]
    fn pins_are_read_from_the_manifests_of_their_format_on_and_refused_before_it() {
        let at = Timestamp::from_millis(1_800_000_001_000).unwrap();
        let file =
            |pin| ManifestFile { path: RelPath::parse("path", "a.csv").unwrap(), size_bytes: 3, row_count: None, pin };
        let pinned = Pin::Object { e_tag: Some("\"abc\"".into()), version: None };
        let manifest = |pin| Outcome::Committed(Manifest { info: info(), committed_at: at, files: vec![file(pin)] });
        let with_pin = manifest(Some(pinned.clone()));
        let bytes = serde_json::to_vec_pretty(&Stored { format: PINS_FORMAT, record: &with_pin }).unwrap();
        let read = Outcome::read_stored(bytes.as_slice()).unwrap();
        assert_eq!(read.record, with_pin);
        assert_eq!(read.record.validate(read.format), Ok(()));
        // An earlier format never had pins: one that has is not a record that release wrote.
        let error = with_pin.validate(PINS_FORMAT - 1).unwrap_err();
        assert!(error.contains("a pin, which no manifest of format 1 has"), "{error}");
        // Earlier manifests, without pins, are read and served as before.
        for format in 0..=PINS_FORMAT {
            assert_eq!(manifest(None).validate(format), Ok(()), "format {format}");
        }
        // A pin no Commit records is refused, naming the file.
        let forged = manifest(Some(Pin::Object { e_tag: Some("a\u{7f}".into()), version: None }));
        let error = forged.validate(PINS_FORMAT).unwrap_err();
        assert!(error.contains("pin of `a.csv`: e_tag: holds a character"), "{error}");
    }
}
