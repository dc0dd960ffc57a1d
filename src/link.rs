//! Download links: capability URLs the service mints and every replica verifies, with no record read.
//!
//! A link is `<base>/v1/results/<result_id>/files/<path>?mode=<mode>[&expires=<unix seconds>]&key=<key
//! id>&signature=<hex>`, the path percent-encoded segment by segment. The signature is HMAC-SHA256 over the
//! mode, the expiry, the result id and the path, with a key derived from the commit secret (so a replica with
//! the same secret verifies another's links, and no link can pass as a commit token). The key id names the
//! derived key: links minted with a previous secret (`auth.previous_commit_secret_file`) stay valid until they
//! expire. A `proxy` link expires; a `redirect` link does not, and is checked against the result at each use.

use std::fmt::Write as _;

use ring::{digest, hmac};

use crate::model::{RelPath, ResultId, Timestamp};

/// Binds the MAC to its use, so that no other MAC made with the same secret passes as a link's.
const CONTEXT: &[u8] = b"anonymous-results download link v1\0";
/// Where the download routes are, under the base URL.
pub const ROUTE_PREFIX: &str = "/v1/results/";
const FILES: &str = "/files/";
/// The longest request target verified; a longer one is refused before anything else is done.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

/// How a link serves its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// The bytes flow through the service until `expires`.
    Proxy { expires: u64 },
    /// Each GET is redirected to a freshly signed store URL, as long as the result exists.
    Redirect,
}

impl LinkMode {
    fn name(self) -> &'static str {
        match self {
            Self::Proxy { .. } => "proxy",
            Self::Redirect => "redirect",
        }
    }
}

/// A link that verified: which file it names, and how to serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub result_id: ResultId,
    pub path: RelPath,
    pub mode: LinkMode,
}

/// Why a request target is not a link to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not under the download routes, or not shaped like a link at all: 404.
    #[error("no such download route")]
    NotARoute,
    /// Shaped like a link, but not one this service minted (changed, foreign, or a key it no longer has): 403.
    #[error("the link's signature does not verify")]
    Forged,
    /// A proxy link past its expiry: 403.
    #[error("the link expired")]
    Expired,
}

/// One derived key and its public id.
struct LinkKey {
    id: String,
    key: hmac::Key,
}

impl LinkKey {
    fn derive(secret: &[u8]) -> Self {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), CONTEXT);
        // The id is a hash of the derived key, which says nothing of the secret.
        let id = crate::hex::encode(&digest::digest(&digest::SHA256, derived.as_ref()).as_ref()[..4]);
        Self { id, key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()) }
    }
}

/// Mints links with the current secret's key and verifies those of the current and previous secrets.
pub struct LinkKeys {
    current: LinkKey,
    previous: Vec<LinkKey>,
}

impl std::fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkKeys").field("current", &self.current.id).finish_non_exhaustive()
    }
}

impl LinkKeys {
    /// Keys derived from the commit secret `current` and from secrets it replaced.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Self {
        Self { current: LinkKey::derive(current), previous: previous.iter().map(|s| LinkKey::derive(s)).collect() }
    }

    /// The link to `path` of `result_id` under `base` (no trailing `/`).
    pub fn mint(&self, base: &str, result_id: &ResultId, path: &RelPath, mode: LinkMode) -> String {
        let mut url = String::with_capacity(base.len() + path.as_str().len() + 200);
        url.push_str(base);
        url.push_str(ROUTE_PREFIX);
        url.push_str(result_id.as_str());
        url.push_str(FILES);
        push_path(&mut url, path.as_str());
        let _ = write!(url, "?mode={}", mode.name());
        if let LinkMode::Proxy { expires } = mode {
            let _ = write!(url, "&expires={expires}");
        }
        let _ = write!(url, "&key={}&signature=", self.current.id);
        let tag = hmac::sign(&self.current.key, &message(mode, result_id.as_str(), path.as_str()));
        crate::hex::push(&mut url, tag.as_ref());
        url
    }

    /// Verifies the request target `target` (path and query, as received) at `now`. Nothing is read from
    /// storage: a changed, foreign or expired link is refused here.
    pub fn verify(&self, target: &str, now: Timestamp) -> Result<Verified, LinkError> {
        if target.len() > MAX_TARGET_BYTES {
            return Err(LinkError::NotARoute);
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let rest = path.strip_prefix(ROUTE_PREFIX).ok_or(LinkError::NotARoute)?;
        let (id, file) = rest.split_once(FILES).ok_or(LinkError::NotARoute)?;
        let result_id = ResultId::parse(id).map_err(|_| LinkError::NotARoute)?;
        let file = decode_path(file).ok_or(LinkError::NotARoute)?;
        let path = RelPath::parse("path", &file).map_err(|_| LinkError::NotARoute)?;
        let params = Params::parse(query).ok_or(LinkError::Forged)?;
        let mode = match (params.mode, params.expires) {
            (Some("proxy"), Some(expires)) => {
                LinkMode::Proxy { expires: expires.parse().map_err(|_| LinkError::Forged)? }
            }
            (Some("redirect"), None) => LinkMode::Redirect,
            _ => return Err(LinkError::Forged),
        };
        let (Some(key_id), Some(signature)) = (params.key, params.signature) else { return Err(LinkError::Forged) };
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == key_id)
            .ok_or(LinkError::Forged)?;
        let tag = crate::secret::decode_tag(signature).ok_or(LinkError::Forged)?;
        hmac::verify(&key.key, &message(mode, result_id.as_str(), path.as_str()), &tag)
            .map_err(|_| LinkError::Forged)?;
        if let LinkMode::Proxy { expires } = mode
            && now.millis() / 1000 >= expires
        {
            return Err(LinkError::Expired);
        }
        Ok(Verified { result_id, path, mode })
    }
}

