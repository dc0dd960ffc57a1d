//! What a crash may leave behind on the local backend, with group commit.
//!
//! - 32 writers Allocate and Commit while the service is killed with SIGKILL at random moments, several rounds:
//!   after each restart every acknowledged Allocate and Commit is there and complete.
//! - SIGKILL keeps the page cache, so it cannot catch a missing sync: the service is also run under
//!   `strace -f`, and for every acknowledged call each name it made (a record's link, a sink's folder) is
//!   followed by a successful `fsync` of its folder that began after the name was made and ended before the
//!   answer was written to the socket, and each record's bytes were synced before they were named: for
//!   Allocate, Commit, Release (its tombstone and revisit entry) and Abort. A build without the syncs, or
//!   that answers before them, fails it.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anonymous_results::proto::{self, ResultState};
use common::{
    Client, file,
    process::{Process, write_local_config},
    state,
    strace::{self, Call},
};

const WRITERS: usize = 32;
const DATA: &[u8] = b"the bytes of one partition of a result";

/// What the service acknowledged: allocations by query id, and the ids of the commits.
#[derive(Default)]
struct Acknowledged {
    allocated: BTreeMap<String, proto::AllocateResponse>,
    committed: Vec<String>,
}

/// Writes the result's one file into its sink, as a worker does; answers the Commit of it.
fn write_as_worker(allocated: &proto::AllocateResponse) -> proto::CommitRequest {
    let sink = &allocated.sink.as_ref().expect("a sink").uri;
    std::fs::write(format!("{sink}part-0.parquet"), DATA).expect("write the result's file");
    proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![file("part-0.parquet", DATA.len() as u64, None)],
    }
}

/// One writer: Allocate, write the file as a worker does, Commit; again, until a call fails (the service died).
async fn write_until_killed(client: Client, round: usize, writer: usize, acked: Arc<Mutex<Acknowledged>>) {
    for call in 0.. {
        let query_id = format!("round-{round}-writer-{writer}-call-{call}");
        let request = proto::AllocateRequest { query_id: query_id.clone(), ..Default::default() };
        let Ok(allocated) = client.allocate(request).await else { return };
        acked.lock().unwrap().allocated.insert(query_id, allocated.clone());
        if client.commit(write_as_worker(&allocated)).await.is_err() {
            return;
        }
        acked.lock().unwrap().committed.push(allocated.result_id);
    }
}

/// A pseudo-random duration in `0..max_ms` milliseconds (the clock's nanoseconds: no two rounds alike).
fn random_ms(max_ms: u64) -> Duration {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
    Duration::from_millis(u64::from(nanos) % max_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_call_survives_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    let config = write_local_config(dir.path(), &root);
    let args = ["--config", config.to_str().unwrap()];
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let rounds = 4;
    for round in 0..rounds {
        let service = Process::start(dir.path(), &args, &[]);
        let writers: Vec<_> = {
            let mut writers = Vec::new();
            for writer in 0..WRITERS {
                let client = service.client().await;
                writers.push(tokio::spawn(write_until_killed(client, round, writer, acked.clone())));
            }
            writers
        };
        tokio::time::sleep(Duration::from_millis(300) + random_ms(700)).await;
        service.signal("-KILL");
        for writer in writers {
            writer.await.unwrap();
        }
        drop(service);

        // Everything acknowledged so far, this round's and every earlier one's, is there and complete.
        let service = Process::start(dir.path(), &args, &[]);
        let client = service.client().await;
        let (allocations, committed) = {
            let acked = acked.lock().unwrap();
            let committed: BTreeSet<String> = acked.committed.iter().cloned().collect();
            (acked.allocated.clone(), committed)
        };
        assert!(committed.len() > round, "round {round}: some commits were acknowledged before the kill");
        for (query_id, allocated) in &allocations {
            let again = proto::AllocateRequest { query_id: query_id.clone(), ..Default::default() };
            let again = client.allocate(again).await.unwrap();
            assert_eq!(again.result_id, allocated.result_id, "{query_id}: the same allocation after the crash");
            let resolve = proto::ResolveRequest { result_id: allocated.result_id.clone(), ..Default::default() };
            let resolved = client.resolve(resolve).await.unwrap();
            let status = resolved.status.as_ref().unwrap();
            if committed.contains(&allocated.result_id) {
                assert_eq!(state(status), ResultState::Committed, "{query_id}: its acknowledged commit");
                assert_eq!(status.total_bytes, DATA.len() as u64);
                assert_eq!(resolved.locations.len(), 1);
                assert_eq!(std::fs::read(&resolved.locations[0].url).unwrap(), DATA);
            } else {
                assert!(
                    matches!(state(status), ResultState::Allocated | ResultState::Committed),
                    "{query_id}: {status:?}"
                );
            }
        }
        drop(service);
    }
}

/// Checks, in `calls`, that the call that made `name` (a link or a folder) is followed by a successful sync of
/// the folder it is in, begun after it ended and ended before `answer` began.
fn assert_synced_before(calls: &[Call], made: &Call, folder: &str, answer: &Call, what: &str) {
    let synced = calls.iter().any(|call| {
        call.name == "fsync"
            && call.succeeded()
            && call.fd_path() == Some(folder)
            && call.began > made.ended
            && call.ended < answer.began
    });
    assert!(synced, "{what}: no sync of {folder} between line {} and the answer on line {}", made.ended, answer.began);
}

/// The successful call named `name` with a string argument ending in `suffix`.
fn find_call<'a>(calls: &'a [Call], names: &[&str], suffix: &str) -> &'a Call {
    calls
        .iter()
        .find(|call| {
            names.contains(&call.name.as_str()) && call.succeeded() && call.paths().iter().any(|s| s.ends_with(suffix))
        })
        .unwrap_or_else(|| panic!("no successful {names:?} of …{suffix} in the trace"))
}

