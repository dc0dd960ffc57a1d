//! The sinks as workers are handed them: by Allocate, and again by RefreshSink when the credentials in them
//! are a session that ends (scoped credentials). A session lasts until the result's commit deadline, within
//! the bounds the store sets.

use super::{Error, Results, State};
use crate::{
    model::{Allocation, Outcome, ResultId},
    storage::{Backend, Sink},
};

impl<B: Backend> Results<B> {
    /// The sink of `allocation` with credentials until its commit deadline (when the workers' are made per
    /// sink: one request).
    pub(super) async fn worker_sink(&self, allocation: &Allocation) -> Result<Sink, Error> {
        let until_deadline = allocation.commit_deadline.saturating_duration_since(self.now());
        Ok(self.storage.worker_sink(&allocation.info.result_id, until_deadline).await?)
    }

    /// Result `id`'s sink with fresh credentials, for its worker (who proves it with `commit_token`), while
    /// the result is ALLOCATED and before its commit deadline; and its allocation. Two requests one after the
    /// other: the result's state, then the credentials.
    pub async fn refresh_sink(&self, id: &ResultId, commit_token: &str) -> Result<(Sink, Allocation), Error> {
        if !self.tokens.verify(id, commit_token) {
            return Err(Error::CommitTokenMismatch { result_id: id.clone() });
        }
        // Read, not taken from this replica's memory: another replica may have sealed it.
        let allocation = match self.state(id, true).await? {
            State::Allocated(allocation) => allocation,
            State::Sealed(sealed) => {
                let state = match sealed.outcome.as_ref() {
                    Outcome::Committed(_) => "committed",
                    Outcome::Aborted(_) => "aborted",
                };
                return Err(Error::SinkClosed { result_id: id.clone(), state });
            }
            State::Unknown | State::Deleting(_) => return Err(Error::NotFound { result_id: id.clone() }),
        };
        if allocation.commit_deadline <= self.now() {
            return Err(Error::DeadlinePassed { result_id: id.clone() });
        }
        let sink = self.worker_sink(&allocation).await?;
        Ok((sink, allocation))
    }
}
