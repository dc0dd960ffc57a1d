//! The service under load: the release binary, started as its own process over a store, as an operator runs
//! it; and clients for it.

use anonymous_results_client::Client;
use tonic::transport::Channel;

use super::{
    Error,
    common::{
        TestStore,
        auth::{SCHEDULER_TOKEN, WORKER_TOKEN, client_as, token_files},
        process::Process,
    },
    drive,
};

/// A running service, the connections to it, and the tokens its callers present.
pub struct Running {
    pub process: Process,
    pub channels: Vec<Channel>,
    pub auth: bool,
    _config_dir: tempfile::TempDir,
}

impl Running {
    /// Starts the service over `store` with `section` in `[anonymous_results_service]` and, with `auth`,
    /// token files; `location` goes into the location table (retention keys).
    pub async fn start(store: &TestStore, auth: bool, location: &str, section: &str) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let tokens = if auth { token_files(dir.path()) } else { String::new() };
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, store.config_toml_with(location, &format!("{tokens}{section}")))?;
        let config = file.to_str().ok_or("a non-UTF-8 temporary path")?;
        let process = Process::start(dir.path(), &["--config", config], &[("RUST_LOG", "info")]);
        let channels = drive::connect(process.addr).await?;
        Ok(Self { process, channels, auth, _config_dir: dir })
    }

    /// A scheduler's client on `channel`.
    pub fn scheduler(&self, channel: Channel) -> Client {
        client_as(channel, self.auth.then_some(SCHEDULER_TOKEN))
    }

    /// A worker's client on `channel`.
    pub fn worker(&self, channel: Channel) -> Client {
        client_as(channel, self.auth.then_some(WORKER_TOKEN))
    }

    /// The service's resident memory, in KiB.
    pub fn rss_kib(&self) -> Result<u64, Error> {
        super::rss::rss_kib(self.process.child.id())
    }

    /// Stops the service (SIGTERM) and waits for it.
    pub async fn stop(mut self) {
        self.process.signal("-TERM");
        self.process.wait().await;
    }
}
