//! Who may call what. A caller sends a bearer token (`authorization: Bearer <token>`); the token files of
//! `auth.scheduler_token_file` and `auth.worker_token_file` say which role it has. The scheduler may
//! Allocate, Resolve, Abort, Release, Renew and Watch; a worker may Commit and Abort. Health and reflection
//! are not AnonymousResults calls and stay open.
//!
//! A token file holds one token per line (blank lines and `#` comments are skipped), so tokens can be rotated:
//! add the new one, move the callers over, remove the old one. A watcher thread looks at the files once a
//! second and reads one again when it changed; a file that cannot be read then keeps its last tokens (and says
//! so in the log). Only SHA-256 digests of the tokens are kept in memory, and compared in constant time.
//!
//! Checking a token takes no lock and makes no system call: each thread keeps the digests it last saw, with
//! their generation, and takes the lock only when a reload has made a new generation.

use std::{
    cell::RefCell,
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use http::HeaderMap;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::{config::AuthConfig, secret::constant_time_eq};

/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;
/// How often a token file is looked at for changes.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A caller's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Scheduler,
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Scheduler => "scheduler",
            Self::Worker => "worker",
        }
    }
}

/// The AnonymousResults calls, and who may make them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    Allocate,
    Commit,
    Resolve,
    Abort,
    Release,
    Renew,
    Watch,
    RefreshSink,
    ListResults,
    GetUsage,
}

impl Rpc {
    /// Every call, in the order of the contract.
    pub const ALL: [Rpc; 10] = [
        Self::Allocate,
        Self::Commit,
        Self::Resolve,
        Self::Abort,
        Self::Release,
        Self::Renew,
        Self::Watch,
        Self::RefreshSink,
        Self::ListResults,
        Self::GetUsage,
    ];

    /// The method's name in the contract.
    pub fn name(self) -> &'static str {
        match self {
            Self::Allocate => "Allocate",
            Self::Commit => "Commit",
            Self::Resolve => "Resolve",
            Self::Abort => "Abort",
            Self::Release => "Release",
            Self::Renew => "Renew",
            Self::Watch => "Watch",
            Self::RefreshSink => "RefreshSink",
            Self::ListResults => "ListResults",
            Self::GetUsage => "GetUsage",
        }
    }

    /// The call a gRPC request path names (`/anonymous_results.v1.AnonymousResults/<Method>`), if any.
    pub fn from_path(path: &str) -> Option<Self> {
        let method = path.strip_prefix("/anonymous_results.v1.AnonymousResults/")?;
        Self::ALL.into_iter().find(|rpc| rpc.name() == method)
    }

    /// The roles allowed to make this call.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Self::Commit | Self::RefreshSink => &[Role::Worker],
            Self::Abort => &[Role::Scheduler, Role::Worker],
            Self::Allocate
            | Self::Resolve
            | Self::Release
            | Self::Renew
            | Self::Watch
            | Self::ListResults
            | Self::GetUsage => &[Role::Scheduler],
        }
    }
}

/// The roles a caller proved (both when authentication is off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub scheduler: bool,
    pub worker: bool,
}

impl Caller {
    pub fn has(self, role: Role) -> bool {
        match role {
            Role::Scheduler => self.scheduler,
            Role::Worker => self.worker,
        }
    }
}

/// Why a call is refused. `grpc.rs` maps these to UNAUTHENTICATED and PERMISSION_DENIED.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send the metadata `authorization: Bearer <token>` with a scheduler or worker token")]
    Missing,
    #[error("the `authorization` metadata is not `Bearer <token>`")]
    Malformed,
    #[error("the bearer token is not one of this service's tokens")]
    UnknownToken,
    #[error("{rpc:?} is a call for the {allowed}; this token is a {has} token")]
    WrongRole { rpc: Rpc, allowed: &'static str, has: &'static str },
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the token file {path} holds no token (one per line; `#` starts a comment)")]
    Empty { path: PathBuf },
    #[error(
        "line {line} of the token file {path} is not a usable token: tokens are at least {MIN_TOKEN_BYTES} visible \
         ASCII characters (for example `head -c 32 /dev/urandom | base64`)"
    )]
    BadToken { path: PathBuf, line: usize },
}

/// Checks callers' tokens against the configured token files.
#[derive(Debug)]
pub struct Authenticator {
    /// The scheduler's and the workers' files; `None`: authentication is off.
    files: Option<Arc<[TokenFile; 2]>>,
}

impl Authenticator {
    /// Reads the token files `auth` names (none: authentication off).
    pub fn open(auth: &AuthConfig) -> Result<Self, TokenFileError> {
        let Some(files) = &auth.token_files else { return Ok(Self { files: None }) };
        let scheduler = TokenFile::open(Role::Scheduler, &files.scheduler)?;
        let worker = TokenFile::open(Role::Worker, &files.worker)?;
        let files = Arc::new([scheduler, worker]);
        watch(Arc::downgrade(&files));
        Ok(Self { files: Some(files) })
    }

