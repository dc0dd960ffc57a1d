//! Downloads through the service, measured from outside with curl (to /dev/null) against the physical
//! limits of this machine in the same run:
//!
//! 1. one file through `proxy` on the local backend against the same file served by nginx with `sendfile on`;
//! 2. one file through `proxy` on S3 (s3s-fs) against a presigned GET straight from s3s-fs;
//! 3. the service's resident memory while 8 clients download the file through `proxy` at once;
//! 4. Resolve of a result of 10,000 files in `proxy` mode (links minted, no storage request).
//!
//! `cargo bench --bench download` is the full run (1 GiB files; needs nginx, s3s-fs and curl; exits non-zero on
//! a FAIL); `cargo test --bench download` (run by the test command) or `-- --smoke` the smoke size (8 MiB,
//! 300 files), whose ratios are printed but not judged and which skips nginx when it is not installed.
//! `--dir PATH` puts the local store under PATH (default: the system's temporary folder); `--file-mib N` sizes
//! the file; `--local` leaves S3 out.

#[path = "shared/args.rs"]
mod bench_args;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/rss.rs"]
mod rss;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anonymous_results::proto;
use anonymous_results_client::Client;
use bench_args::BenchArgs;
use common::{TestStore, process::Process};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How much each measurement does.
#[derive(Clone, Copy)]
struct Sizes {
    /// The downloaded file.
    file_bytes: u64,
    /// Downloads of each kind timed (the best counts: the machine's noise only slows).
    rounds: usize,
    /// Concurrent downloads of the memory measurement.
    concurrent: usize,
    /// Files of the result resolved in proxy mode.
    files: usize,
}

const FULL: Sizes = Sizes { file_bytes: 1 << 30, rounds: 3, concurrent: 8, files: 10_000 };
const SMOKE: Sizes = Sizes { file_bytes: 8 << 20, rounds: 1, concurrent: 2, files: 300 };

/// The bounds of BENCHMARKS.md.
const MIN_RATIO: f64 = 0.8;
const MAX_RSS_GROWTH_MIB: f64 = 64.0;
const MAX_RESOLVE_P50: Duration = Duration::from_millis(50);

