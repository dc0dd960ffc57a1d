//! The storage requests a call makes, and how many of them it waits on one after another (its depth: the
//! round trips a store far away makes it wait). A call is traced by running it in [`traced`]; each storage
//! request it makes from its own task (not from a task it spawns: background work is off its path) marks
//! itself with [`request`]. Outside a traced call, marking costs one failed task-local lookup.

use std::{cell::RefCell, future::Future, time::Instant};

tokio::task_local! {
    static CALL: RefCell<Vec<Span>>;
}

/// When one storage request started and, once it has, ended.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: Instant,
    end: Option<Instant>,
}

/// What a traced call made of storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traced {
    /// Storage requests made.
    pub requests: usize,
    /// The longest chain of them each sent only after the previous one's answer.
    pub depth: usize,
}

/// Runs `call`, tracing the storage requests it makes.
pub async fn traced<F: Future>(call: F) -> (F::Output, Traced) {
    CALL.scope(RefCell::new(Vec::new()), async move {
        let output = call.await;
        let traced = CALL.with(|spans| depth(&spans.borrow()));
        (output, traced)
    })
    .await
}

/// Marks one storage request, from now until the guard is dropped (at its answer).
pub fn request() -> Request {
    let start = Instant::now();
    let index = CALL
        .try_with(|spans| {
            let mut spans = spans.borrow_mut();
            spans.push(Span { start, end: None });
            spans.len() - 1
        })
        .ok();
    Request { index }
}

/// A storage request in flight, in the trace of the call that made it (if it is traced).
#[must_use = "the request ends when this is dropped"]
#[derive(Debug)]
pub struct Request {
    index: Option<usize>,
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            let end = Instant::now();
            let _ = CALL.try_with(|spans| {
                if let Some(span) = spans.borrow_mut().get_mut(index) {
                    span.end = Some(end);
                }
            });
        }
    }
}

/// The most spans a depth is computed over (a call's requests are a handful; this bounds the quadratic work
/// for a call that lists or deletes page after page).
const MAX_SPANS: usize = 4096;

/// The requests of `spans`, and the longest chain in which each starts after the previous one ended (one
/// still in flight ends at the end of the call).
fn depth(spans: &[Span]) -> Traced {
    let now = Instant::now();
    let mut spans: Vec<(Instant, Instant)> =
        spans.iter().take(MAX_SPANS).map(|span| (span.start, span.end.unwrap_or(now))).collect();
    spans.sort_unstable();
    let mut chain = vec![0usize; spans.len()];
    for i in 0..spans.len() {
        let before = (0..i).filter(|&j| spans[j].1 <= spans[i].0).map(|j| chain[j]).max().unwrap_or(0);
        chain[i] = before + 1;
    }
    Traced { requests: spans.len(), depth: chain.into_iter().max().unwrap_or(0) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn storage_request(millis: u64) {
        let _request = request();
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }

    #[tokio::test]
    async fn requests_in_parallel_are_one_round_trip_and_in_a_row_are_two() {
        let ((), seen) = traced(async {
            futures::join!(storage_request(20), storage_request(20));
            storage_request(10).await;
        })
        .await;
        assert_eq!(seen, Traced { requests: 3, depth: 2 });
        let ((), seen) = traced(async {
            storage_request(5).await;
            futures::join!(storage_request(30), async {
                storage_request(5).await;
                storage_request(5).await;
            });
        })
        .await;
        assert_eq!(seen, Traced { requests: 4, depth: 3 });
    }

    #[tokio::test]
    async fn work_spawned_off_the_call_and_untraced_work_are_not_counted() {
        let ((), seen) = traced(async {
            storage_request(1).await;
            tokio::spawn(storage_request(1)).await.unwrap();
        })
        .await;
        assert_eq!(seen, Traced { requests: 1, depth: 1 });
        storage_request(1).await;
    }
}
