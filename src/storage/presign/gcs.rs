//! Google Cloud Storage V4 signed URLs (`GOOG4-RSA-SHA256`), signed over the service account's RSA key for
//! the host clients reach. `object_store` signs for `storage.googleapis.com` whatever the store's URL (so a
//! store reached at another host refuses its URLs), and without a private key it asks a Google service to
//! sign: this signer does neither.

use std::time::{Duration, SystemTime};

use base64::Engine;
use ring::{
    digest,
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};

use super::{BulkSigner, Target, amz_date, encode, encode_path, parse_amz_date, split_authority};

const ALGORITHM: &str = "GOOG4-RSA-SHA256";
/// The host `object_store` signs for, whatever the store's URL.
pub const DEFAULT_HOST: &str = "storage.googleapis.com";

/// Signs GET URLs of one bucket's objects with a service account's key.
pub struct GcsSigner {
    /// The URL up to the object path: `scheme://host[:port][/path]/bucket/`.
    base: String,
    /// The URL path before the object path (`/bucket/`): the start of the canonical URI.
    base_path: String,
    /// The one signed header's value.
    host: String,
    /// The service account's email, which the credential names.
    email: String,
    key: RsaKeyPair,
    random: SystemRandom,
}

impl std::fmt::Debug for GcsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsSigner").field("base", &self.base).field("host", &self.host).finish_non_exhaustive()
    }
}

/// Why a service account's key cannot sign; never repeats the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("its private_key is not a PEM block")]
    NotPem,
    #[error("its private_key is not an RSA key ring accepts: {0}")]
    Rejected(ring::error::KeyRejected),
}

impl GcsSigner {
    /// A signer for the objects of `bucket` at `base_url` (`https://storage.googleapis.com`, or the store as
    /// clients reach it), as the service account `email` whose PEM private key (PKCS#8 or PKCS#1) is
    /// `private_key`. URLs are signed for the host of `base_url`.
    pub fn new(base_url: &str, bucket: &str, email: &str, private_key: &str) -> Result<Self, KeyError> {
        let der = pem_body(private_key).ok_or(KeyError::NotPem)?;
        let key = RsaKeyPair::from_pkcs8(&der).or_else(|_| RsaKeyPair::from_der(&der)).map_err(KeyError::Rejected)?;
        let base = format!("{}/{bucket}/", base_url.trim_end_matches('/'));
        let (authority, base_path) = split_authority(&base).ok_or(KeyError::NotPem)?;
        let host = authority.split_once("://").map_or(authority, |(_, host)| host).to_owned();
        let base_path = base_path.to_owned();
        Ok(Self { base, base_path, host, email: email.to_owned(), key, random: SystemRandom::new() })
    }

    #[cfg(test)]
    /// This signer, signing for `host` instead (as `object_store` does: [`DEFAULT_HOST`]).
    pub fn signing_for(mut self, host: &str) -> Self {
        host.clone_into(&mut self.host);
        self
    }

    #[cfg(test)]
    /// The host URLs are signed for.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether this signer makes exactly `probe_url`, which `object_store` signed for `probe`.
    pub fn reproduces(&self, probe_url: &str, probe: Target<'_>) -> bool {
        let Some((_, query)) = probe_url.split_once('?') else { return false };
        let param = |name: &str| query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='));
        let (Some(at), Some(expires)) = (
            param("X-Goog-Date").and_then(parse_amz_date),
            param("X-Goog-Expires").and_then(|seconds| seconds.parse().ok()).map(Duration::from_secs),
        ) else {
            return false;
        };
        self.sign_all(&[probe], at, expires).first().map(String::as_str) == Some(probe_url)
    }
}

impl BulkSigner for GcsSigner {
    /// An RSA signature costs most of a millisecond: none is made on an async task.
    fn inline_limit(&self) -> usize {
        0
    }

