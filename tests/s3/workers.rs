//! What workers reach on S3, with IAM enforced (a moto of its own): `worker_storage_options` hands workers
//! credentials of their own, and the service refuses to start when those reach its control folder.

use std::sync::Arc;

use anonymous_results::{Config, Service};
use object_store::{ObjectStore, ObjectStoreExt, path::Path};

use crate::common::{TestServer, TestStore, iam::Iam, random_suffix, s3};

/// Everything, for the service's own user.
const EVERYTHING: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","sts:*"],"Resource":"*"}]}"#;

/// A fresh bucket on a moto of its own, with IAM enforced: the service's user may do everything; the
/// workers' user has the policy `workers` makes of the bucket and prefix. Answers the store (configured with
/// the service's user) and the `[anonymous_results_service]` lines handing workers their own user.
async fn enforcing(workers: impl Fn(&str, &str) -> String) -> Option<(TestStore, String)> {
    let mut server = s3::S3Server::moto_of_its_own()?;
    let iam = Iam::of(&server);
    let bucket = format!("results-{}", random_suffix());
    server.create_bucket(&bucket).await;
    let service = iam.user("service", EVERYTHING).await;
    let prefix = "anonymous-results";
    let worker = iam.user("worker", &workers(&bucket, prefix)).await;
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
    Some((TestStore::S3 { server, bucket, prefix: prefix.into(), endpoint }, options))
}

/// The policy an operator gives workers: their sinks (everything under the prefix) but the control folder.
fn sinks_but_control(bucket: &str, prefix: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::{bucket}/{prefix}/*"}},
            {{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::{bucket}"}},
            {{"Effect":"Deny","Action":"s3:*","Resource":"arn:aws:s3:::{bucket}/{prefix}/_control/*"}}]}}"#
    )
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
