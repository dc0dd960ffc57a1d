//! What workers reach on S3, with IAM enforced (a moto of its own): `worker_storage_options` hands workers
//! credentials of their own, and the service refuses to start when those reach its control folder.

use std::sync::Arc;

use anonymous_results::{Config, Service};
use object_store::{ObjectStore, ObjectStoreExt, path::Path};

use crate::common::{
    TestServer, TestStore,
    iam::{EVERYTHING, Iam, PREFIX, scoped_store, sinks_but_control},
    random_suffix, s3,
};

/// A fresh bucket on a moto of its own, with IAM enforced: the service's user may do everything; the
/// workers' user has the policy `workers` makes of the bucket and prefix. Answers the store (configured with
/// the service's user) and the `[anonymous_results_service]` lines handing workers their own user.
async fn enforcing(workers: impl Fn(&str, &str) -> String) -> Option<(TestStore, String)> {
    let mut server = s3::S3Server::moto_of_its_own()?;
    let iam = Iam::of(&server);
    let bucket = format!("results-{}", random_suffix());
    server.create_bucket(&bucket).await;
    let service = iam.user("service", EVERYTHING).await;
    let worker = iam.user("worker", &workers(&bucket, PREFIX)).await;
    iam.enforce().await;
    let options = format!(
        "worker_storage_options.aws_access_key_id = \"{}\"\n\
         worker_storage_options.aws_secret_access_key = \"{}\"\n\
         worker_storage_options.aws_endpoint_url = \"{}\"\n\
         worker_storage_options.aws_region = \"us-east-1\"\n",
        worker.access_key_id, worker.secret_access_key, server.endpoint
    );
    server.credentials = service;
    let endpoint = server.endpoint.clone();
    Some((TestStore::S3 { server, bucket, prefix: PREFIX.into(), endpoint }, options))
}

/// A store over the bucket of `sink` with the sink's storage options, as a worker has.
fn workers_store(sink: &anonymous_results::proto::Sink) -> Arc<dyn ObjectStore> {
    let url = url::Url::parse(&sink.uri).expect("a sink URL");
    let (store, _) = object_store::parse_url_opts(&url, sink.storage_options.iter()).expect("a worker's store");
    Arc::from(store)
}

/// Workers denied `prefix/_control/*` get AccessDenied on reading and writing there (the commit secret among
/// it), and write, list and commit their sinks; Allocate hands them their own credentials, never the
/// service's, and the service starts (its probe finds the control folder out of their reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_denied_the_control_folder_cannot_reach_it_and_work_on_their_sinks() {
    let Some((store, workers)) = enforcing(sinks_but_control).await else { return };
    let TestStore::S3 { server, bucket, prefix, .. } = &store else { unreachable!() };
    let service_secret = server.credentials.secret_access_key.clone();
    let (bucket, prefix) = (bucket.clone(), prefix.clone());
    let config = Config::from_toml(&store.config_toml(&workers)).expect("a valid configuration");
    let fx = crate::common::Fixture { server: TestServer::start(&config).await, store };
    let allocated = fx.allocate("q").await;
    let sink = allocated.sink.as_ref().expect("a sink");
    assert!(sink.storage_options.values().all(|value| *value != service_secret), "never the service's secret");
    assert_eq!(sink.storage_options.get("aws_allow_http").map(String::as_str), Some("true"), "plain HTTP, as before");

    let store = workers_store(sink);
    let secret = Path::from(format!("{prefix}/{}", anonymous_results::layout::COMMIT_SECRET));
    let denied = |result: object_store::Result<_>| matches!(result, Err(object_store::Error::PermissionDenied { .. }));
    assert!(denied(store.get(&secret).await.map(drop)), "a worker reads the commit secret");
    assert!(denied(store.put(&secret, "forged".into()).await.map(drop)), "a worker rewrites the commit secret");
    let planted = Path::from(format!("{prefix}/_control/planted"));
    assert!(denied(store.put(&planted, "x".into()).await.map(drop)), "a worker plants a record");

    fx.write(&allocated, "part-0.csv", b"a\n1\n").await;
    let listed: Vec<_> =
        futures::TryStreamExt::try_collect(store.list(Some(&Path::from(format!("{prefix}/{}", allocated.result_id)))))
            .await
            .expect("a worker lists its sink");
    assert_eq!(listed.len(), 1, "{listed:?}");
    fx.commit(&allocated, vec![]).await.expect("committed");
    let resolved = fx.resolve(&allocated.result_id).await.expect("resolved");
    assert_eq!(resolved.locations.len(), 1);
    assert!(!bucket.is_empty());
    fx.stop().await;
}

