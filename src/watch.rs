//! Watch: status updates of one result, from this process's own changes at once and from other processes'
//! by polling storage at the refresh interval. One poller per watched result serves all its watchers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::watch;
use tracing::warn;

use crate::{
    model::{ResultId, ResultStatus},
    results::{Error, Results},
    storage::Backend,
    telemetry::Escaped,
};

/// The watched results of this process.
#[derive(Debug, Default)]
pub struct Watchers {
    channels: Mutex<HashMap<ResultId, watch::Sender<ResultStatus>>>,
}

/// A subscription to one result's status.
pub struct Subscription {
    pub receiver: watch::Receiver<ResultStatus>,
    /// Whether the caller must start the poller of this result (it was not watched yet).
    pub start_poller: bool,
}

impl Watchers {
    /// Subscribes to `id`, whose current status is `current`.
    pub fn subscribe(&self, id: &ResultId, current: ResultStatus) -> Subscription {
        let mut channels = self.lock();
        if let Some(sender) = channels.get(id) {
            return Subscription { receiver: sender.subscribe(), start_poller: false };
        }
        let (sender, receiver) = watch::channel(current);
        channels.insert(id.clone(), sender);
        Subscription { receiver, start_poller: true }
    }

    /// Tells `id`'s watchers its new status (if it changed).
    pub fn publish(&self, id: &ResultId, status: &ResultStatus) {
        if let Some(sender) = self.lock().get(id) {
            sender.send_if_modified(|current| {
                let changed = current != status;
                if changed {
                    *current = status.clone();
                }
                changed
            });
        }
    }

    /// Whether anyone still watches `id`; forgets it otherwise (its poller then stops).
    pub fn still_watched(&self, id: &ResultId) -> bool {
        let mut channels = self.lock();
        let watched = channels.get(id).is_some_and(|sender| sender.receiver_count() > 0);
        if !watched {
            channels.remove(id);
        }
        watched
    }

    /// Forgets `id` (its final state was published).
    pub fn finish(&self, id: &ResultId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ResultId, watch::Sender<ResultStatus>>> {
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

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
                warn!(result_id = %id, "watch: cannot read the status, trying again: {}", Escaped(&e.to_string()));
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
