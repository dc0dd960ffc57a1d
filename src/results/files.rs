//! One committed file, looked up for a download: what the manifest says of it, and whether the result is
//! still there to serve it.

use super::{Error, Results, State};
use crate::{
    model::{ManifestFile, Outcome, RelPath, ResultId, ResultState},
    storage::Backend,
};

/// What a download finds of the file it names.
#[derive(Debug)]
pub enum CommittedFile {
    /// The result is committed and holds the file: its manifest entry.
    Served(ManifestFile),
    /// The result is committed, but holds no such file.
    NotInResult,
    /// The result is no longer served: released, expired, deleted, or (for a link made before) not committed.
    Gone,
}

impl<B: Backend> Results<B> {
    /// The manifest entry of `path` in result `id`, if the result is committed and still served. A
    /// recently checked result costs no storage request; a release made by another replica is seen within
    /// the refresh interval, as for Resolve.
    pub async fn committed_file(&self, id: &ResultId, path: &RelPath) -> Result<CommittedFile, Error> {
        let state = match self.state(id, false).await {
            Ok(state) => state,
            Err(Error::NotFound { .. }) => return Ok(CommittedFile::Gone),
            Err(error) => return Err(error),
        };
        let committed = self.status_from(&state).is_some_and(|status| status.state == ResultState::Committed);
        let State::Sealed(sealed) = &state else { return Ok(CommittedFile::Gone) };
        let Outcome::Committed(manifest) = sealed.outcome.as_ref() else { return Ok(CommittedFile::Gone) };
        if !committed {
            return Ok(CommittedFile::Gone);
        }
        Ok(match manifest.files.iter().find(|file| file.path == *path) {
            Some(file) => CommittedFile::Served(file.clone()),
            None => CommittedFile::NotInResult,
        })
    }
}
