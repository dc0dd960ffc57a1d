//! The watched results of this process: a channel per result, through which its changes reach its watchers
//! (`watch.rs` starts and feeds them).

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use tokio::sync::watch;

use crate::model::{ResultId, ResultStatus};

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
