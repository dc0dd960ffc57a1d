//! The `anonymous-results` binary as an operator runs it: default configuration, signals, a crash, logs and
//! `check-config`.

mod common;

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use anonymous_results::proto::{self, ResultState};
use common::{
    Client, assert_status, file,
    process::{Process, write_local_config},
    state, wire,
};

const BIN: &str = env!("CARGO_BIN_EXE_anonymous-results");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("RUST_LOG").output().expect("run the binary")
}

/// Adds to the config file `file` the `[anonymous_results_service]` keys naming the token files.
fn name_token_files(file: &Path, scheduler: &Path, worker: &Path) {
    let mut text = std::fs::read_to_string(file).unwrap();
    text.push_str(&format!(
        "[anonymous_results_service]\nauth.scheduler_token_file = {:?}\nauth.worker_token_file = {:?}\n",
        scheduler.display().to_string(),
        worker.display().to_string()
    ));
    std::fs::write(file, &text).unwrap();
}

async fn allocate(client: &mut Client, query_id: &str) -> proto::AllocateResponse {
    let request = proto::AllocateRequest { query_id: query_id.into(), ..Default::default() };
    client.allocate(request).await.expect("allocate")
}

#[tokio::test]
async fn serve_without_a_config_file_keeps_results_under_data_and_stops_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let mut service = Process::start(cwd.path(), &[], &[]);
    let mut client = service.client().await;
    let allocated = allocate(&mut client, "q").await;
    let root = std::fs::canonicalize(cwd.path()).unwrap().join("data/anonymous-results");
    assert_eq!(allocated.sink.unwrap().uri, format!("{}/{}/", root.display(), allocated.result_id));
    service.signal("-TERM");
    assert!(service.wait().await.success(), "{:#?}", service.log());
    assert!(service.log().iter().any(|line| line.contains("stopped")), "{:#?}", service.log());
}

#[tokio::test]
async fn sigint_stops_the_service_too() {
    let cwd = tempfile::tempdir().unwrap();
    let mut service = Process::start(cwd.path(), &[], &[]);
    service.signal("-INT");
    assert!(service.wait().await.success(), "{:#?}", service.log());
}

#[tokio::test]
async fn a_call_in_flight_at_sigterm_finishes_before_the_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    let config = write_local_config(dir.path(), &root);
    let mut service = Process::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let mut client = service.client().await;
    // A committed result, resolved by the held call.
    let done = allocate(&mut client, "done").await;
    std::fs::write(format!("{}part-0.parquet", done.sink.as_ref().unwrap().uri), b"data").unwrap();
    client.commit(commit_request(&done, vec![])).await.unwrap();
    let (resolve, finish) = held_resolve(&service, &done.result_id).await;
    service.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(service.child.try_wait().unwrap().is_none(), "exited with a call in flight: {:#?}", service.log());
    assert!(!resolve.is_finished());
    finish.send(()).unwrap();
    let answer = resolve.await.unwrap().expect("the in-flight call completes");
    assert_eq!(state(answer.status.as_ref().unwrap()), ResultState::Committed);
    assert!(service.wait().await.success(), "{:#?}", service.log());
}

#[tokio::test]
async fn a_call_that_never_finishes_holds_the_exit_only_for_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    let config = write_local_config(dir.path(), &root);
    let env = [("PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__SHUTDOWN_GRACE", "1s")];
    let mut service = Process::start(dir.path(), &["--config", config.to_str().unwrap()], &env);
    let mut client = service.client().await;
    let held = allocate(&mut client, "held").await;
    let (resolve, _never) = held_resolve(&service, &held.result_id).await;
    let stopping = std::time::Instant::now();
    service.signal("-TERM");
    assert!(service.wait().await.success(), "{:#?}", service.log());
    let took = stopping.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "exited after {took:?}");
    assert!(service.log().iter().any(|line| line.contains("grace period")), "{:#?}", service.log());
    assert!(resolve.await.unwrap().is_err(), "the abandoned call fails instead of hanging");
}

