//! Compiles the gRPC contract with protox (pure Rust: no system `protoc`) into the messages and the client,
//! and keeps the encoded descriptor set for the service's reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTO: &str = "proto/anonymous_results/v1/anonymous_results.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("anonymous_results_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        // The service generates its own server side over these messages (its build.rs).
        .build_server(false)
        // These carry storage credentials or commit tokens: their Debug is written by hand, redacted
        // (src/proto.rs).
        .skip_debug([
            ".anonymous_results.v1.Sink",
            ".anonymous_results.v1.AllocateResponse",
            ".anonymous_results.v1.CommitRequest",
            ".anonymous_results.v1.AbortRequest",
            ".anonymous_results.v1.RefreshSinkRequest",
        ])
        .compile_fds(descriptors)?;
    Ok(())
}
