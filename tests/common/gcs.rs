//! The GCS test server (`tests/servers/gcs.py`) on loopback for the tests: it implements the requests
//! `object_store` (and Polars) make of Google Cloud Storage, checks every request's bearer token and every
//! V4 signed URL against the test service account's public key, and enforces generation preconditions.

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

    /// Creates a bucket (the JSON API's insert, with the service account's token).
    pub async fn create_bucket(&self, bucket: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/b?project=anonymous-results-test", self.endpoint))
            .bearer_auth(token())
            .header("content-type", "application/json")
            .body(serde_json::json!({ "name": bucket }).to_string())
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

/// A bearer token as `object_store` makes one: a JWT the service account signs itself.
pub fn token() -> String {
    let account: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(SERVICE_ACCOUNT).expect("the service account")).unwrap();
    let email = account["client_email"].as_str().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": account["private_key_id"] });
    let claims = serde_json::json!({
        "iss": email, "sub": email, "scope": "https://www.googleapis.com/auth/cloud-platform",
        "iat": now, "exp": now + 3600,
    });
    let signed = format!("{}.{}", engine.encode(header.to_string()), engine.encode(claims.to_string()));
    let pem = account["private_key"].as_str().unwrap();
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("the test key");
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signed.as_bytes(), &mut signature)
        .expect("sign");
    format!("{signed}.{}", engine.encode(signature))
}
