//! Serving HTTP on the accepted connections: HTTP/2 (gRPC, and downloads) under the configured limits
//! (streams per connection, header block size, keepalive pings), or HTTP/1.1 for download clients that speak
//! only that, told apart by the first bytes a client sends. A connection is closed (with a GOAWAY on HTTP/2)
//! once it has had no request for `idle_timeout` (so that its client connects again for its next call instead
//! of losing it), or once one of its calls' requests did not arrive within `request_timeout`, and every one is
//! closed when the service stops, after the requests in flight.

use std::{convert::Infallible, future::Future, pin::pin};

use futures::StreamExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{sync::watch, task::JoinSet};
use tonic::body::Body;
use tracing::debug;

use crate::{
    config::ConnectionConfig,
    connections::{Connection, ConnectionInfo, Incoming},
};

/// The buffer an HTTP/1.1 connection reads a request's head into (hyper's least).
const HTTP1_BUFFER: usize = 8192;
/// How long a connection told to close because a call broke a rule (see
/// `ConnectionState::close_gracefully`) keeps serving its other calls.
const AFTER_A_BROKEN_RULE: std::time::Duration = std::time::Duration::from_secs(1);
/// The streams a connection may have refused (over `max_concurrent_streams`, say) before it is closed.
const MAX_REFUSED_STREAMS: usize = 1024;
/// The streams a connection may open and reset before they are served (a rapid reset) before it is closed.
const MAX_PENDING_RESETS: usize = 20;

/// Serves `service` on every connection of `incoming` until `shutdown` completes; then stops accepting (the
/// listener closes), tells every connection to finish its calls and close, and returns once all have.
pub async fn serve<S>(incoming: Incoming, service: S, config: &ConnectionConfig, shutdown: impl Future<Output = ()>)
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.handshake_timeout)
        .max_buf_size(HTTP1_BUFFER.max(config.max_header_bytes as usize));
    http.http2()
        .timer(TokioTimer::new())
        // A peer that opens streams past the limit (refused one by one), or resets streams as fast as it
        // opens them, is sent ENHANCE_YOUR_CALM and disconnected after this many.
        .max_local_error_reset_streams(MAX_REFUSED_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(config.max_header_bytes)
        .keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout);
    let (stopping, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    {
        let mut incoming = pin!(incoming);
        let mut shutdown = pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Reap the connections that are done, so that the set holds only those open.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                next = incoming.next() => match next {
                    Some(Ok(connection)) => {
                        connections.spawn(serve_connection(connection, service.clone(), http.clone(), *config, stop.clone()));
                    }
                    None => break,
                }
            }
        }
    }
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until its client closes it, it goes idle, or the service stops. An idle one is sent
/// a GOAWAY and closed once its client has acknowledged it, or `keepalive_timeout` later if it does not.
async fn serve_connection<S>(
    connection: Connection,
    service: S,
    http: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    config: ConnectionConfig,
    mut stop: watch::Receiver<bool>,
) where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let state = connection.state().clone();
    let info = ConnectionInfo { state: state.clone() };
    let service = tower::ServiceExt::map_request(service, move |request: http::Request<hyper::body::Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(info.clone());
        request
    });
    let served = http.serve_connection(TokioIo::new(connection), TowerToHyperService::new(service));
    let mut served = pin!(served);
    let mut closing = false;
    // Once an idle connection has been told to close: when it is closed anyway.
    let mut abandon = pin!(futures::future::OptionFuture::from(None::<tokio::time::Sleep>));
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    debug!(peer = %state.peer, "connection ended: {error}");
                }
                return;
            }
            () = state.idle(config.idle_timeout), if !closing => {
                debug!(peer = %state.peer, "closing: no call for idle_timeout");
                served.as_mut().graceful_shutdown();
                closing = true;
                abandon.set(Some(tokio::time::sleep(config.keepalive_timeout)).into());
            }
            // A call broke a rule (its request did not arrive in time): no new call here, and the calls in
            // flight get a moment (a stream whose request never ended would hold a graceful close for ever).
            () = state.close_gracefully_requested(), if !closing => {
                debug!(peer = %state.peer, "closing: a call's request did not arrive within request_timeout");
                served.as_mut().graceful_shutdown();
                closing = true;
                abandon.set(Some(tokio::time::sleep(AFTER_A_BROKEN_RULE.min(config.keepalive_timeout))).into());
            }
            // Aborted (see `ConnectionState::abort`): dropped with whatever it was serving.
            () = state.close_requested() => {
                debug!(peer = %state.peer, "closed: aborted");
                return;
            }
            Some(()) = abandon.as_mut() => {
                debug!(peer = %state.peer, "closed: the GOAWAY was not acknowledged within keepalive_timeout");
                return;
            }
            changed = stop.changed(), if !closing => {
                if changed.is_err() || *stop.borrow() {
                    served.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
