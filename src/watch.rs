//! Watch: status updates of one result, from this process's own changes at once and from other processes'
//! by polling storage at the refresh interval. One poller per watched result serves all its watchers.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::warn;

use crate::{
    model::{ResultId, ResultStatus},
    results::{Error, Results},
    storage::Backend,
    telemetry::Escaped,
};

/// Subscribes to `id`'s status: the receiver holds the current status at once and every change after it.
/// The first watcher of a result in this process starts its poller, which stops at a final state or when
/// nobody watches any more.
pub async fn watch<B: Backend>(results: Arc<Results<B>>, id: ResultId) -> Result<watch::Receiver<ResultStatus>, Error> {
    let current = results.status(&id, false).await?;
    let subscription = results.watchers().subscribe(&id, current.clone());
    results.watchers().publish(&id, &current);
    if subscription.start_poller && !current.is_final() {
        tokio::spawn(poll(results, id, current));
    }
    Ok(subscription.receiver)
}

async fn poll<B: Backend>(results: Arc<Results<B>>, id: ResultId, mut last: ResultStatus) {
    loop {
        tokio::time::sleep(results.refresh_interval()).await;
        if !results.watchers().still_watched(&id) {
            return;
        }
        match results.status(&id, true).await {
            Ok(status) => last = status,
            // Released and deleted by another process.
            Err(Error::NotFound { .. }) => last = ResultStatus::expired(&last.info, results.now()),
            Err(e) => {
                warn!(result_id = %id, "watch: cannot read the status, trying again: {}", Escaped(&e.detail()));
                continue;
            }
        }
        results.watchers().publish(&id, &last);
        if last.is_final() {
            results.watchers().finish(&id);
            return;
        }
    }
}
