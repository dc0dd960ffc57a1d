//! The Google Cloud Storage and Azure Blob Storage tables, configured as the cluster configures them.

use super::{super::*, error_of};

fn gcs(url: &str, keys: &str) -> Config {
    Config::from_toml(&format!("[scheduler]\nanonymous_result_location.gcs.url = \"{url}\"\n{keys}"))
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn abs(url: &str, keys: &str) -> Config {
    Config::from_toml(&format!("[scheduler]\nanonymous_result_location.abs.url = \"{url}\"\n{keys}"))
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[test]
fn the_clusters_gcs_example_parses_under_both_names() {
    for table in ["anonymous_result_location", "anonymous_results"] {
        let config = Config::from_toml(&format!(
            "[scheduler]\n{table}.gcs.url = \"gs://bucket/path/to/key\"\n\
             {table}.gcs.google_service_account_path = \"/etc/polars/sa.json\"\n"
        ))
        .unwrap();
        let BackendConfig::Gcs(gcs) = &config.backend else { panic!("{config:?}") };
        assert_eq!(gcs.url, GcsUrl { scheme: "gs", bucket: "bucket".into(), prefix: "path/to/key".into() });
        assert_eq!(gcs.options["google_service_account_path"].expose(), "/etc/polars/sa.json");
    }
    let BackendConfig::Gcs(config) = gcs("gcs://my_bucket.example.com/", "").backend else { panic!() };
    assert_eq!(config.url.to_string(), "gcs://my_bucket.example.com");
}

#[test]
fn the_clusters_azure_example_parses_under_both_names() {
    for table in ["anonymous_result_location", "anonymous_results"] {
        let config = Config::from_toml(&format!(
            "[scheduler]\n{table}.abs.url = \"abfss://container@account.dfs.core.windows.net/path\"\n\
             {table}.abs.azure_storage_account_name = \"account\"\n\
             {table}.abs.azure_storage_account_key = \"QUNDT1VOVC1LRVk=\"\n"
        ))
        .unwrap();
        let BackendConfig::Azure(azure) = &config.backend else { panic!("{config:?}") };
        assert_eq!(azure.account, "account");
        assert_eq!(azure.url.root(), "abfss://container@account.dfs.core.windows.net");
        assert_eq!(azure.url.to_string(), "abfss://container@account.dfs.core.windows.net/path");
        assert_eq!(azure.url.prefix, "path");
    }
}

#[test]
fn an_azure_account_comes_from_the_url_the_option_or_the_emulator() {
    let account = |config: Config| match config.backend {
        BackendConfig::Azure(azure) => (azure.url.root(), azure.account),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        account(abs("az://results/p", "anonymous_result_location.abs.azure_storage_account_name = \"acct\"\n")),
        ("az://results".into(), "acct".into())
    );
    assert_eq!(
        account(abs("abfs://results@acct.blob.core.windows.net", "")),
        ("abfs://results@acct.blob.core.windows.net".into(), "acct".into())
    );
    assert_eq!(
        account(abs("az://results", "anonymous_result_location.abs.azure_storage_use_emulator = \"true\"\n")),
        ("az://results".into(), "devstoreaccount1".into())
    );
    let message = error_of("[scheduler]\nanonymous_results.abs.url = \"az://results\"\n");
    assert!(
        message.starts_with("scheduler.anonymous_results.abs.azure_storage_account_name: is required"),
        "{message}"
    );
    let message = error_of(
        "[scheduler]\nanonymous_results.abs.url = \"abfss://results@one.dfs.core.windows.net\"\n\
         anonymous_results.abs.azure_storage_account_name = \"two\"\n",
    );
    assert!(message.contains("names another account"), "{message}");
    assert!(!message.contains("two"), "no configured value is repeated: {message}");
}

#[test]
fn malformed_gcs_and_azure_urls_are_refused_saying_why() {
    for (table, url, expected) in [
        ("gcs", "s3://bucket/key", "is not a GCS url: it must look like gs://"),
        ("gcs", "gs://Bucket/key", "does not name a bucket"),
        ("gcs", "gs://ab", "does not name a bucket"),
        ("gcs", "gs://bucket//key", "empty"),
        ("abs", "https://account.blob.core.windows.net/c", "is not an Azure Blob Storage url"),
        ("abs", "az://Container/key", "does not name a container"),
        ("abs", "az://con--tainer", "does not name a container"),
        ("abs", "abfss://container@/p", "names no storage account"),
        ("abs", "abfss://container@Account.dfs.core.windows.net/p", "names no storage account"),
        ("abs", "az://container/a/../b", "`..`"),
    ] {
        let message = error_of(&format!(
            "[scheduler]\nanonymous_results.{table}.url = \"{url}\"\n\
             anonymous_results.{table}.azure_storage_account_name = \"acct\"\n"
        ));
        assert!(message.starts_with(&format!("scheduler.anonymous_results.{table}.url:")), "{message}");
        assert!(message.contains(expected), "{url}: {message}");
    }
}

#[test]
fn an_unknown_cloud_key_names_the_closest_and_every_allowed_one() {
    let message = error_of(
        "[scheduler]\nanonymous_results.gcs.url = \"gs://bucket\"\n\
         anonymous_results.gcs.google_service_acount_path = \"/x\"\n",
    );
    assert!(message.starts_with("scheduler.anonymous_results.gcs.google_service_acount_path:"), "{message}");
    assert!(message.contains("did you mean `google_service_account_path`?"), "{message}");
    assert!(message.contains("google_base_url"), "the allowed keys are listed: {message}");
    let message = error_of(
        "[scheduler]\nanonymous_results.abs.url = \"az://results\"\nanonymous_results.abs.aws_region = \"x\"\n",
    );
    assert!(message.contains("azure_storage_account_key"), "the allowed keys are listed: {message}");
    let message = error_of(
        "[scheduler]\nanonymous_results.gcs.url = \"gs://bucket\"\n\
         anonymous_results.gcs.google_service_account_path = \"/x\"\n\
         anonymous_results.gcs.google_service_account_key = \"{}\"\n",
    );
    assert!(message.contains("give the service account key once"), "{message}");
}

#[test]
fn cloud_credentials_are_never_shown() {
    let config = Config::from_toml(
        "[scheduler]\nanonymous_results.abs.url = \"az://results/p\"\n\
         anonymous_results.abs.azure_storage_account_name = \"acct\"\n\
         anonymous_results.abs.azure_storage_account_key = \"ACCOUNT-KEY-SECRET\"\n\
         anonymous_results.abs.azure_storage_sas_key = \"sv=2023&sig=SAS-SECRET\"\n\
         anonymous_results.abs.azure_storage_client_secret = \"CLIENT-SECRET\"\n",
    )
    .unwrap();
    let gcs = gcs(
        "gs://bucket",
        "anonymous_result_location.gcs.google_service_account_key = \"{\\\"private_key\\\": \\\"KEY-SECRET\\\"}\"\n\
         anonymous_result_location.gcs.google_bearer_token = \"TOKEN-SECRET\"\n",
    );
    for config in [config, gcs] {
        for text in [config.to_string(), format!("{config:?}")] {
            assert!(!text.contains("SECRET"), "{text}");
        }
        assert!(config.to_string().contains("<redacted>"), "{config}");
        assert!(Config::from_toml(&config.to_string()).is_ok(), "check-config's output is a configuration");
    }
}

#[test]
fn every_accepted_cloud_option_is_an_object_store_key() {
    use std::str::FromStr;
    for key in backend::GCS_OPTIONS {
        assert!(object_store::gcp::GoogleConfigKey::from_str(key.name).is_ok(), "{} is not a GCS key", key.name);
    }
    for key in backend::AZURE_OPTIONS {
        assert!(object_store::azure::AzureConfigKey::from_str(key.name).is_ok(), "{} is not an Azure key", key.name);
    }
}

/// `worker_storage_options` takes the keys of the configured object store's table (checked once the backend
/// is known: an Azure key is refused under S3), is shown redacted by check-config, and is refused for the local
/// backend, which hands workers no storage options.
#[test]
fn worker_storage_options_take_the_configured_stores_keys() {
    let s3 = "[scheduler]\nanonymous_results.s3.url = \"s3://bucket/prefix\"\n\
              anonymous_results.s3.aws_access_key_id = \"SERVICE\"\n\
              anonymous_results.s3.aws_secret_access_key = \"service-secret\"\n";
    let workers = "[anonymous_results_service]\nworker_storage_options.aws_access_key_id = \"WORKER\"\n\
                   worker_storage_options.aws_secret_access_key = \"worker-secret\"\n\
                   worker_storage_options.aws_region = \"eu-west-1\"\n";
    let config = Config::from_toml(&format!("{s3}{workers}")).unwrap();
    let options = config.service.worker_storage_options.as_ref().expect("read");
    let read: Vec<(&str, &str)> = options.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(
        read,
        [("aws_access_key_id", "WORKER"), ("aws_region", "eu-west-1"), ("aws_secret_access_key", "worker-secret")]
    );
    let shown = config.to_string();
    assert!(shown.contains("worker_storage_options.aws_access_key_id = \"WORKER\""), "{shown}");
    assert!(!shown.contains("worker-secret") && !shown.contains("service-secret"), "{shown}");
    assert_eq!(Config::from_toml(s3).unwrap().service.worker_storage_options, None, "unset: the service's own");

    let azure_key = error_of(&format!(
        "{s3}[anonymous_results_service]\nworker_storage_options.azure_storage_account_key = \"k\"\n"
    ));
    assert!(
        azure_key.contains("anonymous_results_service.worker_storage_options.azure_storage_account_key"),
        "{azure_key}"
    );
    assert!(azure_key.contains("aws_access_key_id"), "names the allowed keys: {azure_key}");
    let local = error_of(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = \"/x\"\n\
         [anonymous_results_service]\nworker_storage_options.aws_region = \"eu-west-1\"\n",
    );
    assert!(local.contains("worker_storage_options") && local.contains("object stores"), "{local}");
}

/// `worker_credentials = "scoped"` needs S3 and `worker_role_arn`; `worker_session_max` is held to what STS
/// grants (15m to 12h, default 1h); the scoped keys are refused without it; shared is the default.
#[test]
fn scoped_worker_credentials_are_s3_only_with_a_role_and_a_session_sts_grants() {
    let s3 = "[scheduler]\nanonymous_results.s3.url = \"s3://bucket/prefix\"\n[anonymous_results_service]\n";
    let role = "worker_role_arn = \"arn:aws:iam::111122223333:role/query-workers\"\n";
    assert_eq!(Config::from_toml(s3).unwrap().service.worker_credentials, WorkerCredentials::Shared);
    let config = Config::from_toml(&format!("{s3}worker_credentials = \"scoped\"\n{role}")).unwrap();
    let WorkerCredentials::Scoped(scoped) = &config.service.worker_credentials else { panic!("scoped") };
    assert_eq!(scoped.role_arn, "arn:aws:iam::111122223333:role/query-workers");
    assert_eq!(scoped.session_max, std::time::Duration::from_secs(3600));
    assert_eq!(scoped.sts_endpoint, None);
    let shown = config.to_string();
    assert!(
        shown.contains("worker_credentials = \"scoped\"") && shown.contains("worker_session_max = \"1h\""),
        "{shown}"
    );

    let with = |lines: &str| error_of(&format!("{s3}worker_credentials = \"scoped\"\n{lines}"));
    let no_role = with("");
    assert!(no_role.contains("worker_role_arn") && no_role.contains("required"), "{no_role}");
    let not_a_role = with("worker_role_arn = \"arn:aws:iam::1:user/alice\"\n");
    assert!(not_a_role.contains("not a role's ARN"), "{not_a_role}");
    for (max, fine) in [("14m", false), ("15m", true), ("12h", true), ("12h 1s", false), ("99999999999d", false)] {
        let text = format!("{s3}worker_credentials = \"scoped\"\n{role}worker_session_max = \"{max}\"\n");
        match (Config::from_toml(&text), fine) {
            (Ok(_), true) => {}
            (Err(error), false) => assert!(error.to_string().contains("worker_session_max"), "{error}"),
            (answer, _) => panic!("worker_session_max = {max}: {answer:?}"),
        }
    }
    let stray = error_of(&format!("{s3}{role}"));
    assert!(stray.contains("worker_role_arn") && stray.contains("scoped"), "{stray}");
    let typo = error_of(&format!("{s3}worker_credentials = \"scopped\"\n"));
    assert!(typo.contains("worker_credentials") && typo.contains("shared"), "{typo}");
    let gcs = error_of(&format!(
        "[scheduler]\nanonymous_results.gcs.url = \"gs://bucket/prefix\"\n[anonymous_results_service]\n\
         worker_credentials = \"scoped\"\n{role}"
    ));
    assert!(
        gcs.contains("worker_credentials") && gcs.contains("S3") && gcs.contains("worker_storage_options"),
        "{gcs}"
    );
}
