//! Whether committed results are still what was committed: each file checked against its manifest entry as
//! a download checks it (its pin, or its size alone in a manifest written before pins), without reading its
//! bytes: one request per file (a HEAD, or a `stat`).

use futures::StreamExt;

use super::{Error, Results, State};
use crate::{
    layout,
    model::{ManifestFile, Outcome, RelPath, ResultId, ResultState},
    storage::{Backend, Listing, StorageError},
};

/// How many files are checked at once.
const CHECKS: usize = 64;
/// How many records' keys one listing of `--all` reads at a time.
const PAGE: usize = 1_000;

/// What a committed file is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileCheck {
    /// The committed version (or, unpinned, a file of the committed size).
    Intact,
    /// Another version: rewritten or replaced after its commit.
    Changed,
    /// Gone.
    Missing,
}

impl FileCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intact => "intact",
            Self::Changed => "changed",
            Self::Missing => "missing",
        }
    }
}

/// One file of a verified result.
#[derive(Clone, Debug)]
pub struct CheckedFile {
    pub path: RelPath,
    /// Whether its manifest pins it (else its size alone is checked: a manifest of a release before pins).
    pub pinned: bool,
    pub check: FileCheck,
}

/// The files of one committed result, as they are now.
#[derive(Clone, Debug)]
pub struct Verification {
    pub result_id: ResultId,
    pub files: Vec<CheckedFile>,
}

impl Verification {
    /// Whether every file is intact.
    pub fn intact(&self) -> bool {
        self.files.iter().all(|file| file.check == FileCheck::Intact)
    }
}

impl<B: Backend> Results<B> {
    /// Checks every file of result `id`, read afresh from storage: [`Error::NotFound`] if there is no such
    /// result, [`Error::NotCommitted`] if it is not committed (nothing to check). A storage failure fails it.
    pub async fn verify(&self, id: &ResultId) -> Result<Verification, Error> {
        let state = self.state(id, true).await?;
        let status = self.status_from(&state).ok_or_else(|| Error::NotFound { result_id: id.clone() })?;
        let committed = match &state {
            State::Sealed(sealed) if status.state == ResultState::Committed => match sealed.outcome.as_ref() {
                Outcome::Committed(manifest) => Some(manifest.files.clone()),
                Outcome::Aborted(_) => None,
            },
            _ => None,
        };
        let Some(files) = committed else {
            return Err(Error::NotCommitted { result_id: id.clone(), state: status.state.as_str() });
        };
        let checks = futures::stream::iter(files).map(|file| self.check(id, file)).buffered(CHECKS);
        let files: Vec<Result<CheckedFile, Error>> = checks.collect().await;
        Ok(Verification { result_id: id.clone(), files: files.into_iter().collect::<Result<_, _>>()? })
    }

    /// [`Results::verify`] of every committed result, handed to `each` as it is checked, a page of records
    /// listed at a time (memory does not grow with the store). A result that is not committed (or went
    /// meanwhile) is passed over, one whose records cannot be read is logged and passed over; a storage
    /// failure stops it.
    pub async fn verify_all(&self, mut each: impl FnMut(Verification)) -> Result<(), Error> {
        let mut after: Option<String> = None;
        loop {
            let range = Listing { after: after.as_deref(), until: None, limit: Some(PAGE) };
            let keys = self.storage.list_keys(layout::RESULTS, range).await?;
            let Some(last) = keys.last().cloned() else { return Ok(()) };
            let ids: Vec<ResultId> = keys
                .iter()
                .filter_map(|key| key.strip_prefix(layout::RESULTS)?.strip_suffix(&format!("/{}", layout::OUTCOME)))
                .filter_map(|id| ResultId::parse(id).ok())
                .collect();
            for id in ids {
                match self.verify(&id).await {
                    Ok(verification) => each(verification),
                    Err(Error::NotFound { .. } | Error::NotCommitted { .. }) => {}
                    // One record that cannot be read costs its own result, not the check of the others.
                    Err(error @ Error::CorruptRecord { .. }) => {
                        tracing::warn!("not verified: {}", crate::telemetry::Escaped(&error.detail()));
                    }
                    Err(error) => return Err(error),
                }
            }
            after = Some(last);
        }
    }

    /// One file of `id` as it is now.
    async fn check(&self, id: &ResultId, file: ManifestFile) -> Result<CheckedFile, Error> {
        let check = match self.storage.check_file(id, &file).await {
            Ok(()) => FileCheck::Intact,
            Err(StorageError::Changed { .. }) => FileCheck::Changed,
            Err(StorageError::NotFound { .. }) => FileCheck::Missing,
            Err(error) => return Err(error.into()),
        };
        Ok(CheckedFile { pinned: file.pin.is_some(), path: file.path, check })
    }
}