    /// Whether callers must present tokens.
    pub fn enabled(&self) -> bool {
        self.files.is_some()
    }

    /// The caller of `rpc`, from its request headers, if its token's roles allow the call.
    pub fn authorize(&self, headers: &HeaderMap, rpc: Rpc) -> Result<Caller, AuthError> {
        let Some(files) = &self.files else { return Ok(Caller { scheduler: true, worker: true }) };
        let token = bearer_token(headers)?;
        let digest = Sha256::digest(token.as_bytes());
        let [scheduler, worker] = &**files;
        let caller = Caller { scheduler: scheduler.contains(&digest), worker: worker.contains(&digest) };
        if !caller.scheduler && !caller.worker {
            return Err(AuthError::UnknownToken);
        }
        if !rpc.roles().iter().any(|role| caller.has(*role)) {
            let allowed = match rpc.roles() {
                [Role::Worker] => "workers",
                _ => "scheduler",
            };
            let has = if caller.scheduler { Role::Scheduler.name() } else { Role::Worker.name() };
            return Err(AuthError::WrongRole { rpc, allowed, has });
        }
        Ok(caller)
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get("authorization").ok_or(AuthError::Missing)?;
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

/// Looks at `files` every [`RELOAD_INTERVAL`] on a thread of its own, reading one again when it changed,
/// until they are dropped.
fn watch(files: Weak<[TokenFile; 2]>) {
    let spawned = std::thread::Builder::new().name("token-files".into()).spawn(move || {
        loop {
            std::thread::sleep(RELOAD_INTERVAL);
            let Some(files) = files.upgrade() else { return };
            for file in files.iter() {
                file.refresh();
            }
        }
    });
    if let Err(error) = spawned {
        warn!("token files will not be read again when they change: cannot start a thread: {error}");
    }
}

/// The token files each thread keeps the digests of.
const SEEN_FILES: usize = 8;
/// Tells token files apart in each thread's cache.
static NEXT_FILE_ID: AtomicU64 = AtomicU64::new(0);

/// The digests of a token file's tokens.
type Digests = Arc<[[u8; 32]]>;

thread_local! {
    /// The digests each token file had when this thread last looked: (file id, generation, digests).
    static SEEN: RefCell<Vec<(u64, u64, Digests)>> = const { RefCell::new(Vec::new()) };
}

/// One role's token file, read again when it changes.
struct TokenFile {
    role: Role,
    path: PathBuf,
    id: u64,
    /// Counts the reads of the file: a thread whose cached digests are of an older generation takes the new.
    generation: AtomicU64,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    digests: Digests,
    /// The file's modification time and length when read.
    version: Option<(SystemTime, u64)>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile").field("role", &self.role).field("path", &self.path).finish_non_exhaustive()
    }
}

impl TokenFile {
    fn open(role: Role, path: &Path) -> Result<Self, TokenFileError> {
        let version = version(path);
        let digests = read_tokens(path)?.into();
        Ok(Self {
            role,
            path: path.to_owned(),
            id: NEXT_FILE_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            loaded: Mutex::new(Loaded { digests, version }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the file again if it changed (the watcher's work, off the callers' path).
    fn refresh(&self) {
        let now = version(&self.path);
        if now == self.lock().version {
            return;
        }
        match read_tokens(&self.path) {
            Ok(digests) => {
                info!(role = self.role.name(), file = %self.path.display(), tokens = digests.len(), "token file read again");
                *self.lock() = Loaded { digests: digests.into(), version: now };
                self.generation.fetch_add(1, Ordering::Release);
            }
            Err(e) => {
                warn!(role = self.role.name(), "keeping the tokens read before: {e}");
                // Said once per change of the file, not every second.
                self.lock().version = now;
            }
        }
    }

    /// Whether the file holds the token of `digest`: no lock and no system call unless the file was read
    /// again since this thread last looked.
    fn contains(&self, digest: &[u8]) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            let at = match seen.iter().position(|(id, _, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    // A process holds a service or two; tests make many: keep the newest few.
                    if seen.len() >= SEEN_FILES {
                        seen.remove(0);
                    }
                    seen.push((self.id, u64::MAX, Arc::from(Vec::new())));
                    seen.len() - 1
                }
            };
            if seen[at].1 != generation {
                seen[at] = (self.id, generation, self.lock().digests.clone());
            }
            // Every digest is compared, so the time taken does not say which one matched.
            seen[at].2.iter().fold(false, |found, known| found | constant_time_eq(known, digest))
        })
    }
}

fn version(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The SHA-256 digests of the tokens in `path`.
fn read_tokens(path: &Path) -> Result<Vec<[u8; 32]>, TokenFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| TokenFileError::Read { path: path.to_owned(), source })?;
    // A byte-order mark, as some editors write, is not part of the first token.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut digests = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let token = line.trim();
        if token.is_empty() || token.starts_with('#') {
            continue;
        }
        if token.len() < MIN_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenFileError::BadToken { path: path.to_owned(), line: number + 1 });
        }
        digests.push(Sha256::digest(token.as_bytes()).into());
    }
    match digests.is_empty() {
        true => Err(TokenFileError::Empty { path: path.to_owned() }),
        false => Ok(digests),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenFiles;

    fn files(scheduler: &str, worker: &str) -> (tempfile::TempDir, AuthConfig) {
        let dir = tempfile::tempdir().unwrap();
        let (s, w) = (dir.path().join("scheduler"), dir.path().join("worker"));
        std::fs::write(&s, scheduler).unwrap();
        std::fs::write(&w, worker).unwrap();
        let auth = AuthConfig {
            token_files: Some(TokenFiles { scheduler: s, worker: w }),
            commit_secret_file: None,
            previous_commit_secret_file: None,
        };
        (dir, auth)
    }

    fn with_token(token: &str) -> HeaderMap {
        let mut metadata = HeaderMap::new();
        metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        metadata
    }

    #[test]
    fn tokens_carry_their_roles() {
        let (_dir, auth) =
            files("# the scheduler\nscheduler-token-0001\n\nscheduler-token-0002\n", "worker-token-00001\n");
        let auth = Authenticator::open(&auth).unwrap();
        let caller = auth.authorize(&with_token("scheduler-token-0002"), Rpc::Allocate).unwrap();
        assert_eq!(caller, Caller { scheduler: true, worker: false });
        assert!(auth.authorize(&with_token("worker-token-00001"), Rpc::Commit).is_ok());
        assert!(matches!(
            auth.authorize(&with_token("worker-token-00001"), Rpc::Resolve),
            Err(AuthError::WrongRole { allowed: "scheduler", has: "worker", .. })
        ));
        assert!(matches!(
            auth.authorize(&with_token("nope-nope-nope-nope"), Rpc::Resolve),
            Err(AuthError::UnknownToken)
        ));
        assert!(matches!(auth.authorize(&HeaderMap::new(), Rpc::Resolve), Err(AuthError::Missing)));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        assert!(matches!(auth.authorize(&basic, Rpc::Resolve), Err(AuthError::Malformed)));
    }

    #[test]
    fn bad_token_files_are_named() {
        let (dir, auth) = files("short\n", "worker-token-00001\n");
        let message = Authenticator::open(&auth).unwrap_err().to_string();
        assert!(message.contains("line 1") && message.contains(&dir.path().join("scheduler").display().to_string()));
        let (_dir, auth) = files("# nothing\n", "worker-token-00001\n");
        assert!(matches!(Authenticator::open(&auth), Err(TokenFileError::Empty { .. })));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_token() {
        let (_dir, auth) = files("\u{feff}scheduler-token-0001\r\n", "\u{feff}# workers\r\nworker-token-00001\r\n");
        let auth = Authenticator::open(&auth).unwrap();
        assert!(auth.authorize(&with_token("scheduler-token-0001"), Rpc::Resolve).is_ok());
        assert!(auth.authorize(&with_token("worker-token-00001"), Rpc::Commit).is_ok());
    }

    #[test]
    fn calls_are_named_by_their_path() {
        assert_eq!(Rpc::from_path("/anonymous_results.v1.AnonymousResults/Commit"), Some(Rpc::Commit));
        for rpc in Rpc::ALL {
            assert_eq!(Rpc::from_path(&format!("/anonymous_results.v1.AnonymousResults/{}", rpc.name())), Some(rpc));
        }
        assert_eq!(Rpc::from_path("/anonymous_results.v1.AnonymousResults/Nope"), None);
        assert_eq!(Rpc::from_path("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn a_rotated_file_is_read_again() {
        let (_dir, auth) = files("scheduler-token-0001\n", "worker-token-00001\n");
        let files = auth.token_files.clone().unwrap();
        let authenticator = Authenticator::open(&auth).unwrap();
        let allowed = |token: &str| authenticator.authorize(&with_token(token), Rpc::Resolve).is_ok();
        assert!(allowed("scheduler-token-0001"));
        std::fs::write(&files.scheduler, "scheduler-token-0002 \n# rotated\n").unwrap();
        // The watcher looks once a second; this thread saw the old tokens and keeps them until it has.
        let deadline = std::time::Instant::now() + 5 * RELOAD_INTERVAL;
        while !allowed("scheduler-token-0002") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(allowed("scheduler-token-0002"));
        assert!(!allowed("scheduler-token-0001"));
        // Another thread, which never looked before, sees the new tokens too.
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(allowed("scheduler-token-0002") && !allowed("scheduler-token-0001")));
        });
        // A broken rewrite keeps the tokens read before.
        std::fs::write(&files.scheduler, "").unwrap();
        std::thread::sleep(2 * RELOAD_INTERVAL + Duration::from_millis(50));
        assert!(allowed("scheduler-token-0002"));
    }
}
