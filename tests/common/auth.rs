//! Callers with bearer tokens, and a service configured with token files.

use std::path::Path;

use anonymous_results_client::{Client, RetryPolicy, Token};
use tonic::transport::Channel;

/// The scheduler's token, as its token file holds it.
pub const SCHEDULER_TOKEN: &str = "scheduler-7Hk2pQ9xWvL4mN8rT1bZ";
/// A worker's token.
pub const WORKER_TOKEN: &str = "worker-3Fj8sK1qYe6uR0cD5gA9";

/// A client that calls with `token` (or none), each call once.
pub fn client_as(channel: Channel, token: Option<&str>) -> Client {
    let token = token.map_or(Ok(Token::None), Token::fixed).expect("a valid token");
    Client::new(channel).with_token(token).with_retry(RetryPolicy::NEVER)
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
