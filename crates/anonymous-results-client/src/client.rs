//! The typed client: one method per call of the contract, each sent with the token and the deadline, and
//! retried where a repeat is safe.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::{Code, Request, Response, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    ClientBuilder, Error, RetryPolicy, Token,
    error::could_help,
    proto::{
        AbortRequest, AbortResponse, AllocateRequest, AllocateResponse, CommitRequest, CommitResponse, GetUsageRequest,
        GetUsageResponse, ListResultsRequest, ListResultsResponse, RefreshSinkRequest, RefreshSinkResponse,
        ReleaseRequest, ReleaseResponse, RenewRequest, RenewResponse, ResolveRequest, ResolveResponse, ResultStatus,
        anonymous_results_client::AnonymousResultsClient,
    },
};

/// The generated client of the contract, over a tonic channel.
pub(crate) type Grpc = AnonymousResultsClient<Channel>;

/// A client of the anonymous-results service. Cheap to clone (clones share one connection); every method takes
/// `&self`, so one client serves many tasks at once.
///
/// Each call presents the [`Token`], is bounded by the deadline (retries included), and is retried with the
/// [`RetryPolicy`] on `UNAVAILABLE` or a connection that broke before an answer ([`Error::is_retryable`]).
/// Every call of the contract is safe to repeat; each method says what a repeat answers.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) grpc: Grpc,
    health: HealthClient<Channel>,
    token: Arc<Token>,
    retry: RetryPolicy,
    deadline: Option<Duration>,
}

