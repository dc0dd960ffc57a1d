//! How a [`Client`] is set up: the endpoint, TLS, the bearer token, the default deadline and the retries.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{Client, Error, RetryPolicy, Token};

/// The largest answer a client decodes by default: a Resolve page of about 100,000 presigned URLs. tonic's own
/// default, 4 MiB, refuses a Resolve of about 9,000 files without `page_size`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long a connection attempt may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`Client`], from [`Client::builder`]. Nothing connects until [`connect`](Self::connect) or
/// [`connect_lazy`](Self::connect_lazy).
#[derive(Debug)]
pub struct ClientBuilder {
    endpoint: String,
    token: Token,
    ca_certificate: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    tls_domain: Option<String>,
    deadline: Option<Duration>,
    connect_timeout: Duration,
    retry: RetryPolicy,
    max_message_bytes: usize,
}

impl ClientBuilder {
    pub(crate) fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            token: Token::None,
            ca_certificate: None,
            identity: None,
            tls_domain: None,
            deadline: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The bearer token every call presents (default: none).
    pub fn token(mut self, token: Token) -> Self {
        self.token = token;
        self
    }

    /// Trusts the certificate authority in `pem` for the service's certificate, and speaks TLS (also for an
    /// `http://` endpoint).
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }

    /// Presents this certificate chain and private key (both PEM) to a service that asks for client
    /// certificates (mutual TLS, the service's `tls.client_ca_file`). Implies TLS.
    pub fn identity(mut self, certificate_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// The name the service's certificate must carry, when it is not the endpoint's host (an address, say).
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.tls_domain = Some(name.into());
        self
    }

    /// How long each call may take, retries included (default: no deadline; the service still bounds how
    /// long a request may take to arrive). [`Client::with_deadline`] overrides it for some calls.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// How long a connection attempt may take (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How calls are retried (default [`RetryPolicy::default`]; [`RetryPolicy::NEVER`] turns retries off).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The largest answer decoded (default [`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Connects now: fails with [`Error::Connect`] if the service cannot be reached.
    pub async fn connect(self) -> Result<Client, Error> {
        let endpoint = self.endpoint()?;
        let channel = endpoint.connect().await.map_err(|e| self.connect_error(&e))?;
        Ok(self.client(channel))
    }

    /// Connects on the first call (and again whenever the connection is lost): never fails for a service that
    /// is down, only for settings that cannot work.
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let channel = self.endpoint()?.connect_lazy();
        Ok(self.client(channel))
    }

    fn client(self, channel: Channel) -> Client {
        Client::over(channel, self.token, self.retry, self.deadline, self.max_message_bytes)
    }

    fn endpoint(&self) -> Result<Endpoint, Error> {
        let tls_wanted =
            self.ca_certificate.is_some() || self.identity.is_some() || self.endpoint.starts_with("https://");
        // tonic speaks TLS only to an https URI; a CA or an identity given says TLS is wanted.
        let uri = match tls_wanted {
            true => self.endpoint.replacen("http://", "https://", 1),
            false => self.endpoint.clone(),
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| self.connect_error(&e))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if !tls_wanted {
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_certificate {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((certificate, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(certificate, key));
        }
        if let Some(name) = &self.tls_domain {
            tls = tls.domain_name(name.clone());
        }
        endpoint.tls_config(tls).map_err(|e| self.connect_error(&e))
    }

    fn connect_error(&self, error: &dyn std::error::Error) -> Error {
        // The transport's error says little at the top; its sources say why (refused, a bad certificate).
        let mut reason = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            reason = format!("{reason}: {cause}");
            source = cause.source();
        }
        Error::Connect { endpoint: self.endpoint.clone(), reason }
    }
}
