//! The subcommands that ask a running service through the client crate: `results` and `usage`.

pub mod connection;
pub mod results;
pub mod usage;
