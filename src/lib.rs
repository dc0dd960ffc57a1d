//! anonymous-results: a gRPC control plane that gives the queries of a scheduler/worker cluster a place to
//! put results that have no output sink.
//!
//! The scheduler calls `Allocate`, a worker writes the result files into the sink it is handed and calls
//! `Commit`, and the scheduler calls `Resolve` to hand the client the locations to download from. All durable
//! state lives in the result storage, so several processes over one storage act as one service.
//!
//! To run the service: [`Config::load`], [`Service::from_config`], [`serve`]. To mount it in a tonic server of
//! your own: add [`Service::grpc`] to your router (see `examples/embed.rs`).

pub mod auth;
pub mod cache;
pub mod clock;
pub mod commit_token;
pub mod config;
pub mod connections;
pub mod download;
pub mod grpc;
pub mod hex;
pub mod layout;
pub mod link;
pub mod metrics;
pub mod model;
pub mod proto;
pub mod results;
pub mod secret;
pub mod server;
pub mod serving;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod watch;

pub use config::Config;
pub use server::{Service, StartError, check_files, serve};