/// Checks that the record linked by `link` (from a temporary file) had its bytes synced before.
fn assert_bytes_synced(calls: &[Call], link: &Call, what: &str) {
    let temp = &link.paths()[0];
    let synced = calls.iter().any(|call| {
        call.name == "fdatasync"
            && call.succeeded()
            && call.fd_path().is_some_and(|path| path.starts_with(temp))
            && call.ended < link.began
    });
    assert!(synced, "{what}: the bytes of {temp} were not synced before it was named on line {}", link.began);
}

/// The first of `answers` (socket writes naming the result) begun after `made` ended: the answer to the call
/// that made it. A call that answered before making its record has none after it.
fn answer_after<'a>(answers: &[&'a Call], made: &Call, what: &str) -> &'a Call {
    answers
        .iter()
        .find(|answer| answer.began > made.ended)
        .unwrap_or_else(|| panic!("{what}: no answer after line {}, where its record was made", made.ended))
}

/// The record at `key` (below the root) was written as a durable record must be before the answer to the call
/// that wrote it: its bytes synced before it was named, its folder synced after; answers that answer.
fn assert_record_durable<'a>(calls: &[Call], root: &str, key: &str, answers: &[&'a Call], what: &str) -> &'a Call {
    let linked = find_call(calls, &["linkat"], &format!("/{key}"));
    let answer = answer_after(answers, linked, what);
    assert_bytes_synced(calls, linked, what);
    let folder = key.rsplit_once('/').map_or(root.to_owned(), |(folder, _)| format!("{root}/{folder}"));
    assert_synced_before(calls, linked, &folder, answer, what);
    answer
}

