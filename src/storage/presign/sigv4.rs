//! AWS SigV4: query authentication in bulk (the signing key derived once a day, what every URL of a batch
//! shares built once, one SHA-256 and one HMAC per URL), and the `Authorization` header of one request.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime},
};

use ring::{digest, hmac};

use super::{BulkSigner, Target, amz_date, encode, encode_path, parse_amz_date, split_authority};
use crate::secret::Secret;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

impl BulkSigner for FastSigner {
    fn sign_all(&self, targets: &[Target<'_>], at: SystemTime, expires: Duration) -> Vec<String> {
        FastSigner::sign_all(self, targets, at, expires)
    }
}

/// Static credentials and where URLs point, learnt from a URL `object_store` presigned.
pub struct FastSigner {
    /// The URL up to the object path: `scheme://host[:port]/[bucket/]`.
    base: String,
    /// `host[:port]`, the one signed header.
    host: String,
    /// The URL path before the object path (`/bucket/` or `/`): the start of the canonical URI.
    base_path: String,
    key_id: String,
    secret: Secret,
    token: Option<Secret>,
    region: String,
    /// The signing key of one UTC day, derived once.
    day_key: Mutex<Option<(String, hmac::Key)>>,
}

impl std::fmt::Debug for FastSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastSigner").field("base", &self.base).field("region", &self.region).finish_non_exhaustive()
    }
}

impl FastSigner {
    /// A signer for the credentials `key_id`/`secret`/`token`, if `probe_url` (what `object_store` signed for
    /// the object path `probe_path`) is a URL this signer can reproduce byte for byte; `None` otherwise.
    pub fn calibrate(
        probe_url: &str,
        probe_path: &str,
        key_id: &str,
        secret: &Secret,
        token: Option<&Secret>,
    ) -> Option<Self> {
        let (url, query) = probe_url.split_once('?')?;
        let base = url.strip_suffix(&encode_path(probe_path))?.to_owned();
        let (scheme_host, base_path) = split_authority(&base)?;
        let host = scheme_host.split_once("://")?.1.to_owned();
        let base_path = base_path.to_owned();
        let param = |name: &str| query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='));
        let credential = param("X-Amz-Credential")?.replace("%2F", "/");
        let mut scope = credential.split('/');
        let (id, _day, region) = (scope.next()?, scope.next()?, scope.next()?);
        if id != encode(key_id) {
            return None;
        }
        let signer = Self {
            base,
            host,
            base_path,
            key_id: key_id.to_owned(),
            secret: secret.clone(),
            token: token.cloned(),
            region: region.to_owned(),
            day_key: Mutex::new(None),
        };
        signer.reproduces(probe_url, Target::latest(probe_path)).then_some(signer)
    }

    /// Whether this signer makes exactly `url` (what `object_store` signed for `target`) at its instant.
    pub fn reproduces(&self, url: &str, target: Target<'_>) -> bool {
        let Some((_, query)) = url.split_once('?') else { return false };
        let param = |name: &str| query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='));
        let Some(at) = param("X-Amz-Date").and_then(parse_amz_date) else { return false };
        let Some(expires) = param("X-Amz-Expires").and_then(|s| s.parse().ok()).map(Duration::from_secs) else {
            return false;
        };
        self.sign_all(&[target], at, expires).first().map(String::as_str) == Some(url)
    }

