//! The conformance suite, part six: pins. A file committed is the file served: one rewritten with as many
//! different bytes after its commit is never streamed (proxy), nor sent to (redirect, where the store's URLs
//! cannot name the committed version), and a change during a download never ends as a complete file.

use anonymous_results::{
    model::{ManifestFile, RelPath, ResultId},
    proto::{self, DownloadMode},
    storage::{Backend, READ_CHUNK, StorageError},
};
use futures::TryStreamExt;
use reqwest::StatusCode;

use super::{
    get, http, link, pattern,
    storage::{storage, worker_sink},
};
use crate::common::{Fixture, TestStore, captured_logs};

/// The same number of bytes as `bytes`, every one different.
fn forged(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b.wrapping_add(1)).collect()
}

/// The URL of the file `path` of result `id`, resolved in `mode`.
async fn link_to(fx: &Fixture, id: &str, mode: DownloadMode, path: &str) -> String {
    let request = proto::ResolveRequest { result_id: id.into(), download_mode: mode as i32, ..Default::default() };
    let resolved = fx.client().resolve(request).await.expect("a resolve");
    let location = resolved.locations.into_iter().find(|location| location.path == path);
    location.unwrap_or_else(|| panic!("no {path} in {id}")).url
}

/// The backend itself: a file pinned as a Commit pins it (listed, its pins completed) reads back and checks
/// as committed until it is rewritten; then every read and check is [`StorageError::Changed`].
pub async fn a_pinned_file_reads_only_while_it_is_the_committed_version(store: TestStore) {
    let storage = storage(&store).await;
    let id = ResultId::generate().unwrap();
    storage.prepare_sink(&id).await.unwrap();
    let sink = worker_sink(&storage, &id);
    let bytes = pattern(2 * READ_CHUNK + 5);
    store.write(&sink, "part-0.parquet", &bytes).await;
    let listed = storage.list_sink(&id, 10).await.unwrap();
    let mut entries = storage.complete_pins(&id, listed).await.unwrap();
    assert_eq!(entries.len(), 1);
    let entry = entries.remove(0);
    let pin = entry.pin.expect("every store's file is pinned at Commit");
    pin.validate().unwrap();
    let path = RelPath::parse("path", "part-0.parquet").unwrap();
    let committed = ManifestFile { path, size_bytes: entry.size_bytes, row_count: None, pin: Some(pin) };
    let read = |range: std::ops::Range<u64>| {
        let (storage, id, committed) = (&storage, &id, &committed);
        async move {
            let file = storage.read_range(id, committed, range).await?;
            let chunks: Vec<bytes::Bytes> = file.chunks.try_collect().await?;
            Ok::<_, StorageError>(chunks.concat())
        }
    };
    assert_eq!(read(0..bytes.len() as u64).await.unwrap(), bytes);
    storage.check_file(&id, &committed).await.expect("untouched: as committed");

    store.write(&sink, "part-0.parquet", &forged(&bytes)).await;
    for range in [0..bytes.len() as u64, 10..20, 0..0] {
        match read(range.clone()).await {
            Err(StorageError::Changed { key }) => assert_eq!(key, format!("{id}/part-0.parquet")),
            other => panic!("{range:?} of a rewritten file: {:?}", other.map(|b| b.len())),
        }
    }
    assert!(matches!(storage.check_file(&id, &committed).await, Err(StorageError::Changed { .. })));
    let unpinned = ManifestFile { pin: None, ..committed.clone() };
    assert!(storage.check_file(&id, &unpinned).await.is_ok(), "a file of a release before pins: its size alone");
    storage.delete_sink(&id).await.unwrap();
    assert!(matches!(storage.check_file(&id, &committed).await, Err(StorageError::NotFound { .. })));
}