/// Under `strace -f`: 16 writers Allocate and Commit, then half of them Release; 8 more Allocate and Abort.
/// For each call, every record and folder it made is durable before its answer is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_call_is_synced_before_its_answer_is_written() {
    if !strace::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    std::fs::create_dir(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let config = write_local_config(dir.path(), &root);
    let calls_traced = "linkat,mkdir,mkdirat,fsync,fdatasync,write,writev,sendto,sendmsg";
    let (service, trace) = strace::start(dir.path(), &config, calls_traced);
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let (mut released, mut aborted) = (Vec::new(), Vec::new());
    let mut calls = Vec::new();
    for writer in 0..24 {
        let client = service.client().await;
        let acked = acked.clone();
        calls.push(tokio::spawn(async move {
            let client = client;
            let request = proto::AllocateRequest { query_id: format!("traced-{writer}"), ..Default::default() };
            let allocated = client.allocate(request).await.unwrap();
            let id = allocated.result_id.clone();
            if writer >= 16 {
                let abort = proto::AbortRequest {
                    result_id: id.clone(),
                    commit_token: allocated.commit_token.clone(),
                    reason: "cancelled".into(),
                };
                client.abort(abort).await.unwrap();
                return (None, Some(id));
            }
            client.commit(write_as_worker(&allocated)).await.unwrap();
            {
                let mut acked = acked.lock().unwrap();
                acked.committed.push(id.clone());
                acked.allocated.insert(format!("traced-{writer}"), allocated);
            }
            if writer % 2 == 1 {
                return (None, None);
            }
            client.release(proto::ReleaseRequest { result_id: id.clone() }).await.unwrap();
            (Some(id), None)
        }));
    }
    for call in calls {
        let (release, abort) = call.await.unwrap();
        released.extend(release);
        aborted.extend(abort);
    }
    let calls = strace::stop(service, &trace).await;

    let root = root.display().to_string();
    let acked = acked.lock().unwrap();
    assert_eq!((acked.committed.len(), released.len(), aborted.len()), (16, 8, 8));
    let answers_of = |id: &str| -> Vec<&Call> {
        calls.iter().filter(|call| call.writes_to_a_socket() && call.args.contains(id)).collect()
    };
    for allocated in acked.allocated.values() {
        let id = &allocated.result_id;
        let answers = answers_of(id);
        // Allocate: the pending record, the sink, the query record (a second name of the pending record's file).
        let pending = find_call(&calls, &["linkat"], &format!("/_control/pending/{id}.json"));
        let temp = pending.paths()[0].clone();
        let claim = calls
            .iter()
            .find(|call| {
                call.name == "linkat"
                    && call.succeeded()
                    && call.paths()[0] == temp
                    && call.paths()[1].contains("/_control/queries/")
            })
            .expect("the query record, linked from the same file");
        assert!(pending.ended < claim.began, "{id}: the claim was made before the pending record");
        let sink = find_call(&calls, &["mkdir", "mkdirat"], &format!("{root}/{id}"));
        let allocate_answer = answers.first().unwrap_or_else(|| panic!("{id}: no answer to its Allocate"));
        let what = format!("Allocate of {id}");
        assert_bytes_synced(&calls, claim, &what);
        assert_synced_before(&calls, claim, &format!("{root}/_control/queries"), allocate_answer, &what);
        assert_synced_before(&calls, sink, &root, allocate_answer, &what);
        assert_synced_before(&calls, pending, &format!("{root}/_control/pending"), allocate_answer, &what);
        // Commit: the result's records folder, then the outcome in it.
        let what = format!("Commit of {id}");
        let records = find_call(&calls, &["mkdir", "mkdirat"], &format!("{root}/_control/results/{id}"));
        let answer =
            assert_record_durable(&calls, &root, &format!("_control/results/{id}/outcome.json"), &answers, &what);
        assert_synced_before(&calls, records, &format!("{root}/_control/results"), answer, &what);
    }
    // Release: the tombstone in the records folder and, beside it, the expiry-index entry that brings the
    // pruner back to a deletion cut short, both before the answer.
    for id in &released {
        let answers = answers_of(id);
        let what = format!("Release of {id}");
        let answer =
            assert_record_durable(&calls, &root, &format!("_control/results/{id}/tombstone.json"), &answers, &what);
        // The entry linked before the answer (the pruner's own entries for the result come later, if at all).
        let revisit = calls
            .iter()
            .find(|call| {
                call.name == "linkat"
                    && call.succeeded()
                    && call.ended < answer.began
                    && call
                        .paths()
                        .get(1)
                        .is_some_and(|to| to.contains("/_control/expiry/") && to.ends_with(&format!("-{id}")))
            })
            .unwrap_or_else(|| panic!("{what}: no expiry-index entry made before the answer"));
        assert_bytes_synced(&calls, revisit, &what);
        let entry = &revisit.paths()[1];
        let folder = entry.rsplit_once('/').map(|(folder, _)| folder).unwrap();
        assert_synced_before(&calls, revisit, folder, answer, &what);
    }
    // Abort: the outcome (ABORTED) in its new records folder.
    for id in &aborted {
        let answers = answers_of(id);
        let what = format!("Abort of {id}");
        let records = find_call(&calls, &["mkdir", "mkdirat"], &format!("{root}/_control/results/{id}"));
        let answer =
            assert_record_durable(&calls, &root, &format!("_control/results/{id}/outcome.json"), &answers, &what);
        assert_synced_before(&calls, records, &format!("{root}/_control/results"), answer, &what);
    }
}

