//! The `anonymous-results` binary run as a child process, its address read from its start-up log line.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use super::Client;

/// Writes `cluster.toml` into `dir`: the cluster's configuration with the local backend at `root`; answers
/// its path.
pub fn write_local_config(dir: &Path, root: &Path) -> std::path::PathBuf {
    let file = dir.join("cluster.toml");
    let text = format!(
        "[scheduler]\nenabled = true\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n",
        root.display().to_string()
    );
    std::fs::write(&file, text).expect("write the configuration");
    file
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_anonymous-results");
/// The most log lines kept.
const MAX_LOG_LINES: usize = 200_000;

/// A running `anonymous-results serve`, its address read from its start-up log line.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Runs `serve --listen 127.0.0.1:0 <args>` in `cwd` with `env`, and waits for it to listen.
    pub fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(cwd, "127.0.0.1:0", args, env)
    }

    /// Runs `serve --listen <listen> <args>` in `cwd` with `env`, and waits for it to listen.
    pub fn start_on(cwd: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(&[], cwd, listen, args, env)
    }

    /// As [`Process::start_on`], the binary run by the command `wrapper` (`strace -f -o FILE`, say) when it
    /// is not empty; that command must leave the service's standard error alone.
    pub fn start_wrapped(wrapper: &[&str], cwd: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        command.current_dir(cwd).args(["serve", "--listen", listen]).args(args);
        command.env_remove("RUST_LOG").envs(env.iter().copied());
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn the binary");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, address) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_address(&line) {
                    let _ = found.send(addr);
                }
                let mut lines = lines.lock().unwrap();
                // A long benchmark run logs millions of lines: keep the newest.
                if lines.len() >= MAX_LOG_LINES {
                    lines.drain(..MAX_LOG_LINES / 2);
                }
                lines.push(line);
            }
        });
        let addr = address.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the service did not start; its log: {:#?}", log.lock().unwrap())
        });
        Self { child, addr, log }
    }

    /// A client of the process, each call sent once (a test of a crash sees the first failure).
    pub async fn client(&self) -> Client {
        let builder = Client::builder(format!("http://{}", self.addr));
        builder.retry(anonymous_results_client::RetryPolicy::NEVER).connect().await.expect("connect")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, keeping this test's runtime (and so its client connections) running;
    /// fails the test after 30 s.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        panic!("the service did not exit; its log: {:#?}", self.log.lock().unwrap())
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the `serving` log line, text (`address=...`) or JSON (`"address":"..."`).
fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("serving") {
        return None;
    }
    let start = line
        .find("address=")
        .map(|i| i + "address=".len())
        .or_else(|| line.find("\"address\":\"").map(|i| i + "\"address\":\"".len()))?;
    let rest = &line[start..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
    rest[..end].parse().ok()
}
