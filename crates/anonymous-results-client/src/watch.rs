//! Watch, subscribed again when the stream breaks, and the wait for a final state.

use futures_util::{Stream, StreamExt, stream};
use tonic::{Status, Streaming};

use crate::{
    Client, Error,
    proto::{ResultState, ResultStatus, WatchRequest},
};

/// Whether a result in `status` can change no more: committed, aborted or expired. (A committed result still
/// expires later, but Watch ends at its commit.)
pub fn is_final(status: &ResultStatus) -> bool {
    !matches!(status.state(), ResultState::Allocated | ResultState::Unspecified)
}

/// Where a watch is: the stream it reads, the last status it yielded, the failures since the last status.
struct Watching {
    client: Client,
    result_id: String,
    stream: Option<Streaming<ResultStatus>>,
    last: Option<ResultStatus>,
    failures: u32,
    done: bool,
}

impl Client {
    /// The status of `result_id` at once, then each change, ending after a final state ([`is_final`]). When the
    /// stream breaks with `UNAVAILABLE` (a replica restarting, a connection lost) or ends before a final state,
    /// the watch subscribes again with the retry policy's backoff: the service answers the current status
    /// first, so no change is missed, and a status equal to the last one yielded is not yielded twice. The
    /// deadline does not apply (a watch lasts as long as the result stays allocated); stop it by dropping the
    /// stream. Any other error is yielded, and ends the stream.
    pub fn watch(&self, result_id: impl Into<String>) -> impl Stream<Item = Result<ResultStatus, Error>> + Send {
        let start = Watching {
            client: self.clone(),
            result_id: result_id.into(),
            stream: None,
            last: None,
            failures: 0,
            done: false,
        };
        stream::unfold(start, |mut watching| async move {
            let next = watching.next().await?;
            Some((next, watching))
        })
    }

    /// One subscription to Watch, as the service streams it: the current status, then each change, ending
    /// after a final state, or with the service's error when the stream breaks. Subscribing is retried as a
    /// unary call is (without the deadline); what comes after is not: for a watch that subscribes again, see
    /// [`Client::watch`].
    pub async fn subscribe(&self, result_id: impl Into<String>) -> Result<Streaming<ResultStatus>, Error> {
        let message = WatchRequest { result_id: result_id.into() };
        // No deadline: it would bound the stream.
        self.send(self.grpc.clone(), message, None, |mut grpc, request| async move { grpc.watch(request).await }).await
    }

    /// Watches `result_id` until it reaches a final state, and answers that status.
    pub async fn watch_until_final(&self, result_id: impl Into<String>) -> Result<ResultStatus, Error> {
        let result_id = result_id.into();
        let mut updates = std::pin::pin!(self.watch(result_id.clone()));
        while let Some(status) = updates.next().await {
            let status = status?;
            if is_final(&status) {
                return Ok(status);
            }
        }
        Err(Error::Protocol(format!("the watch of {result_id} ended before a final state")))
    }
}

impl Watching {
    /// The next status to yield, an error that ends the watch, or `None` after the end.
    async fn next(&mut self) -> Option<Result<ResultStatus, Error>> {
        while !self.done {
            let broken = match self.stream.as_mut() {
                None => match self.client.subscribe(self.result_id.clone()).await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        continue;
                    }
                    // Subscribing has had its own retries.
                    Err(error) => {
                        self.done = true;
                        return Some(Err(error));
                    }
                },
                Some(stream) => match stream.message().await {
                    Ok(Some(status)) => {
                        // A repeat of the last status is what a new subscription answers first: not news, and
                        // not a sign that the failures are over.
                        if self.last.as_ref() == Some(&status) {
                            continue;
                        }
                        self.failures = 0;
                        self.done = is_final(&status);
                        self.last = Some(status.clone());
                        return Some(Ok(status));
                    }
                    Ok(None) => Status::unavailable("the watch ended before a final state"),
                    Err(status) => status,
                },
            };
            self.stream = None;
            self.failures += 1;
            match self.client.pause_before_retry(&broken, self.failures, None) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    self.done = true;
                    return Some(Err(Error::Status { status: broken, attempts: self.failures }));
                }
            }
        }
        None
    }
}
