//! How the commands that ask a running service (`results`, `usage`) reach it: its address, the scheduler's
//! token and TLS, through the client crate; and how they end (an error on standard error, a failing exit).

use std::{future::Future, path::PathBuf, process::ExitCode, time::Duration};

use anonymous_results_client::{Client, Token};
use clap::Args;

/// How to reach the service.
#[derive(Args)]
pub struct Connection {
    /// The service's URL.
    #[arg(long, global = true, value_name = "URL", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// A file holding the scheduler's token (its first line), sent as `authorization: Bearer`.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the service's, for an `https://` address.
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The name the service's certificate is checked against, when it is not the address's host.
    #[arg(long, global = true, value_name = "NAME")]
    tls_domain: Option<String>,
}

impl Connection {
    /// A client of the service, with the token and TLS asked for.
    pub async fn connect(&self) -> Result<Client, String> {
        let mut builder = Client::builder(self.addr.clone()).deadline(Duration::from_secs(30));
        if let Some(path) = &self.token_file {
            builder = builder.token(Token::file(path).map_err(|e| format!("--token-file: {e}"))?);
        }
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            builder = builder.ca_certificate(pem);
        }
        if let Some(name) = &self.tls_domain {
            builder = builder.tls_domain(name.clone());
        }
        builder.connect().await.map_err(|e| format!("cannot reach {}: {e}", self.addr))
    }
}

/// Runs `work` to its end on a runtime of its own: success, or its error on standard error and a failing
/// exit.
pub fn run(work: impl Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
