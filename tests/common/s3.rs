//! Real S3-compatible servers on loopback for the tests: moto (a broad API; does not check signatures) and
//! s3s-fs (checks SigV4 signatures and presigned-URL expiry), both from the test command's installs.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use super::outside_tool;

/// The credentials the test servers accept. The secret is distinctive so that tests can look for leaks.
pub const ACCESS_KEY: &str = "AKIDANONYMOUSRESULTS";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY";

/// An access key and its secret.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Default for Credentials {
    /// The credentials the test servers accept.
    fn default() -> Self {
        Self { access_key_id: ACCESS_KEY.into(), secret_access_key: SECRET_KEY.into() }
    }
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Kind {
    Moto,
    S3sFs,
}

/// A running S3-compatible server.
pub struct S3Server {
    pub kind: S3Kind,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// The credentials the service is configured with: [`ACCESS_KEY`] and [`SECRET_KEY`] unless a test
    /// made others (an IAM user on a moto of its own).
    pub credentials: Credentials,
    process: Option<Child>,
    /// s3s-fs's data folder: a bucket is a folder in it.
    root: Option<tempfile::TempDir>,
}

impl S3Server {
    /// The folder s3s-fs keeps its buckets in (a bucket is a folder, an object a file); `None` on moto.
    pub fn root(&self) -> Option<&std::path::Path> {
        self.root.as_ref().map(tempfile::TempDir::path)
    }

    /// The moto server named by `ANONYMOUS_RESULTS_TEST_MOTO_URL` (the test command starts one for all tests),
    /// else a new one for this test. `None` only outside CI, when moto is not installed.
    pub fn moto() -> Option<Self> {
        anonymous_results::storage::install_tls_provider();
        if let Ok(endpoint) = std::env::var("ANONYMOUS_RESULTS_TEST_MOTO_URL") {
            return Some(Self {
                kind: S3Kind::Moto,
                endpoint,
                process: None,
                root: None,
                credentials: Credentials::default(),
            });
        }
        Self::moto_of_its_own()
    }

    /// A new moto server for this test alone (one whose settings it changes, such as IAM enforcement).
    /// `None` only outside CI, when moto is not installed.
    pub fn moto_of_its_own() -> Option<Self> {
        anonymous_results::storage::install_tls_provider();
        let tool = outside_tool("moto_server")?;
        let mut command = Command::new(tool);
        command.args(["-H", "127.0.0.1", "-p", "0"]);
        let (process, endpoint) = spawn_and_find(command, "Running on ");
        Some(Self {
            kind: S3Kind::Moto,
            endpoint,
            process: Some(process),
            root: None,
            credentials: Credentials::default(),
        })
    }

    /// A new s3s-fs server over a fresh folder. `None` only outside CI, when s3s-fs is not installed.
    pub fn s3s_fs() -> Option<Self> {
        anonymous_results::storage::install_tls_provider();
        let root = tempfile::tempdir().expect("s3s-fs root");
        let (process, endpoint) = start_s3s_fs(root.path(), 0)?;
        Some(Self {
            kind: S3Kind::S3sFs,
            endpoint,
            process: Some(process),
            root: Some(root),
            credentials: Credentials::default(),
        })
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, bucket: &str) {
        match self.kind {
            // moto does not check signatures: a plain PUT creates the bucket.
            S3Kind::Moto => {
                let response = reqwest::Client::new()
                    .put(format!("{}/{bucket}", self.endpoint))
                    .send()
                    .await
                    .expect("create a bucket on moto");
                assert!(response.status().is_success(), "{response:?}");
            }
            S3Kind::S3sFs => {
                let root = self.root.as_ref().expect("s3s-fs has a root").path();
                std::fs::create_dir(root.join(bucket)).expect("create a bucket folder");
            }
        }
    }

    /// Turns versioning on for `bucket` (moto: it checks no signature, a plain PUT sets it).
    pub async fn keep_versions(&self, bucket: &str) {
        assert_eq!(self.kind, S3Kind::Moto, "versioning is set on moto only");
        let versioning = "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                          <Status>Enabled</Status></VersioningConfiguration>";
        let url = format!("{}/{bucket}?versioning", self.endpoint);
        let answer = reqwest::Client::new().put(url).body(versioning).send().await.expect("versioning set");
        assert!(answer.status().is_success(), "{answer:?}");
    }

    /// Stops the server (as a crash would); [`S3Server::restart`] brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts a stopped s3s-fs again on its old port, over the same data.
    pub fn restart(&mut self) {
        assert_eq!(self.kind, S3Kind::S3sFs, "only s3s-fs restarts");
        let port: u16 = self.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
        let root = self.root.as_ref().expect("a root").path().to_owned();
        let (process, _) = start_s3s_fs(&root, port).expect("s3s-fs is installed");
        self.process = Some(process);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_s3s_fs(root: &Path, port: u16) -> Option<(Child, String)> {
    let tool = s3s_fs_binary()?;
    let mut command = Command::new(tool);
    command.env("RUST_LOG", "info").args(["--host", "127.0.0.1", "--port", &port.to_string()]);
    command.args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]).arg(root);
    Some(spawn_and_find(command, "server is running at "))
}

fn s3s_fs_binary() -> Option<PathBuf> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-env/cargo/bin/s3s-fs");
    if installed.is_file() {
        return Some(installed);
    }
    outside_tool("s3s-fs")
}

/// Spawns `command` and waits for the line with `marker` followed by its address. Panics after 60 s.
pub(super) fn spawn_and_find(mut command: Command, marker: &'static str) -> (Child, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn a test server");
    let (found, address) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let found = found.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(at) = line.find(marker) {
                    let rest = &line[at + marker.len()..];
                    let address: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = found.send(address);
                }
            }
        });
    }
    match address.recv_timeout(Duration::from_secs(60)) {
        Ok(address) => (child, address),
        Err(_) => {
            let _ = child.kill();
            panic!("the test server {command:?} did not start within 60 s")
        }
    }
}
