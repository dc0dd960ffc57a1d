//! The session policy, the request and what is made of STS's answers, against a test server of ours.

use object_store::{StaticCredentialProvider, aws::AwsCredential};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;

fn sts(endpoint: &str, region: &str, prefix: &str) -> (Sts, Arc<AtomicU64>) {
    let settings = StsSettings {
        endpoint: endpoint.to_owned(),
        region: region.to_owned(),
        role_arn: "arn:aws:iam::123456789012:role/workers".to_owned(),
        session_max: Duration::from_secs(3600),
        bucket: "results".to_owned(),
        prefix: prefix.to_owned(),
        timeout: Duration::from_secs(5),
        location: StorageLocation::Remote("s3://results at test".into()),
        secrets: Arc::new([Secret::new("service-secret")]),
    };
    let credential = AwsCredential {
        key_id: "AKIDSERVICE".to_owned(),
        secret_key: "service-secret".to_owned(),
        token: Some("service-token".to_owned()),
    };
    let requests = Arc::new(AtomicU64::new(0));
    (Sts::new(settings, Arc::new(StaticCredentialProvider::new(credential)), requests.clone()), requests)
}

fn id() -> ResultId {
    ResultId::parse("abcdefghijklmnopqrstuvwxyz").unwrap()
}

const ANSWER: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/workers/s</Arn></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>IQoJb3JpZ2luX2Vj&amp;EXAMPLE+/=</SessionToken>
      <Expiration>2026-03-01T09:05:09Z</Expiration>
    </Credentials>
  </AssumeRoleResult>
</AssumeRoleResponse>"#;

const REFUSAL: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::1:user/s is not authorized to perform: sts:AssumeRole on &quot;workers&quot;</Message></Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>"#;

#[test]
fn the_session_policy_reaches_one_sink() {
    let id = id();
    for (region, prefix, partition, sink) in [
        ("eu-west-1", "team/p", "aws", format!("team/p/{id}/*")),
        ("us-east-1", "", "aws", format!("{id}/*")),
        ("cn-north-1", "p", "aws-cn", format!("p/{id}/*")),
        ("us-gov-west-1", "p", "aws-us-gov", format!("p/{id}/*")),
    ] {
        let (sts, _) = sts("http://127.0.0.1:1", region, prefix);
        let policy: Value = serde_json::from_str(&sts.session_policy(&id)).unwrap();
        let objects = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"];
        let expected = json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": objects, "Resource": format!("arn:{partition}:s3:::results/{sink}")},
                {
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": format!("arn:{partition}:s3:::results"),
                    "Condition": {"StringLike": {"s3:prefix": sink}},
                },
            ],
        });
        assert_eq!(policy, expected, "{region} {prefix:?}");
    }
}

#[test]
fn sessions_last_whole_seconds_within_stss_bounds() {
    let max = Duration::from_secs(12 * 3600);
    assert_eq!(duration_seconds(Duration::from_secs(10), max), 900);
    assert_eq!(duration_seconds(Duration::from_secs(30 * 3600), max), 12 * 3600);
    assert_eq!(duration_seconds(Duration::from_millis(1_000_500), max), 1001);
    assert_eq!(duration_seconds(Duration::from_secs(1000), max), 1000);
    assert_eq!(duration_seconds(Duration::MAX, Duration::from_secs(3600)), 3600);
}

#[test]
fn answers_are_read() {
    let (key, secret, token) = credentials(ANSWER).unwrap();
    assert_eq!(key.expose(), "ASIAEXAMPLE");
    assert_eq!(secret.expose(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
    assert_eq!(token.expose(), "IQoJb3JpZ2luX2Vj&EXAMPLE+/=");
    assert!(credentials(REFUSAL).is_none());
    assert!(credentials(&ANSWER.replace("SessionToken", "Token")).is_none());
    assert_eq!(
        refusal(REFUSAL),
        r#"AccessDenied: User: arn:aws:iam::1:user/s is not authorized to perform: sts:AssumeRole on \"workers\""#
    );
    let long = format!("<Error><Code>X</Code><Message>{}\n</Message></Error>", "m".repeat(400));
    assert_eq!(refusal(&long), format!("X: {}…", "m".repeat(297)));
    assert_eq!(refusal("<html>bad gateway</html>"), "no error code");
    assert_eq!(unescape("&lt;&amp;lt;&gt;&quot;&apos;&unknown;&"), "<&lt;>\"'&unknown;&");
    assert_eq!(element("<CodeX>1</CodeX><Code a=\"b\">2</Code>", "Code"), Some("2"));
}

/// A server on 127.0.0.1 that answers one request with `status` and `body` (of a `content-length` if
/// `sized`, else ended by closing the connection); its URL, and the request.
async fn serve_once(status: &'static str, body: Vec<u8>, sized: bool) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0; 4096];
        loop {
            let read = stream.read(&mut buffer).await.unwrap();
            if read == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned));
                if body.len() >= length.map_or(0, |length| length.parse().unwrap()) {
                    break;
                }
            }
        }
        let framing = match sized {
            true => format!("content-length: {}", body.len()),
            false => "connection: close".to_owned(),
        };
        let head = format!("HTTP/1.1 {status}\r\ncontent-type: text/xml\r\n{framing}\r\n\r\n");
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body).await;
        String::from_utf8_lossy(&request).into_owned()
    });
    (url, server)
}

