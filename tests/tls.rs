//! TLS and mutual TLS on the gRPC listener, with certificates made in the test.

mod common;

use std::{net::SocketAddr, path::Path};

use anonymous_results::{Config, Service, StartError};
use anonymous_results_client::{Client, ClientBuilder, RetryPolicy, ServingStatus};
use common::TestStore;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::{net::TcpListener, sync::oneshot};

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
}

/// Certificate authorities and the certificates they signed, written as PEM files into a folder.
struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    server: Pem,
    client: Pem,
    /// A client certificate signed by another CA.
    stranger: Pem,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(names: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>) -> Pem {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let cert = CertificateParams::new(names).unwrap().signed_by(&key, issuer).unwrap();
    Pem { cert: cert.pem(), key: key.serialize_pem() }
}

fn pki() -> Pki {
    let (authority, other) = (ca("cluster CA"), ca("another CA"));
    let pki = Pki {
        dir: tempfile::tempdir().unwrap(),
        ca: authority.pem(),
        server: leaf(&["localhost", "127.0.0.1"], &authority),
        client: leaf(&["worker-1"], &authority),
        stranger: leaf(&["worker-1"], &other),
    };
    for (name, text) in [("ca.pem", &pki.ca), ("server.pem", &pki.server.cert), ("server.key", &pki.server.key)] {
        std::fs::write(pki.dir.path().join(name), text).unwrap();
    }
    pki
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The `[anonymous_results_service]` lines of a TLS listener; `mutual` adds the client CA.
    fn section(&self, mutual: bool) -> String {
        let mut section =
            format!("tls.cert_file = {:?}\ntls.key_file = {:?}\n", self.path("server.pem"), self.path("server.key"));
        if mutual {
            section.push_str(&format!("tls.client_ca_file = {:?}\n", self.path("ca.pem")));
        }
        section
    }
}

/// Serves `config` on `127.0.0.1:0` until the sender is dropped or fires.
async fn serve(config: &Config) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Service::from_config(config).await.expect("the service starts");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(anonymous_results::serve(service, listener, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// A health check over TLS trusting `ca`, presenting `identity`, through the client crate: the status, or why
/// it failed.
async fn health_over_tls(addr: SocketAddr, ca: &str, identity: Option<&Pem>) -> Result<ServingStatus, String> {
    let mut builder = tls_client(addr, ca);
    if let Some(identity) = identity {
        builder = builder.identity(identity.cert.as_bytes(), identity.key.as_bytes());
    }
    check(builder).await
}

/// A client of `addr` trusting `ca`, each call tried once.
fn tls_client(addr: SocketAddr, ca: &str) -> ClientBuilder {
    Client::builder(format!("https://127.0.0.1:{}", addr.port()))
        .ca_certificate(ca.as_bytes())
        .tls_domain("localhost")
        .retry(RetryPolicy::NEVER)
}

async fn check(builder: ClientBuilder) -> Result<ServingStatus, String> {
    let client = builder.connect().await.map_err(|e| e.to_string())?;
    client.health().await.map_err(|e| e.to_string())
}

async fn plaintext_health(addr: SocketAddr) -> Result<ServingStatus, String> {
    check(Client::builder(format!("http://{addr}")).retry(RetryPolicy::NEVER)).await
}

fn config(store: &TestStore, section: &str) -> Config {
    Config::from_toml(&store.config_toml(section)).expect("a valid configuration")
}

#[tokio::test]
async fn a_tls_listener_serves_tls_clients_and_refuses_plaintext() {
    let pki = pki();
    let store = TestStore::local();
    let (addr, _stop) = serve(&config(&store, &pki.section(false))).await;
    assert_eq!(health_over_tls(addr, &pki.ca, None).await, Ok(ServingStatus::Serving));
    assert!(plaintext_health(addr).await.is_err(), "a plaintext client was answered by a TLS listener");
    let other_ca = ca("not the server's CA").pem();
    assert!(health_over_tls(addr, &other_ca, None).await.is_err(), "a client trusting another CA connected");
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let pki = pki();
    let store = TestStore::local();
    let (addr, _stop) = serve(&config(&store, &pki.section(true))).await;
    assert_eq!(health_over_tls(addr, &pki.ca, Some(&pki.client)).await, Ok(ServingStatus::Serving));
    let anonymous = health_over_tls(addr, &pki.ca, None).await;
    assert!(anonymous.is_err(), "a client without a certificate was served: {anonymous:?}");
    let stranger = health_over_tls(addr, &pki.ca, Some(&pki.stranger)).await;
    assert!(stranger.is_err(), "a client certificate from another CA was accepted: {stranger:?}");
    assert!(plaintext_health(addr).await.is_err());
}

#[tokio::test]
async fn unusable_tls_files_stop_the_start_naming_them() {
    let pki = pki();
    let store = TestStore::local();
    let start = |section: String| {
        let config = config(&store, &section);
        async move { Service::from_config(&config).await.map(drop) }
    };
    let missing = start(pki.section(false).replace("server.key", "missing.key")).await.unwrap_err();
    assert!(matches!(missing, StartError::Tls(_)), "{missing:?}");
    assert!(missing.to_string().contains("tls.key_file") && missing.to_string().contains("missing.key"), "{missing}");
    // A key that is not the certificate's.
    std::fs::write(Path::new(&pki.path("client.key")), &pki.client.key).unwrap();
    let mismatched = start(pki.section(false).replace("server.key", "client.key")).await.unwrap_err();
    assert!(mismatched.to_string().contains("tls.cert_file"), "{mismatched}");
    let not_pem = start(pki.section(false).replace("server.pem", "server.key")).await.unwrap_err();
    assert!(not_pem.to_string().contains("no PEM CERTIFICATE"), "{not_pem}");
}

/// Downloads through the service use the same TLS as gRPC, on the same port: a client speaking HTTP/1.1 and
/// one speaking HTTP/2 (each chosen by ALPN) both download the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_served_over_the_same_tls_to_http1_and_http2_clients() {
    use anonymous_results::proto;
    let pki = pki();
    let store = TestStore::local();
    let (addr, _stop) = serve(&config(&store, &pki.section(false))).await;
    let client = tls_client(addr, &pki.ca).connect().await.unwrap();
    let allocated =
        client.allocate(proto::AllocateRequest { query_id: "q".into(), ..Default::default() }).await.unwrap();
    let sink = allocated.sink.unwrap().uri;
    std::fs::write(format!("{sink}part-0.csv"), b"a,b\n1,2\n").unwrap();
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token,
        files: vec![],
    };
    client.commit(commit).await.unwrap();
    let request = proto::ResolveRequest {
        result_id: allocated.result_id,
        download_mode: proto::DownloadMode::Proxy as i32,
        ..Default::default()
    };
    let url = client.resolve(request).await.unwrap().locations.remove(0).url;
    assert!(url.starts_with(&format!("https://127.0.0.1:{}/v1/results/", addr.port())), "{url}");
    anonymous_results::storage::install_tls_provider();
    let ca = reqwest::Certificate::from_pem(pki.ca.as_bytes()).unwrap();
    for (http1, version) in [(true, reqwest::Version::HTTP_11), (false, reqwest::Version::HTTP_2)] {
        let mut builder = reqwest::Client::builder().add_root_certificate(ca.clone());
        if http1 {
            builder = builder.http1_only();
        }
        let response = builder.build().unwrap().get(&url).send().await.unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"a,b\n1,2\n");
    }
    let plain = reqwest::get(url.replacen("https://", "http://", 1)).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "a plaintext download from a TLS listener");
}
