//! What the result index keeps of a sealed result: its outcome without the list of its files, so that a page
//! of the index reads one small record per result however many files each holds.

use serde::{Deserialize, Serialize};

use super::{
    MAX_ABORT_REASON_BYTES, MAX_COUNT, MAX_FILES_PER_RESULT, Outcome, Record, ResultInfo, ResultState, ResultStatus,
    Timestamp, records::MAX_SMALL_RECORD_BYTES,
};

/// A sealed result as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(flatten)]
    pub info: ResultInfo,
    #[serde(flatten)]
    pub sealed: Sealing,
}

/// How a result was sealed, and what its outcome says of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Sealing {
    Committed { committed_at: Timestamp, file_count: u64, total_bytes: u64, total_rows: Option<u64> },
    Aborted { aborted_at: Timestamp, reason: String },
}

impl Summary {
    /// The summary of `outcome`.
    pub fn of(outcome: &Outcome) -> Self {
        let sealed = match outcome {
            Outcome::Committed(manifest) => Sealing::Committed {
                committed_at: manifest.committed_at,
                file_count: manifest.files.len() as u64,
                total_bytes: manifest.total_bytes(),
                total_rows: manifest.total_rows(),
            },
            Outcome::Aborted(aborted) => {
                Sealing::Aborted { aborted_at: aborted.aborted_at, reason: aborted.reason.clone() }
            }
        };
        Self { info: outcome.info().clone(), sealed }
    }

    /// The result's status, kept until `expires_at` (`None`: until released).
    pub fn status(&self, expires_at: Option<Timestamp>) -> ResultStatus {
        let mut status = ResultStatus::expired(&self.info, Timestamp::latest());
        status.expires_at = expires_at;
        match &self.sealed {
            Sealing::Committed { committed_at, file_count, total_bytes, total_rows } => {
                status.state = ResultState::Committed;
                status.committed_at = Some(*committed_at);
                (status.file_count, status.total_bytes, status.total_rows) = (*file_count, *total_bytes, *total_rows);
            }
            Sealing::Aborted { reason, .. } => {
                status.state = ResultState::Aborted;
                status.abort_reason = reason.clone();
            }
        }
        status
    }
}

impl Record for Summary {
    const MAX_BYTES: u64 = MAX_SMALL_RECORD_BYTES;

    fn info(&self) -> &ResultInfo {
        &self.info
    }

    fn validate(&self, _format: u32) -> Result<(), String> {
        // The description is copied from the outcome, which may be of any format: its checks are the oldest
        // format's (a TTL past 100 years, which release 0.1.0 took, is kept until released).
        self.info.validate(0)?;
        match &self.sealed {
            Sealing::Committed { file_count, .. } if *file_count == 0 || *file_count > MAX_FILES_PER_RESULT as u64 => {
                Err(format!("file_count: {file_count}; a result holds 1 to {MAX_FILES_PER_RESULT} files"))
            }
            Sealing::Committed { total_bytes, total_rows, .. }
                if *total_bytes > MAX_COUNT || total_rows.is_some_and(|rows| rows > MAX_COUNT) =>
            {
                Err(format!("total_bytes or total_rows: more than {MAX_COUNT}"))
            }
            Sealing::Committed { committed_at, .. } if *committed_at < self.info.created_at => {
                Err("committed_at: before created_at".into())
            }
            Sealing::Aborted { reason, .. } if reason.len() > MAX_ABORT_REASON_BYTES => {
                Err(format!("reason: longer than {MAX_ABORT_REASON_BYTES} bytes"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Aborted, Manifest, ManifestFile, RelPath, ResultId, Stored};

    fn info() -> ResultInfo {
        ResultInfo {
            result_id: ResultId::generate().unwrap(),
            query_id: "q".into(),
            file_type: crate::model::FileType::Parquet,
            created_at: Timestamp::from_millis(1_800_000_000_000).unwrap(),
            ttl: None,
            labels: [("user".to_owned(), "alice".to_owned())].into(),
        }
    }

    #[test]
    fn a_summary_says_what_the_outcome_does_without_its_files_and_reads_back() {
        let committed_at = Timestamp::from_millis(1_800_000_001_000).unwrap();
        let file = |path: &str, size, rows| ManifestFile {
            path: RelPath::parse("path", path).unwrap(),
            size_bytes: size,
            row_count: rows,
            pin: None,
        };
        let manifest =
            Manifest { info: info(), committed_at, files: vec![file("a", 10, Some(1)), file("b/c", 32, Some(2))] };
        let outcome = Outcome::Committed(manifest.clone());
        let summary = Summary::of(&outcome);
        let expires = Some(committed_at);
        assert_eq!(summary.status(expires), ResultStatus::committed(&manifest, expires));
        let text = serde_json::to_string(&Stored::new(summary.clone())).unwrap();
        assert!(!text.contains("\"files\"") && text.contains("\"outcome\":\"committed\""), "{text}");
        let read: Stored<Summary> = serde_json::from_str(&text).unwrap();
        assert_eq!(read.record, summary);
        assert_eq!(read.record.validate(1), Ok(()));

        let aborted = Aborted { info: info(), aborted_at: committed_at, reason: "cancelled".into() };
        let summary = Summary::of(&Outcome::Aborted(aborted.clone()));
        assert_eq!(summary.status(expires), ResultStatus::aborted(&aborted, expires));
    }

    #[test]
    fn a_summary_no_release_writes_is_refused() {
        let committed = |file_count, total_bytes, committed_ms| Summary {
            info: info(),
            sealed: Sealing::Committed {
                committed_at: Timestamp::from_millis(committed_ms).unwrap(),
                file_count,
                total_bytes,
                total_rows: None,
            },
        };
        assert!(committed(0, 1, 1_800_000_001_000).validate(1).is_err(), "no file");
        assert!(committed(1, MAX_COUNT + 1, 1_800_000_001_000).validate(1).is_err(), "too many bytes");
        assert!(committed(1, 1, 1_700_000_000_000).validate(1).is_err(), "committed before it was made");
        assert!(committed(1, 1, 1_800_000_001_000).validate(1).is_ok());
        let long = Summary {
            info: info(),
            sealed: Sealing::Aborted {
                aborted_at: Timestamp::latest(),
                reason: "x".repeat(MAX_ABORT_REASON_BYTES + 1),
            },
        };
        assert!(long.validate(1).is_err());
    }
}
