//! The attacks of the hostile-load suite that need only write into storage, as any worker can: a FIFO where
//! a committed file was, and records larger than any release writes.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anonymous_results::proto;
use futures::StreamExt;
use tonic::Code;

use super::{Error, Sizes, Target, Verdict, judge_growth};
use crate::common::auth::{SCHEDULER_TOKEN, WORKER_TOKEN, client_as};

/// A result of one file, committed through `target`, and its proxy download link.
async fn committed(target: &Target, query_id: &str) -> Result<(proto::AllocateResponse, String), Error> {
    let scheduler = client_as(target.channel().await?, Some(SCHEDULER_TOKEN));
    let request = proto::AllocateRequest { query_id: query_id.into(), ..Default::default() };
    let allocated = scheduler.allocate(request).await?;
    let sink = allocated.sink.as_ref().ok_or("no sink")?.uri.clone();
    std::fs::write(format!("{sink}part-0.parquet"), b"PAR1 the committed bytes")?;
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    client_as(target.channel().await?, Some(WORKER_TOKEN)).commit(commit).await?;
    let request = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        download_mode: proto::DownloadMode::Proxy as i32,
        ..Default::default()
    };
    let mut locations = scheduler.resolve(request).await?.locations;
    let url = locations.pop().ok_or("no location")?.url;
    Ok((allocated, url))
}

/// How many threads process `pid` runs.
fn threads(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|line| line.starts_with("Threads:")).ok_or("no Threads line")?;
    Ok(line.split_whitespace().nth(1).ok_or("no count")?.parse()?)
}

/// Attack 6: GETs of a link whose committed file was replaced by a FIFO. Each is refused at once; then an
/// Allocate answers within 1 s, and the service runs no more threads than before.
pub(super) async fn fifo_downloads(sizes: &Sizes, verdicts: &mut Vec<Verdict>) -> Result<(), Error> {
    println!("6. {} GETs of a FIFO where a committed file was:", sizes.fifo_gets);
    let target = Target::start_with(sizes, "storage_timeout = \"5s\"\n", Duration::from_secs(2)).await?;
    let (allocated, url) = committed(&target, "fifo").await?;
    let file = PathBuf::from(format!("{}part-0.parquet", allocated.sink.as_ref().ok_or("no sink")?.uri));
    std::fs::remove_file(&file)?;
    let mode = rustix::fs::Mode::from_raw_mode(0o666);
    rustix::fs::mknodat(rustix::fs::CWD, &file, rustix::fs::FileType::Fifo, mode, 0)?;
    anonymous_results::storage::install_tls_provider();
    let http = reqwest::Client::new();
    let pid = target.process.child.id();
    // Settled: the threads of the calls so far have gone idle and left.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = threads(pid)?;
    let started = Instant::now();
    let answers: Vec<_> =
        futures::stream::iter(0..sizes.fifo_gets).map(|_| http.get(&url).send()).buffer_unordered(64).collect().await;
    let took = started.elapsed();
    let refused = answers.iter().filter(|answer| answer.as_ref().is_ok_and(|a| a.status() == 502)).count();
    let peak = threads(pid)?;
    println!(
        "  {refused} of {} refused (502) in {:.0} ms; {before} threads before, {peak} after",
        answers.len(),
        took.as_secs_f64() * 1e3
    );
    verdicts.push(Verdict {
        bound: format!("{} GETs of a FIFO are each refused at once", sizes.fifo_gets),
        pass: refused == sizes.fifo_gets && took < Duration::from_secs(5),
        figure: format!("{refused} refused in {:.0} ms", took.as_secs_f64() * 1e3),
    });
    let scheduler = client_as(target.channel().await?, Some(SCHEDULER_TOKEN));
    let started = Instant::now();
    let request = proto::AllocateRequest { query_id: "after the fifo".into(), ..Default::default() };
    let allocate = scheduler.allocate(request).await;
    let allocate_took = started.elapsed();
    verdicts.push(Verdict {
        bound: "then an Allocate answers within 1 s".into(),
        pass: allocate.is_ok() && allocate_took < Duration::from_secs(1),
        figure: format!("{:.0} ms, {:?}", allocate_took.as_secs_f64() * 1e3, allocate.err().map(|s| s.code())),
    });
    // Idle blocking threads leave after 10 s: then the count is back where it was.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = threads(pid)?;
    while after > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = threads(pid)?;
    }
    println!("  {after} threads 15 s later");
    verdicts.push(Verdict {
        bound: "the thread count is back where it was".into(),
        pass: after <= before,
        figure: format!("{before} before, {peak} just after, {after} later"),
    });
    target.finish("the FIFO downloads", verdicts).await?;
    Ok(())
}

