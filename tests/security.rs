//! Who may call what: every role × RPC cell, commit tokens, open health and optional reflection, the
//! refusal to serve an outside address without tokens, and request limits.

mod common;

use std::path::Path;

use anonymous_results::{Config, Service, StartError, proto};
use common::{
    Fixture, TestServer, TestStore, assert_status,
    auth::{SCHEDULER_TOKEN, WORKER_TOKEN, client_as, token_files},
    file, state,
};
use tokio::net::TcpListener;
use tonic::Code;

/// A service over a fresh local store whose `[anonymous_results_service]` section names the token files
/// (written into `dir`) and holds `extra`.
async fn secured(dir: &Path, extra: &str) -> Fixture {
    let store = TestStore::local();
    let config = Config::from_toml(&store.config_toml(&format!("{}{extra}", token_files(dir)))).unwrap();
    let server = TestServer::start(&config).await;
    Fixture { store, server }
}

async fn as_caller(fx: &Fixture, token: Option<&str>) -> common::Client {
    client_as(fx.server.channel().await, token)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Nobody,
    Stranger,
    Scheduler,
    Worker,
}

impl Who {
    fn token(self) -> Option<&'static str> {
        match self {
            Self::Nobody => None,
            Self::Stranger => Some("not-a-token-of-this-service"),
            Self::Scheduler => Some(SCHEDULER_TOKEN),
            Self::Worker => Some(WORKER_TOKEN),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    Allocate,
    Commit,
    Resolve,
    Abort,
    Release,
    Renew,
    Watch,
}

const RPCS: [Rpc; 7] = [Rpc::Allocate, Rpc::Commit, Rpc::Resolve, Rpc::Abort, Rpc::Release, Rpc::Renew, Rpc::Watch];

/// What the service must answer `who` calling `rpc`: `None` for OK.
fn expected(who: Who, rpc: Rpc) -> Option<Code> {
    match (who, rpc) {
        (Who::Nobody | Who::Stranger, _) => Some(Code::Unauthenticated),
        (Who::Scheduler, Rpc::Commit) => Some(Code::PermissionDenied),
        (Who::Scheduler, _) => None,
        (Who::Worker, Rpc::Commit | Rpc::Abort) => None,
        (Who::Worker, _) => Some(Code::PermissionDenied),
    }
}

/// Makes `rpc` as `who`, with a request that would succeed for a caller allowed to make it (each on a result
/// of its own, prepared by the scheduler and a worker).
async fn call(fx: &Fixture, who: Who, rpc: Rpc, n: usize) -> Result<(), anonymous_results_client::Error> {
    let scheduler = as_caller(fx, Some(SCHEDULER_TOKEN)).await;
    let worker = as_caller(fx, Some(WORKER_TOKEN)).await;
    let request = proto::AllocateRequest { query_id: format!("query-{n}"), ..Default::default() };
    let allocated = scheduler.allocate(request).await.unwrap();
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![file("part-0.parquet", 4, None)],
    };
    if matches!(rpc, Rpc::Renew | Rpc::Watch) {
        worker.commit(commit.clone()).await.unwrap();
    }
    let id = allocated.result_id.clone();
    let caller = as_caller(fx, who.token()).await;
    match rpc {
        Rpc::Allocate => {
            let request = proto::AllocateRequest { query_id: format!("other-{n}"), ..Default::default() };
            caller.allocate(request).await.map(drop)
        }
        Rpc::Commit => caller.commit(commit).await.map(drop),
        Rpc::Resolve => {
            caller.resolve(proto::ResolveRequest { result_id: id, url_ttl: None, ..Default::default() }).await.map(drop)
        }
        Rpc::Abort => {
            let request =
                proto::AbortRequest { result_id: id, commit_token: allocated.commit_token, reason: "cancelled".into() };
            caller.abort(request).await.map(drop)
        }
        Rpc::Release => caller.release(proto::ReleaseRequest { result_id: id }).await.map(drop),
        Rpc::Renew => {
            let ttl = Some(prost_types::Duration { seconds: 3600, nanos: 0 });
            caller.renew(proto::RenewRequest { result_id: id, ttl }).await.map(drop)
        }
        Rpc::Watch => {
            let mut updates = caller.subscribe(id).await?;
            let first = updates.message().await?.expect("the current status");
            assert_eq!(state(&first), proto::ResultState::Committed);
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_may_make_its_calls_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let fx = secured(dir.path(), "").await;
    let mut n = 0;
    for who in [Who::Nobody, Who::Stranger, Who::Scheduler, Who::Worker] {
        for rpc in RPCS {
            n += 1;
            let answer = call(&fx, who, rpc, n).await;
            match expected(who, rpc) {
                None => assert!(answer.is_ok(), "{who:?} {rpc:?}: {answer:?}"),
                Some(code) => {
                    let status = answer.expect_err(&format!("{who:?} {rpc:?} was let through"));
                    assert_eq!(status.code(), code, "{who:?} {rpc:?}: {status:?}");
                    let needle = if code == Code::Unauthenticated { "token" } else { "role" };
                    assert!(status.message().contains(needle) || status.message().contains("for the"), "{status:?}");
                }
            }
        }
    }
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_aborts_only_with_the_results_own_commit_token() {
    let dir = tempfile::tempdir().unwrap();
    let fx = secured(dir.path(), "").await;
    let scheduler = as_caller(&fx, Some(SCHEDULER_TOKEN)).await;
    let worker = as_caller(&fx, Some(WORKER_TOKEN)).await;
    let allocate = |query: &str| proto::AllocateRequest { query_id: query.into(), ..Default::default() };
    let mine = scheduler.allocate(allocate("mine")).await.unwrap();
    let theirs = scheduler.allocate(allocate("theirs")).await.unwrap();
    let abort = |token: &str| proto::AbortRequest {
        result_id: mine.result_id.clone(),
        commit_token: token.into(),
        reason: "failed".into(),
    };
    assert_status(worker.abort(abort("")).await, Code::InvalidArgument, &["commit_token"]);
    assert_status(worker.abort(abort(&theirs.commit_token)).await, Code::PermissionDenied, &["commit_token"]);
    let forged = "0".repeat(64);
    assert_status(worker.abort(abort(&forged)).await, Code::PermissionDenied, &["commit_token"]);
    let commit = |token: &str| proto::CommitRequest {
        result_id: mine.result_id.clone(),
        commit_token: token.into(),
        files: vec![],
    };
    assert_status(worker.commit(commit(&forged)).await, Code::PermissionDenied, &["commit_token"]);
    assert_status(worker.commit(commit(&theirs.commit_token)).await, Code::PermissionDenied, &["commit_token"]);
    let status = worker.abort(abort(&mine.commit_token)).await.unwrap().status.unwrap();
    assert_eq!(state(&status), proto::ResultState::Aborted);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_the_same_commit_secret_accept_each_others_tokens_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("commit.secret");
    std::fs::write(&secret, "a-commit-secret-shared-by-every-replica-0123456789\n").unwrap();
    let other_secret = dir.path().join("other.secret");
    std::fs::write(&other_secret, "another-secret-of-another-cluster-0123456789abcdef\n").unwrap();
    let section = |file: &Path| format!("auth.commit_secret_file = {:?}\n", file.display().to_string());
    let store = TestStore::local();
    let a = TestServer::start(&Config::from_toml(&store.config_toml(&section(&secret))).unwrap()).await;
    let b = TestServer::start(&Config::from_toml(&store.config_toml(&section(&secret))).unwrap()).await;
    let stranger = TestServer::start(&Config::from_toml(&store.config_toml(&section(&other_secret))).unwrap()).await;
    let fx = Fixture { store, server: a };
    let allocated = fx.allocate("query").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    assert_status(stranger.client.clone().commit(commit.clone()).await, Code::PermissionDenied, &["commit_token"]);
    let status = b.client.clone().commit(commit).await.unwrap().status.unwrap();
    assert_eq!(state(&status), proto::ResultState::Committed);
    stranger.stop().await;
    b.stop().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_open_and_reflection_can_be_turned_off() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    let fx = secured(dir.path(), "reflection = false\n").await;
    let mut health = HealthClient::new(fx.server.channel().await);
    let answer = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving, "health needs no token");
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut reflection = ServerReflectionClient::new(fx.server.channel().await);
    let answer = reflection.server_reflection_info(tokio_stream::iter([request])).await;
    assert_status(answer.map(drop), Code::Unimplemented, &[]);
    fx.stop().await;
}

/// Serves `config` on a listener bound to `address`, as `serve` would.
async fn serve_on(config: &Config, address: &str) -> Result<(), StartError> {
    let listener = TcpListener::bind(address).await.unwrap();
    let service = Service::from_config(config).await.unwrap();
    anonymous_results::serve(service, listener, async {}).await
}

#[tokio::test]
async fn an_outside_address_without_tokens_is_refused_unless_allowed() {
    let store = TestStore::local();
    let refused = serve_on(&store.config(), "0.0.0.0:0").await.expect_err("served 0.0.0.0 without tokens");
    let message = refused.to_string();
    assert!(matches!(refused, StartError::Unauthenticated { .. }), "{refused:?}");
    assert!(
        message.contains("allow_unauthenticated = true") && message.contains("auth.scheduler_token_file"),
        "{message}"
    );
    let allowed = Config::from_toml(&store.config_toml("allow_unauthenticated = true")).unwrap();
    serve_on(&allowed, "0.0.0.0:0").await.expect("the opt-out serves");
    let dir = tempfile::tempdir().unwrap();
    let with_tokens = Config::from_toml(&store.config_toml(&token_files(dir.path()))).unwrap();
    serve_on(&with_tokens, "0.0.0.0:0").await.expect("with tokens it serves");
    serve_on(&store.config(), "127.0.0.1:0").await.expect("loopback needs no tokens");
}

#[test]
fn the_binary_refuses_an_outside_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(common::process::BIN)
        .current_dir(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("allow_unauthenticated = true"), "{stderr}");
}

#[tokio::test]
async fn the_opt_out_is_logged_as_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__ALLOW_UNAUTHENTICATED", "true")];
    let mut service = common::process::Process::start_on(dir.path(), "0.0.0.0:0", &[], &env);
    service.signal("-TERM");
    assert!(service.wait().await.success());
    assert!(
        service.log().iter().any(|line| line.contains("WARN") && line.contains("WITHOUT authentication")),
        "{:#?}",
        service.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_are_enforced_with_the_key_to_raise() {
    let store = TestStore::local();
    let config = Config::from_toml(&store.config_toml("max_files_per_commit = 3\nmax_message_bytes = 4096")).unwrap();
    let fx = Fixture { store, server: TestServer::start(&config).await };
    let allocated = fx.allocate("query").await;
    for i in 0..4 {
        fx.write(&allocated, &format!("part-{i}.parquet"), b"data").await;
    }
    let four: Vec<_> = (0..4).map(|i| file(&format!("part-{i}.parquet"), 4, None)).collect();
    assert_status(fx.commit(&allocated, four).await, Code::InvalidArgument, &["files", "max_files_per_commit"]);
    assert_status(
        fx.commit(&allocated, vec![]).await,
        Code::FailedPrecondition,
        &["more than 3 entries", "max_files_per_commit"],
    );
    let huge = proto::AllocateRequest { query_id: "q".repeat(5000), ..Default::default() };
    let answer = fx.client().allocate(huge).await;
    let status = answer.expect_err("a request over max_message_bytes was decoded");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // The sink is listed up to the limit, whatever a commit declares: one that holds more is refused.
    let three: Vec<_> = (0..3).map(|i| file(&format!("part-{i}.parquet"), 4, None)).collect();
    assert_status(fx.commit(&allocated, three.clone()).await, Code::FailedPrecondition, &["more than 3 entries"]);
    std::fs::remove_file(format!("{}part-3.parquet", allocated.sink.as_ref().unwrap().uri)).unwrap();
    let status = fx.commit(&allocated, three).await.expect("within the limits");
    assert_eq!(status.file_count, 3);
    fx.stop().await;
}