impl Client {
    /// The settings of a client of the service at `endpoint` (`http://host:port`, or `https://` for TLS).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint.into())
    }

    /// Connects to the service at `endpoint` without a token or TLS, with the default retries and no deadline.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, Error> {
        Self::builder(endpoint).connect().await
    }

    /// A client over a channel of the caller's own (a load-balanced one, say), with the default retries, no
    /// token and no deadline: [`with_token`](Self::with_token), [`with_retry`](Self::with_retry) and
    /// [`with_deadline`](Self::with_deadline) set them.
    pub fn new(channel: Channel) -> Self {
        Self::over(channel, Token::None, RetryPolicy::default(), None, crate::DEFAULT_MAX_MESSAGE_BYTES)
    }

    pub(crate) fn over(
        channel: Channel,
        token: Token,
        retry: RetryPolicy,
        deadline: Option<Duration>,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            grpc: AnonymousResultsClient::new(channel.clone()).max_decoding_message_size(max_message_bytes),
            health: HealthClient::new(channel),
            token: Arc::new(token),
            retry,
            deadline,
        }
    }

    /// This client with another deadline for each call made through it (the original keeps its own).
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        Self { deadline: Some(deadline), ..self.clone() }
    }

    /// This client presenting `token` instead (the original keeps its own): one connection for callers of
    /// several roles.
    pub fn with_token(&self, token: Token) -> Self {
        Self { token: Arc::new(token), ..self.clone() }
    }

    /// This client retrying as `policy` says instead (the original keeps its own policy).
    pub fn with_retry(&self, policy: RetryPolicy) -> Self {
        Self { retry: policy, ..self.clone() }
    }

    /// Reserves a location for one query's result. Retried: Allocate is idempotent on `query_id`, so a repeat
    /// answers the same result, sink and commit token.
    pub async fn allocate(&self, request: AllocateRequest) -> Result<AllocateResponse, Error> {
        self.unary(request, |mut grpc, request| async move { grpc.allocate(request).await }).await
    }

    /// Seals the result with the files under its sink. Retried: a repeat of an identical Commit answers OK with
    /// the same status, also when the first attempt committed and its answer was lost.
    pub async fn commit(&self, request: CommitRequest) -> Result<CommitResponse, Error> {
        self.unary(request, |mut grpc, request| async move { grpc.commit(request).await }).await
    }

    /// One page of a result's status and locations. Retried: it changes nothing. For every page at once, see
    /// [`Client::resolve_all`].
    pub async fn resolve(&self, request: ResolveRequest) -> Result<ResolveResponse, Error> {
        self.unary(request, |mut grpc, request| async move { grpc.resolve(request).await }).await
    }

    /// Marks the result as never to commit. Retried: aborting an aborted result answers its status again.
    pub async fn abort(&self, request: AbortRequest) -> Result<AbortResponse, Error> {
        self.unary(request, |mut grpc, request| async move { grpc.abort(request).await }).await
    }

    /// Deletes the result now. Retried, with one thing to know: when an attempt released the result but its
    /// answer was lost, the repeat answers EXPIRED (OK) while the result's tombstone stays (10 minutes), and
    /// `NOT_FOUND` after. So a `NOT_FOUND` whose [`Error::attempts`] is above 1 means the result is released,
    /// most likely by this very call; one after a single attempt means it was never there, or was released
    /// or deleted before.
    pub async fn release(&self, request: ReleaseRequest) -> Result<ReleaseResponse, Error> {
        self.unary(request, |mut grpc, request| async move { grpc.release(request).await }).await
    }

    /// Keeps the result longer. Retried: a repeat sets the same expiry again.
    pub async fn renew(&self, request: RenewRequest) -> Result<RenewResponse, Error> {
        self.unary(request, |mut grpc, request| async move { grpc.renew(request).await }).await
    }

    /// The sink of an ALLOCATED result again, with fresh credentials (a worker's call, with the result's
    /// commit token), for a worker whose credentials end (`Sink::credentials_expire_at`) before it is done.
    /// Retried: each attempt answers the same sink.
    pub async fn refresh_sink(&self, request: RefreshSinkRequest) -> Result<RefreshSinkResponse, Error> {
        self.unary(request, |mut grpc, request| async move { grpc.refresh_sink(request).await }).await
    }

    /// One page of the results stored, oldest first (see the contract: a page may hold fewer than asked while
    /// more follow). Retried: it changes nothing.
    pub async fn list_results(&self, request: ListResultsRequest) -> Result<ListResultsResponse, Error> {
        self.unary(request, |mut grpc, request| async move { grpc.list_results(request).await }).await
    }

    /// What is stored and how full the byte budgets are, as the replica that answers last read them (see the
    /// contract). Retried: it changes nothing; UNAVAILABLE just after the replica started, too.
    pub async fn get_usage(&self) -> Result<GetUsageResponse, Error> {
        self.unary(GetUsageRequest {}, |mut grpc, request| async move { grpc.get_usage(request).await }).await
    }

    /// Every result the filters of `request` select, page after page (from its `page_token`), oldest first.
    pub async fn list_all_results(&self, mut request: ListResultsRequest) -> Result<Vec<ResultStatus>, Error> {
        let mut results = Vec::new();
        loop {
            let page = self.list_results(request.clone()).await?;
            results.extend(page.results);
            if page.next_page_token.is_empty() {
                return Ok(results);
            }
            request.page_token = page.next_page_token;
        }
    }

    /// Whether the service says it is serving (grpc.health.v1 Check of the whole server). Retried.
    pub async fn health(&self) -> Result<ServingStatus, Error> {
        let request = HealthCheckRequest { service: String::new() };
        let check = |mut health: HealthClient<Channel>, request| async move { health.check(request).await };
        let answer = self.send(self.health.clone(), request, self.ends(), check).await?;
        Ok(ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown))
    }

    /// Sends `message` through `send` until it is answered, the retries are spent or the deadline is reached.
    async fn unary<M, A, F, Fut>(&self, message: M, send: F) -> Result<A, Error>
    where
        M: Clone,
        F: Fn(Grpc, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<A>, Status>>,
    {
        self.send(self.grpc.clone(), message, self.ends(), send).await
    }

    /// When a call starting now must end: never, without a deadline.
    fn ends(&self) -> Option<Instant> {
        self.deadline.map(|deadline| Instant::now() + deadline)
    }

    /// Sends `message` to `stub` through `send` until it is answered, the retries are spent or `ends` passes.
    pub(crate) async fn send<C, M, A, F, Fut>(
        &self,
        stub: C,
        message: M,
        ends: Option<Instant>,
        send: F,
    ) -> Result<A, Error>
    where
        C: Clone,
        M: Clone,
        F: Fn(C, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<A>, Status>>,
    {
        let mut attempts = 0;
        loop {
            let request = self.request(message.clone(), ends)?;
            attempts += 1;
            let answer = match ends {
                Some(ends) => match tokio::time::timeout(remaining(Some(ends)), send(stub.clone(), request)).await {
                    Ok(answer) => answer,
                    Err(_) => return Err(self.deadline_passed(attempts)),
                },
                None => send(stub.clone(), request).await,
            };
            let status = match answer {
                Ok(answer) => return Ok(answer.into_inner()),
                // The transport cancels a call whose grpc-timeout passed: to the caller, its deadline passed.
                Err(status) if status.code() == Code::Cancelled && ends.is_some_and(|ends| Instant::now() >= ends) => {
                    return Err(self.deadline_passed(attempts));
                }
                Err(status) => status,
            };
            match self.pause_before_retry(&status, attempts, ends) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(Error::Status { status, attempts }),
            }
        }
    }

    fn deadline_passed(&self, attempts: u32) -> Error {
        let deadline = self.deadline.unwrap_or_default();
        Error::Status {
            status: Status::deadline_exceeded(format!("the call's deadline of {deadline:?} passed")),
            attempts,
        }
    }

    /// A request of `message` with the token and what is left of the deadline ending at `ends`.
    pub(crate) fn request<M>(&self, message: M, ends: Option<Instant>) -> Result<Request<M>, Error> {
        let mut request = Request::new(message);
        self.token.apply(request.metadata_mut())?;
        if ends.is_some() {
            request.set_timeout(remaining(ends));
        }
        Ok(request)
    }

    /// How long to wait before sending again after `attempts` attempts, the last answered `status`; `None`
    /// when the call must not be sent again.
    pub(crate) fn pause_before_retry(&self, status: &Status, attempts: u32, ends: Option<Instant>) -> Option<Duration> {
        let policy = &self.retry;
        if !could_help(status) || attempts >= policy.max_attempts {
            return None;
        }
        let pause = policy.backoff(attempts);
        match ends {
            Some(ends) if Instant::now() + pause >= ends => None,
            _ => Some(pause),
        }
    }
}

/// What is left until `ends` (at least a millisecond: a zero timeout means none to the transport).
fn remaining(ends: Option<Instant>) -> Duration {
    ends.map_or(Duration::MAX, |ends| ends.saturating_duration_since(Instant::now())).max(Duration::from_millis(1))
}
