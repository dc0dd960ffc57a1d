//! Scoped worker credentials on S3: for result `<id>`, the service asks STS (`AssumeRole`, signed with SigV4 by
//! the service's own credentials) for a session of the workers' role with a session policy that reaches one
//! sink alone: writing, reading and listing under `<bucket>/<prefix>/<id>/`. A session may do only what both
//! its role and that policy allow.
//!
//! What is bounded: a session's life (15 minutes to the configured maximum), each request (the storage
//! timeout, the answer's body included; no redirect followed) and the answer read (64 KiB). No credential,
//! request or answer is ever logged or shown in an error, beyond the error code and message STS refuses with.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use object_store::aws::AwsCredentialProvider;

use crate::{
    model::ResultId,
    secret::{Secret, redact_urls},
    storage::{
        Cause, StorageError, StorageLocation,
        presign::{
            amz_date, encode, encode_path,
            sigv4::{SignedRequest, authorization},
        },
    },
};

/// What errors call the work of [`Sts::assume`].
const OPERATION: &str = "assuming the workers' role";
/// The shortest session STS grants.
const MIN_SESSION_SECONDS: u64 = 900;
/// The most bytes of an answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// The most characters of STS's error code and message an error repeats.
const MAX_TOLD: usize = 300;

/// Where and how sessions of the workers' role are asked for.
#[derive(Clone)]
pub(crate) struct StsSettings {
    /// STS's URL (`https://sts.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`): requests are POSTed to its
    /// path (`/` if it has none); any query is dropped.
    pub endpoint: String,
    /// The region requests are signed for.
    pub region: String,
    /// The workers' role.
    pub role_arn: String,
    /// The longest session asked for (validated: 15 minutes to 12 hours).
    pub session_max: Duration,
    /// The bucket and key prefix (without leading or trailing `/`; may be empty) of the sinks.
    pub bucket: String,
    pub prefix: String,
    /// How long one [`Sts::assume`] may take: the service's credentials, the request and its whole answer.
    pub timeout: Duration,
    /// The S3 store, as errors name it.
    pub location: StorageLocation,
    /// Configured secrets, redacted from every error text.
    pub secrets: Arc<[Secret]>,
}

/// Makes sessions of the workers' role, each reaching one sink.
pub(crate) struct Sts {
    settings: StsSettings,
    credentials: AwsCredentialProvider,
    /// Counts every HTTP request sent, with the store's own.
    requests: Arc<AtomicU64>,
    /// Where requests go, or why none can be sent.
    endpoint: Result<Endpoint, String>,
}

/// A role session's credentials, for one sink.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    /// When the session ends: the instant its request was signed, plus the duration asked for.
    pub expires_at: SystemTime,
}

/// STS's URL, its HTTP client, and what the signature covers of both.
struct Endpoint {
    client: reqwest::Client,
    url: reqwest::Url,
    /// `host[:port]`, as the request carries it (the port only when not the scheme's).
    host: String,
    /// The canonical URI of `url`'s path.
    path: String,
}

