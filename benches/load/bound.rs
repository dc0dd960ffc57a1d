//! Durable Allocate against the disk's own bound for the same work.
//!
//! The bound is a plain program, no service: each operation writes a small record file and `fdatasync`s it,
//! gives it its two names (the pending record's and the query record's), removes the temporary name and makes
//! the sink folder. A thread does its operations a batch at a time, each step for the whole batch before the
//! next (as the service's writers do); the three folders are synced every millisecond by a thread of their
//! own, each sync shared by every operation made meanwhile (more generously than a service may: it answers
//! no one, so no operation waits for a sync). It runs with each of [`THREADS`] and [`BATCHES`] and keeps the
//! best rate. It works on the same filesystem as the service's store (a folder beside it), alternated with
//! the service's Allocate at N = 128, [`ROUNDS`] times, so that both meet the disk in the same moods. On
//! tmpfs, where no sync costs, the same run compares Allocate with the health Check.

use std::{
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{Error, Report, cases, common::TestStore, drive::Budget, service::Running};

/// The thread counts the bound is tried with.
const THREADS: [usize; 5] = [1, 2, 4, 16, 64];
/// The batch sizes the bound is tried with: an operation at a time, and each step for many.
const BATCHES: [usize; 4] = [1, 8, 32, 128];
/// Alternations of the bound and the service's Allocate.
const ROUNDS: usize = 3;
/// The service's concurrency.
const CONCURRENCY: usize = 128;
/// The size of an allocation record (the service's are about this size).
const RECORD: [u8; 400] = [b'x'; 400];

/// Alternates the bound and the service's Allocate on `store` (local), [`ROUNDS`] times, each for `duration`
/// (the bound for that long at each thread count), and judges their ratio; on tmpfs, Allocate against the
/// health Check too.
pub async fn bound(report: &mut Report, store: &TestStore, duration: Duration) -> Result<(), Error> {
    let root = store.local_root().ok_or("the bound is measured on the local backend")?;
    let parent = root.parent().ok_or("a store root with a parent")?;
    let (beside, tmpfs) = (parent.join("bound"), on_tmpfs(parent)?);
    println!(
        "Allocate against the disk's bound ({}), N = {CONCURRENCY}, {ROUNDS} rounds:",
        if tmpfs { "tmpfs" } else { "not tmpfs" }
    );
    let service = Running::start(store, false, "", "").await?;
    // A warm-up: the first Allocates make the store's folders.
    cases::allocate(&service, "warm-up", CONCURRENCY, Budget::For(duration / 4)).await?;
    let (mut ratios, mut health_ratios) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let folder = beside.join(round.to_string());
        let (best, (threads, batch)) = tokio::task::spawn_blocking(move || best_rate(&folder, duration)).await??;
        let allocate = cases::allocate(&service, &format!("bound-{round}"), CONCURRENCY, Budget::For(duration)).await?;
        let health = cases::baseline(&service, CONCURRENCY, Budget::For(duration)).await?;
        let ratio = allocate.per_second / best.max(1e-9);
        let health_ratio = allocate.per_second / health.per_second.max(1e-9);
        println!(
            "  round {round}: bound {best:.0}/s ({threads} threads, batches of {batch}), Allocate {:.0}/s (x{ratio:.2} of the bound), \
             health Check {:.0}/s (Allocate x{health_ratio:.2})",
            allocate.per_second, health.per_second
        );
        ratios.push(ratio);
        health_ratios.push(health_ratio);
    }
    service.stop().await;
    let (ratio, health_ratio) = (median(&mut ratios), median(&mut health_ratios));
    // On a disk, the disk bounds both; on tmpfs, where no sync costs, the CPU does, and the bound program
    // (no gRPC, no records to encode) is no measure of what a service can reach: the health Check is.
    if tmpfs {
        report.verdict(
            "Allocate >= 0.3 x the health Check on tmpfs (N = 128)".into(),
            health_ratio >= 0.3,
            format!("x{health_ratio:.2}, the median of {ROUNDS} rounds (x{ratio:.2} of the bound program)"),
        );
    } else {
        report.verdict(
            "durable Allocate >= 0.5 x the disk's bound for the same work (N = 128)".into(),
            ratio >= 0.5,
            format!("x{ratio:.2}, the median of {ROUNDS} alternations"),
        );
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The best rate of the bound's operations in `folder` over [`THREADS`] and [`BATCHES`], and the threads and
/// batch size that gave it.
fn best_rate(folder: &Path, duration: Duration) -> io::Result<(f64, (usize, usize))> {
    let mut best = (0.0, (0, 0));
    for threads in THREADS {
        for batch in BATCHES {
            let run = folder.join(format!("{threads}-{batch}"));
            let rate = rate(&run, threads, batch, duration)?;
            fs::remove_dir_all(&run)?;
            if rate > best.0 {
                best = (rate, (threads, batch));
            }
        }
    }
    Ok(best)
}

/// Operations per second of `threads` threads doing the bound's work in `folder`, `batch` at a time, for
/// `duration`.
fn rate(folder: &Path, threads: usize, batch: usize, duration: Duration) -> io::Result<f64> {
    let folders = Folders::make(folder)?;
    let started = Instant::now();
    let (folders, until) = (&folders, started + duration);
    let done: io::Result<Vec<usize>> = std::thread::scope(|scope| {
        let syncer = scope.spawn(move || folders.sync_until(until));
        let workers: Vec<_> =
            (0..threads).map(|thread| scope.spawn(move || folders.work(thread, batch, until))).collect();
        let joined = |worker: std::thread::ScopedJoinHandle<'_, io::Result<usize>>| {
            worker.join().unwrap_or_else(|_| Err(io::Error::other("a panic")))
        };
        let done = workers.into_iter().map(joined).collect();
        joined(syncer)?;
        done
    });
    let done: usize = done?.into_iter().sum();
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// The three folders an Allocate makes names in: the pending records', the query records' and the sinks'.
struct Folders {
    pending: PathBuf,
    queries: PathBuf,
    sinks: PathBuf,
}

impl Folders {
    fn make(folder: &Path) -> io::Result<Self> {
        let folders =
            Self { pending: folder.join("pending"), queries: folder.join("queries"), sinks: folder.join("sinks") };
        for made in [&folders.pending, &folders.queries, &folders.sinks] {
            fs::create_dir_all(made)?;
        }
        Ok(folders)
    }

    /// One thread's operations, `batch` at a time, until `until`: answers how many.
    fn work(&self, thread: usize, batch: usize, until: Instant) -> io::Result<usize> {
        let mut done = 0;
        while Instant::now() < until {
            let names: Vec<String> = (done..done + batch).map(|n| format!("{thread}-{n}")).collect();
            let temps: Vec<PathBuf> = names.iter().map(|name| self.pending.join(format!(".tmp-{name}"))).collect();
            for temp in &temps {
                let mut file = File::create_new(temp)?;
                file.write_all(&RECORD)?;
                file.sync_data()?;
            }
            for (temp, name) in temps.iter().zip(&names) {
                fs::hard_link(temp, self.pending.join(format!("{name}.json")))?;
            }
            for name in &names {
                fs::create_dir(self.sinks.join(name))?;
            }
            for (temp, name) in temps.iter().zip(&names) {
                fs::hard_link(temp, self.queries.join(format!("{name}.json")))?;
            }
            for temp in &temps {
                fs::remove_file(temp)?;
            }
            done += batch;
        }
        Ok(done)
    }

    /// Syncs the three folders, one after another, every millisecond until `until`: answers how many rounds.
    fn sync_until(&self, until: Instant) -> io::Result<usize> {
        let folders = [&self.pending, &self.queries, &self.sinks].map(File::open);
        let [pending, queries, sinks] = folders;
        let folders = [pending?, queries?, sinks?];
        let mut rounds = 0;
        while Instant::now() < until {
            for folder in &folders {
                folder.sync_all()?;
            }
            rounds += 1;
            // The operations answer no one: a sync a millisecond is plenty, and leaves the rest to them.
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(rounds)
    }
}

/// Whether `path` is on a tmpfs: its device is that of a tmpfs mount in `/proc/self/mountinfo`.
fn on_tmpfs(path: &Path) -> Result<bool, Error> {
    let device = fs::metadata(path)?.dev();
    let (major, minor) = ((device >> 8) & 0xfff, (device & 0xff) | ((device >> 12) & 0xfff00));
    let wanted = format!("{major}:{minor}");
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    // Fields: id, parent, major:minor, root, mount point, options, optional fields, "-", type, source, options.
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2);
        let kind = line.split(" - ").nth(1).and_then(|rest| rest.split(' ').next());
        device == Some(wanted.as_str()) && kind == Some("tmpfs")
    }))
}
