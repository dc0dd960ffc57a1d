//! TLS for the gRPC listener (rustls, through tonic): the server's certificate chain and key and, for mutual
//! TLS, the CA that every client certificate must chain to.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::TlsConfig;

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {path}: {source}")]
    Read { key: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{key} {path} holds no PEM {what}")]
    NotPem { key: &'static str, path: PathBuf, what: &'static str },
    #[error("tls.cert_file {cert} and tls.key_file {key} cannot serve TLS: {message}")]
    Unusable { cert: PathBuf, key: PathBuf, message: String },
}

/// The server's TLS settings from the files `tls` names, read now.
pub fn server_config(tls: &TlsConfig) -> Result<ServerTlsConfig, TlsError> {
    let cert = read_pem("tls.cert_file", &tls.cert_file, "CERTIFICATE")?;
    let key = read_pem("tls.key_file", &tls.key_file, "PRIVATE KEY")?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(Certificate::from_pem(read_pem("tls.client_ca_file", ca, "CERTIFICATE")?));
    }
    // Built once now, so that a key that does not match its certificate stops the start, naming the files.
    Server::builder().tls_config(config.clone()).map_err(|e| TlsError::Unusable {
        cert: tls.cert_file.clone(),
        key: tls.key_file.clone(),
        message: crate::telemetry::error_chain(&e),
    })?;
    Ok(config)
}

/// The file at `path`, which must hold a PEM block whose label ends in `what` (`PRIVATE KEY` matches the
/// PKCS#8, RSA and EC labels).
fn read_pem(key: &'static str, path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read { key, path: path.to_owned(), source })?;
    let text = String::from_utf8_lossy(&bytes);
    let labelled =
        text.lines().any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(&format!("{what}-----")));
    match labelled {
        true => Ok(bytes),
        false => Err(TlsError::NotPem { key, path: path.to_owned(), what }),
    }
}
