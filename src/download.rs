//! Downloads through the service: `GET` and `HEAD` of one committed file at a capability URL the service
//! minted (`crate::link`), for clients that cannot reach the storage (`proxy`: the bytes stream through the
//! service) or whose store URLs must not go stale (`redirect`: each GET is sent to a freshly signed store
//! URL). `http.rs` serves them as a tower service, mounted on the gRPC port by `serve` and available to a
//! program that mounts the service in a router of its own ([`crate::Service::downloads`]).

mod body;
mod headers;
mod http;
mod mount;
pub mod range;

pub use self::http::{DownloadService, REDIRECT_URL_TTL};
pub use mount::WithDownloads;
