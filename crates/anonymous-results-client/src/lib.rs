#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod builder;
mod client;
mod error;
mod pages;
pub mod proto;
mod retry;
mod token;
mod watch;

pub use builder::{ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES};
pub use client::Client;
pub use error::{Error, code_name};
pub use pages::Resolved;
pub use retry::RetryPolicy;
pub use token::{TOKEN_FILE_CHECK_INTERVAL, Token, TokenFile};
pub use tonic::{Code, Status, transport::Channel};
pub use tonic_health::pb::health_check_response::ServingStatus;
pub use watch::is_final;
