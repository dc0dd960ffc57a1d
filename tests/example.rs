//! The round_trip example (`cargo run --example round_trip`, as the README shows it) against a live service: on
//! the local backend and on S3 (moto), where the example writes through the sink's storage options as a worker
//! does.

mod common;

use std::process::Command;

use common::{TestStore, process::Process};

/// The example as a command: the binary the test build made beside this test (`--all-targets` builds
/// examples), else `cargo run --example round_trip` in an environment as clean as a shell's (one inherited from
/// the test runner would make cargo rebuild everything).
fn example() -> Command {
    let built = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join("round_trip")))
        .filter(|path| path.is_file());
    if let Some(built) = built {
        return Command::new(built);
    }
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut command = Command::new(env!("CARGO"));
    command.env_clear().envs(std::env::vars().filter(|(name, _)| {
        ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "CARGO_TARGET_DIR"].contains(&name.as_str())
    }));
    command.args(["run", "--quiet", "--manifest-path", manifest, "--example", "round_trip", "--"]);
    command
}

/// Runs the example against `store` served by the binary; answers its output, after checking it succeeded.
fn round_trip(store: &TestStore) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, store.config_toml("")).unwrap();
    let service = Process::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let output = example()
        .args(["--addr", &format!("http://{}", service.addr), "--query-id", "example-query"])
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the example failed:\n{stdout}\n{}\nservice log: {:#?}",
        String::from_utf8_lossy(&output.stderr),
        service.log()
    );
    // The service saw each step.
    let log = service.log().join("\n");
    for step in ["allocated", "committed", "released"] {
        assert!(log.contains(step), "no `{step}` in the service's log:\n{log}");
    }
    // Release answers once its tombstone is durable; the files and records go right after, before the service
    // is stopped here.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !service.log().iter().any(|line| line.contains("deleted")) {
        assert!(std::time::Instant::now() < deadline, "no deletion 10 s after Release's answer:\n{log}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stdout
}

#[test]
fn the_round_trip_example_runs_against_a_local_service() {
    let store = TestStore::local();
    let stdout = round_trip(&store);
    assert!(stdout.starts_with("allocated ") && stdout.contains("for query example-query"), "{stdout}");
    assert!(stdout.contains("downloaded part-0.csv"), "{stdout}");
    assert!(stdout.trim_end().ends_with("round trip OK"), "{stdout}");
    // Released: the sink is gone.
    let root = store.local_root().unwrap();
    let sinks: Vec<_> =
        std::fs::read_dir(&root).unwrap().filter_map(Result::ok).filter(|e| e.file_name() != "_control").collect();
    assert!(sinks.is_empty(), "left behind: {sinks:?}");
}

#[tokio::test]
async fn the_round_trip_example_runs_against_a_service_on_s3() {
    // None only outside CI, when moto is not installed (the helper says so); under CI=true it fails instead.
    let Some(store) = TestStore::moto().await else { return };
    let stdout = tokio::task::spawn_blocking(move || round_trip(&store)).await.unwrap();
    assert!(stdout.contains("sink s3://"), "{stdout}");
    assert!(stdout.contains("downloaded part-0.csv (") && stdout.contains("from http://"), "{stdout}");
    assert!(!stdout.contains("X-Amz-Signature"), "the example prints URLs without their signature:\n{stdout}");
}