/// Through the service: an untouched result downloads; once a file is rewritten (same size), proxy and
/// redirect links answer 502 saying so, the refusal is counted as `changed`, and the log names the result and
/// the file.
pub async fn a_file_rewritten_after_its_commit_is_never_served(store: TestStore) {
    let _ = captured_logs();
    anonymous_results::storage::install_tls_provider();
    let fx = Fixture::start(store).await;
    let bytes = pattern(50_000);
    let allocated = fx.allocate("pinned").await;
    fx.write(&allocated, "year=2024/part 0.csv", &bytes).await;
    fx.write(&allocated, "part-1.csv", b"the second file").await;
    fx.commit(&allocated, vec![]).await.expect("a commit");
    let id = allocated.result_id.clone();
    let proxy = link_to(&fx, &id, DownloadMode::Proxy, "year=2024/part 0.csv").await;
    let redirect = link_to(&fx, &id, DownloadMode::Redirect, "year=2024/part 0.csv").await;
    assert_eq!(reqwest::get(&proxy).await.unwrap().bytes().await.unwrap(), bytes, "untouched: served");
    assert_eq!(reqwest::get(&redirect).await.unwrap().bytes().await.unwrap(), bytes, "untouched: redirected");
    if fx.store.local_root().is_none() {
        // Where the store's URLs name no version, a redirect costs one storage request: the HEAD of the pin.
        let before = fx.server.storage_requests();
        assert_eq!(get(&redirect, &[]).await.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(fx.server.storage_requests() - before, 1, "one HEAD before the redirect");
    }
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), fx.store.config_toml("")).unwrap();
    let verify = |args: &[&str]| {
        let mut command = std::process::Command::new(crate::common::process::BIN);
        command.arg("verify").args(args).arg("--config").arg(config.path()).env_remove("RUST_LOG");
        command.output().expect("verify runs")
    };
    let untouched = verify(&[&id]);
    let text = String::from_utf8_lossy(&untouched.stdout);
    assert!(untouched.status.success(), "{text}{}", String::from_utf8_lossy(&untouched.stderr));
    assert!(text.contains(&format!("intact\t{id}\tyear=2024/part 0.csv\n")), "{text}");
    assert!(text.contains("2 file(s) of 1 result(s): 2 intact, 0 changed, 0 missing"), "{text}");

    fx.write(&allocated, "year=2024/part 0.csv", &forged(&bytes)).await;
    let changed = verify(&[&id, "--json"]);
    assert_eq!(changed.status.code(), Some(1), "a changed file: not all intact");
    let line: serde_json::Value = serde_json::from_slice(&changed.stdout).expect("one JSON object");
    assert_eq!(line["result_id"], id.as_str());
    assert_eq!(line["intact"], false);
    let files = line["files"].as_array().unwrap();
    let status = |path: &str| files.iter().find(|f| f["path"] == path).map(|f| f["status"].clone());
    assert_eq!(status("year=2024/part 0.csv"), Some("changed".into()), "{line}");
    assert_eq!(status("part-1.csv"), Some("intact".into()), "{line}");
    assert!(files.iter().all(|f| f["pinned"] == true), "{line}");
    for url in [&proxy, &redirect] {
        let answer = get(url, &[]).await;
        assert_eq!(answer.status(), StatusCode::BAD_GATEWAY, "{url}");
        let text = answer.text().await.unwrap();
        assert!(text.contains("changed after its commit"), "{text}");
    }
    let ranged = get(&proxy, &[("range", "bytes=10-19")]).await;
    assert_eq!(ranged.status(), StatusCode::BAD_GATEWAY, "a range of it neither");
    let metrics = fx.server.service.metrics().render();
    assert!(metrics.contains("anonymous_results_download_refusals_total{reason=\"changed\"} 3\n"), "{metrics}");
    let logs = captured_logs();
    let line = logs
        .lines()
        .find(|line| line.contains("a committed file changed after its commit") && line.contains(id.as_str()))
        .unwrap_or_else(|| panic!("no log line of {id}: {logs}"));
    assert!(line.contains("year=2024/part 0.csv"), "{line}");

    fx.store.delete(&format!("{id}/part-1.csv")).await;
    // A record that cannot be read costs its own result, not the check of the others.
    let corrupt = anonymous_results::model::ResultId::generate().unwrap();
    fx.store.plant(&format!("_control/results/{corrupt}/outcome.json"), b"{ not json").await;
    let all = verify(&["--all"]);
    let text = String::from_utf8_lossy(&all.stdout);
    assert_eq!(all.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("changed\t{id}\tyear=2024/part 0.csv\n")), "{text}");
    assert!(text.contains(&format!("missing\t{id}\tpart-1.csv\n")), "{text}");
    assert!(text.contains("2 file(s) of 1 result(s): 0 intact, 1 changed, 1 missing"), "{text}");
    let unknown = verify(&["aaaaaaaaaaaaaaaaaaaaaaaaaa"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no result"), "{unknown:?}");
    fx.stop().await;
}

/// A file rewritten while a proxy download streams it: the download never ends as a complete file of other
/// bytes. On a filesystem the change is seen (the open file's change time) and the response is cut off; an
/// object store's GET reads one version of the object, so its download may end, with the committed bytes.
pub async fn a_file_changed_during_a_proxy_download_never_completes(store: TestStore) {
    let local = store.local_root().is_some();
    let fx = Fixture::start(store).await;
    // Far more than the socket buffers and the read-ahead hold, so the change lands mid-stream.
    let size = if local { 48 << 20 } else { 4 << 20 };
    let bytes = pattern(size);
    let allocated = fx.allocate("changed-midway").await;
    fx.write(&allocated, "part-0.parquet", &bytes).await;
    fx.commit(&allocated, vec![]).await.expect("a commit");
    let url = link(&fx, &allocated.result_id, DownloadMode::Proxy, None).await.url;
    let mut answer = http().get(&url).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let mut received = answer.chunk().await.unwrap().expect("a first chunk").to_vec();
    if let Some(root) = fx.store.local_root() {
        // Rewritten in place, as a worker's process could.
        use std::io::{Seek, Write};
        let file = root.join(&allocated.result_id).join("part-0.parquet");
        let mut open = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        open.seek(std::io::SeekFrom::Start(0)).unwrap();
        open.write_all(&forged(&bytes)).unwrap();
    } else {
        fx.write(&allocated, "part-0.parquet", &forged(&bytes)).await;
    }
    let ended = loop {
        match answer.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert_eq!(&received[..], &bytes[..received.len()], "every byte sent is a committed byte");
    match ended {
        Ok(()) => {
            assert!(!local, "a filesystem sees the change: the download must be cut off");
            assert_eq!(received.len(), bytes.len(), "a download that ends is the whole committed file");
        }
        Err(_) => assert!(received.len() < bytes.len(), "cut off before its end"),
    }
    if local {
        let metrics = fx.server.service.metrics().render();
        assert!(metrics.contains("anonymous_results_download_refusals_total{reason=\"changed\"} 1\n"), "{metrics}");
    }
    fx.stop().await;
}