/// A Resolve of `result_id` held in flight: its request's message sent, its stream left open until `finish`
/// is sent (the service answers a call once its request has ended). Returns once the call has had time to
/// reach the service.
async fn held_resolve(
    service: &Process,
    result_id: &str,
) -> (tokio::task::JoinHandle<Result<proto::ResolveResponse, tonic::Status>>, tokio::sync::oneshot::Sender<()>) {
    use futures::StreamExt;
    use prost::Message;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", service.addr)).unwrap().connect().await;
    let mut grpc = tonic::client::Grpc::new(channel.expect("connect"));
    let message = proto::ResolveRequest { result_id: result_id.into(), ..Default::default() }.encode_to_vec();
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let ended = futures::stream::once(async move { drop(finished.await) }).filter_map(|()| async { None });
    let requests = futures::stream::once(async move { message }).chain(ended);
    let resolve = tokio::spawn(async move {
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let answer = grpc.client_streaming(tonic::Request::new(requests), wire::method("Resolve"), wire::RawCodec);
        let bytes = answer.await?.into_inner();
        proto::ResolveResponse::decode(bytes.as_slice()).map_err(|e| tonic::Status::internal(e.to_string()))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    (resolve, finish)
}

fn commit_request(allocated: &proto::AllocateResponse, files: Vec<proto::ResultFile>) -> proto::CommitRequest {
    proto::CommitRequest { result_id: allocated.result_id.clone(), commit_token: allocated.commit_token.clone(), files }
}

#[tokio::test]
async fn a_process_killed_before_the_manifest_leaves_the_result_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    let config = write_local_config(dir.path(), &root);
    let args = ["--config", config.to_str().unwrap()];
    let service = Process::start(dir.path(), &args, &[]);
    let mut client = service.client().await;
    let allocated = allocate(&mut client, "query-1").await;
    let sink = allocated.sink.as_ref().unwrap().uri.clone();
    std::fs::write(format!("{sink}part-0.parquet"), b"written before the crash").unwrap();
    service.signal("-KILL");
    drop(service);

    let service = Process::start(dir.path(), &args, &[]);
    let mut client = service.client().await;
    let resolved = client
        .resolve(proto::ResolveRequest { result_id: allocated.result_id.clone(), url_ttl: None, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(state(resolved.status.as_ref().unwrap()), ResultState::Allocated);
    assert!(resolved.locations.is_empty());
    let again = allocate(&mut client, "query-1").await;
    assert_eq!(again.result_id, allocated.result_id, "Allocate stays idempotent across the crash");
    let status = client.commit(commit_request(&allocated, vec![file("part-0.parquet", 24, None)])).await;
    assert_eq!(state(status.unwrap().status.as_ref().unwrap()), ResultState::Committed);
}

#[tokio::test]
async fn json_logs_carry_one_span_per_call_with_its_ids() {
    let cwd = tempfile::tempdir().unwrap();
    let env = [("PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__LOG_FORMAT", "json")];
    let mut service = Process::start(cwd.path(), &[], &env);
    let mut client = service.client().await;
    let allocated = allocate(&mut client, "query-json").await;
    std::fs::write(format!("{}part-0.parquet", allocated.sink.as_ref().unwrap().uri), b"x").unwrap();
    client.commit(commit_request(&allocated, vec![])).await.unwrap();
    let other = allocate(&mut client, "query-json-2").await;
    let missing = client.commit(commit_request(&other, vec![file("nope.parquet", 1, None)])).await;
    assert_status(missing, tonic::Code::FailedPrecondition, &["nope.parquet"]);
    let unknown = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let resolve = proto::ResolveRequest { result_id: unknown.into(), ..Default::default() };
    assert_status(client.resolve(resolve).await, tonic::Code::NotFound, &[]);
    service.signal("-TERM");
    service.wait().await;
    let events: Vec<serde_json::Value> =
        service.log().iter().map(|line| serde_json::from_str(line).expect("every log line is JSON")).collect();
    let find = |message: &str| {
        events
            .iter()
            .find(|event| event["message"].as_str().is_some_and(|m| m.contains(message)))
            .unwrap_or_else(|| panic!("no `{message}` event in {events:#?}"))
    };
    let allocated_event = find("allocated");
    assert_eq!(allocated_event["span"]["name"], "Allocate");
    assert_eq!(allocated_event["span"]["query_id"], "query-json");
    assert_eq!(allocated_event["span"]["result_id"], allocated.result_id.as_str());
    let committed_event = find("committed");
    assert_eq!(committed_event["span"]["name"], "Commit");
    assert_eq!(committed_event["span"]["result_id"], allocated.result_id.as_str());
    assert_eq!(committed_event["span"]["query_id"], "query-json");
    let refused = find("nope.parquet");
    assert_eq!(refused["span"]["name"], "Commit");
    assert!(refused["code"].as_str().is_some_and(|code| code.contains("FailedPrecondition")), "{refused}");
    // A Resolve (whose span is at DEBUG, for speed) still names its result when it fails.
    let not_found = events
        .iter()
        .find(|event| event["span"]["name"] == "Resolve")
        .unwrap_or_else(|| panic!("no failed Resolve in {events:#?}"));
    assert_eq!(not_found["span"]["result_id"], unknown);
    assert!(not_found["code"].as_str().is_some_and(|code| code.contains("NotFound")), "{not_found}");
}

#[tokio::test]
async fn rust_log_is_honoured() {
    let cwd = tempfile::tempdir().unwrap();
    let mut service = Process::start(cwd.path(), &[], &[("RUST_LOG", "anonymous_results::server=info,warn")]);
    let mut client = service.client().await;
    allocate(&mut client, "quiet").await;
    service.signal("-TERM");
    service.wait().await;
    let log = service.log();
    assert!(log.iter().any(|line| line.contains("serving")), "{log:#?}");
    assert!(!log.iter().any(|line| line.contains("allocated")), "the info line of Allocate was not filtered: {log:#?}");
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s3.toml");
    std::fs::write(
        &file,
        "[scheduler]\nenabled = true\nanonymous_results.s3.url = \"s3://bucket/path/to/key\"\n\
         anonymous_results.s3.aws_secret_access_key = \"YOURSECRETKEY\"\n\
         anonymous_results.s3.aws_access_key_id = \"YOURACCESSKEY\"\n",
    )
    .unwrap();
    let output = run(&["check-config", "--config", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("s3://bucket/path/to/key"), "{stdout}");
    assert!(stdout.contains("YOURACCESSKEY"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains("YOURSECRETKEY") && !String::from_utf8_lossy(&output.stderr).contains("YOURSECRETKEY"));
}

#[test]
fn check_config_fails_naming_the_key_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[scheduler]\nanonymous_results.local.path = \"/srv/results\"\n").unwrap();
    let output = run(&["check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("scheduler.allow_local_sinks"), "{stderr}");
    let missing = run(&["check-config", "--config", "/nonexistent/cluster.toml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/cluster.toml"));
}

#[test]
fn serve_refuses_an_invalid_configuration_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.pth = \"/x\"\n").unwrap();
    let output = run(&["serve", "--config", file.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("scheduler.anonymous_results.local.pth"), "{stderr}");
    assert!(stderr.contains("path"), "{stderr}");
}

#[test]
fn serve_names_the_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cwd = tempfile::tempdir().unwrap();
    let output = Command::new(BIN).current_dir(cwd.path()).args(["serve", "--listen", &addr]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&addr), "{output:?}");
}

#[test]
fn check_config_reads_the_files_it_names_and_names_the_unusable_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    let file = write_local_config(dir.path(), &root);
    let tokens = dir.path().join("scheduler.tokens");
    std::fs::write(&tokens, "a-scheduler-token-0123456789\n").unwrap();
    let missing = dir.path().join("worker.tokens");
    name_token_files(&file, &tokens, &missing);
    let output = run(&["check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    std::fs::write(&missing, "a-worker-token-0123456789\n").unwrap();
    let output = run(&["check-config", "--config", file.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("worker.tokens") && !stdout.contains("a-worker-token"), "{stdout}");
}

#[test]
fn a_syntax_error_on_a_secrets_line_shows_its_position_but_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY";
    std::fs::write(
        &file,
        format!(
            "[scheduler]\nanonymous_results.s3.url = \"s3://bucket/path\"\n\
             anonymous_results.s3.aws_secret_access_key = \"{secret}\n"
        ),
    )
    .unwrap();
    for command in [&["check-config", "--config"][..], &["serve", "--listen", "127.0.0.1:0", "--config"]] {
        let output = run(&[command, &[file.to_str().unwrap()]].concat());
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(!stdout.contains(&secret[..10]) && !stderr.contains(&secret[..10]), "{stderr}");
        assert!(stderr.contains("cluster.toml: TOML syntax error at line 3"), "{stderr}");
    }
}

#[test]
fn check_config_warns_of_token_files_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = write_local_config(dir.path(), &dir.path().join("results"));
    let (scheduler, worker) = (dir.path().join("scheduler.tokens"), dir.path().join("worker.tokens"));
    std::fs::write(&scheduler, "a-scheduler-token-0123456789\n").unwrap();
    std::fs::write(&worker, "a-worker-token-0123456789\n").unwrap();
    name_token_files(&file, &scheduler, &worker);
    std::fs::set_permissions(&scheduler, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = run(&["check-config", "--config", file.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: auth.worker_token_file") && stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains("auth.scheduler_token_file"), "{stderr}");
}

/// A store written by release 0.1.0 with the TTL that made its pruner panic on every pass.
#[test]
fn prune_goes_through_a_store_with_a_ttl_past_the_year_9999() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0.1.0/store");
    let status = Command::new("cp").arg("-r").arg(&fixture).arg(&root).status().unwrap();
    assert!(status.success());
    let file = write_local_config(dir.path(), &root);
    for extra in [&["--dry-run"][..], &[]] {
        let output = run(&[&["prune", "--config", file.to_str().unwrap()][..], extra].concat());
        assert!(output.status.success(), "{output:?}");
        // Kept until released, and said so once.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.matches("past the year 9999").count(), 1, "{stderr}");
    }
}

/// `results list | show | release` and `usage` against a running service with tokens: a table and JSON lines,
/// filters, a status, the usage by state, a release; a token is needed (the scheduler's), and a label's control characters never reach
/// the terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_usage_commands_show_what_a_service_stores_and_release() {
    use common::{Fixture, TestServer, TestStore, auth};
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::local();
    let config = anonymous_results::Config::from_toml(&store.config_toml(&auth::token_files(dir.path()))).unwrap();
    let fx = Fixture { server: TestServer::start(&config).await, store };
    let (scheduler, worker) = (
        auth::client_as(fx.server.channel().await, Some(auth::SCHEDULER_TOKEN)),
        auth::client_as(fx.server.channel().await, Some(auth::WORKER_TOKEN)),
    );
    let request = |query: &str, user: &str| proto::AllocateRequest {
        query_id: query.into(),
        labels: [("user".to_owned(), user.to_owned())].into(),
        ..Default::default()
    };
    let committed = scheduler.allocate(request("q-one", "alice")).await.unwrap();
    let pending = scheduler.allocate(request("q-two", "bob\u{1b}[2J")).await.unwrap();
    fx.write(&committed, "part-0.csv", b"a\n1\n").await;
    let commit = proto::CommitRequest {
        result_id: committed.result_id.clone(),
        commit_token: committed.commit_token.clone(),
        files: vec![],
    };
    worker.commit(commit).await.unwrap();
    fx.server.service.deletions_done().await;

    let token_file = dir.path().join("scheduler.tokens");
    let addr = format!("http://{}", fx.server.addr);
    let results = |args: &[&str]| {
        let mut all = vec!["results"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--addr", &addr, "--token-file", token_file.to_str().unwrap()]);
        let output = run(&all);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, table, stderr) = results(&["list"]);
    assert!(ok, "{stderr}");
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("RESULT_ID\tSTATE"), "{table}");
    assert!(
        rows[1].starts_with(&format!("{}\tCOMMITTED\t", committed.result_id))
            && rows[1].contains("\tq-one\tuser=alice"),
        "{table}"
    );
    assert!(rows[2].starts_with(&format!("{}\tALLOCATED\t", pending.result_id)), "{table}");
    assert!(rows[2].contains("\tq-two\tuser=bob\\u{1b}[2J") && !table.contains('\u{1b}'), "escaped: {table}");
    assert_eq!(rows[3], "2 result(s), 4 byte(s)", "{table}");

    let (ok, json, stderr) = results(&["list", "--state", "committed", "--json"]);
    assert!(ok, "{stderr}");
    let objects: Vec<serde_json::Value> = json.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(objects.len(), 1, "{json}");
    assert_eq!(objects[0]["result_id"], committed.result_id.as_str());
    assert_eq!((objects[0]["state"].as_str(), objects[0]["total_bytes"].as_u64()), (Some("COMMITTED"), Some(4)));
    let (ok, json, _) = results(&["list", "--label", "user=bob\u{1b}[2J", "--json"]);
    assert!(ok && json.lines().count() == 1 && json.contains(&pending.result_id), "{json}");

    // `usage`: what this replica counts, by state, as a table and as JSON.
    let usage = |args: &[&str]| {
        let mut all = vec!["usage"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--addr", &addr, "--token-file", token_file.to_str().unwrap()]);
        let output = run(&all);
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (ok, table) = usage(&[]);
    assert!(ok, "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(&lines[..3], ["STATE\tRESULTS\tBYTES", "ALLOCATED\t1\t0", "COMMITTED\t1\t4"], "{table}");
    assert!(lines.last().is_some_and(|line| line.starts_with("as of 20")), "{table}");
    let (ok, json) = usage(&["--json"]);
    let object: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(ok);
    assert_eq!(
        (object["states"]["COMMITTED"]["results"].as_u64(), object["states"]["COMMITTED"]["bytes"].as_u64()),
        (Some(1), Some(4))
    );
    assert_eq!(object["states"]["ABORTED"]["results"].as_u64(), Some(0));

    let (ok, shown, stderr) = results(&["show", &committed.result_id]);
    assert!(ok && shown.contains("state\tCOMMITTED") && shown.contains("total_bytes\t4"), "{shown}{stderr}");
    let (ok, released, stderr) = results(&["release", &committed.result_id]);
    assert!(ok && released.trim() == format!("{}\tEXPIRED", committed.result_id), "{released}{stderr}");
    fx.server.service.deletions_done().await;
    let (_, json, _) = results(&["list", "--json"]);
    assert!(!json.contains(&committed.result_id) && json.contains(&pending.result_id), "{json}");

    // Refused: without the token, a state that is none, a label without `=`, an instant that is none.
    let output = run(&["results", "list", "--addr", &addr]);
    assert!(
        !output.status.success() && String::from_utf8_lossy(&output.stderr).contains("authorization"),
        "{output:?}"
    );
    for (args, says) in [
        (&["list", "--state", "done"][..], "--state done"),
        (&["list", "--label", "user"][..], "--label user"),
        (&["list", "--created-after", "yesterday"][..], "--created-after yesterday"),
        (&["show", "NOTANID"][..], "result_id"),
    ] {
        let (ok, _, stderr) = results(args);
        assert!(!ok && stderr.contains(says), "{args:?}: {stderr}");
    }
    fx.stop().await;
}
