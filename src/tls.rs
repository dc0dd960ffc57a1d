//! TLS for the gRPC listener (rustls on ring): the server's certificate chain and key and, for mutual TLS, the
//! CA that every client certificate must chain to. The handshake itself runs in `connections.rs`, under the
//! connection's handshake deadline.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// What the listener offers in ALPN, preferred first: HTTP/2 (gRPC is HTTP/2 only), then HTTP/1.1 for
/// download clients that speak only that.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {path}: {source}")]
    Read { key: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{key} {path} holds no PEM {what}")]
    NotPem { key: &'static str, path: PathBuf, what: &'static str },
    #[error("tls.cert_file {cert} and tls.key_file {key} cannot serve TLS: {message}")]
    Unusable { cert: PathBuf, key: PathBuf, message: String },
    #[error("tls.client_ca_file {path} cannot check client certificates: {message}")]
    ClientCa { path: PathBuf, message: String },
}

/// The TLS acceptor for the files `tls` names, read now. A key that does not match its certificate, or a CA
/// file without a usable certificate, stops the start, naming the files.
pub fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let unusable =
        |message: String| TlsError::Unusable { cert: tls.cert_file.clone(), key: tls.key_file.clone(), message };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read_pem("tls.cert_file", &tls.cert_file, "CERTIFICATE")?)
            .collect::<Result<_, _>>()
            .map_err(|e| unusable(format!("the certificate chain does not parse: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&read_pem("tls.key_file", &tls.key_file, "PRIVATE KEY")?)
        .map_err(|e| unusable(format!("the private key does not parse: {e}")))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(e.to_string()))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error = |message: String| TlsError::ClientCa { path: path.clone(), message };
            let mut roots = RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(&read_pem("tls.client_ca_file", path, "CERTIFICATE")?) {
                let certificate = certificate.map_err(|e| ca_error(format!("a certificate does not parse: {e}")))?;
                roots.add(certificate).map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| unusable(e.to_string()))?;
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
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
