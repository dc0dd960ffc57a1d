//! Azurite, Microsoft's Azure Storage emulator (its Blob service), on loopback for the tests: from the test
//! command's install (`.test-env/node`). It checks Shared Key and SAS signatures and honours
//! `If-None-Match: *`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

use base64::Engine;

use super::{outside_tool, s3::spawn_and_find};

/// The emulator's account and its well-known key (public: every Azurite has them). The tests look for the
/// key in logs and answers: it must never appear.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite Blob service.
pub struct Azurite {
    /// `http://127.0.0.1:PORT`; the account's Blob endpoint is `{endpoint}/devstoreaccount1`.
    pub endpoint: String,
    process: Option<Child>,
    /// Where an Azurite of this test keeps its data, so that it can be restarted over it.
    root: Option<tempfile::TempDir>,
}

impl Azurite {
    /// The Azurite named by `ANONYMOUS_RESULTS_TEST_AZURITE_URL` (the test command starts one for all tests),
    /// else a new one for this test. `None` only outside CI, when Azurite is not installed.
    pub fn shared() -> Option<Self> {
        anonymous_results::storage::install_tls_provider();
        if let Ok(endpoint) = std::env::var("ANONYMOUS_RESULTS_TEST_AZURITE_URL") {
            return Some(Self { endpoint, process: None, root: None });
        }
        Self::own()
    }

    /// A new Azurite for this test alone, over a fresh folder (it can be stopped and restarted).
    pub fn own() -> Option<Self> {
        anonymous_results::storage::install_tls_provider();
        let root = tempfile::tempdir().expect("an Azurite folder");
        let (process, endpoint) = start(root.path(), 0)?;
        Some(Self { endpoint, process: Some(process), root: Some(root) })
    }

    /// A new Azurite for this test alone in loose mode: it accepts (and ignores) what it does not implement,
    /// such as customer-provided keys.
    pub fn own_loose() -> Option<Self> {
        anonymous_results::storage::install_tls_provider();
        let root = tempfile::tempdir().expect("an Azurite folder");
        let (process, endpoint) = start_with(root.path(), 0, &["--loose"])?;
        Some(Self { endpoint, process: Some(process), root: Some(root) })
    }

    /// The account's Blob service endpoint: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!("{}/{ACCOUNT}", self.endpoint)
    }

    /// Creates a container (Shared Key authorization, as Azure's own tools do).
    pub async fn create_container(&self, container: &str) {
        create_container(&self.blob_endpoint(), container).await;
    }

    /// Stops this test's Azurite, letting it save its data (SIGTERM); [`Azurite::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = Command::new("kill").arg(process.id().to_string()).status();
            let _ = process.wait();
        }
    }

    /// Starts a stopped Azurite again on its old port, over the same data.
    pub fn restart(&mut self) {
        let port: u16 = self.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
        let root = self.root.as_ref().expect("only an Azurite of this test restarts").path().to_owned();
        let (process, _) = start(&root, port).expect("Azurite is installed");
        self.process = Some(process);
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

fn start(root: &Path, port: u16) -> Option<(Child, String)> {
    start_with(root, port, &[])
}

fn start_with(root: &Path, port: u16, flags: &[&str]) -> Option<(Child, String)> {
    let mut command = Command::new(binary()?);
    command.args(flags);
    command.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--disableTelemetry", "--silent"]);
    command.arg("--location").arg(root);
    Some(spawn_and_find(command, "successfully listens on "))
}

fn binary() -> Option<PathBuf> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-env/node/node_modules/.bin/azurite-blob");
    if installed.is_file() {
        return Some(installed);
    }
    outside_tool("azurite-blob")
}

/// `PUT {endpoint}/{container}?restype=container`, signed with the account key.
async fn create_container(endpoint: &str, container: &str) {
    let date = http_date(std::time::SystemTime::now());
    let version = "2023-11-03";
    // The canonicalized resource is the account, then the URL's path (which begins with the account again).
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{container}\n\
         restype:container"
    );
    let engine = base64::engine::general_purpose::STANDARD;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &engine.decode(KEY).expect("a base64 key"));
    let signature = engine.encode(ring::hmac::sign(&key, to_sign.as_bytes()));
    let response = reqwest::Client::new()
        .put(format!("{endpoint}/{container}?restype=container"))
        .header("x-ms-date", date)
        .header("x-ms-version", version)
        .header("authorization", format!("SharedKey {ACCOUNT}:{signature}"))
        .header("content-length", "0")
        .send()
        .await
        .expect("create a container on Azurite");
    assert!(response.status().is_success(), "{response:?}");
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(at: std::time::SystemTime) -> String {
    let seconds = at.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let rfc3339 = humantime::format_rfc3339_seconds(at).to_string(); // 2026-11-25T13:58:02Z
    let (year, month, day) = (&rfc3339[0..4], &rfc3339[5..7], &rfc3339[8..10]);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = months[month.parse::<usize>().expect("a month") - 1];
    format!("{weekday}, {day} {month} {year} {:02}:{:02}:{:02} GMT", rest / 3600, rest / 60 % 60, rest % 60)
}