#[tokio::test]
async fn a_session_is_asked_for_signed_and_counted() {
    let (url, server) = serve_once("200 OK", ANSWER.as_bytes().to_vec(), true).await;
    let (sts, requests) = sts(&url, "eu-west-1", "p");
    let before = SystemTime::now();
    let session = sts.assume(&id(), Duration::from_secs(1200)).await.unwrap();
    assert_eq!(session.session_token.expose(), "IQoJb3JpZ2luX2Vj&EXAMPLE+/=");
    assert!(session.expires_at >= before + Duration::from_secs(1199), "{:?}", session.expires_at);
    assert!(session.expires_at <= SystemTime::now() + Duration::from_secs(1200));
    assert_eq!(requests.load(Ordering::Relaxed), 1);
    let request = server.await.unwrap();
    let day = &amz_date(before)[..8];
    assert!(request.starts_with("POST / HTTP/1.1\r\n"), "{request}");
    let scope = format!("authorization: AWS4-HMAC-SHA256 Credential=AKIDSERVICE/{day}/eu-west-1/sts/aws4_request");
    assert!(request.contains(&scope), "{request}");
    for expected in [
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=",
        "x-amz-security-token: service-token\r\n",
        "content-type: application/x-www-form-urlencoded; charset=utf-8\r\n",
        "\r\n\r\nAction=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fworkers\
             &RoleSessionName=anonymous-results-abcdefghijklmnopqrstuvwxyz&DurationSeconds=1200&Policy=%7B%22",
    ] {
        assert!(request.contains(expected), "{expected} not in {request}");
    }
}

#[tokio::test]
async fn a_refusal_tells_stss_code_and_no_credential() {
    let (url, _server) = serve_once("403 Forbidden", REFUSAL.as_bytes().to_vec(), true).await;
    let (sts, _) = sts(&url, "us-east-1", "");
    let error = sts.assume(&id(), Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(error, StorageError::Unavailable { operation: OPERATION, .. }), "{error:?}");
    let told = error.to_string();
    assert!(told.contains("STS refused (403 Forbidden): AccessDenied: User: arn:aws:iam::1:user/s"), "{told}");
    for hidden in ["service-secret", "service-token", "AKIDSERVICE", "Signature"] {
        assert!(!told.contains(hidden), "{hidden} in {told}");
    }
}

#[tokio::test]
async fn an_answer_over_64_kib_is_refused_whether_its_length_is_told_or_not() {
    let mut answer = ANSWER.as_bytes().to_vec();
    answer.resize(MAX_ANSWER + 1, b' ');
    for sized in [true, false] {
        let (url, _server) = serve_once("200 OK", answer.clone(), sized).await;
        let (sts, _) = sts(&url, "us-east-1", "");
        let error = sts.assume(&id(), Duration::from_secs(60)).await.unwrap_err();
        assert!(error.to_string().contains("STS sent an answer over 64 KiB"), "{sized}: {error}");
    }
    // At the bound, read whole.
    answer.truncate(MAX_ANSWER);
    let (url, _server) = serve_once("200 OK", answer, false).await;
    assert!(sts(&url, "us-east-1", "").0.assume(&id(), Duration::from_secs(60)).await.is_ok());
}

#[tokio::test]
async fn a_silent_sts_times_out() {
    // Connections complete in the backlog; the request is never answered.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut sts, _) = sts(&format!("http://{}", listener.local_addr().unwrap()), "us-east-1", "");
    sts.settings.timeout = Duration::from_millis(200);
    let error = sts.assume(&id(), Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(error, StorageError::Timeout { timeout, .. } if timeout == Duration::from_millis(200)));
}

#[tokio::test]
async fn an_endpoint_that_is_no_url_is_a_configuration_error() {
    let (sts, requests) = sts("sts.example.com", "us-east-1", "");
    let error = sts.assume(&id(), Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(error, StorageError::Config { .. }), "{error:?}");
    assert_eq!(requests.load(Ordering::Relaxed), 0);
}
