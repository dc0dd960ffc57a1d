//! The local backend and the filesystem's own permissions: workers run as other users, in the group the
//! sinks belong to (`local.sink_group`), write their sinks and nothing of the service's; a user in no group of
//! the service's writes no sink. The workers here are real processes of other user ids (`setpriv`), so these
//! tests need root: under CI=true they fail without it, elsewhere they are skipped.

mod common;

use std::{os::unix::fs::MetadataExt, path::Path, process::Command};

use anonymous_results::Config;
use common::{Fixture, TestServer, TestStore};

/// The worker's user and the sinks' group; a user in neither.
const WORKER: u32 = 54321;
const SINK_GROUP: u32 = 54400;
const OUTSIDER: u32 = 54322;

/// Whether this process may become other users; `None` (skip) when not, failing under CI=true.
fn may_switch_users() -> Option<std::path::PathBuf> {
    let setpriv = common::outside_tool("setpriv")?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status.lines().any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"));
    if !root {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "these tests switch users: run them as root");
        eprintln!("SKIPPED: not root, so no worker can run as another user");
        return None;
    }
    Some(setpriv)
}

/// Runs `script` with `sh -c` as user `uid` with the groups `groups` only; whether it succeeded.
fn run_as(setpriv: &Path, uid: u32, groups: &[u32], script: &str) -> bool {
    let mut command = Command::new(setpriv);
    command.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}"));
    match groups.is_empty() {
        true => command.arg("--clear-groups"),
        false => command.arg(format!("--groups={}", groups.iter().map(u32::to_string).collect::<Vec<_>>().join(","))),
    };
    let output = command.args(["sh", "-c", script]).output().expect("setpriv runs");
    output.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_in_the_sink_group_write_their_sinks_and_reach_no_record() {
    let Some(setpriv) = may_switch_users() else { return };
    let store = TestStore::local();
    let root = store.local_root().unwrap();
    // Workers and clients must reach the root's folders (a temporary folder is the owner's alone).
    std::fs::set_permissions(root.parent().unwrap(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let section = format!("local.sink_group = \"{SINK_GROUP}\"\n");
    let config = Config::from_toml(&store.config_toml(&section)).unwrap();
    let fx = Fixture { server: TestServer::start(&config).await, store };
    let allocated = fx.allocate("worker-written").await;
    let sink = allocated.sink.as_ref().unwrap().uri.clone();
    let meta = std::fs::metadata(&sink).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (SINK_GROUP, 0o2770), "the sink's group and mode");

    let write = |file: &str| format!("printf 'a,b\\n1,2\\n' > '{sink}{file}'");
    assert!(run_as(&setpriv, WORKER, &[SINK_GROUP], &write("part-0.csv")), "a worker in the group writes its sink");
    assert!(
        run_as(
            &setpriv,
            WORKER,
            &[SINK_GROUP],
            &format!("mkdir '{sink}year=2024' && {}", write("year=2024/part-1.csv"))
        ),
        "and folders in it"
    );
    let written = std::fs::metadata(format!("{sink}part-0.csv")).unwrap();
    assert_eq!((written.uid(), written.gid()), (WORKER, SINK_GROUP), "what a worker writes keeps the sink's group");
    let status = fx.commit(&allocated, vec![]).await.expect("the worker's files commit");
    assert_eq!(status.file_count, 2);

    let control = root.join("_control");
    for script in [
        format!("ls '{}'", control.display()),
        format!("cat '{}'/queries/*", control.display()),
        format!("touch '{}/planted'", control.display()),
        format!("cat '{}/results/{}/outcome.json'", control.display(), allocated.result_id),
    ] {
        assert!(!run_as(&setpriv, WORKER, &[SINK_GROUP], &script), "a worker reaches no record: {script}");
    }
    assert!(
        !run_as(&setpriv, OUTSIDER, &[], &format!("printf x > '{sink}other.csv'")),
        "a user in no group of the service's writes no sink"
    );
    assert!(!run_as(&setpriv, OUTSIDER, &[], &format!("cat '{sink}part-0.csv'")), "nor reads one");
    fx.stop().await;
}

/// What others could do to a local store is said at start-up and by `check-config`: records others can read,
/// sinks others can write.
#[test]
fn check_config_says_what_others_could_do_to_a_local_store() {
    use std::os::unix::fs::PermissionsExt;
    let store = TestStore::local();
    let root = store.local_root().unwrap();
    std::fs::create_dir_all(root.join("_control")).unwrap();
    std::fs::set_permissions(root.join("_control"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), store.config_toml("local.sink_mode = \"2777\"\n")).unwrap();
    let output = Command::new(common::process::BIN)
        .args(["check-config", "--config"])
        .arg(config.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "warnings, not errors: {stderr}");
    assert!(stderr.contains("warning:") && stderr.contains("_control may be read by users other"), "{stderr}");
    assert!(stderr.contains("local.sink_mode 2777 lets every user write every sink"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("local.sink_mode = \"2777\""), "printed as read: {stdout}");
}

/// With `local.client_group`, a Commit hands the sink to the service's user and that group before it pins
/// the files: clients in the group read them, the worker can no longer change them, others cannot read them.
/// A refused Commit gives the worker its files back, to mend them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_sink_is_handed_to_the_client_group_and_out_of_the_workers_hands() {
    const CLIENT_GROUP: u32 = 54500;
    const CLIENT: u32 = 54323;
    let Some(setpriv) = may_switch_users() else { return };
    let store = TestStore::local();
    let root = store.local_root().unwrap();
    std::fs::set_permissions(root.parent().unwrap(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let section = format!("local.sink_group = \"{SINK_GROUP}\"\nlocal.client_group = \"{CLIENT_GROUP}\"\n");
    let config = Config::from_toml(&store.config_toml(&section)).unwrap();
    let fx = Fixture { server: TestServer::start(&config).await, store };
    let allocated = fx.allocate("handed-over").await;
    let sink = allocated.sink.as_ref().unwrap().uri.clone();
    let worker = |script: &str| run_as(&setpriv, WORKER, &[SINK_GROUP], script);
    assert!(worker(&format!("mkdir '{sink}year=2024' && printf 'a,b\\n1,2\\n' > '{sink}year=2024/part-0.csv'")));

    // Refused (a wrong size): the worker still owns its files, mends them, and commits.
    let wrong = vec![common::file("year=2024/part-0.csv", 99, None)];
    assert_eq!(fx.commit(&allocated, wrong).await.unwrap_err().code(), tonic::Code::FailedPrecondition);
    let file = format!("{sink}year=2024/part-0.csv");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (WORKER, SINK_GROUP, 0o644), "given back");
    assert!(worker(&format!("printf '3,4\\n' >> '{file}'")), "the worker mends its file");
    let status = fx.commit(&allocated, vec![]).await.expect("the mended file commits");
    assert_eq!(status.total_bytes, 12);

    for (path, mode) in [(sink.clone(), 0o2750), (format!("{sink}year=2024"), 0o2750), (file.clone(), 0o640)] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, CLIENT_GROUP, mode), "{path}");
    }
    for script in [
        format!("printf x >> '{file}'"),
        format!("rm -f '{file}'"),
        format!("printf x > '{sink}year=2024/part-1.csv'"),
        format!("mv '{sink}year=2024' '{sink}moved'"),
    ] {
        assert!(!worker(&script), "the worker can no longer change its committed result: {script}");
    }
    assert!(run_as(&setpriv, CLIENT, &[CLIENT_GROUP], &format!("cat '{file}' > /dev/null")), "a client reads it");
    assert!(!run_as(&setpriv, OUTSIDER, &[], &format!("cat '{file}' > /dev/null")), "others do not");
    // Pinned after the hand-over: served as committed.
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    assert_eq!(std::fs::read(&resolved.locations[0].url).unwrap(), b"a,b\n1,2\n3,4\n");
    fx.stop().await;
}

/// `local.client_group` needs CAP_CHOWN: a service without it refuses to start, saying what to grant.
#[test]
fn without_cap_chown_a_client_group_is_refused_at_start_up() {
    let Some(setpriv) = may_switch_users() else { return };
    let store = TestStore::local();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), store.config_toml("local.client_group = \"54500\"\n")).unwrap();
    let output = Command::new(setpriv)
        .args(["--bounding-set=-chown", "--inh-caps=-chown", common::process::BIN, "serve", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(config.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("local.client_group") && stderr.contains("CAP_CHOWN"), "{stderr}");
}