    /// A version is the query parameter `generation`: first in the URL (where `object_store` puts the
    /// parameters it is asked to sign), last in the canonical query (sorted by name).
    fn sign_all(&self, targets: &[Target<'_>], at: SystemTime, expires: Duration) -> Vec<String> {
        let date = amz_date(at);
        let scope = format!("{}/auto/storage/goog4_request", &date[..8]);
        let credential = format!("{}/{scope}", self.email);
        let seconds = expires.as_secs();
        // The URL's query as `object_store` writes it (form-encoded), and the canonical one (strictly encoded,
        // sorted: these names are in order).
        let url_query = format!(
            "X-Goog-Algorithm={ALGORITHM}&X-Goog-Credential={}&X-Goog-Date={date}&X-Goog-Expires={seconds}\
             &X-Goog-SignedHeaders=host",
            form_encode(&credential)
        );
        let canonical_query = format!(
            "X-Goog-Algorithm={ALGORITHM}&X-Goog-Credential={}&X-Goog-Date={date}&X-Goog-Expires={seconds}\
             &X-Goog-SignedHeaders=host",
            encode(&credential)
        );
        let headers = format!("\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD", self.host);
        let to_sign_prefix = format!("{ALGORITHM}\n{date}\n{scope}\n");
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        targets
            .iter()
            .map(|target| {
                let encoded = encode_path(target.path);
                let (canonical_version, url_version) = match target.version.map(encode) {
                    Some(version) => (format!("&generation={version}"), format!("generation={version}&")),
                    None => (String::new(), String::new()),
                };
                let canonical =
                    format!("GET\n{}{encoded}\n{canonical_query}{canonical_version}{headers}", self.base_path);
                let mut to_sign = to_sign_prefix.clone();
                crate::hex::push(&mut to_sign, digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
                let mut url = format!("{}{encoded}?{url_version}{url_query}&X-Goog-Signature=", self.base);
                match self.key.sign(&RSA_PKCS1_SHA256, &self.random, to_sign.as_bytes(), &mut signature) {
                    Ok(()) => crate::hex::push(&mut url, &signature),
                    // Signing fails only when the random source does: the store refuses this URL.
                    Err(_) => url.push_str("unsigned"),
                }
                url
            })
            .collect()
    }
}

/// The DER bytes of a PEM block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|line| !line.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok().filter(|der| !der.is_empty())
}

/// `application/x-www-form-urlencoded`, as a URL's query pairs are written: every byte but `A-Z a-z 0-9 * - .
/// _` percent-encoded, a space as `+`.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use object_store::{
        gcp::GoogleCloudStorageBuilder,
        path::Path,
        signer::{SignedUrlOptions, Signer},
    };

    use super::*;

    /// The test service account, whose key is committed under tests/ (ring cannot make RSA keys).
    const SERVICE_ACCOUNT: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gcs/service-account.json"));

    fn account() -> (String, String) {
        let json: serde_json::Value = serde_json::from_str(SERVICE_ACCOUNT).unwrap();
        (json["client_email"].as_str().unwrap().to_owned(), json["private_key"].as_str().unwrap().to_owned())
    }

    /// What `object_store` signs for `path` (of generation `version`, as its `signed_url_opts` signs one) at
    /// `base_url`, and what this signer makes at the same instant.
    async fn both(base_url: &str, path: &str, version: Option<&str>) -> (String, String) {
        crate::storage::install_tls_provider();
        let store = GoogleCloudStorageBuilder::new()
            .with_bucket_name("results-bucket")
            .with_service_account_key(SERVICE_ACCOUNT)
            .with_base_url(base_url)
            .build()
            .unwrap();
        let object = Path::parse(path).unwrap();
        let options = SignedUrlOptions::default().with_query(version.map(|version| ("generation", version)));
        let signing = store.signed_url_opts(reqwest::Method::GET, &object, Duration::from_secs(61), &options);
        let expected = signing.await.unwrap();
        let (email, key) = account();
        let signer = GcsSigner::new(base_url, "results-bucket", &email, &key).unwrap().signing_for(DEFAULT_HOST);
        let target = Target { path, version };
        assert!(signer.reproduces(expected.as_str(), target), "{expected}");
        let query = expected.query().unwrap().to_owned();
        let date = query.split('&').find_map(|p| p.strip_prefix("X-Goog-Date=")).unwrap();
        let made = signer.sign_all(&[target], parse_amz_date(date).unwrap(), Duration::from_secs(61)).remove(0);
        (expected.to_string(), made)
    }

    #[tokio::test]
    async fn urls_for_the_default_host_are_exactly_object_stores() {
        for base_url in ["https://storage.googleapis.com", "http://127.0.0.1:4443"] {
            for path in ["p/abc/part-0.parquet", "p/abc/year 2024/part~1.parquet", "p/x/ünïcödé.csv"] {
                for version in [None, Some("1765076400123456")] {
                    let (expected, made) = both(base_url, path, version).await;
                    assert_eq!(made, expected, "{base_url}: {path} {version:?}");
                    assert_eq!(expected.contains("generation="), version.is_some(), "{expected}");
                }
            }
        }
    }

    #[test]
    fn urls_are_signed_for_the_store_host_with_each_name_encoded_once() {
        let (email, key) = account();
        let signer = GcsSigner::new("http://127.0.0.1:4443/", "bucket", &email, &key).unwrap();
        assert_eq!(signer.host(), "127.0.0.1:4443");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_000);
        let url = signer.sign_all(&[Target::latest("p/a+b=c%41 d.csv")], at, Duration::from_secs(5)).remove(0);
        assert!(url.starts_with("http://127.0.0.1:4443/bucket/p/a%2Bb%3Dc%2541%20d.csv?X-Goog-Algorithm="), "{url}");
        assert!(url.contains("&X-Goog-Expires=5&"), "{url}");
        // 2048-bit key: 256 signature bytes, in hex.
        let signature = url.rsplit("X-Goog-Signature=").next().unwrap();
        assert_eq!(signature.len(), 512, "{url}");
        assert!(!signer.reproduces(&url.replace("Expires=5", "Expires=6"), Target::latest("p/a+b=c%41 d.csv")));
    }

    #[test]
    fn a_key_that_is_not_rsa_pem_is_refused_without_being_repeated() {
        let error = GcsSigner::new("https://storage.googleapis.com", "b", "a@b", "SECRET-NOT-PEM").unwrap_err();
        assert!(!error.to_string().contains("SECRET"), "{error}");
        let error = GcsSigner::new("https://x", "b", "a@b", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END").unwrap_err();
        assert!(matches!(error, KeyError::Rejected(_)), "{error}");
    }
}
