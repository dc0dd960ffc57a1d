//! moto with IAM enforcement on: users and roles made with IAM's Query API while anyone may (moto lets every
//! request through until told otherwise), then every request checked against its caller's policies from
//! [`Iam::enforce`] on (moto's `/moto-api/reset-auth`).
//!
//! moto checks users' and roles' policies, basically: it denies a statement with a condition it gets no
//! value for, so policies here have none; and it does not apply an STS session policy.

use super::{
    TestStore, random_suffix,
    s3::{Credentials, S3Server},
};

/// The IAM of a moto server of its own ([`S3Server::moto_of_its_own`]): enforcement off until
/// [`Iam::enforce`].
pub struct Iam {
    endpoint: String,
    http: reqwest::Client,
}

impl Iam {
    /// The IAM of `server`.
    pub fn of(server: &S3Server) -> Self {
        Self { endpoint: server.endpoint.clone(), http: reqwest::Client::new() }
    }

    /// Creates the user `name` with the inline policy `policy` (a JSON policy document) and an access key
    /// for it (before [`Iam::enforce`]).
    pub async fn user(&self, name: &str, policy: &str) -> Credentials {
        self.call("iam", &[("Action", "CreateUser"), ("UserName", name)]).await;
        let policy = [("Action", "PutUserPolicy"), ("UserName", name), ("PolicyName", "p"), ("PolicyDocument", policy)];
        self.call("iam", &policy).await;
        let key = self.call("iam", &[("Action", "CreateAccessKey"), ("UserName", name)]).await;
        Credentials { access_key_id: element(&key, "AccessKeyId"), secret_access_key: element(&key, "SecretAccessKey") }
    }

    /// Creates the role `name` that anyone in the account may assume, with the inline policy `policy`;
    /// answers its ARN (before [`Iam::enforce`]).
    pub async fn role(&self, name: &str, policy: &str) -> String {
        let trust = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
        let made = self
            .call("iam", &[("Action", "CreateRole"), ("RoleName", name), ("AssumeRolePolicyDocument", trust)])
            .await;
        let policy = [("Action", "PutRolePolicy"), ("RoleName", name), ("PolicyName", "p"), ("PolicyDocument", policy)];
        self.call("iam", &policy).await;
        element(&made, "Arn")
    }

    /// From now on every request is checked against its caller's policies.
    pub async fn enforce(&self) {
        let url = format!("{}/moto-api/reset-auth", self.endpoint);
        let answer = self.http.post(url).body("0").send().await.expect("moto's reset-auth");
        assert!(answer.status().is_success(), "{answer:?}");
    }

    /// One call of `service`'s Query API, unsigned (moto routes it by the credential scope of its
    /// Authorization header, and checks nothing before [`Iam::enforce`]); answers the response's body.
    async fn call(&self, service: &str, parameters: &[(&str, &str)]) -> String {
        let version = if service == "sts" { "2011-06-15" } else { "2010-05-08" };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(parameters.iter().copied())
            .append_pair("Version", version)
            .finish();
        let scope = format!("{}/20260101/us-east-1/{service}/aws4_request", super::s3::ACCESS_KEY);
        let authorization = format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=00");
        let answer = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("authorization", authorization)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("an IAM call");
        let status = answer.status();
        let text = answer.text().await.expect("an IAM answer");
        assert!(status.is_success(), "{parameters:?}: {status} {text}");
        text
    }
}

/// The text of the first `<name>` element of `xml`.
pub fn element(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no <{name}> in {xml}")) + open.len();
    let end = start + xml[start..].find('<').expect("a closing tag");
    xml[start..end].to_owned()
}

/// A role session STS made, as moto keeps it.
#[derive(Debug)]
pub struct AssumedRole {
    pub session_name: String,
    pub access_key_id: String,
    /// The session policy sent with AssumeRole (JSON), if one was.
    pub policy: Option<String>,
}

impl Iam {
    /// Every role session made so far (moto's model data).
    pub async fn assumed_roles(&self) -> Vec<AssumedRole> {
        let url = format!("{}/moto-api/data.json", self.endpoint);
        let text = self.http.get(url).send().await.expect("moto's data").text().await.expect("an answer");
        let data: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let roles = data["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default();
        roles
            .iter()
            .map(|role| AssumedRole {
                session_name: role["session_name"].as_str().expect("a session name").to_owned(),
                access_key_id: role["access_key_id"].as_str().expect("an access key").to_owned(),
                policy: role["policy"].as_str().map(str::to_owned),
            })
            .collect()
    }
}

/// Everything, for the service's own user.
pub const EVERYTHING: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","sts:*"],"Resource":"*"}]}"#;

/// The key prefix results are kept under in the stores made here.
pub const PREFIX: &str = "anonymous-results";

/// The policy an operator gives workers: their sinks (everything under the prefix) but the control folder.
pub fn sinks_but_control(bucket: &str, prefix: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::{bucket}/{prefix}/*"}},
            {{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::{bucket}"}},
            {{"Effect":"Deny","Action":"s3:*","Resource":"arn:aws:s3:::{bucket}/{prefix}/_control/*"}}]}}"#
    )
}

/// A fresh bucket on a moto of its own with IAM enforced, the service's user allowed everything, and a
/// workers' role whose policy is [`sinks_but_control`]: answers the store (configured with the service's
/// user), the `[anonymous_results_service]` lines that scope workers' credentials to sessions of that role,
/// and the IAM (for the sessions moto made). `None` only outside CI, when moto is not installed.
pub async fn scoped_store() -> Option<(TestStore, String, Iam)> {
    let mut server = S3Server::moto_of_its_own()?;
    let iam = Iam::of(&server);
    let bucket = format!("results-{}", random_suffix());
    server.create_bucket(&bucket).await;
    server.credentials = iam.user("service", EVERYTHING).await;
    let role = iam.role("query-workers", &sinks_but_control(&bucket, PREFIX)).await;
    iam.enforce().await;
    let lines = format!("worker_credentials = \"scoped\"\nworker_role_arn = \"{role}\"\n");
    let endpoint = server.endpoint.clone();
    Some((TestStore::S3 { server, bucket, prefix: PREFIX.into(), endpoint }, lines, iam))
}
