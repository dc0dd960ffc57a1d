//! The GCS test server (`tests/servers/gcs.py`) on loopback for the tests: it implements the requests
//! `object_store` (and Polars) make of Google Cloud Storage, checks every request's bearer token and every
//! V4 signed URL against the test service account's public key, enforces generation preconditions, and keeps
//! noncurrent generations in buckets with Object Versioning on.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

use base64::Engine;

use super::{outside_tool, s3::spawn_and_find};

/// The test service account (its key exists nowhere else).
pub const SERVICE_ACCOUNT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gcs/service-account.json");
const PUBLIC_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gcs/service-account.pub.pem");
const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/gcs.py");

/// A running GCS test server.
pub struct GcsServer {
    /// `http://127.0.0.1:PORT`: the `google_base_url`.
    pub endpoint: String,
    process: Option<Child>,
    root: Option<tempfile::TempDir>,
}

impl GcsServer {
    /// The server named by `ANONYMOUS_RESULTS_TEST_GCS_URL` (the test command starts one for all tests), else
    /// a new one for this test. `None` only outside CI, when Python is missing.
    pub fn shared() -> Option<Self> {
        anonymous_results::storage::install_tls_provider();
        if let Ok(endpoint) = std::env::var("ANONYMOUS_RESULTS_TEST_GCS_URL") {
            return Some(Self { endpoint, process: None, root: None });
        }
        Self::own()
    }

    /// A new server for this test alone, over a fresh folder (it can be stopped and restarted).
    pub fn own() -> Option<Self> {
        anonymous_results::storage::install_tls_provider();
        let root = tempfile::tempdir().expect("a GCS server folder");
        let (process, endpoint) = start(root.path(), 0)?;
        Some(Self { endpoint, process: Some(process), root: Some(root) })
    }

    /// Creates a bucket (the JSON API's insert, with the service account's token), its versioning off.
    pub async fn create_bucket(&self, bucket: &str) {
        self.create_bucket_with(bucket, false).await;
    }

    /// Creates a bucket with Object Versioning on: an overwritten or deleted object's generation stays
    /// readable by its number.
    pub async fn create_versioned_bucket(&self, bucket: &str) {
        self.create_bucket_with(bucket, true).await;
    }

    /// Creates a bucket, with Object Versioning on or off.
    pub async fn create_bucket_with(&self, bucket: &str, versioning: bool) {
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/b?project=anonymous-results-test", self.endpoint))
            .bearer_auth(token())
            .header("content-type", "application/json")
            .body(serde_json::json!({ "name": bucket, "versioning": { "enabled": versioning } }).to_string())
            .send()
            .await
            .expect("create a bucket on the GCS test server");
        assert!(response.status().is_success(), "{response:?}");
    }

    /// Stops this test's server (as a crash would); [`GcsServer::restart`] brings it back over its data.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts a stopped server again on its old port, over the same data.
    pub fn restart(&mut self) {
        let port: u16 = self.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
        let root = self.root.as_ref().expect("only a server of this test restarts").path().to_owned();
        let (process, _) = start(&root, port).expect("Python is installed");
        self.process = Some(process);
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start(root: &Path, port: u16) -> Option<(Child, String)> {
    let mut command = Command::new(python()?);
    command.arg(SERVER).args(["--host", "127.0.0.1", "--port", &port.to_string(), "--public-key", PUBLIC_KEY]);
    command.arg("--root").arg(root);
    Some(spawn_and_find(command, "GCS test server listening on "))
}

/// The test virtualenv's Python (it has `cryptography`), else `python3` from `PATH`.
fn python() -> Option<PathBuf> {
    let installed = Path::new(super::TEST_ENV_BIN).join("python");
    if installed.is_file() {
        return Some(installed);
    }
    outside_tool("python3")
}

/// The test service account: its email and its key.
fn account() -> (String, ring::signature::RsaKeyPair) {
    let account: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(SERVICE_ACCOUNT).expect("the service account")).unwrap();
    let pem = account["private_key"].as_str().unwrap();
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("the test key");
    (account["client_email"].as_str().unwrap().to_owned(), key)
}

/// `message` signed with RSASSA-PKCS1-v1_5 over SHA-256.
fn rsa_sign(key: &ring::signature::RsaKeyPair, message: &[u8]) -> Vec<u8> {
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), message, &mut signature)
        .expect("sign");
    signature
}

/// A V4 signed GET URL (`GOOG4-RSA-SHA256`, signed as Google specifies) of the object `object` in `bucket` on
/// the server at `endpoint` (`http://host:port`), signed for that host by the test service account, valid for
/// a minute from now; `query` holds further query parameters (`generation`, ...), signed too.
pub fn signed_url(endpoint: &str, bucket: &str, object: &str, query: &[(&str, &str)]) -> String {
    let (email, key) = account();
    let host = endpoint.split_once("://").map_or(endpoint, |(_, host)| host).trim_end_matches('/');
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let date = goog_date(now);
    let scope = format!("{}/auto/storage/goog4_request", &date[..8]);
    let credential = format!("{email}/{scope}");
    let mut params: Vec<(String, String)> = [
        ("X-Goog-Algorithm", "GOOG4-RSA-SHA256"),
        ("X-Goog-Credential", credential.as_str()),
        ("X-Goog-Date", date.as_str()),
        ("X-Goog-Expires", "60"),
        ("X-Goog-SignedHeaders", "host"),
    ]
    .iter()
    .chain(query)
    .map(|(name, value)| (strict_encode(name), strict_encode(value)))
    .collect();
    params.sort();
    let canonical_query = params.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&");
    let path =
        format!("/{}/{}", strict_encode(bucket), object.split('/').map(strict_encode).collect::<Vec<_>>().join("/"));
    let canonical_request = format!("GET\n{path}\n{canonical_query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical_request.as_bytes());
    let to_sign = format!("GOOG4-RSA-SHA256\n{date}\n{scope}\n{}", hex(digest.as_ref()));
    let signature = hex(&rsa_sign(&key, to_sign.as_bytes()));
    format!("http://{host}{path}?{canonical_query}&X-Goog-Signature={signature}")
}

/// Every byte of `text` percent-encoded but `A-Z a-z 0-9 - . _ ~`, as Google's canonical requests have it.
fn strict_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of a Unix time in seconds.
fn goog_date(unix: u64) -> String {
    let (days, seconds) = ((unix / 86_400) as i64, unix % 86_400);
    // Days to a civil date (the proleptic Gregorian calendar; eras of 400 years from 0000-03-01).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// A bearer token as `object_store` makes one: a JWT the service account signs itself.
pub fn token() -> String {
    let (email, key) = account();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(SERVICE_ACCOUNT).expect("the service account")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": json["private_key_id"] });
    let claims = serde_json::json!({
        "iss": email, "sub": email, "scope": "https://www.googleapis.com/auth/cloud-platform",
        "iat": now, "exp": now + 3600,
    });
    let signed = format!("{}.{}", engine.encode(header.to_string()), engine.encode(claims.to_string()));
    format!("{signed}.{}", engine.encode(rsa_sign(&key, signed.as_bytes())))
}
