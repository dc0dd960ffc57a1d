//! What a Commit seals: its allocation and its sink's entries checked, and the manifest made of them (each
//! file with the pin its listing gave), or why nothing is sealed.

use std::collections::HashMap;

use super::{Error, state};
use crate::{
    model::{
        Allocation, InvalidArgument, Manifest, ManifestFile, Outcome, Pin, RelPath, ResultId, Timestamp, printable,
    },
    storage::{EntryKind, MAX_SINK_DEPTH, SinkEntry},
};

/// Why a Commit's check wrote no outcome.
pub(super) enum Refusal {
    /// There is no pending allocation: the pruner has seen the outcome already, or there is none.
    NotPending,
    /// The sink does not hold the files the commit needs.
    Files(Error),
    /// Anything else: the deadline has passed, too many files, a record that cannot be read.
    Refused(Error),
}

/// The outcome a Commit of `id` seals, checked against its allocation (`record`, stored at `key`) and the
/// entries of its sink at `now`: the files `declared`, or every file when none is.
/// What one commit may hold.
#[derive(Clone, Copy, Debug)]
pub(super) struct CommitLimits {
    /// `max_files_per_commit`.
    pub max_files: usize,
    /// `max_result_bytes`, if set.
    pub max_result_bytes: Option<u64>,
}

pub(super) fn check_commit(
    id: &ResultId,
    key: &str,
    record: &[u8],
    entries: Vec<SinkEntry>,
    now: Timestamp,
    limits: CommitLimits,
    declared: Vec<crate::model::DeclaredFile>,
) -> Result<Outcome, Refusal> {
    let max_files = limits.max_files;
    let allocation: Allocation = state::decode(key, record).map_err(Refusal::Refused)?;
    if now > allocation.commit_deadline {
        return Err(Refusal::Refused(Error::DeadlinePassed { result_id: id.clone() }));
    }
    // The listing stops one past the most a commit takes.
    if entries.len() > max_files {
        return Err(Refusal::Refused(Error::TooManyFiles { result_id: id.clone(), max: max_files }));
    }
    if let Some(deep) = entries.iter().find(|entry| entry.kind == EntryKind::TooDeep) {
        let too_deep = Error::TooDeep { result_id: id.clone(), path: printable(&deep.path), depth: MAX_SINK_DEPTH };
        return Err(Refusal::Files(too_deep));
    }
    let files = match declared.is_empty() {
        true => discover(id, entries),
        false => verify(id, declared, entries),
    };
    let files = files.map_err(Refusal::Files)?;
    let Some(bytes) = crate::model::sum_counts(files.iter().map(|file| file.size_bytes)) else {
        return Err(Refusal::Files(Error::TooLarge { result_id: id.clone() }));
    };
    if let Some(max) = limits.max_result_bytes
        && bytes > max
    {
        return Err(Refusal::Refused(Error::ResultTooLarge { result_id: id.clone(), bytes, max }));
    }
    let manifest = Manifest { info: allocation.info, committed_at: now, files };
    // What is written is what a reader accepts: a check of the request already, but it costs nothing here.
    manifest.validate().map_err(|message| Refusal::Refused(InvalidArgument::new("files", message).into()))?;
    Ok(Outcome::Committed(manifest))
}