/// Attack 7: a 1 GiB sparse file where an allocation record was, and an outcome record of `outcome_bytes`
/// (at its bound in the full run), each resolved; the service's memory grows by at most 64 MiB over what the
/// record can hold when decoded.
pub(super) async fn oversized_records(sizes: &Sizes, verdicts: &mut Vec<Verdict>) -> Result<(), Error> {
    println!("7. a 1 GiB sparse allocation record, and an outcome of {} MiB:", sizes.outcome_bytes >> 20);
    // No outcome kept in memory: the one rewritten below is read from storage. The pruner's pass would read it
    // too (each concurrent reader of a record decodes it), so it runs only when this one is done.
    let extra = "manifest_cache_bytes = 0\nanonymous_results.prune_interval = \"1h\"\n";
    let target = Target::start_with(sizes, extra, Duration::from_secs(2)).await?;
    let root = target.dir.path().join("results");
    let mut scheduler = client_as(target.channel().await?, Some(SCHEDULER_TOKEN));
    let request = proto::AllocateRequest { query_id: "sparse".into(), ..Default::default() };
    let sparse = scheduler.allocate(request).await?;
    let pending = root.join("_control/pending").join(format!("{}.json", sparse.result_id));
    std::fs::remove_file(&pending)?;
    std::fs::File::create(&pending)?.set_len(1 << 30)?;
    let (big, _) = committed(&target, "big outcome").await?;
    let outcome = root.join("_control/results").join(&big.result_id).join("outcome.json");
    let written = write_outcome(&outcome, sizes.outcome_bytes)?;
    println!("  wrote an outcome of {} files, {} MiB", written.0, written.1 >> 20);

    let resolve = |id: String, scheduler: &mut crate::common::Client| {
        let request = proto::ResolveRequest { result_id: id, page_size: 1, ..Default::default() };
        let scheduler = scheduler.clone();
        async move { scheduler.resolve(request).await }
    };
    let (before, started) = (target.reset_peak(), Instant::now());
    let answer = resolve(sparse.result_id.clone(), &mut scheduler).await;
    let took = started.elapsed();
    verdicts.push(Verdict {
        bound: "a 1 GiB sparse allocation record is DATA_LOSS at once".into(),
        pass: matches!(&answer, Err(status) if status.code() == Code::DataLoss) && took < Duration::from_secs(1),
        figure: format!("{:?} in {:.0} ms", answer.err().map(|s| s.code()), took.as_secs_f64() * 1e3),
    });
    judge_growth(verdicts, "the sparse allocation", (before, target.peak_mib().await), 64);

    let (before, started) = (target.reset_peak(), Instant::now());
    let answer = resolve(big.result_id.clone(), &mut scheduler).await;
    let took = started.elapsed();
    let files = answer.as_ref().ok().and_then(|a| a.status.as_ref()).map(|s| s.file_count);
    println!("  the outcome resolved in {:.1} s: {files:?} files", took.as_secs_f64());
    verdicts.push(Verdict {
        bound: "an outcome at the size asked is served".into(),
        pass: files == Some(written.0),
        figure: format!("{files:?} files of {} written", written.0),
    });
    judge_growth(verdicts, "the large outcome", (before, target.peak_mib().await), (written.1 >> 20) + 64);
    target.finish("the oversized records", verdicts).await?;
    Ok(())
}

/// Rewrites the outcome record at `path` (a committed manifest of one file) as a manifest of as many files
/// as fit in `bytes`, each path as long as a path may be (1,024 bytes, five folders deep) and nearly all `"`,
/// which the record escapes: the largest entries any release writes. Answers the files and the bytes written.
fn write_outcome(path: &Path, bytes: u64) -> Result<(u64, u64), Error> {
    let text = std::fs::read_to_string(path)?;
    let files_at = text.find("\"files\": [").ok_or("no files in the outcome")?;
    let head = &text[..files_at];
    let tail = &text[text[files_at..].find(']').ok_or("no end of the files")? + files_at + 1..];
    // Four names of 253 quotes and a fifth of 8 bytes: 1,024 bytes, no name over 255.
    let quotes = "\"".repeat(253);
    let entry = |i: u64| {
        let path = format!("{quotes}/{quotes}/{quotes}/{quotes}/-{i:07}");
        format!(
            "    {{\n      \"path\": {},\n      \"size_bytes\": 1,\n      \"row_count\": 1\n    }}",
            serde_json::to_string(&path).unwrap_or_default()
        )
    };
    let entry_bytes = entry(0).len() as u64 + 2;
    let budget = bytes.saturating_sub((head.len() + tail.len() + 64) as u64);
    let count = (budget / entry_bytes).clamp(1, anonymous_results::model::MAX_FILES_PER_RESULT as u64);
    std::fs::remove_file(path)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{head}\"files\": [")?;
    for i in 0..count {
        let separator = if i + 1 < count { ",\n" } else { "\n" };
        write!(out, "{}{separator}", entry(i))?;
    }
    write!(out, "  ]{tail}")?;
    out.flush()?;
    Ok((count, std::fs::metadata(path)?.len()))
}