/// Release answers once its tombstone is durable and deletes the files after the answer: killed right after
/// the answers of 40 Releases (deletions still queued behind the 64 at once, or running), the restarted
/// service answers each result EXPIRED or NOT_FOUND, and a pruning pass once the tombstones are old
/// (`DELETION_TIMEOUT`) leaves no file and no record of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_killed_after_its_answer_is_finished_by_the_pruner() {
    use anonymous_results::{Config, Service, clock::ManualClock, results::DELETION_TIMEOUT};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    let config = write_local_config(dir.path(), &root);
    let config_arg = config.to_str().unwrap();
    let mut released = Vec::new();
    // Rounds until a kill has cut deletions short (they may all finish first: the disk decides).
    for round in 0..5 {
        let mut service = Process::start(dir.path(), &["--config", config_arg], &[]);
        let client = service.client().await;
        let mut this_round = Vec::new();
        for i in 0..40 {
            let request = proto::AllocateRequest { query_id: format!("q-{round}-{i}"), ..Default::default() };
            let allocated = client.allocate(request).await.unwrap();
            for part in 0..100 {
                let sink = &allocated.sink.as_ref().unwrap().uri;
                std::fs::write(format!("{sink}part-{part}.parquet"), DATA).unwrap();
            }
            client.commit(proto::CommitRequest { files: vec![], ..write_as_worker(&allocated) }).await.unwrap();
            this_round.push(allocated);
        }
        let releases = this_round.iter().map(|allocated| {
            let client = client.clone();
            let id = allocated.result_id.clone();
            async move { client.release(proto::ReleaseRequest { result_id: id }).await.map(drop) }
        });
        for answer in futures::future::join_all(releases).await {
            answer.expect("a Release answered");
        }
        service.signal("-KILL");
        service.wait().await;
        released.extend(this_round);
        let sink = |allocated: &proto::AllocateResponse| allocated.sink.as_ref().unwrap().uri.clone();
        if released.iter().any(|allocated| std::path::Path::new(&sink(allocated)).exists()) {
            break;
        }
    }
    let sink = |allocated: &proto::AllocateResponse| std::path::PathBuf::from(&allocated.sink.as_ref().unwrap().uri);
    assert!(released.iter().any(|allocated| sink(allocated).exists()), "no kill cut a deletion short in 5 rounds");

    let mut restarted = Process::start(dir.path(), &["--config", config_arg], &[]);
    let client = restarted.client().await;
    for allocated in &released {
        let request = proto::ResolveRequest { result_id: allocated.result_id.clone(), ..Default::default() };
        match client.resolve(request).await {
            Ok(answer) => assert_eq!(state(answer.status.as_ref().unwrap()), ResultState::Expired),
            Err(e) => assert_eq!(e.code(), tonic::Code::NotFound, "{e}"),
        }
    }
    restarted.signal("-TERM");
    restarted.wait().await;
    // The pruner of a service whose clock is past the deletions' revisit entries.
    let config = Config::load(Some(&config)).unwrap();
    let clock = Arc::new(ManualClock::new());
    clock.advance(DELETION_TIMEOUT + Duration::from_secs(1));
    let pruner = Service::with_clock(&config, clock).await.unwrap();
    let report = pruner.prune(false).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    for allocated in &released {
        let sink = sink(allocated);
        assert!(!sink.exists(), "the files of a released result are still there: {}", sink.display());
        let records = root.join("_control/results").join(&allocated.result_id);
        assert!(!records.exists(), "the records of a released result are still there");
    }
}