/// What a link's signature covers.
fn message(mode: LinkMode, result_id: &str, path: &str) -> Vec<u8> {
    let expires = match mode {
        LinkMode::Proxy { expires } => expires.to_string(),
        LinkMode::Redirect => String::new(),
    };
    format!("{}\n{expires}\n{result_id}\n{path}", mode.name()).into_bytes()
}

/// The query parameters of a link; `None` if one appears twice.
#[derive(Default)]
struct Params<'a> {
    mode: Option<&'a str>,
    expires: Option<&'a str>,
    key: Option<&'a str>,
    signature: Option<&'a str>,
}

impl<'a> Params<'a> {
    fn parse(query: &'a str) -> Option<Self> {
        let mut params = Self::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "mode" => &mut params.mode,
                "expires" => &mut params.expires,
                "key" => &mut params.key,
                "signature" => &mut params.signature,
                // Other parameters (a client's cache buster, say) are not the link's.
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        Some(params)
    }
}

/// Appends `path` percent-encoded segment by segment: every byte but the unreserved `A-Z a-z 0-9 - . _ ~`.
fn push_path(out: &mut String, path: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => out.push(byte as char),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 15)] as char);
            }
        }
    }
}

/// The path of a request target, percent-decoded; `None` if an escape is malformed or the result is not
/// UTF-8. An encoded `/` is refused: it would make two names of one file.
fn decode_path(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let byte = u8::from_str_radix(std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?, 16).ok()?;
                if byte == b'/' {
                    return None;
                }
                out.push(byte);
                i += 3;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use proptest::prelude::*;

    use super::*;

    const BASE: &str = "https://results.example.com";

    fn id() -> ResultId {
        ResultId::generate().unwrap()
    }

    fn at(seconds: u64) -> Timestamp {
        Timestamp::new(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)).unwrap()
    }

    fn target(url: &str) -> &str {
        url.strip_prefix(BASE).unwrap()
    }

    #[test]
    fn a_minted_link_verifies_until_it_expires() {
        let keys = LinkKeys::new(b"a secret of at least thirty-two bytes!", &[]);
        let (id, path) = (id(), RelPath::parse("p", "year=2024/part 0é.parquet").unwrap());
        let url = keys.mint(BASE, &id, &path, LinkMode::Proxy { expires: 1_000 });
        assert!(url.contains("/files/year%3D2024/part%200%C3%A9.parquet?mode=proxy&expires=1000&key="), "{url}");
        let verified = keys.verify(target(&url), at(999)).unwrap();
        assert_eq!(verified, Verified { result_id: id, path, mode: LinkMode::Proxy { expires: 1_000 } });
        assert_eq!(keys.verify(target(&url), at(1_000)), Err(LinkError::Expired));
    }

    #[test]
    fn a_redirect_link_does_not_expire() {
        let keys = LinkKeys::new(b"a secret of at least thirty-two bytes!", &[]);
        let url = keys.mint(BASE, &id(), &RelPath::parse("p", "a.csv").unwrap(), LinkMode::Redirect);
        assert!(!url.contains("expires"), "{url}");
        assert_eq!(keys.verify(target(&url), Timestamp::latest()).unwrap().mode, LinkMode::Redirect);
    }

    #[test]
    fn a_changed_or_foreign_link_is_forged() {
        let keys = LinkKeys::new(b"a secret of at least thirty-two bytes!", &[]);
        let other = LinkKeys::new(b"another secret of thirty-two bytes!!!", &[]);
        let path = RelPath::parse("p", "a.csv").unwrap();
        let url = keys.mint(BASE, &id(), &path, LinkMode::Proxy { expires: 1_000 });
        let now = at(1);
        for changed in [
            url.replace("a.csv", "b.csv"),
            url.replace("expires=1000", "expires=2000"),
            url.replace("mode=proxy&expires=1000", "mode=redirect"),
            format!("{url}0"),
            format!("{}{}", &url[..url.len() - 1], if url.ends_with('0') { "1" } else { "0" }),
            url.replace("&key=", "&key=0"),
            format!("{url}&signature=00"),
            other.mint(BASE, &id(), &path, LinkMode::Proxy { expires: 1_000 }),
        ] {
            assert_eq!(keys.verify(target(&changed), now), Err(LinkError::Forged), "{changed}");
        }
        let other_id = id();
        let moved = url.replacen(&url[BASE.len() + ROUTE_PREFIX.len()..][..26], other_id.as_str(), 1);
        assert_eq!(keys.verify(target(&moved), now), Err(LinkError::Forged), "{moved}");
    }

    #[test]
    fn links_of_a_previous_secret_verify_and_new_ones_use_the_current() {
        let old = LinkKeys::new(b"the old secret of thirty-two bytes!!!", &[]);
        let rotated =
            LinkKeys::new(b"the new secret of thirty-two bytes!!!", &[b"the old secret of thirty-two bytes!!!"]);
        let path = RelPath::parse("p", "a.csv").unwrap();
        let minted_before = old.mint(BASE, &id(), &path, LinkMode::Redirect);
        assert!(rotated.verify(target(&minted_before), at(1)).is_ok());
        let minted_after = rotated.mint(BASE, &id(), &path, LinkMode::Redirect);
        assert_eq!(old.verify(target(&minted_after), at(1)), Err(LinkError::Forged));
        assert_ne!(rotated.current.id, old.current.id);
    }

    #[test]
    fn targets_that_are_not_links_are_not_routes() {
        let keys = LinkKeys::new(b"a secret of at least thirty-two bytes!", &[]);
        let id = id();
        for target in [
            "/".to_owned(),
            "/v1/results/".to_owned(),
            format!("/v1/results/{id}"),
            format!("/v1/results/{id}/files/"),
            format!("/v1/results/{id}/files/a/../b"),
            format!("/v1/results/{id}/files/a%2Fb"),
            format!("/v1/results/{id}/files/%ff"),
            format!("/v1/results/{id}/files/%4"),
            "/v1/results/not-an-id/files/a".to_owned(),
            format!("/v1/results/{id}/files/{}", "a".repeat(MAX_TARGET_BYTES)),
        ] {
            assert_eq!(keys.verify(&target, at(1)), Err(LinkError::NotARoute), "{target}");
        }
    }

    proptest! {
        /// Whatever the target, verification answers (never panics), and only an unchanged minted link passes.
        #[test]
        fn verification_of_any_target_never_panics(any in "\\PC{0,300}", path in "[a-z0-9 é%=+/]{1,40}") {
            let keys = LinkKeys::new(b"a secret of at least thirty-two bytes!", &[]);
            let _ = keys.verify(&any, at(1));
            if let Ok(path) = RelPath::parse("p", &path) {
                let id = id();
                let url = keys.mint(BASE, &id, &path, LinkMode::Proxy { expires: 10 });
                let verified = keys.verify(target(&url), at(1)).unwrap();
                prop_assert_eq!(verified.path, path);
                let mut changed = url.clone().into_bytes();
                let at_byte = any.len() % changed.len();
                changed[at_byte] = changed[at_byte].wrapping_add(1);
                if let Ok(changed) = String::from_utf8(changed)
                    && let Some(changed) = changed.strip_prefix(BASE)
                    && changed != target(&url)
                {
                    prop_assert!(keys.verify(changed, at(1)).is_err(), "{}", changed);
                }
            }
        }
    }
}