/// Workers whose credentials reach the control folder are refused at start-up, by an error that names
/// `worker_storage_options` and the folder, and says whether they could write, read, or both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_reach_the_control_folder_are_refused_at_start_up() {
    let everything_under_the_prefix = |bucket: &str, prefix: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[
                {{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::{bucket}/{prefix}/*"}}]}}"#
        )
    };
    let read_only_there = |bucket: &str, prefix: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[
                {{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::{bucket}/{prefix}/*"}},
                {{"Effect":"Deny","Action":"s3:PutObject","Resource":"arn:aws:s3:::{bucket}/{prefix}/_control/*"}}]}}"#
        )
    };
    for (policy, reached) in [
        (&everything_under_the_prefix as &dyn Fn(&str, &str) -> String, "can write and read"),
        (&read_only_there, "can read"),
    ] {
        let Some((store, workers)) = enforcing(policy).await else { return };
        let config = Config::from_toml(&store.config_toml(&workers)).expect("a valid configuration");
        let refused = Service::from_config(&config).await.expect_err("workers reach the control folder").to_string();
        for said in ["worker_storage_options", reached, "`anonymous-results/_control/`", "Deny"] {
            assert!(refused.contains(said), "{said:?} in: {refused}");
        }
        let TestStore::S3 { server, .. } = &store else { unreachable!() };
        assert!(!refused.contains(&server.credentials.secret_access_key), "no secret in: {refused}");
        // Nothing is left behind: the service deleted its probes and the workers'.
        assert_eq!(store.keys_under("_control/").await, Vec::<String>::new(), "probes left");
    }
}

/// The session policy the service sends for result `id`'s sink in `bucket` under `prefix`.
fn expected_policy(bucket: &str, prefix: &str, id: &str) -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                "Resource": format!("arn:aws:s3:::{bucket}/{prefix}/{id}/*"),
            },
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": format!("arn:aws:s3:::{bucket}"),
                "Condition": {"StringLike": {"s3:prefix": format!("{prefix}/{id}/*")}},
            },
        ],
    })
}

/// With scoped credentials, Allocate answers a session of the workers' role for the result's sink (never the
/// service's keys), which writes, lists and commits it; the session policy STS received names exactly that
/// sink. A repeated Allocate answers a session for the same sink; RefreshSink answers a fresh one while the
/// result is ALLOCATED, and refuses a wrong token and a committed result.
///
/// moto applies the role's policy to a session (so `_control/` is denied here by the role, as the start-up
/// probe checks), but not the session policy: AWS, MinIO and Ceph RGW do, and there each session reaches its
/// own sink alone. What is checked here is the policy sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_credentials_are_a_session_for_one_sink_refreshed_while_allocated() {
    let Some((store, lines, iam)) = scoped_store().await else { return };
    let TestStore::S3 { server, bucket, prefix, .. } = &store else { unreachable!() };
    let (bucket, prefix) = (bucket.clone(), prefix.clone());
    let service_key = server.credentials.access_key_id.clone();
    let config = Config::from_toml(&store.config_toml(&lines)).expect("a valid configuration");
    let fx = crate::common::Fixture { server: TestServer::start(&config).await, store };
    let sessions_at_start = iam.assumed_roles().await.len();
    assert_eq!(sessions_at_start, 1, "the start-up probe's session");

    let allocated = fx.allocate("q").await;
    let sink = allocated.sink.as_ref().expect("a sink");
    let option = |sink: &anonymous_results::proto::Sink, key: &str| sink.storage_options.get(key).cloned();
    let key = option(sink, "aws_access_key_id").expect("a session's key");
    assert_ne!(key, service_key, "never the service's key");
    assert!(option(sink, "aws_session_token").is_some_and(|token| !token.is_empty()), "a session token");
    let expires_at: std::time::SystemTime = sink.credentials_expire_at.expect("when they end").try_into().unwrap();
    let lasts = expires_at.duration_since(std::time::SystemTime::now()).unwrap_or_default().as_secs();
    assert!((3500..=3600).contains(&lasts), "worker_session_max (1h), the commit deadline being later: {lasts}s");

    let sessions = iam.assumed_roles().await;
    let session = sessions.iter().find(|role| role.access_key_id == key).expect("moto made the session");
    assert_eq!(session.session_name, format!("anonymous-results-{}", allocated.result_id));
    let sent: serde_json::Value = serde_json::from_str(session.policy.as_deref().expect("a session policy")).unwrap();
    assert_eq!(sent, expected_policy(&bucket, &prefix, &allocated.result_id));

    fx.write(&allocated, "part-0.csv", b"a\n1\n").await;
    let listing = Path::from(format!("{prefix}/{}", allocated.result_id));
    let listed: Vec<_> = futures::TryStreamExt::try_collect(workers_store(sink).list(Some(&listing))).await.unwrap();
    assert_eq!(listed.len(), 1, "the session lists the sink: {listed:?}");

    let again = fx.allocate("q").await;
    assert_eq!(again.result_id, allocated.result_id);
    let repeated = option(again.sink.as_ref().unwrap(), "aws_access_key_id").expect("a session");
    let sessions = iam.assumed_roles().await;
    let session = sessions.iter().find(|role| role.access_key_id == repeated).expect("moto made it");
    assert_eq!(session.session_name, format!("anonymous-results-{}", allocated.result_id), "the same sink");

    let worker = fx.client();
    let refresh = |token: &str| anonymous_results::proto::RefreshSinkRequest {
        result_id: allocated.result_id.clone(),
        commit_token: token.into(),
    };
    let refreshed = worker.refresh_sink(refresh(&allocated.commit_token)).await.expect("refreshed");
    let fresh = option(refreshed.sink.as_ref().unwrap(), "aws_access_key_id").expect("a session");
    assert!(fresh != key && fresh != repeated, "a fresh session");
    assert_eq!(refreshed.sink.as_ref().unwrap().uri, sink.uri);
    assert_eq!(refreshed.commit_deadline, allocated.commit_deadline);
    let sessions = iam.assumed_roles().await;
    let session = sessions.iter().find(|role| role.access_key_id == fresh).expect("moto made it");
    let sent: serde_json::Value = serde_json::from_str(session.policy.as_deref().unwrap()).unwrap();
    assert_eq!(sent, expected_policy(&bucket, &prefix, &allocated.result_id));
    // The fresh session writes the sink too.
    let part = Path::from(format!("{prefix}/{}/part-1.csv", allocated.result_id));
    workers_store(refreshed.sink.as_ref().unwrap()).put(&part, "a\n2\n".into()).await.expect("written");

    let wrong = worker.refresh_sink(refresh(&"0".repeat(64))).await.expect_err("a wrong token");
    assert_eq!(wrong.code(), tonic::Code::PermissionDenied, "{wrong}");
    fx.commit(&allocated, vec![]).await.expect("committed");
    let sessions_before = iam.assumed_roles().await.len();
    let closed = worker.refresh_sink(refresh(&allocated.commit_token)).await.expect_err("committed");
    assert_eq!(closed.code(), tonic::Code::FailedPrecondition, "{closed}");
    assert!(closed.message().contains("committed"), "{closed}");
    assert_eq!(iam.assumed_roles().await.len(), sessions_before, "no session for a committed result");
    fx.stop().await;
}

/// STS out of reach: Allocate is UNAVAILABLE and nothing is allocated (no claim, no pending record); once
/// STS is back, Allocate works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sts_outage_is_unavailable_with_nothing_allocated() {
    let Some((store, lines, _iam)) = scoped_store().await else { return };
    let TestStore::S3 { server, .. } = &store else { unreachable!() };
    let link = crate::common::fault::FaultyLink::start(&server.endpoint).await;
    let lines =
        format!("{lines}worker_sts_endpoint = \"{}\"\nstorage_timeout = \"2s\"\nstorage_retries = 0\n", link.endpoint);
    let config = Config::from_toml(&store.config_toml(&lines)).expect("a valid configuration");
    let fx = crate::common::Fixture { server: TestServer::start(&config).await, store };
    for fault in [crate::common::fault::Fault::ServiceUnavailable, crate::common::fault::Fault::BlackHole] {
        link.set(fault);
        let request = anonymous_results::proto::AllocateRequest { query_id: "q".into(), ..Default::default() };
        let refused = fx.client().allocate(request).await.expect_err("STS is out");
        assert!(
            matches!(refused.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded),
            "{fault:?}: {refused}"
        );
        assert!(refused.message().contains("STS at"), "says what failed: {refused}");
        for records in ["_control/queries/", "_control/pending/"] {
            assert_eq!(fx.store.keys_under(records).await, Vec::<String>::new(), "{fault:?}: nothing allocated");
        }
    }
    link.set(crate::common::fault::Fault::None);
    let allocated = fx.allocate("q").await;
    assert!(allocated.sink.unwrap().storage_options.contains_key("aws_session_token"));
    fx.stop().await;
}
