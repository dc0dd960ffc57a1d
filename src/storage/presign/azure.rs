//! Azure Blob Storage service SAS URLs (read permission on one blob), signed with the account key. The
//! string to sign names the blob decoded, as Azure verifies it (`object_store` names it encoded, so that its
//! URLs for names with a space, `%` or a non-ASCII letter are refused).

use std::time::{Duration, SystemTime};

use base64::Engine;
use ring::hmac;

use super::{BulkSigner, Target, encode, encode_path};

/// The storage service version the SAS is signed for (as `object_store` signs).
const VERSION: &str = "2023-11-03";

/// Signs GET URLs of one container's blobs with the account key.
pub struct SasSigner {
    /// The URL up to the blob name: `{endpoint}/{container}/`.
    base: String,
    /// `/blob/{account}/{container}/`: the start of the canonicalized resource.
    resource: String,
    key: hmac::Key,
}

impl std::fmt::Debug for SasSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasSigner").field("base", &self.base).finish_non_exhaustive()
    }
}

impl SasSigner {
    /// A signer for the blobs of `container` in `account`, reached at `endpoint` (the Blob service's URL:
    /// `https://account.blob.core.windows.net`, or the emulator's `http://host:port/account`), with the
    /// base64 account key `key`; `None` if the key is not base64.
    pub fn new(endpoint: &str, account: &str, container: &str, key: &str) -> Option<Self> {
        let key = base64::engine::general_purpose::STANDARD.decode(key.trim()).ok()?;
        Some(Self {
            base: format!("{}/{container}/", endpoint.trim_end_matches('/')),
            resource: format!("/blob/{account}/{container}/"),
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    /// The signature of a read SAS for `path` from `start` (if any) to `expiry` (both `YYYY-MM-DDTHH:MM:SSZ`).
    fn signature(&self, path: &str, start: &str, expiry: &str) -> String {
        // Permissions, start, expiry, resource, identifier, IP, protocol, version, resource type, snapshot
        // time, encryption scope, and the five response headers (none).
        let to_sign = format!("r\n{start}\n{expiry}\n{}{path}\n\n\n\n{VERSION}\nb\n\n\n\n\n\n\n", self.resource);
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(&self.key, to_sign.as_bytes()))
    }

    /// Whether this signer makes the signature of `probe_url`, which `object_store` signed for the blob
    /// `probe_path` (a name that needs no encoding), and the same URL up to its query.
    pub fn reproduces(&self, probe_url: &str, probe_path: &str) -> bool {
        let Some((url, query)) = probe_url.split_once('?') else { return false };
        let param = |name: &str| {
            query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')).map(|v| v.replace("%3A", ":"))
        };
        let (Some(start), Some(expiry), Some(signature)) = (param("st"), param("se"), param("sig")) else {
            return false;
        };
        url == format!("{}{}", self.base, encode_path(probe_path))
            && encode(&self.signature(probe_path, &start, &expiry)) == signature
    }
}

impl BulkSigner for SasSigner {
    /// The SAS has no start (valid as soon as made: a clock a little behind Azure's cannot make it not yet
    /// valid) and expires `expires` after `at`.
    /// Never given a version: the service does not name Azure blob versions in URLs.
    fn sign_all(&self, targets: &[Target<'_>], at: SystemTime, expires: Duration) -> Vec<String> {
        let expiry = humantime::format_rfc3339_seconds(at + expires).to_string();
        let query = format!("sv={VERSION}&sp=r&sr=b&se={}&sig=", encode(&expiry));
        targets
            .iter()
            .map(|Target { path, .. }| {
                let signature = encode(&self.signature(path, "", &expiry));
                format!("{}{}?{query}{signature}", self.base, encode_path(path))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use object_store::{azure::MicrosoftAzureBuilder, path::Path, signer::Signer};

    use super::*;

    /// The emulator's well-known account key (public: every Azurite has it).
    const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[tokio::test]
    async fn signatures_are_object_stores_for_names_that_need_no_encoding() {
        crate::storage::install_tls_provider();
        for (endpoint, account) in [
            ("https://results.blob.core.windows.net", "results"),
            ("http://127.0.0.1:10000/devstoreaccount1", "devstoreaccount1"),
        ] {
            let store = MicrosoftAzureBuilder::new()
                .with_account(account)
                .with_access_key(KEY)
                .with_container_name("results-container")
                .with_endpoint(endpoint.to_owned())
                .with_allow_http(true)
                .build()
                .unwrap();
            let signer = SasSigner::new(endpoint, account, "results-container", KEY).unwrap();
            for path in ["p/_control/probe/a-b_c.parquet", "p/abc/part-0.parquet"] {
                let object = Path::parse(path).unwrap();
                let url = store.signed_url(reqwest::Method::GET, &object, Duration::from_secs(61)).await.unwrap();
                assert!(signer.reproduces(url.as_str(), path), "{endpoint}: {url}");
                assert!(!signer.reproduces(url.as_str(), "p/abc/part-1.parquet"), "{url}");
            }
        }
    }

    #[test]
    fn a_url_names_the_blob_encoded_and_signs_it_decoded() {
        let signer =
            SasSigner::new("http://127.0.0.1:10000/devstoreaccount1/", "devstoreaccount1", "c-1", KEY).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_000);
        let url = signer.sign_all(&[Target::latest("p/a b+é.csv")], at, Duration::from_secs(5)).remove(0);
        let expected = format!(
            "http://127.0.0.1:10000/devstoreaccount1/c-1/p/a%20b%2B%C3%A9.csv?sv={VERSION}&sp=r&sr=b\
             &se=2026-11-25T09%3A46%3A45Z&sig={}",
            encode(&signer.signature("p/a b+é.csv", "", "2026-11-25T09:46:45Z"))
        );
        assert_eq!(url, expected);
        assert!(SasSigner::new("https://a.blob.core.windows.net", "a", "c", "not base64!").is_none());
    }
}
