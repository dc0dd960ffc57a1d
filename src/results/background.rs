//! Work that runs after its call's answer (deleting a released result's files and records, an aborted
//! result's files): a bounded number at once, and a way to wait until all of it is done.

use std::{
    future::Future,
    sync::atomic::{AtomicUsize, Ordering},
};

use tokio::sync::{Notify, Semaphore};

use crate::telemetry::traces;

/// The background work of one service.
#[derive(Debug)]
pub(super) struct Background {
    /// Turns: at most this many pieces of work run at once; the rest wait (a task each, no storage request).
    turns: Semaphore,
    at_once: usize,
    /// Pieces started and not yet done (waiting for a turn included).
    running: AtomicUsize,
    idle: Notify,
}

impl Background {
    pub(super) fn new(at_once: usize) -> Self {
        Self { turns: Semaphore::new(at_once), at_once, running: AtomicUsize::new(0), idle: Notify::new() }
    }

    /// Runs `work` on a task of its own when a turn is free.
    pub(super) fn spawn(self: &std::sync::Arc<Self>, work: impl Future<Output = ()> + Send + 'static) {
        self.running.fetch_add(1, Ordering::AcqRel);
        let background = self.clone();
        // A trace of its own: the call that started it has answered.
        let span = traces::span!(traces::starts(), info_span, parent: None, "after the answer");
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let done = Done(&background);
                if let Ok(_turn) = done.0.turns.acquire().await {
                    work.await;
                }
            },
            span,
        ));
    }

    /// How many pieces of work are started and not done (waiting for a turn included).
    pub(super) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// How many pieces of work hold a turn now (at most the number given to [`Background::new`]).
    pub(super) fn active(&self) -> usize {
        self.at_once - self.turns.available_permits()
    }

    /// Completes once no work is left (work started meanwhile included).
    pub(super) async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            if self.running() == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Counts a piece of work done when dropped (also when its task is cancelled or panics).
struct Done<'a>(&'a Background);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn work_runs_a_bounded_number_at_once_and_settles() {
        let background = Arc::new(Background::new(2));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        for _ in 0..10 {
            let (now, most) = (now.clone(), most.clone());
            background.spawn(async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                now.fetch_sub(1, Ordering::SeqCst);
            });
        }
        assert_eq!(background.running(), 10);
        assert!(background.active() <= 2);
        tokio::time::timeout(Duration::from_secs(5), background.settled()).await.expect("settles");
        assert_eq!((background.running(), most.load(Ordering::SeqCst)), (0, 2));
    }
}
