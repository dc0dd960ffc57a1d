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

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::{FileType, RelPath, ResultId, ResultState, Timestamp};

/// The format of the records this release writes.
pub const RECORD_FORMAT: u32 = 1;

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
    /// `record` in this release's format.
    pub fn new(record: T) -> Self {
        Self { format: RECORD_FORMAT, record }
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
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }

    /// The sum of the row counts, if every file gave one.
    pub fn total_rows(&self) -> Option<u64> {
        self.files.iter().map(|f| f.row_count).sum()
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
