//! The connections the gRPC listener accepts, held to limits tonic has none for:
//!
//! - at most `max_connections` at once. At the cap, the oldest connection still in its handshake is closed to
//!   make room (a flood of silent sockets cannot lock callers out); when every connection is past its
//!   handshake, the one whose request has been arriving the longest (over [`SLOW_ARRIVAL`]) is (a flood of
//!   calls whose bodies never end cannot either, each living at most `request_timeout`); when none is, the
//!   new one is closed at once.
//! - a connection that has not finished its TLS handshake and HTTP/2 preface within `handshake_timeout` of
//!   being accepted is closed.
//!
//! [`accept`] turns a listener into the stream of connections that `serving.rs` serves; TLS is done here, so
//! that the handshake deadline covers it. [`StreamTracking`] is the tower layer that counts each connection's
//! streams, and [`ConnectionState::idle`] says when a connection has had none for a while (`serving.rs` then
//! closes it with a GOAWAY).

use std::{
    collections::VecDeque,
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::task::AtomicWaker;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
    time::{Instant, Sleep},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::Stream;
use tracing::{debug, warn};

/// The bytes of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_BYTES: usize = 24;
/// How long the accept loop waits after the operating system refused a connection (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a request must have been arriving before its connection may be closed to make room at the cap:
/// longer than an honest request takes on any link the service is reached over.
pub const SLOW_ARRIVAL: Duration = Duration::from_secs(1);
/// The most refusals logged a minute; the rest are counted in the next line.
const WARNINGS_PER_MINUTE: u32 = 6;

/// The limits [`accept`] holds connections to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// The stream of accepted connections. Dropping it stops accepting and closes the listener.
pub struct Incoming {
    connections: mpsc::Receiver<Connection>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Stream for Incoming {
    type Item = Result<Connection, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|connection| connection.map(Ok))
    }
}