/// Why asking STS failed: the cause of a [`StorageError`].
#[derive(Debug, thiserror::Error)]
enum StsError {
    #[error("the service's own credentials are not available")]
    Credentials(#[source] object_store::Error),
    #[error("STS could not be reached")]
    Transport(#[source] reqwest::Error),
    #[error("STS refused ({status}): {told}")]
    Refused { status: reqwest::StatusCode, told: String },
    #[error("STS failed ({status}): {told}")]
    Failed { status: reqwest::StatusCode, told: String },
    #[error("STS sent an answer over 64 KiB")]
    TooLarge,
    #[error("STS answered no credentials")]
    NoCredentials,
}

impl std::fmt::Debug for Sts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sts")
            .field("endpoint", &redact_urls(&self.settings.endpoint))
            .field("region", &self.settings.region)
            .field("role_arn", &self.settings.role_arn)
            .field("bucket", &self.settings.bucket)
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

impl Sts {
    /// Asks STS at `settings.endpoint` with the service's `credentials`, counting each request in `requests`.
    /// An endpoint that is no http(s) URL, or an HTTP client that cannot be made, fails each [`Sts::assume`]
    /// with [`StorageError::Config`].
    pub(crate) fn new(settings: StsSettings, credentials: AwsCredentialProvider, requests: Arc<AtomicU64>) -> Self {
        let endpoint = Endpoint::new(&settings.endpoint);
        Self { settings, credentials, requests, endpoint }
    }

    /// The session policy of result `id`'s sink (JSON): put, get and multipart uploads of the objects under
    /// `<prefix>/<id>/`, and listing the bucket under that prefix; nothing else.
    pub(crate) fn session_policy(&self, id: &ResultId) -> String {
        let StsSettings { bucket, prefix, region, .. } = &self.settings;
        let partition = partition(region);
        let sink = match prefix.as_str() {
            "" => format!("{id}/*"),
            prefix => format!("{prefix}/{id}/*"),
        };
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                    "Resource": format!("arn:{partition}:s3:::{bucket}/{sink}"),
                },
                {
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": format!("arn:{partition}:s3:::{bucket}"),
                    "Condition": {"StringLike": {"s3:prefix": sink}},
                },
            ],
        })
        .to_string()
    }

    /// Credentials for `id`'s sink lasting `valid_for` clamped to [900 s, `session_max`] (whole seconds, a
    /// fraction rounded up): one `AssumeRole` request, counted, answered within `timeout` or failed with
    /// [`StorageError::Timeout`]. Any other failure (the service's credentials, the transport, a refusal, an
    /// answer without credentials) is [`StorageError::Unavailable`], telling STS's error code and message,
    /// never a credential.
    pub(crate) async fn assume(&self, id: &ResultId, valid_for: Duration) -> Result<Session, StorageError> {
        let endpoint = self.endpoint.as_ref().map_err(|message| StorageError::Config { message: message.clone() })?;
        let seconds = duration_seconds(valid_for, self.settings.session_max);
        tracing::debug!(result_id = %id, seconds, "assuming the workers' role");
        let asked = tokio::time::timeout(self.settings.timeout, self.ask(endpoint, id, seconds)).await;
        let location = || self.settings.location.clone();
        match asked {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(cause)) => Err(StorageError::Unavailable {
                location: location(),
                operation: OPERATION,
                cause: Cause::new(cause, self.settings.secrets.clone()),
            }),
            Err(_elapsed) => Err(StorageError::Timeout { location: location(), timeout: self.settings.timeout }),
        }
    }

    /// One signed `AssumeRole` request for `seconds`, and its answer.
    async fn ask(&self, endpoint: &Endpoint, id: &ResultId, seconds: u64) -> Result<Session, StsError> {
        let credential = self.credentials.get_credential().await.map_err(StsError::Credentials)?;
        let body = self.form(id, seconds);
        let at = SystemTime::now();
        let date = amz_date(at);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let mut headers = vec![("host", endpoint.host.as_str()), ("x-amz-date", &date), ("content-type", content_type)];
        headers.extend(credential.token.as_deref().map(|token| ("x-amz-security-token", token)));
        let request = SignedRequest {
            method: "POST",
            path: &endpoint.path,
            headers: &headers,
            body: body.as_bytes(),
            service: "sts",
            region: &self.settings.region,
        };
        let secret = Secret::new(credential.secret_key.as_str());
        let signature = authorization(&request, &credential.key_id, &secret, at);
        // `host` is the one the client derives from the URL, exactly as signed.
        let mut post = endpoint.client.post(endpoint.url.clone()).header("authorization", signature).body(body);
        for (name, value) in headers.iter().filter(|(name, _)| *name != "host") {
            post = post.header(*name, *value);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        // A storage request of the call, until its answer is read: counted in the call's depth.
        let request = crate::storage::trace::request();
        let response = post.send().await.map_err(StsError::Transport)?;
        let status = response.status();
        let answer = read_bounded(response).await?;
        drop(request);
        let answer = String::from_utf8_lossy(&answer);
        if !status.is_success() {
            let told = refusal(&answer);
            return Err(match status.is_client_error() {
                true => StsError::Refused { status, told },
                false => StsError::Failed { status, told },
            });
        }
        let (access_key_id, secret_access_key, session_token) = credentials(&answer).ok_or(StsError::NoCredentials)?;
        Ok(Session { access_key_id, secret_access_key, session_token, expires_at: at + Duration::from_secs(seconds) })
    }

    /// The form of an `AssumeRole` request for `id`'s sink, lasting `seconds`.
    fn form(&self, id: &ResultId, seconds: u64) -> String {
        let parameters = [
            ("Action", "AssumeRole".to_owned()),
            ("Version", "2011-06-15".to_owned()),
            ("RoleArn", self.settings.role_arn.clone()),
            // 44 characters of `[a-z0-9-]`: within STS's 64 of `[\w+=,.@-]`.
            ("RoleSessionName", format!("anonymous-results-{id}")),
            ("DurationSeconds", seconds.to_string()),
            ("Policy", self.session_policy(id)),
        ];
        let pairs: Vec<String> = parameters.iter().map(|(name, value)| format!("{name}={}", encode(value))).collect();
        pairs.join("&")
    }
}

