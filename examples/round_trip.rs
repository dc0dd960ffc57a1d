//! One result's round trip against a running service, through the client crate's `Client`: the scheduler allocates,
//! a worker writes a CSV file into the sink and commits it, the scheduler resolves it, and the client downloads
//! every location and checks it holds what the worker wrote. Then the scheduler releases the result.
//!
//! ```text
//! cargo run --example round_trip -- --addr http://127.0.0.1:50051
//! cargo run --example round_trip -- --addr http://HOST:50051 \
//!     --scheduler-token-file scheduler.token --worker-token-file worker.token
//! ```
//!
//! The worker writes with the sink's `storage_options`, as a Polars worker would: to the local path, or to the
//! object store through `object_store` built from those options. Exits non-zero, saying why, on any failure.

use std::{collections::HashMap, path::PathBuf};

use anonymous_results_client::{
    Client, Token,
    proto::{AllocateRequest, CommitRequest, FileType, ReleaseRequest, ResolveRequest, ResultFile, ResultState},
};
use clap::Parser;
use object_store::ObjectStoreExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Allocate, write, Commit, Resolve, download and Release one result")]
struct Args {
    /// The service, as `http://HOST:PORT`.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The scheduler's bearer token, read from this file (when the service requires tokens).
    #[arg(long, value_name = "FILE")]
    scheduler_token_file: Option<PathBuf>,
    /// The worker's bearer token, read from this file (when the service requires tokens).
    #[arg(long, value_name = "FILE")]
    worker_token_file: Option<PathBuf>,
    /// The query the result is for; Allocate is idempotent on it. A fresh one by default.
    #[arg(long)]
    query_id: Option<String>,
    /// Keeps the result instead of releasing it at the end.
    #[arg(long)]
    keep: bool,
}

/// The result file the worker writes.
const FILE: &str = "part-0.csv";

#[tokio::main]
async fn main() {
    if let Err(error) = run(Args::parse()).await {
        eprintln!("round trip failed: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Error> {
    // HTTPS to object stores and presigned URLs goes through rustls on ring.
    anonymous_results::storage::install_tls_provider();
    let client = Client::connect(args.addr.clone()).await?;
    // One connection, a client per role: each presents its own token (read again when its file changes).
    let scheduler = client.with_token(token(args.scheduler_token_file)?);
    let worker = client.with_token(token(args.worker_token_file)?);
    let query_id = args.query_id.unwrap_or_else(|| format!("round-trip-{}", std::process::id()));

    // The scheduler: a place for the query's result.
    let allocated = scheduler
        .allocate(AllocateRequest { query_id: query_id.clone(), file_type: FileType::Csv.into(), ..Default::default() })
        .await?;
    let sink = allocated.sink.clone().ok_or("Allocate answered no sink")?;
    println!("allocated {} for query {query_id}: sink {}", allocated.result_id, sink.uri);

    // The worker: the result file into the sink, then Commit.
    let contents = format!("query_id,row\n{query_id},1\n{query_id},2\n");
    write(&sink.uri, &sink.storage_options, contents.as_bytes()).await?;
    let committed = worker
        .commit(CommitRequest {
            result_id: allocated.result_id.clone(),
            commit_token: allocated.commit_token.clone(),
            files: vec![ResultFile {
                path: FILE.to_owned(),
                size_bytes: Some(contents.len() as u64),
                row_count: Some(2),
            }],
        })
        .await?;
    let state = committed.status.as_ref().map(|s| s.state());
    println!("committed: {state:?}, {} bytes", committed.status.as_ref().map_or(0, |s| s.total_bytes));

    // The scheduler, for the client: where to download from, every page of it.
    let resolved = scheduler
        .resolve_all(ResolveRequest { result_id: allocated.result_id.clone(), page_size: 1000, ..Default::default() })
        .await?;
    let state = resolved.status.as_ref().map(|s| s.state());
    if state != Some(ResultState::Committed) || resolved.locations.len() != 1 {
        return Err(format!("Resolve answered {state:?} with {} locations", resolved.locations.len()).into());
    }
    // The client: every location, checked against what was written.
    for location in &resolved.locations {
        let downloaded = download(&location.url).await?;
        if downloaded != contents.as_bytes() {
            return Err(format!("{} does not hold what the worker wrote", location.path).into());
        }
        println!("downloaded {} ({} bytes) from {}", location.path, downloaded.len(), shorten(&location.url));
    }

    if !args.keep {
        scheduler.release(ReleaseRequest { result_id: allocated.result_id.clone() }).await?;
        println!("released {}", allocated.result_id);
    }
    println!("round trip OK");
    Ok(())
}

/// A role's bearer token: from its file, or none.
fn token(file: Option<PathBuf>) -> Result<Token, Error> {
    Ok(file.map(Token::file).transpose()?.unwrap_or_default())
}

/// Writes `FILE` into the sink at `uri`: a local folder, or an object-store folder reached with `options`.
async fn write(uri: &str, options: &HashMap<String, String>, bytes: &[u8]) -> Result<(), Error> {
    if uri.starts_with('/') {
        let path = PathBuf::from(uri).join(FILE);
        return std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()).into());
    }
    let url = url::Url::parse(&format!("{uri}{FILE}"))?;
    let (store, path) = object_store::parse_url_opts(&url, options)?;
    store.put(&path, bytes.to_vec().into()).await?;
    Ok(())
}

/// The bytes at a location: a local path, or a presigned URL.
async fn download(location: &str) -> Result<Vec<u8>, Error> {
    if location.starts_with('/') {
        return Ok(std::fs::read(location)?);
    }
    let response = reqwest::get(location).await?.error_for_status()?;
    Ok(response.bytes().await?.to_vec())
}

/// A presigned URL without its query (the signature), for printing.
fn shorten(url: &str) -> &str {
    url.split_once('?').map_or(url, |(base, _)| base)
}
