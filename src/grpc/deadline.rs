//! A request must arrive in time. Neither hyper nor tonic bounds how long a request's body may take once a
//! call has started, so a caller that sends a byte and then nothing holds its call, and its connection, for
//! ever. Every request's body is held here to `request_timeout` from the moment the call began: past it,
//! reading the body fails with DEADLINE_EXCEEDED (and so does the call), the call is counted in
//! `anonymous_results_request_timeouts_total`, and its connection is told to close (an HTTP/2 GOAWAY), so that
//! its caller cannot keep the connection by starting another slow call. Only the request is bounded: an
//! answer, a Watch's stream of updates, goes on as long as it goes.
//!
//! [`RequestDeadline`] is the tower layer that `serve` puts in front of every route of its port; the admission
//! layer applies the same deadline to the contract's calls wherever they are mounted, unless this layer has
//! already (see [`limit`]).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Sleep;
use tonic::{Status, body::Body};
use tracing::info;

use crate::{connections::ConnectionInfo, metrics::Metrics};

/// Marks a request whose body is held to the deadline already.
#[derive(Clone, Copy, Debug)]
struct Limited;

/// `request`, its body held to `timeout` from now (unless it is already, or has no body). When the deadline
/// passes first, the call is counted in `metrics` and its connection is told to close.
pub fn limit(mut request: http::Request<Body>, timeout: Duration, metrics: &Arc<Metrics>) -> http::Request<Body> {
    if request.extensions().get::<Limited>().is_some() || request.body().is_end_stream() {
        return request;
    }
    request.extensions_mut().insert(Limited);
    let connection = request.extensions().get::<ConnectionInfo>().cloned();
    let path = request.uri().path().to_owned();
    let arriving = connection.as_ref().map(|info| info.state.request_arriving());
    let expiry = Expiry { metrics: metrics.clone(), connection, timeout, path, _arriving: arriving };
    request.map(|body| {
        Body::new(TimedBody { body, deadline: Box::pin(tokio::time::sleep(timeout)), state: State::Arriving(expiry) })
    })
}

/// What to do when a request's deadline passes.
struct Expiry {
    metrics: Arc<Metrics>,
    connection: Option<ConnectionInfo>,
    timeout: Duration,
    /// The call's path (its method), for the log line.
    path: String,
    /// Counts the request as arriving on its connection until it is over (see `connections.rs`).
    _arriving: Option<crate::connections::Arriving>,
}

impl Expiry {
    /// Counts the call, tells its connection to close, and answers the error its body fails with.
    fn expired(mut self) -> Status {
        self.metrics.request_timeout();
        let peer = self.connection.as_ref().map(|info| info.state.peer.to_string()).unwrap_or_default();
        info!(peer, path = %crate::telemetry::Escaped(&self.path), "a request did not arrive whole within request_timeout; closing its connection");
        if let Some(info) = self.connection.take() {
            info.state.close_gracefully();
        }
        let seconds = self.timeout.as_secs_f64();
        Status::deadline_exceeded(format!(
            "the request did not arrive whole within {seconds} s (request_timeout): send it at once, then end the \
             stream"
        ))
    }
}

enum State {
    /// The body has not ended; the deadline holds.
    Arriving(Expiry),
    /// It ended, or its deadline passed: the deadline no longer matters.
    Over,
}

/// A request body that fails once its deadline passes before its end.
struct TimedBody {
    body: Body,
    deadline: Pin<Box<Sleep>>,
    state: State,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let State::Arriving(_) = this.state else { return polled };
        match polled {
            Poll::Ready(None) => {
                this.state = State::Over;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if frame.is_err() || this.body.is_end_stream() {
                    this.state = State::Over;
                }
                Poll::Ready(Some(frame))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => match std::mem::replace(&mut this.state, State::Over) {
                    State::Arriving(expiry) => Poll::Ready(Some(Err(expiry.expired()))),
                    State::Over => Poll::Pending,
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The tower layer that holds every request's body to the deadline (see [`limit`]).
#[derive(Clone, Debug)]
pub struct RequestDeadline {
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl RequestDeadline {
    pub fn new(timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self { timeout, metrics }
    }
}

impl<S> tower::Layer<S> for RequestDeadline {
    type Service = Deadlined<S>;

    fn layer(&self, inner: S) -> Deadlined<S> {
        Deadlined { inner, deadline: self.clone() }
    }
}

/// A service whose requests' bodies are held to the deadline.
#[derive(Clone, Debug)]
pub struct Deadlined<S> {
    inner: S,
    deadline: RequestDeadline,
}

impl<S> tower::Service<http::Request<Body>> for Deadlined<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> S::Future {
        self.inner.call(limit(request, self.deadline.timeout, &self.deadline.metrics))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_body_that_never_ends_fails_at_its_deadline_and_one_that_ends_does_not() {
        let metrics = Arc::new(Metrics::new());
        let never =
            Body::new(http_body_util::StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Status>>()));
        let request = limit(http::Request::new(never), Duration::from_millis(50), &metrics);
        let error = request.into_body().collect().await.unwrap_err();
        let status = Status::from_error(error.into());
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(metrics.render().contains("anonymous_results_request_timeouts_total 1\n"));

        let whole = Body::new(http_body_util::Full::new(Bytes::from_static(b"a whole request")));
        let request = limit(http::Request::new(whole), Duration::from_millis(50), &metrics);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let bytes = request.into_body().collect().await.expect("a body that arrived in time").to_bytes();
        assert_eq!(&bytes[..], b"a whole request");
        assert!(metrics.render().contains("anonymous_results_request_timeouts_total 1\n"), "counted once");
    }
}