/// Every file in the sink, sorted by path; anything but a regular file with a valid name is refused.
pub(super) fn discover(id: &ResultId, entries: Vec<SinkEntry>) -> Result<Vec<ManifestFile>, Error> {
    let mut files = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.kind != EntryKind::File {
            return Err(Error::NotRegularFile { result_id: id.clone(), path: printable(&entry.path) });
        }
        let path = RelPath::parse("path", &entry.path).map_err(|e| Error::InvalidFileName {
            result_id: id.clone(),
            path: printable(&entry.path),
            reason: e.message,
        })?;
        let pin = checked_pin(id, &path, entry.pin)?;
        files.push(ManifestFile { path, size_bytes: entry.size_bytes, row_count: None, pin });
    }
    if files.is_empty() {
        return Err(Error::EmptySink { result_id: id.clone() });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The declared files, in their order, each checked against the sink's listing.
pub(super) fn verify(
    id: &ResultId,
    declared: Vec<crate::model::DeclaredFile>,
    entries: Vec<SinkEntry>,
) -> Result<Vec<ManifestFile>, Error> {
    let found: HashMap<String, SinkEntry> = entries.into_iter().map(|e| (e.path.clone(), e)).collect();
    declared
        .into_iter()
        .map(|file| {
            let Some(entry) = found.get(file.path.as_str()) else {
                let folder = format!("{}/", file.path);
                return match found.keys().any(|found| found.starts_with(&folder)) {
                    true => Err(Error::IsFolder { result_id: id.clone(), path: file.path }),
                    false => Err(Error::FileMissing { result_id: id.clone(), path: file.path }),
                };
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
            let pin = checked_pin(id, &file.path, entry.pin.clone())?;
            Ok(ManifestFile { path: file.path, size_bytes: entry.size_bytes, row_count: file.row_count, pin })
        })
        .collect()
}

/// The pin the listing gave the file `path`, if it is one a manifest can hold.
fn checked_pin(id: &ResultId, path: &RelPath, pin: Option<Pin>) -> Result<Option<Pin>, Error> {
    match pin.as_ref().map(Pin::validate) {
        Some(Err(reason)) => Err(Error::Unpinnable { result_id: id.clone(), path: path.clone(), reason }),
        _ => Ok(pin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeclaredFile;

    fn entry(path: &str, pin: Option<Pin>) -> SinkEntry {
        SinkEntry { path: path.into(), size_bytes: 3, kind: EntryKind::File, pin }
    }

    #[test]
    fn a_commit_records_each_files_pin_as_listed() {
        let id = ResultId::generate().unwrap();
        let pin = Pin::Object { e_tag: Some("\"abc\"".into()), version: Some("3HL4kqtJlcpXroDTDmJ".into()) };
        let files = discover(&id, vec![entry("b.csv", Some(pin.clone())), entry("a.csv", None)]).unwrap();
        assert_eq!(
            files.iter().map(|f| (f.path.as_str(), f.pin.clone())).collect::<Vec<_>>(),
            [("a.csv", None), ("b.csv", Some(pin.clone()))]
        );
        let declared = vec![DeclaredFile {
            path: RelPath::parse("path", "b.csv").unwrap(),
            size_bytes: Some(3),
            row_count: Some(1),
        }];
        let files = verify(&id, declared, vec![entry("b.csv", Some(pin.clone()))]).unwrap();
        assert_eq!(files[0].pin, Some(pin));
    }

    /// A store that answers an entity tag no manifest can hold (a control character, an endless one) gives a
    /// file that cannot be pinned: the commit is refused, FAILED_PRECONDITION naming the file, not
    /// INVALID_ARGUMENT (the request was fine) and not a manifest written without the pin.
    #[test]
    fn a_file_the_store_describes_with_an_unrecordable_tag_is_not_committed() {
        let id = ResultId::generate().unwrap();
        for e_tag in ["\"a\u{7}b\"".to_owned(), "x".repeat(crate::model::MAX_PIN_TEXT_BYTES + 1), String::new()] {
            let pin = Pin::Object { e_tag: Some(e_tag.clone()), version: None };
            let error = discover(&id, vec![entry("part-0.parquet", Some(pin))]).unwrap_err();
            assert!(matches!(&error, Error::Unpinnable { path, .. } if path.as_str() == "part-0.parquet"), "{error:?}");
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{e_tag:?}");
            assert!(status.message().contains("cannot be pinned"), "{}", status.message());
            assert!(!status.message().contains('\u{7}'), "the store's text is not repeated raw");
        }
    }
}