impl Endpoint {
    /// The endpoint of the URL `endpoint`, or why there is none (a message without credentials).
    fn new(endpoint: &str) -> Result<Self, String> {
        let unusable = |why: &str| format!("the STS endpoint `{}` {why}", redact_urls(endpoint));
        let mut url = reqwest::Url::parse(endpoint).map_err(|e| unusable(&format!("is not a URL: {e}")))?;
        let host = match (url.scheme(), url.host_str()) {
            ("http" | "https", Some(host)) => host.to_owned(),
            _ => return Err(unusable("is not an http(s) URL")),
        };
        url.set_query(None);
        url.set_fragment(None);
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        // SigV4 encodes the (already encoded) path once more, for every service but S3.
        let path = encode_path(url.path());
        crate::storage::install_tls_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("no HTTP client for STS: {}", crate::telemetry::error_chain(&e)))?;
        Ok(Self { client, url, host, path })
    }
}

/// The AWS partition of `region`, as ARNs name it.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// `DurationSeconds` for `valid_for`: whole seconds (a fraction rounded up), at least STS's 900, at most
/// `session_max` (itself at least 900).
fn duration_seconds(valid_for: Duration, session_max: Duration) -> u64 {
    let seconds = valid_for.as_secs().saturating_add(u64::from(valid_for.subsec_nanos() > 0));
    seconds.clamp(MIN_SESSION_SECONDS, session_max.as_secs().max(MIN_SESSION_SECONDS))
}

/// The answer's body, if it is at most [`MAX_ANSWER`] bytes.
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, StsError> {
    if response.content_length().is_some_and(|length| length > MAX_ANSWER as u64) {
        return Err(StsError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(StsError::Transport)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(StsError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The access key id, secret access key and session token of an `AssumeRoleResponse`, if it has all three.
fn credentials(answer: &str) -> Option<(Secret, Secret, Secret)> {
    let credentials = element(answer, "Credentials")?;
    let field = |name: &str| element(credentials, name).map(|text| Secret::new(unescape(text)));
    Some((field("AccessKeyId")?, field("SecretAccessKey")?, field("SessionToken")?))
}

/// What an `ErrorResponse` tells: `Code: Message`, escaped and cut to [`MAX_TOLD`] characters.
fn refusal(answer: &str) -> String {
    let error = element(answer, "Error");
    let field = |name: &str| error.and_then(|error| element(error, name)).map(unescape);
    let text = match (field("Code"), field("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        (None, Some(message)) => message,
        (None, None) => "no error code".to_owned(),
    };
    let escaped: String = text.escape_debug().collect();
    match escaped.char_indices().nth(MAX_TOLD) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// The raw content of the first element `<name>` (or `<name attributes>`) of `xml`, up to its `</name>`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut rest = xml;
    loop {
        let at = rest.find(&open)?;
        let after = &rest[at + open.len()..];
        match after.chars().next() {
            Some('>') => return after[1..].find(&close).map(|end| &after[1..1 + end]),
            Some(c) if c.is_whitespace() => {
                let start = after.find('>')? + 1;
                return after[start..].find(&close).map(|end| &after[start..start + end]);
            }
            // A longer name that begins with this one.
            _ => rest = after,
        }
    }
}

/// `text` with the five predefined XML entities replaced by their characters; any other `&` kept as it is.
fn unescape(text: &str) -> String {
    const ENTITIES: [(&str, char); 5] =
        [("&amp;", '&'), ("&lt;", '<'), ("&gt;", '>'), ("&quot;", '"'), ("&apos;", '\'')];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match ENTITIES.iter().find(|(entity, _)| rest.starts_with(entity)) {
            Some((entity, character)) => {
                out.push(*character);
                rest = &rest[entity.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
