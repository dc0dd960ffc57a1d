//! The client crate's weight, as `cargo tree` resolves it for this crate alone: the client side of tonic,
//! prost, tokio and what they pull in; nothing of the service, its server or its stores.

use std::process::Command;

/// `cargo tree -p anonymous-results-client` with `args`, as text.
fn tree(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "anonymous-results-client"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn the_client_depends_on_nothing_of_the_service_or_the_clouds() {
    let crates = tree(&["-e", "normal", "--prefix", "none"]);
    let names: Vec<&str> = crates.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(names.contains(&"tonic") && names.contains(&"prost"), "not the tree expected:\n{crates}");
    let forbidden = [
        "anonymous-results",
        "object_store",
        "reqwest",
        "axum",
        "tonic-reflection",
        "figment",
        "clap",
        "rustix",
        "quick-xml",
        "tracing-subscriber",
        "aws-config",
        "aws-sdk-s3",
        "google-cloud-storage",
        "azure_storage",
    ];
    for name in forbidden {
        assert!(!names.contains(&name), "the client crate pulls in {name}:\n{crates}");
    }
    // ring only as rustls' provider for tonic's TLS: nothing else of the client asks for it.
    let ring = tree(&["-e", "normal", "-i", "ring"]);
    for line in ring.lines().skip(1) {
        let name = line.trim_start_matches(|c: char| !c.is_alphanumeric()).split_whitespace().next().unwrap_or("");
        assert!(
            [
                "rustls",
                "rustls-webpki",
                "tokio-rustls",
                "tonic",
                "anonymous-results-client",
                "tonic-health",
                "tonic-prost"
            ]
            .contains(&name),
            "ring is pulled in by {name}:\n{ring}"
        );
    }
}

#[test]
fn neither_hyper_nor_tonic_is_built_with_its_server() {
    let hyper = tree(&["-e", "features", "-i", "hyper"]);
    assert!(hyper.contains("hyper feature \"client\""), "not the tree expected:\n{hyper}");
    assert!(!hyper.contains("hyper feature \"server\""), "hyper's server is built for the client:\n{hyper}");
    let tonic = tree(&["-e", "features", "-i", "tonic"]);
    for feature in ["server", "router", "transport"] {
        let named = format!("tonic feature \"{feature}\"");
        assert!(!tonic.contains(&named), "tonic's {feature} is built for the client:\n{tonic}");
    }
}
