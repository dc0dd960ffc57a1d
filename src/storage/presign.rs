//! Signed GET URLs, made in bulk and by the service itself: AWS SigV4 query authentication (`sigv4.rs`),
//! Google V4 signed URLs (`gcs.rs`) and Azure service SAS (`azure.rs`).
//!
//! `object_store` signs one URL at a time (deriving the signing key anew each time), signs GCS URLs for the
//! host `storage.googleapis.com` whatever the store's URL, and signs Azure URLs over the encoded blob name
//! where Azure wants the decoded one. These signers build what every URL of a batch shares once, sign for the
//! host clients reach, and encode each object path once, strictly. Each is used only once it has shown that
//! it makes, for a probe object, what `object_store` makes; otherwise the backend keeps `object_store`'s.

pub(super) mod azure;
pub(super) mod gcs;
pub(super) mod sigv4;

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use object_store::path::Path;
use tokio::sync::Semaphore;

/// One object a URL is signed for: its path (as `object_store` names it: `/`-separated, unencoded) and, for a
/// URL that downloads exactly one version of it, that version (S3's `versionId`, GCS's generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub path: &'a str,
    pub version: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The current version of `path`.
    pub fn latest(path: &'a str) -> Self {
        Self { path, version: None }
    }
}

/// Signs many GET URLs at once, as the store verifies them.
pub trait BulkSigner: Send + Sync + std::fmt::Debug {
    /// GET URLs of `targets`, valid from `at` (whole seconds) for `expires`; each names its target's version
    /// where it has one (a signer for a store whose URLs cannot name one is never given one).
    fn sign_all(&self, targets: &[Target<'_>], at: SystemTime, expires: Duration) -> Vec<String>;

    /// How many URLs may be signed on an async task: about half a millisecond of work (an HMAC signature
    /// costs about 2 µs). More are signed on the blocking pool.
    fn inline_limit(&self) -> usize {
        256
    }
}

/// The fewest URLs worth a thread of their own.
const URLS_PER_THREAD: usize = 64;

/// One permit per core: the threads signing URLs in bulk, over all calls.
fn signing_cores() -> &'static Semaphore {
    static CORES: OnceLock<Semaphore> = OnceLock::new();
    CORES.get_or_init(|| Semaphore::new(cores()))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// URLs for `objects`, from `at` for `ttl`. A few cheap ones are signed on the calling task; the others on
/// the blocking pool, split over as many threads as there are cores (fewer for fewer URLs). Calls take their
/// threads' cores in turn (a fair semaphore), so that signing never runs more threads than cores, and of
/// many large calls the first finishes first instead of all slowing together.
pub(super) async fn sign_in_bulk(
    bulk: &Arc<dyn BulkSigner>,
    objects: Vec<(Path, Option<String>)>,
    at: SystemTime,
    ttl: Duration,
) -> Vec<String> {
    fn targets(objects: &[(Path, Option<String>)]) -> Vec<Target<'_>> {
        objects.iter().map(|(path, version)| Target { path: path.as_ref(), version: version.as_deref() }).collect()
    }
    if objects.len() <= bulk.inline_limit() {
        return bulk.sign_all(&targets(&objects), at, ttl);
    }
    let threads = objects.len().div_ceil(URLS_PER_THREAD).clamp(1, cores());
    // The semaphore is never closed: a failure to acquire cannot happen, and would only mean no waiting.
    let _cores = signing_cores().acquire_many(threads as u32).await.ok();
    let bulk = bulk.clone();
    let work = move || {
        let paths = targets(&objects);
        if threads == 1 {
            return bulk.sign_all(&paths, at, ttl);
        }
        std::thread::scope(|scope| {
            let slice = paths.len().div_ceil(threads);
            let parts: Vec<_> = paths.chunks(slice).map(|part| scope.spawn(|| bulk.sign_all(part, at, ttl))).collect();
            parts.into_iter().flat_map(|part| part.join().unwrap_or_default()).collect()
        })
    };
    tokio::task::spawn_blocking(work).await.unwrap_or_default()
}

/// `scheme://host[:port]` and the path of `url`, which has no query.
pub(super) fn split_authority(url: &str) -> Option<(&str, &str)> {
    let after_scheme = url.find("://")? + 3;
    let path_start = url[after_scheme..].find('/').map_or(url.len(), |i| after_scheme + i);
    Some((&url[..path_start], &url[path_start..]))
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes every byte but the unreserved `A-Z a-z 0-9 - . _ ~`, as SigV4 wants.
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_encoded(&mut out, text);
    out
}

/// Appends `text` percent-encoded (see [`encode`]).
pub(super) fn push_encoded(out: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            _ => {
                out.push('%');
                out.push(HEX_UPPER[usize::from(byte >> 4)] as char);
                out.push(HEX_UPPER[usize::from(byte & 15)] as char);
            }
        }
    }
}

/// [`encode`] for each `/`-separated segment of an object path.
pub(super) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 16);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        push_encoded(&mut out, segment);
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` of `at`, in UTC.
pub(super) fn amz_date(at: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(at).to_string(); // 2026-11-25T13:58:02Z
    rfc3339.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// The instant of a `YYYYMMDDTHHMMSSZ` date.
pub(super) fn parse_amz_date(date: &str) -> Option<SystemTime> {
    let d = date.as_bytes();
    if d.len() != 16 || d[8] != b'T' || d[15] != b'Z' {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &date[0..4],
        &date[4..6],
        &date[6..8],
        &date[9..11],
        &date[11..13],
        &date[13..15]
    );
    humantime::parse_rfc3339(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_and_parse_back() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_000);
        let date = amz_date(at);
        assert_eq!(date.len(), 16);
        assert_eq!(parse_amz_date(&date), Some(at));
        assert_eq!(amz_date(SystemTime::UNIX_EPOCH), "19700101T000000Z");
    }

    #[test]
    fn encoding_leaves_only_unreserved_bytes() {
        assert_eq!(encode("a b/c+d=é~"), "a%20b%2Fc%2Bd%3D%C3%A9~");
        assert_eq!(encode_path("p/x y/z"), "p/x%20y/z");
    }
}
