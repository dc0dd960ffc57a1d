//! Results made through the gRPC API as a scheduler and its workers would, for the benchmarks that need many:
//! Allocate, a one-file sink written, Commit.

use anonymous_results::proto;
use anonymous_results_client::Client;
use futures::StreamExt;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Allocates (as `request(number)` says), writes and commits one one-file result per number in `numbers`,
/// `at_once` at a time.
pub async fn commit_many(
    client: &Client,
    numbers: impl IntoIterator<Item = usize>,
    request: impl Fn(usize) -> Result<proto::AllocateRequest, Error>,
    at_once: usize,
) -> Result<(), Error> {
    let results: Vec<Result<(), Error>> = futures::stream::iter(numbers)
        .map(|i| {
            let (client, request) = (client.clone(), request(i));
            async move {
                let allocated = client.allocate(request?).await?;
                let sink = allocated.sink.ok_or("no sink")?.uri;
                tokio::fs::write(format!("{sink}part-0.parquet"), b"x").await?;
                let commit = proto::CommitRequest {
                    result_id: allocated.result_id,
                    commit_token: allocated.commit_token,
                    files: Vec::new(),
                };
                client.commit(commit).await?;
                Ok(())
            }
        })
        .buffer_unordered(at_once)
        .collect()
        .await;
    results.into_iter().collect()
}

pub fn ms(time: std::time::Duration) -> f64 {
    time.as_secs_f64() * 1000.0
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
