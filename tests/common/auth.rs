//! Callers with bearer tokens, and a service configured with token files.

use std::path::Path;

use anonymous_results::proto::anonymous_results_client::AnonymousResultsClient;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// The scheduler's token, as its token file holds it.
pub const SCHEDULER_TOKEN: &str = "scheduler-7Hk2pQ9xWvL4mN8rT1bZ";
/// A worker's token.
pub const WORKER_TOKEN: &str = "worker-3Fj8sK1qYe6uR0cD5gA9";

/// Adds `authorization: Bearer <token>` to every call (nothing, without a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type AuthedClient = AnonymousResultsClient<InterceptedService<Channel, Bearer>>;

/// A client that calls with `token` (or none).
pub fn client_as(channel: Channel, token: Option<&str>) -> AuthedClient {
    let value = token.map(|token| format!("Bearer {token}").parse().expect("an ASCII token"));
    AnonymousResultsClient::with_interceptor(channel, Bearer(value))
}

/// Writes the token files into `dir` and answers the `[anonymous_results_service]` lines that name them.
pub fn token_files(dir: &Path) -> String {
    let scheduler = dir.join("scheduler.tokens");
    let worker = dir.join("worker.tokens");
    std::fs::write(&scheduler, format!("# the scheduler\n{SCHEDULER_TOKEN}\n")).expect("write a token file");
    std::fs::write(&worker, format!("{WORKER_TOKEN}\n")).expect("write a token file");
    format!(
        "auth.scheduler_token_file = {:?}\nauth.worker_token_file = {:?}\n",
        scheduler.display().to_string(),
        worker.display().to_string()
    )
}