    /// GET URLs of `targets`, valid from `at` (whole seconds) for `expires`. A version is the query parameter
    /// `versionId`: first in the URL (where `object_store` puts the parameters it is asked to sign), last in
    /// the canonical query (sorted by name).
    pub fn sign_all(&self, targets: &[Target<'_>], at: SystemTime, expires: Duration) -> Vec<String> {
        let date = amz_date(at);
        let day = &date[..8];
        let key = self.day_key(day);
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let credential = encode(&format!("{}/{scope}", self.key_id));
        // The query, sorted as the canonical request wants it, and as the URL carries it.
        let mut query = format!(
            "X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={credential}&X-Amz-Date={date}&X-Amz-Expires={}",
            expires.as_secs()
        );
        let mut url_query = format!("{query}&X-Amz-SignedHeaders=host");
        match &self.token {
            Some(token) => {
                let token = encode(token.expose());
                query.push_str(&format!("&X-Amz-Security-Token={token}&X-Amz-SignedHeaders=host"));
                url_query.push_str(&format!("&X-Amz-Security-Token={token}"));
            }
            None => query.push_str("&X-Amz-SignedHeaders=host"),
        }
        let headers = format!("\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD", self.host);
        let to_sign_prefix = format!("{ALGORITHM}\n{date}\n{scope}\n");
        let mut canonical = String::with_capacity(256);
        let mut to_sign = String::with_capacity(to_sign_prefix.len() + 64);
        targets
            .iter()
            .map(|target| {
                let encoded = encode_path(target.path);
                let version = target.version.map(encode);
                canonical.clear();
                canonical.push_str("GET\n");
                canonical.push_str(&self.base_path);
                canonical.push_str(&encoded);
                canonical.push('\n');
                canonical.push_str(&query);
                if let Some(version) = &version {
                    canonical.push_str("&versionId=");
                    canonical.push_str(version);
                }
                canonical.push_str(&headers);
                to_sign.clear();
                to_sign.push_str(&to_sign_prefix);
                crate::hex::push(&mut to_sign, digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
                let mut url = String::with_capacity(self.base.len() + encoded.len() + url_query.len() + 160);
                url.push_str(&self.base);
                url.push_str(&encoded);
                url.push('?');
                if let Some(version) = &version {
                    url.push_str("versionId=");
                    url.push_str(version);
                    url.push('&');
                }
                url.push_str(&url_query);
                url.push_str("&X-Amz-Signature=");
                crate::hex::push(&mut url, hmac::sign(&key, to_sign.as_bytes()).as_ref());
                url
            })
            .collect()
    }

    /// The signing key of `day` (`YYYYMMDD`): derived once, then reused until the day changes.
    fn day_key(&self, day: &str) -> hmac::Key {
        let mut cached = self.day_key.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached_day, key)) = cached.as_ref()
            && cached_day == day
        {
            return key.clone();
        }
        let key = signing_key(&self.secret, day, &self.region, "s3");
        *cached = Some((day.to_owned(), key.clone()));
        key
    }
}

/// The signing key of `secret` for one UTC `day` (`YYYYMMDD`), `region` and `service`.
fn signing_key(secret: &Secret, day: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let secret = format!("AWS4{}", secret.expose());
    let k_date = step(secret.as_bytes(), day);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// One request to sign with [`authorization`]: no query string, every header it signs, the whole body.
#[derive(Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `POST`, `GET`, ...
    pub method: &'a str,
    /// The canonical URI: the request's path as SigV4 wants it, already encoded (`/` for none).
    pub path: &'a str,
    /// The headers to sign, each name once, in any order: they must include `host` (as the request carries
    /// it: with its port, unless the scheme's) and `x-amz-date` (the [`amz_date`] of the signing instant).
    /// Names are compared in lower case; values are signed trimmed, with their runs of spaces made one.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body, as sent.
    pub body: &'a [u8],
    /// The signing service (`sts`, `s3`, ...) and region.
    pub service: &'a str,
    pub region: &'a str,
}

