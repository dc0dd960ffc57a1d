//! The real grpcurl against a real server: reflection (grpcurl 1.8 speaks v1alpha), health, and the README's
//! walkthrough, run exactly as written.

mod common;

use std::{path::Path, process::Command};

use common::{TestServer, outside_tool};

fn grpcurl(tool: &Path, args: &[&str]) -> String {
    let output = Command::new(tool).args(args).output().expect("run grpcurl");
    assert!(output.status.success(), "grpcurl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_describes_the_service() {
    let Some(tool) = outside_tool("grpcurl") else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&common::local_config(dir.path())).await;
    let addr = server.addr.to_string();
    let listing = tokio::task::spawn_blocking({
        let (tool, addr) = (tool.clone(), addr.clone());
        move || {
            let list = grpcurl(&tool, &["-plaintext", &addr, "list"]);
            let service = grpcurl(&tool, &["-plaintext", &addr, "describe", "anonymous_results.v1.AnonymousResults"]);
            let message = grpcurl(&tool, &["-plaintext", &addr, "describe", "anonymous_results.v1.CommitRequest"]);
            let health = grpcurl(&tool, &["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
            (list, service, message, health)
        }
    })
    .await
    .unwrap();
    let (list, service, message, health) = listing;
    for name in
        ["anonymous_results.v1.AnonymousResults", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
    {
        assert!(list.lines().any(|line| line == name), "{name} missing from: {list}");
    }
    for rpc in ["Allocate", "Commit", "Resolve", "Abort", "Release", "Renew", "Watch", "RefreshSink"] {
        assert!(service.contains(&format!("rpc {rpc} ( .")), "{rpc} missing from: {service}");
    }
    assert!(message.contains("repeated .anonymous_results.v1.ResultFile files"), "{message}");
    assert!(health.contains("\"status\": \"SERVING\""), "{health}");
    server.stop().await;
}

/// The README's grpcurl walkthrough, run as written against a server with the default configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_as_written() {
    let Some(tool) = outside_tool("grpcurl") else { return };
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("<!-- walkthrough:start -->").expect("walkthrough start marker");
    let end = readme.find("<!-- walkthrough:end -->").expect("walkthrough end marker");
    let block = &readme[start..end];
    let script = block.split("```bash").nth(1).and_then(|rest| rest.split("```").next()).expect("a bash block");
    assert!(script.contains("127.0.0.1:50051"), "the walkthrough talks to the default address");

    // The default configuration, run from a fresh working directory, as `cargo run --release -- serve` does.
    let cwd = tempfile::tempdir().unwrap();
    let config = anonymous_results::Config::load_with_env(None, Vec::new()).unwrap();
    let root = cwd.path().join("data/anonymous-results");
    let anonymous_results::config::BackendConfig::Local(local) = &config.backend else { panic!("{config:?}") };
    assert_eq!(local.path, Path::new("./data/anonymous-results"));
    let server = TestServer::start(&common::local_config(&root)).await;
    let script = script.replace("127.0.0.1:50051", &server.addr.to_string());

    let path = format!("{}:{}", tool.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let output = tokio::task::spawn_blocking({
        let cwd = cwd.path().to_owned();
        move || {
            Command::new("bash").args(["-euo", "pipefail", "-c", &script]).current_dir(cwd).env("PATH", path).output()
        }
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the walkthrough failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("RESULT_STATE_ALLOCATED"), "{stdout}");
    assert!(stdout.contains("RESULT_STATE_COMMITTED"), "{stdout}");
    let canonical_root = std::fs::canonicalize(&root).unwrap();
    assert!(stdout.contains(&format!("\"url\": \"{}/", canonical_root.display())), "{stdout}");
    assert!(stdout.contains("part-0.csv"), "{stdout}");
    server.stop().await;
}