/// Accepts connections on `listener` (with TCP_NODELAY: without it, a small answer written after another
/// waits for the client's delayed ACK), over TLS when `tls` is given, within `limits`.
pub fn accept(listener: TcpListener, tls: Option<TlsAcceptor>, limits: ConnectionLimits) -> Incoming {
    let (sender, connections) = mpsc::channel(64);
    let registry = Arc::new(Registry::new(limits.max_connections));
    let accepting = tokio::spawn(accept_loop(listener, tls, limits, registry, sender));
    Incoming { connections, accepting }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    registry: Arc<Registry>,
    sender: mpsc::Sender<Connection>,
) {
    let mut refusals = RateLimitedWarning::default();
    loop {
        let accepted = tokio::select! {
            () = sender.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, most likely: wait for some to be freed instead of spinning.
                refusals.warn(|skipped| warn!(skipped, "cannot accept a connection: {error}"));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if !registry.make_room() {
            refusals.warn(|skipped| {
                warn!(
                    max_connections = registry.max,
                    skipped, "refusing a connection: every connection is in use (max_connections)"
                )
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        let state = registry.open(peer);
        let deadline = Instant::now() + limits.handshake_timeout;
        tokio::spawn(handshake(stream, tls.clone(), state, deadline, sender.clone()));
    }
}

/// Finishes the TLS handshake (if any) by `deadline`, then hands the connection on; the HTTP/2 preface must
/// follow by the same deadline (see [`Connection`]).
async fn handshake(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    state: Arc<ConnectionState>,
    deadline: Instant,
    sender: mpsc::Sender<Connection>,
) {
    let io = match tls {
        None => Io::Plain(stream),
        Some(acceptor) => {
            let accepted = tokio::select! {
                () = state.close_requested() => return,
                accepted = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => accepted,
            };
            match accepted {
                Ok(Ok(stream)) => Io::Tls(Box::new(stream)),
                Ok(Err(error)) => return debug!(peer = %state.peer, "TLS handshake failed: {error}"),
                Err(_) => return debug!(peer = %state.peer, "closed: no TLS handshake within handshake_timeout"),
            }
        }
    };
    let connection =
        Connection { io, timer: Box::pin(tokio::time::sleep_until(deadline)), preface_left: PREFACE_BYTES, state };
    let _ = sender.send(connection).await;
}

/// Who is connected, and how many connections may be.
#[derive(Debug)]
struct Registry {
    max: usize,
    open: AtomicUsize,
    /// Connections in accept order, for closing the oldest still in its handshake. Entries of connections
    /// past it (or gone) are skipped, and dropped once they outnumber the open connections.
    handshaking: Mutex<VecDeque<Weak<ConnectionState>>>,
    /// Every connection (entries of those gone are dropped once they outnumber the open ones): read only at
    /// the cap, for the one whose request has been arriving the longest.
    all: Mutex<Vec<Weak<ConnectionState>>>,
}

impl Registry {
    fn new(max: usize) -> Self {
        Self { max, open: AtomicUsize::new(0), handshaking: Mutex::new(VecDeque::new()), all: Mutex::new(Vec::new()) }
    }

    /// Whether a new connection may be opened: below the cap, or once the oldest connection still in its
    /// handshake has been told to close.
    fn make_room(&self) -> bool {
        if self.open.load(Ordering::Relaxed) < self.max {
            return true;
        }
        let mut handshaking = self.lock();
        while let Some(oldest) = handshaking.pop_front() {
            if let Some(state) = oldest.upgrade()
                && !state.is_established()
                && !state.closing.load(Ordering::Relaxed)
            {
                debug!(peer = %state.peer, "closed: its handshake was the oldest unfinished one at max_connections");
                state.close();
                return true;
            }
        }
        drop(handshaking);
        match self.slowest_arrival() {
            Some(state) => {
                debug!(peer = %state.peer, "closed: its request had been arriving the longest at max_connections");
                state.close();
                true
            }
            None => false,
        }
    }

    /// Of the connections not told to close, the one whose request has been arriving the longest, if that is
    /// longer than [`SLOW_ARRIVAL`].
    fn slowest_arrival(&self) -> Option<Arc<ConnectionState>> {
        let bound = Instant::now().checked_sub(SLOW_ARRIVAL)?;
        let all = self.all.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        all.iter()
            .filter_map(Weak::upgrade)
            .filter(|state| !state.closing.load(Ordering::Relaxed))
            .filter_map(|state| state.arriving_since().filter(|since| *since < bound).map(|since| (since, state)))
            .min_by_key(|(since, _)| *since)
            .map(|(_, state)| state)
    }

    fn open(self: &Arc<Self>, peer: SocketAddr) -> Arc<ConnectionState> {
        self.open.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState {
            peer,
            registry: self.clone(),
            established: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            waker: AtomicWaker::new(),
            closed: Notify::new(),
            stream_ended: Notify::new(),
            winding_down: AtomicBool::new(false),
            wind_down: Notify::new(),
            arriving: Mutex::new((0, None)),
        });
        {
            let mut all = self.all.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if all.len() > 2 * self.open.load(Ordering::Relaxed) + 64 {
                all.retain(|entry| entry.strong_count() > 0);
            }
            all.push(Arc::downgrade(&state));
        }
        let mut handshaking = self.lock();
        if handshaking.len() > 2 * self.open.load(Ordering::Relaxed) + 64 {
            handshaking.retain(|entry| entry.upgrade().is_some_and(|state| !state.is_established()));
        }
        handshaking.push_back(Arc::downgrade(&state));
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<ConnectionState>>> {
        self.handshaking.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the listener and the service's layers share of one connection.
#[derive(Debug)]
pub struct ConnectionState {
    pub peer: SocketAddr,
    registry: Arc<Registry>,
    /// Past its TLS handshake and HTTP/2 preface.
    established: AtomicBool,
    /// Told to close.
    closing: AtomicBool,
    /// Streams (calls) in progress.
    streams: AtomicUsize,
    /// When its last stream ended (or it was accepted).
    idle_since: Mutex<Instant>,
    /// The connection's pending read, woken when the state changes.
    waker: AtomicWaker,
    /// Notified when told to close, for a connection still in its TLS handshake.
    closed: Notify,
    /// Notified when its last stream ends.
    stream_ended: Notify,
    /// Told to take no new call and close once the calls in flight are done.
    winding_down: AtomicBool,
    /// Notified when told so.
    wind_down: Notify,
    /// How many of its requests are still arriving, and since when some has been (without a pause).
    arriving: Mutex<(usize, Option<Instant>)>,
}

impl ConnectionState {
    fn is_established(&self) -> bool {
        self.established.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.closed.notify_one();
        self.waker.wake();
    }

    /// Closes the connection now, whatever it is doing: for an HTTP/1.1 download whose client stopped
    /// reading (the connection is its only stream, and cannot be told to stop otherwise).
    pub fn abort(&self) {
        self.close();
    }

    /// Tells the connection to take no new call and close once the calls in flight are done (an HTTP/2
    /// GOAWAY; see `serving.rs`): for a connection whose caller broke a rule (a request that did not arrive
    /// in time), so that it cannot go on with another call there.
    pub fn close_gracefully(&self) {
        self.winding_down.store(true, Ordering::Relaxed);
        self.wind_down.notify_waiters();
    }

    /// A request of this connection has begun to arrive; it has arrived (or failed) when the guard is dropped.
    pub fn request_arriving(self: &Arc<Self>) -> Arriving {
        let mut arriving = self.arriving.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        arriving.0 += 1;
        arriving.1.get_or_insert_with(Instant::now);
        Arriving { state: self.clone() }
    }

    /// Since when some request of this connection has been arriving, if one is.
    fn arriving_since(&self) -> Option<Instant> {
        self.arriving.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).1
    }

    /// Completes once [`ConnectionState::close_gracefully`] has been called.
    pub(crate) async fn close_gracefully_requested(&self) {
        loop {
            let told = self.wind_down.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            if self.winding_down.load(Ordering::Relaxed) {
                return;
            }
            told.await;
        }
    }

    pub(crate) async fn close_requested(&self) {
        if !self.closing.load(Ordering::Relaxed) {
            self.closed.notified().await;
        }
    }

    /// A stream has started; it ends when the guard is dropped.
    fn stream_started(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard { state: self.clone() }
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Completes once the connection has had no stream for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let ended = self.stream_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.streams.load(Ordering::Relaxed) == 0 {
                let deadline = self.idle_since() + timeout;
                if deadline <= Instant::now() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = ended => {}
                }
            } else {
                ended.await;
            }
        }
    }
}

impl Drop for ConnectionState {
    fn drop(&mut self) {
        self.registry.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held while a request of a connection is arriving.
#[derive(Debug)]
pub struct Arriving {
    state: Arc<ConnectionState>,
}

impl Drop for Arriving {
    fn drop(&mut self) {
        let mut arriving = self.state.arriving.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        arriving.0 = arriving.0.saturating_sub(1);
        if arriving.0 == 0 {
            arriving.1 = None;
        }
    }
}

/// Held while a stream is in progress.
#[derive(Debug)]
pub struct StreamGuard {
    state: Arc<ConnectionState>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.state.streams.fetch_sub(1, Ordering::Relaxed) == 1 {
            *self.state.idle_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
            self.state.stream_ended.notify_waiters();
        }
    }
}

/// The connection information put in every request's extensions.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub state: Arc<ConnectionState>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection, as the HTTP/2 server reads and writes it. Reads end (as if the peer had closed)
/// once it is past its handshake's deadline without having sent the HTTP/2 preface, or at once when told to
/// close (at the connection cap).
pub struct Connection {
    io: Io,
    state: Arc<ConnectionState>,
    /// Ends at the handshake's deadline.
    timer: Pin<Box<Sleep>>,
    /// Preface bytes not read yet.
    preface_left: usize,
}

impl Connection {
    /// What the service's layers share of this connection.
    pub fn state(&self) -> &Arc<ConnectionState> {
        &self.state
    }

    /// Whether the connection is to be closed now; if not, the timer (while it is in its handshake) or a
    /// close will wake the pending read.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state.closing.load(Ordering::Relaxed) {
            return true;
        }
        if self.state.is_established() {
            return false;
        }
        self.state.waker.register(cx.waker());
        if self.timer.as_mut().poll(cx).is_ready() {
            debug!(peer = %self.state.peer, "closed: no HTTP/2 preface within handshake_timeout");
            self.state.close();
            return true;
        }
        false
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Ok(())); // read as the end of the stream: hyper closes the connection
        }
        let before = buf.filled().len();
        let this = &mut *self;
        let read = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        };
        if read.is_ready() && this.preface_left > 0 {
            this.preface_left = this.preface_left.saturating_sub(buf.filled().len() - before);
            if this.preface_left == 0 {
                this.state.established.store(true, Ordering::Relaxed);
            }
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

/// The tower layer that counts each connection's streams (for the idle timeout): a stream lasts until its
/// answer's body is done or dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamTracking;

impl<S> tower::Layer<S> for StreamTracking {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked { inner }
    }
}

/// A service whose calls count as streams of their connection.
#[derive(Clone, Debug)]
pub struct Tracked<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for Tracked<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let guard = request.extensions().get::<ConnectionInfo>().map(|info| info.state.stream_started());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| tonic::body::Body::new(GuardedBody { body, _guard: guard })))
        })
    }
}

/// An answer's body that keeps its stream counted until it is done.
struct GuardedBody {
    body: tonic::body::Body,
    _guard: Option<StreamGuard>,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A warning logged at most [`WARNINGS_PER_MINUTE`] times a minute, saying how many were skipped.
#[derive(Default)]
struct RateLimitedWarning {
    window: Option<Instant>,
    logged: u32,
    skipped: u64,
}

impl RateLimitedWarning {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self.window.is_none_or(|start| now.duration_since(start) >= Duration::from_secs(60)) {
            self.window = Some(now);
            self.logged = 0;
        }
        if self.logged < WARNINGS_PER_MINUTE {
            self.logged += 1;
            log(std::mem::take(&mut self.skipped));
        } else {
            self.skipped += 1;
        }
    }
}