/// The `Authorization` header value of `request` signed with SigV4 (`AWS4-HMAC-SHA256`) by the credentials
/// `key_id`/`secret` at `at` (whole seconds, UTC): a request the service verifies only if it is sent with
/// exactly the signed headers and body, and with `at` as its `x-amz-date`. A session token, if any, must be
/// one of the signed headers (`x-amz-security-token`). The value is a credential: never log it.
pub fn authorization(request: &SignedRequest<'_>, key_id: &str, secret: &Secret, at: SystemTime) -> String {
    let date = amz_date(at);
    let day = &date[..8];
    let scope = format!("{day}/{}/{}/aws4_request", request.region, request.service);
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    headers.sort();
    let signed_headers = headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
    let mut canonical = format!("{}\n{}\n\n", request.method, request.path);
    for (name, value) in &headers {
        canonical.push_str(&format!("{name}:{value}\n"));
    }
    canonical.push_str(&format!("\n{signed_headers}\n"));
    crate::hex::push(&mut canonical, digest::digest(&digest::SHA256, request.body).as_ref());
    let mut to_sign = format!("{ALGORITHM}\n{date}\n{scope}\n");
    crate::hex::push(&mut to_sign, digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
    let key = signing_key(secret, day, request.region, request.service);
    let mut header = format!("{ALGORITHM} Credential={key_id}/{scope}, SignedHeaders={signed_headers}, Signature=");
    crate::hex::push(&mut header, hmac::sign(&key, to_sign.as_bytes()).as_ref());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    use object_store::{
        aws::AmazonS3Builder,
        path::Path,
        signer::{SignedUrlOptions, Signer},
    };

    /// What `object_store` signs for `path` (of `version`, as its `signed_url_opts` signs a `versionId`), and
    /// what the calibrated bulk signer makes at the same instant.
    async fn both(
        builder: AmazonS3Builder,
        token: Option<&str>,
        path: &str,
        version: Option<&str>,
    ) -> (String, Option<String>) {
        crate::storage::install_tls_provider();
        let store = builder.build().unwrap();
        let probe = Path::from_iter(["p", "_control", "probe dir", "a b+c=d~é.parquet"]);
        let probe_url = store.signed_url(reqwest::Method::GET, &probe, Duration::from_secs(3600)).await.unwrap();
        let (key_id, secret) = ("AKIDEXAMPLE", Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"));
        let token = token.map(Secret::new);
        let fast = FastSigner::calibrate(probe_url.as_str(), probe.as_ref(), key_id, &secret, token.as_ref());
        let object = Path::from_iter(path.split('/'));
        let options = SignedUrlOptions::default().with_query(version.map(|version| ("versionId", version)));
        let signing = store.signed_url_opts(reqwest::Method::GET, &object, Duration::from_secs(61), &options);
        let expected = signing.await.unwrap();
        let query = expected.query().unwrap().to_owned();
        let date = query.split('&').find_map(|p| p.strip_prefix("X-Amz-Date=")).unwrap();
        let at = parse_amz_date(date).unwrap();
        let target = Target { path: object.as_ref(), version };
        let made = fast.map(|fast| fast.sign_all(&[target], at, Duration::from_secs(61)).remove(0));
        (expected.to_string(), made)
    }

    fn builder() -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_bucket_name("results")
            .with_access_key_id("AKIDEXAMPLE")
            .with_secret_access_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    }

    #[tokio::test]
    async fn bulk_urls_are_exactly_object_stores() {
        let configurations = [
            ("endpoint with a port", builder().with_endpoint("http://127.0.0.1:9000").with_allow_http(true), None),
            ("AWS, path style", builder().with_region("eu-west-1"), None),
            ("AWS, virtual hosted", builder().with_region("eu-west-1").with_virtual_hosted_style_request(true), None),
            (
                "session token",
                builder().with_region("us-east-1").with_token("FQoGZXIvYXdz+token/with=padding"),
                Some("FQoGZXIvYXdz+token/with=padding"),
            ),
        ];
        for (name, configured, token) in configurations {
            for path in ["p/abc/part-0.parquet", "p/abc/year=2024/part 1.parquet", "p/x/ünï+cödé~.csv"] {
                // No version; an AWS version id; one with the characters some S3-compatible stores use.
                for version in [None, Some("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"), Some("null+v/1=x")] {
                    let (expected, made) = both(configured.clone(), token, path, version).await;
                    assert_eq!(made.as_deref(), Some(expected.as_str()), "{name}: {path} {version:?}");
                    assert_eq!(expected.contains("versionId="), version.is_some(), "{expected}");
                }
            }
        }
    }

    /// The `Authorization` of a POST to `/` with `headers`, `x-amz-date` of `at` and the session `token` if any,
    /// signed by the AWS examples' credentials.
    fn signed(
        service: &str,
        region: &str,
        headers: &[(&str, &str)],
        body: &str,
        token: Option<&str>,
        at: SystemTime,
    ) -> String {
        let date = amz_date(at);
        let mut all = headers.to_vec();
        all.push(("x-amz-date", &date));
        all.extend(token.map(|token| ("x-amz-security-token", token)));
        let request =
            SignedRequest { method: "POST", path: "/", headers: &all, body: body.as_bytes(), service, region };
        let secret = Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        authorization(&request, "AKIDEXAMPLE", &secret, at)
    }

    // The expected headers were computed independently with botocore's `SigV4Auth` (the first is also the AWS
    // SigV4 test suite's "post-x-www-form-urlencoded").
    #[test]
    fn authorization_headers_are_botocores() {
        let at = parse_amz_date("20150830T123600Z").unwrap();
        let form = [("content-type", "application/x-www-form-urlencoded"), ("host", "example.amazonaws.com")];
        assert_eq!(
            signed("service", "us-east-1", &form, "Param1=value1", None, at),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );

        let at = parse_amz_date("20260301T080509Z").unwrap();
        // Out of order, one name in upper case, one value with spaces around it: signed as canonical.
        let sts = [("Host", "127.0.0.1:5000"), ("content-type", "  application/x-www-form-urlencoded; charset=utf-8 ")];
        let body = "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fworkers\
                    &RoleSessionName=anonymous-results-abc&DurationSeconds=900";
        assert_eq!(
            signed("sts", "eu-west-1", &sts, body, Some("FQoGZXIvYXdz+token/with=padding"), at),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260301/eu-west-1/sts/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
             Signature=51ec70636226bc63c0cc8d36fe131d4cf10505442c1033c8f0297a5ec238b660"
        );
    }

    #[tokio::test]
    async fn a_url_it_cannot_reproduce_leaves_object_stores_signer_in_place() {
        let payer = builder().with_endpoint("http://127.0.0.1:9000").with_allow_http(true).with_request_payer(true);
        let (_, made) = both(payer, None, "p/a.parquet", None).await;
        assert_eq!(made, None, "requester-pays URLs carry a parameter the bulk signer does not make");
    }
}
