//! The body of a proxied download: the file's bytes streamed from storage in bounded chunks, never the whole
//! file in memory, ended with an error (so that the client sees an aborted response, not a short file) if
//! storage gives fewer bytes than the headers promised, and cut off when it makes no progress.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

use crate::storage::StorageError;

/// Why a download's body ended before all its bytes.
#[derive(Debug, thiserror::Error)]
#[error("the download was cut off after {sent} of {expected} bytes: {reason}")]
pub struct Aborted {
    sent: u64,
    expected: u64,
    reason: &'static str,
}

/// What a streamed download reports, and holds until it ends.
pub trait Progress: Send + 'static {
    /// `bytes` more were handed to the client's connection.
    fn sent(&self, bytes: u64);

    /// The client took nothing for the stall timeout: the download is cut off.
    fn stalled(&self);

    /// The file changed while it was read: the download is cut off before any changed byte.
    fn changed(&self);
}

/// The file's chunks, from a task that reads storage one chunk ahead of the client. Whatever it holds (the
/// storage read, `guard`) is dropped when the body is done, when the client goes away (the body is dropped),
/// or when a chunk waits `stall_timeout` for the client to take it or for storage to give it.
pub fn streamed<G: Progress>(
    chunks: Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>,
    expected: u64,
    stall_timeout: Duration,
    guard: G,
) -> Streamed {
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(pump(chunks, expected, stall_timeout, sender, guard));
    Streamed { receiver, expected, received: 0, reason: None }
}

/// Moves chunks from storage to the body until `expected` bytes have gone, the body is dropped, or no
/// progress is made for `stall_timeout`.
async fn pump<G: Progress>(
    mut chunks: Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>,
    expected: u64,
    stall_timeout: Duration,
    sender: mpsc::Sender<Result<Bytes, &'static str>>,
    guard: G,
) {
    let mut sent = 0u64;
    while sent < expected {
        let next = tokio::select! {
            next = tokio::time::timeout(stall_timeout, chunks.next()) => next,
            () = sender.closed() => return,
        };
        let chunk = match next {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(StorageError::Changed { .. }))) => {
                guard.changed();
                let changed = sender.send(Err("the stored file changed after its commit"));
                let _ = tokio::time::timeout(stall_timeout, changed).await;
                return;
            }
            Ok(Some(Err(error))) => {
                tracing::warn!("a download stopped: {}", crate::telemetry::Escaped(&error.detail()));
                // Bounded like any send: a client that reads nothing cannot hold the download here.
                let _ = tokio::time::timeout(stall_timeout, sender.send(Err("storage failed"))).await;
                return;
            }
            Ok(None) => {
                let shorter = sender.send(Err("the stored file is shorter than its manifest says"));
                let _ = tokio::time::timeout(stall_timeout, shorter).await;
                return;
            }
            Err(_) => {
                let _ = sender.try_send(Err("storage made no progress"));
                return;
            }
        };
        // Never more than promised, whatever storage gives.
        let room = usize::try_from(expected - sent).unwrap_or(usize::MAX);
        let chunk = if chunk.len() > room { chunk.slice(..room) } else { chunk };
        let length = chunk.len() as u64;
        sent += length;
        match tokio::time::timeout(stall_timeout, sender.send(Ok(chunk))).await {
            Ok(Ok(())) => guard.sent(length),
            // The body is gone: the client disconnected.
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!("a download was cut off: its client took nothing for {stall_timeout:?}");
                guard.stalled();
                return;
            }
        }
    }
}

/// The body a download answers with: exactly `expected` bytes, or an error.
pub struct Streamed {
    receiver: mpsc::Receiver<Result<Bytes, &'static str>>,
    expected: u64,
    received: u64,
    reason: Option<&'static str>,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        if self.received >= self.expected {
            return Poll::Ready(None);
        }
        let aborted = |this: &Self, reason| Aborted { sent: this.received, expected: this.expected, reason };
        match self.receiver.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.received += chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(reason))) => {
                self.reason = Some(reason);
                Poll::Ready(Some(Err(aborted(&self, reason))))
            }
            Poll::Ready(None) => {
                let reason = self.reason.unwrap_or("the client took nothing for the stall timeout");
                Poll::Ready(Some(Err(aborted(&self, reason))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.received >= self.expected
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.expected - self.received.min(self.expected))
    }
}
