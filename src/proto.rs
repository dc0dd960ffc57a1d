//! The gRPC contract `anonymous_results.v1`: the client crate's messages and descriptor set, and the server
//! side generated here over them.

pub use ::anonymous_results_client::proto::*;

/// The generated server side: the `AnonymousResults` trait the service implements, and its tonic service.
#[allow(missing_docs, clippy::all)]
mod generated {
    tonic::include_proto!("anonymous_results.v1");
}

pub use generated::anonymous_results_server;