#[tokio::main]
async fn main() -> Result<(), Error> {
    let Some(args) = BenchArgs::parse()? else { return Ok(()) };
    let mut sizes = if args.smoke { SMOKE } else { FULL };
    if let Some(mib) = args.after("--file-mib", 1) {
        sizes.file_bytes = mib.ok_or("--file-mib needs a number")?.parse::<u64>()? << 20;
    }
    let only_local = args.after("--local", 0).is_some();
    let sizes = &sizes;
    anonymous_results::storage::install_tls_provider();
    println!(
        "download: {} run, {} MiB files, {} cores, local store under {}",
        if args.smoke { "smoke" } else { "full" },
        sizes.file_bytes >> 20,
        std::thread::available_parallelism().map_or(1, usize::from),
        args.dir.display()
    );
    let mut verdicts: Vec<(String, bool)> = Vec::new();

    // 1. Local: proxy against nginx.
    let store = TestStore::Local { dir: tempfile::tempdir_in(&args.dir)? };
    // nginx's workers run as a user of their own: sinks they may read, as a deployment whose clients read
    // results by path without the sinks' group would make them.
    let service = Service::start(&store, "local.sink_mode = \"2755\"")?;
    let client = service.client().await?;
    let (id, sink) = committed_file(&client, &store, "local", sizes.file_bytes).await?;
    let proxy = resolve(&client, &id, proto::DownloadMode::Proxy, 0).await?.remove(0).url;
    let root = store.local_root().ok_or("a local store")?;
    match Nginx::start(&root) {
        Some(nginx) => {
            let relative = PathBuf::from(&sink).strip_prefix(&root)?.join("part-0.parquet");
            let direct = format!("{}/{}", nginx.url, relative.display());
            let ratio = compare("local", "nginx (sendfile)", &direct, &proxy, sizes)?;
            verdicts.push((format!("local proxy at least {MIN_RATIO}x nginx: x{ratio:.2}"), ratio >= MIN_RATIO));
        }
        None if args.smoke => println!("  local: nginx is not installed: skipped (the full run needs it)"),
        None => return Err("nginx is not installed (apt-get install nginx-light): the full run needs it".into()),
    }

    // 3. Memory: concurrent downloads through the proxy.
    let before = rss::rss_kib(service.process.child.id())?;
    let started = Instant::now();
    let mut curls: Vec<_> = (0..sizes.concurrent).map(|_| curl(&proxy)).collect::<Result<_, _>>()?;
    let mut peak = before;
    while curls.iter_mut().any(|child| matches!(child.try_wait(), Ok(None))) {
        peak = peak.max(rss::rss_kib(service.process.child.id())?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for child in curls {
        let output = child.wait_with_output()?;
        let downloaded: u64 =
            String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or("0").parse()?;
        if downloaded != sizes.file_bytes {
            return Err(format!("a concurrent download got {downloaded} bytes").into());
        }
    }
    let growth = (peak.saturating_sub(before)) as f64 / 1024.0;
    println!(
        "  memory: {} downloads of {} MiB at once in {}: RSS {:.1} MiB before, {:.1} MiB at the peak (+{growth:.1} MiB)",
        sizes.concurrent,
        sizes.file_bytes >> 20,
        secs(started.elapsed()),
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    verdicts.push((
        format!(
            "{} concurrent downloads raise RSS by less than {MAX_RSS_GROWTH_MIB} MiB: +{growth:.1} MiB",
            sizes.concurrent
        ),
        growth < MAX_RSS_GROWTH_MIB,
    ));

    // 4. Resolve of many files in proxy mode.
    let many = committed_files(&client, &store, sizes.files).await?;
    let mut latencies = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let urls = resolve(&client, &many, proto::DownloadMode::Proxy, 0).await?;
        latencies.push(started.elapsed());
        if urls.len() != sizes.files {
            return Err(format!("{} locations, not {}", urls.len(), sizes.files).into());
        }
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    println!("  Resolve of {} files in proxy mode: p50 {}", sizes.files, millis(p50));
    verdicts.push((
        format!(
            "Resolve of {} files in proxy mode, p50 at most {}: {}",
            sizes.files,
            millis(MAX_RESOLVE_P50),
            millis(p50)
        ),
        p50 <= MAX_RESOLVE_P50,
    ));
    service.stop().await;

    // 2. S3: proxy against a presigned GET from s3s-fs itself.
    match if only_local { None } else { TestStore::s3s_fs().await } {
        Some(store) => {
            let service = Service::start(&store, "")?;
            let client = service.client().await?;
            let (id, _) = committed_file(&client, &store, "s3", sizes.file_bytes).await?;
            let proxy = resolve(&client, &id, proto::DownloadMode::Proxy, 0).await?.remove(0).url;
            let direct = resolve(&client, &id, proto::DownloadMode::Direct, 0).await?.remove(0).url;
            let ratio = compare("s3", "presigned GET from s3s-fs", &direct, &proxy, sizes)?;
            verdicts.push((format!("S3 proxy at least {MIN_RATIO}x a presigned GET: x{ratio:.2}"), ratio >= MIN_RATIO));
            service.stop().await;
        }
        None => println!("  s3: s3s-fs is not installed: skipped"),
    }

    println!();
    for (verdict, pass) in &verdicts {
        let mark = match (args.smoke, pass) {
            (true, _) => "(smoke: not judged)",
            (false, true) => "PASS",
            (false, false) => "FAIL",
        };
        println!("{mark} {verdict}");
    }
    if !args.smoke && verdicts.iter().any(|(_, pass)| !pass) {
        std::process::exit(1);
    }
    Ok(())
}

/// The release binary serving `store`, with `section` in `[anonymous_results_service]`.
struct Service {
    process: Process,
    _config: tempfile::TempDir,
}

impl Service {
    fn start(store: &TestStore, section: &str) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, store.config_toml(section))?;
        let config = file.to_str().ok_or("a non-UTF-8 temporary path")?;
        let process = Process::start(dir.path(), &["--config", config], &[("RUST_LOG", "info")]);
        Ok(Self { process, _config: dir })
    }

    async fn client(&self) -> Result<Client, Error> {
        Ok(Client::connect(format!("http://{}", self.process.addr)).await?)
    }

    async fn stop(mut self) {
        self.process.signal("-TERM");
        self.process.wait().await;
    }
}

/// A committed result of one file `part-0.parquet` of `bytes` pseudo-random bytes, written straight into the
/// store's files (a local sink, or s3s-fs's folder): its id and sink.
async fn committed_file(
    client: &Client,
    store: &TestStore,
    query_id: &str,
    bytes: u64,
) -> Result<(String, String), Error> {
    let allocated = allocate(client, query_id).await?;
    let sink = allocated.sink.as_ref().ok_or("no sink")?.uri.clone();
    let file = storage_folder(store, &sink)?.join("part-0.parquet");
    std::fs::create_dir_all(file.parent().ok_or("a parent")?)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..bytes.div_ceil(block.len() as u64) {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        out.write_all(&block)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.set_len(bytes)?;
    commit(client, &allocated).await?;
    Ok((allocated.result_id, sink))
}

/// A committed result of `files` small files.
async fn committed_files(client: &Client, store: &TestStore, files: usize) -> Result<String, Error> {
    let allocated = allocate(client, "many").await?;
    let folder = storage_folder(store, &allocated.sink.as_ref().ok_or("no sink")?.uri)?;
    std::fs::create_dir_all(&folder)?;
    for i in 0..files {
        std::fs::write(folder.join(format!("part-{i:05}.parquet")), b"x")?;
    }
    commit(client, &allocated).await?;
    Ok(allocated.result_id)
}

/// Where the files of `sink` are on this machine.
fn storage_folder(store: &TestStore, sink: &str) -> Result<PathBuf, Error> {
    match store {
        TestStore::Local { .. } => Ok(PathBuf::from(sink)),
        TestStore::S3 { server, bucket, .. } => {
            let key = sink.strip_prefix(&format!("s3://{bucket}/")).ok_or("an s3:// sink")?;
            Ok(server.root().ok_or("s3s-fs keeps files in a folder")?.join(bucket).join(key))
        }
        _ => Err("this store's files are not on this machine".into()),
    }
}

async fn allocate(client: &Client, query_id: &str) -> Result<proto::AllocateResponse, Error> {
    let request = proto::AllocateRequest { query_id: query_id.into(), ..Default::default() };
    Ok(client.allocate(request).await?)
}

async fn commit(client: &Client, allocated: &proto::AllocateResponse) -> Result<(), Error> {
    let request = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    client.commit(request).await?;
    Ok(())
}

async fn resolve(
    client: &Client,
    id: &str,
    mode: proto::DownloadMode,
    page_size: u32,
) -> Result<Vec<proto::Location>, Error> {
    let request =
        proto::ResolveRequest { result_id: id.into(), download_mode: mode as i32, page_size, ..Default::default() };
    Ok(client.resolve(request).await?.locations)
}

/// The throughput of the `proxy` URL over the `direct` one's (named `what`), each the best of `sizes.rounds`
/// downloads taken in turn; printed on a line of `part`.
fn compare(part: &str, what: &str, direct: &str, proxy: &str, sizes: &Sizes) -> Result<f64, Error> {
    let (mut direct_time, mut proxy_time) = (Duration::MAX, Duration::MAX);
    for _ in 0..sizes.rounds {
        direct_time = direct_time.min(timed_download(direct, sizes.file_bytes)?);
        proxy_time = proxy_time.min(timed_download(proxy, sizes.file_bytes)?);
    }
    let ratio = direct_time.as_secs_f64() / proxy_time.as_secs_f64();
    let bytes = sizes.file_bytes;
    println!(
        "  {part}: {what} {} ({}), proxy {} ({}): x{ratio:.2}",
        secs(direct_time),
        rate(bytes, direct_time),
        secs(proxy_time),
        rate(bytes, proxy_time)
    );
    Ok(ratio)
}

/// How long curl takes to download `url` to /dev/null, checking that it got `bytes`.
fn timed_download(url: &str, bytes: u64) -> Result<Duration, Error> {
    let output = curl(url)?.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let (size, seconds): (u64, f64) = (fields.next().unwrap_or("0").parse()?, fields.next().unwrap_or("0").parse()?);
    if size != bytes || !output.status.success() {
        return Err(format!("curl got {size} bytes of {bytes} from {url}").into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// curl downloading `url` to /dev/null, printing the bytes it got and the seconds it took.
fn curl(url: &str) -> Result<std::process::Child, Error> {
    Ok(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("curl: {e}"))?)
}

/// nginx serving `root` on a free loopback port, with `sendfile on`.
struct Nginx {
    url: String,
    process: std::process::Child,
    _prefix: tempfile::TempDir,
}

impl Nginx {
    fn start(root: &Path) -> Option<Self> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|path| Path::new(path).is_file())?;
        let prefix = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let p = prefix.path().display();
        let config = format!(
            "worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
               client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
            root.display()
        );
        std::fs::write(prefix.path().join("nginx.conf"), config).ok()?;
        let process = Command::new(binary)
            .args(["-p", &p.to_string(), "-c", &format!("{p}/nginx.conf")])
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { url, process, _prefix: prefix });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM, not KILL: the master stops its worker too.
        let _ = Command::new("kill").args(["-TERM", &self.process.id().to_string()]).status();
        let _ = self.process.wait();
    }
}

fn secs(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn rate(bytes: u64, duration: Duration) -> String {
    format!("{:.0} MiB/s", bytes as f64 / (1 << 20) as f64 / duration.as_secs_f64().max(1e-9))
}
