//! Generates the server side of the gRPC contract with protox (pure Rust: no system `protoc`), over the
//! messages of the client crate: one generated copy of the contract serves both sides.

const PROTO: &str = "anonymous_results/v1/anonymous_results.proto";
const PROTO_ROOT: &str = "crates/anonymous-results-client/proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile([PROTO], [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(false)
        // The messages are the client crate's.
        .extern_path(".anonymous_results.v1", "::anonymous_results_client::proto")
        // A request that does not decode is INVALID_ARGUMENT, not INTERNAL (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::ContractCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
