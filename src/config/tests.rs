use std::{net::SocketAddr, path::PathBuf};

use super::*;

fn error_of(toml: &str) -> String {
    match Config::from_toml(toml) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_seeds_local_example_parses_verbatim() {
    let config = Config::from_toml(
        r#"
[scheduler]
enabled = true
allow_local_sinks = true # required for local anonymous results
anonymous_results.local.path = "/mnt/storage/polars/anonymous-results"
"#,
    )
    .unwrap();
    assert_eq!(
        config.backend,
        BackendConfig::Local(LocalConfig { path: PathBuf::from("/mnt/storage/polars/anonymous-results") })
    );
    assert_eq!(config.service.listen, DEFAULT_LISTEN.parse::<SocketAddr>().unwrap());
    assert_eq!(config.service.log_format, LogFormat::Text);
}

#[test]
fn the_seeds_s3_examples_parse_verbatim() {
    let config = Config::from_toml(
        r#"
[scheduler]
enabled = true
anonymous_results.s3.url = "s3://bucket/path/to/key"
anonymous_results.s3.aws_secret_access_key = "YOURSECRETKEY"
anonymous_results.s3.aws_access_key_id = "YOURACCESSKEY"
anonymous_results.s3.aws_endpoint_url = "http://your-s3-compatible-storage-host:8080"
"#,
    )
    .unwrap();
    let BackendConfig::S3(s3) = &config.backend else { panic!("{config:?}") };
    assert_eq!(s3.url, S3Url { bucket: "bucket".into(), prefix: "path/to/key".into() });
    assert_eq!(s3.options["aws_secret_access_key"].expose(), "YOURSECRETKEY");
    assert_eq!(s3.options["aws_endpoint_url"].expose(), "http://your-s3-compatible-storage-host:8080");
}

#[test]
fn the_newer_table_name_is_an_alias() {
    let config = Config::from_toml(
        r#"
[scheduler]
allow_local_sinks = true
anonymous_result_location.local.path = "/srv/results"
"#,
    )
    .unwrap();
    assert_eq!(config.backend, BackendConfig::Local(LocalConfig { path: PathBuf::from("/srv/results") }));
}

#[test]
fn a_local_path_needs_allow_local_sinks() {
    let message = error_of("[scheduler]\nanonymous_results.local.path = \"/srv/results\"\n");
    assert!(message.starts_with("scheduler.allow_local_sinks:"), "{message}");
    assert!(message.contains("scheduler.anonymous_results.local.path"), "{message}");
    let message = error_of("[scheduler]\nallow_local_sinks = false\nanonymous_results.local.path = \"/x\"\n");
    assert!(message.starts_with("scheduler.allow_local_sinks:"), "{message}");
}

#[test]
fn two_backends_are_refused() {
    let message = error_of(
        r#"
[scheduler]
allow_local_sinks = true
anonymous_results.local.path = "/srv/results"
anonymous_results.s3.url = "s3://bucket/results"
"#,
    );
    assert!(message.contains("scheduler.anonymous_results.local"), "{message}");
    assert!(message.contains("scheduler.anonymous_results.s3"), "{message}");
    assert!(message.contains("only one backend"), "{message}");
}

/// The older clusters' name for the table, `anonymous_result_dst`, is read like the others; any two names at
/// once are refused, naming both.
#[test]
fn the_older_table_name_is_read_and_two_names_at_once_are_refused() {
    let config = Config::from_toml(
        "[scheduler]\nallow_local_sinks = true\nanonymous_result_dst.local.path = \"/srv/results\"\n\
         anonymous_result_dst.retention = \"2h\"\n",
    )
    .unwrap();
    assert_eq!(config.backend, BackendConfig::Local(LocalConfig { path: "/srv/results".into() }));
    assert_eq!(config.retention.retention, Some(std::time::Duration::from_secs(7200)));
    for (a, b) in [("anonymous_results", "anonymous_result_dst"), ("anonymous_result_location", "anonymous_result_dst")]
    {
        let message = error_of(&format!(
            "[scheduler]\nallow_local_sinks = true\n{a}.local.path = \"/a\"\n{b}.local.path = \"/b\"\n"
        ));
        assert!(
            message.contains(&format!("scheduler.{a}")) && message.contains(&format!("scheduler.{b}")),
            "{message}"
        );
        assert!(message.contains("keep one"), "{message}");
    }
}

#[test]
fn both_table_names_at_once_are_refused() {
    let message = error_of(
        r#"
[scheduler]
allow_local_sinks = true
anonymous_results.local.path = "/a"
anonymous_result_location.local.path = "/b"
"#,
    );
    assert!(message.contains("scheduler.anonymous_result_location"), "{message}");
    assert!(message.contains("scheduler.anonymous_results"), "{message}");
}

#[test]
fn no_backend_is_refused() {
    for toml in ["", "[scheduler]\nenabled = true\n", "[scheduler]\nanonymous_results = {}\n"] {
        let message = error_of(toml);
        assert!(message.starts_with("scheduler.anonymous_results:"), "{message}");
        assert!(message.contains("anonymous_results.local.path"), "{message}");
        assert!(message.contains("anonymous_results.s3.url"), "{message}");
    }
}

#[test]
fn an_unknown_local_key_is_refused_with_the_allowed_ones() {
    let message = error_of(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = \"/x\"\nanonymous_results.local.pth = \"/y\"\n",
    );
    assert!(message.starts_with("scheduler.anonymous_results.local.pth:"), "{message}");
    assert!(message.contains("allowed in `scheduler.anonymous_results.local` are: path"), "{message}");
}

#[test]
fn an_unknown_s3_key_is_refused_with_the_allowed_ones() {
    let message = error_of(
        "[scheduler]\nanonymous_results.s3.url = \"s3://bucket/key\"\nanonymous_results.s3.aws_secret = \"SECRET-VALUE\"\n",
    );
    assert!(message.starts_with("scheduler.anonymous_results.s3.aws_secret:"), "{message}");
    for allowed in
        ["url", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region", "aws_endpoint_url"]
    {
        assert!(message.contains(allowed), "{allowed} missing from: {message}");
    }
    assert!(!message.contains("SECRET-VALUE"), "{message}");
}

#[test]
fn a_non_aws_storage_option_is_refused() {
    let message = error_of(
        "[scheduler]\nanonymous_results.s3.url = \"s3://bucket/key\"\nanonymous_results.s3.google_service_account = \"x\"\n",
    );
    assert!(message.starts_with("scheduler.anonymous_results.s3.google_service_account:"), "{message}");
}

#[test]
fn an_unknown_backend_is_refused() {
    let message = error_of("[scheduler]\nanonymous_results.hdfs.path = \"/x\"\n");
    assert!(message.starts_with("scheduler.anonymous_results.hdfs:"), "{message}");
    assert!(message.contains("local, s3, gcs, abs"), "{message}");
}

#[test]
fn a_malformed_s3_url_is_refused() {
    for (url, expected) in [
        ("https://bucket/key", "is not an S3 url"),
        ("s3://", "does not name a bucket"),
        ("s3://Bucket_Upper/key", "does not name a bucket"),
        ("s3://bucket//key", "empty"),
        ("s3://bucket/../key", "`..`"),
    ] {
        let message = error_of(&format!("[scheduler]\nanonymous_results.s3.url = \"{url}\"\n"));
        assert!(message.starts_with("scheduler.anonymous_results.s3.url:"), "{message}");
        assert!(message.contains(expected), "{url}: {message}");
    }
}

#[test]
fn an_s3_table_needs_a_url() {
    let message = error_of("[scheduler]\nanonymous_results.s3.aws_region = \"eu-west-1\"\n");
    assert!(message.starts_with("scheduler.anonymous_results.s3.url:"), "{message}");
}

#[test]
fn the_service_section_refuses_unknown_keys_and_bad_values() {
    let backend = "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = \"/x\"\n";
    let message = error_of(&format!("{backend}[anonymous_results_service]\nlisen = \"127.0.0.1:1\"\n"));
    assert!(message.starts_with("anonymous_results_service.lisen:"), "{message}");
    assert!(message.contains("listen"), "{message}");
    let message = error_of(&format!("{backend}[anonymous_results_service]\nlisten = \"localhost\"\n"));
    assert!(message.starts_with("anonymous_results_service.listen:"), "{message}");
    let message = error_of(&format!("{backend}[anonymous_results_service]\nlog_format = \"xml\"\n"));
    assert!(message.starts_with("anonymous_results_service.log_format:"), "{message}");
}

#[test]
fn a_wrongly_typed_value_names_its_key() {
    let message = error_of("[scheduler]\nallow_local_sinks = \"yes\"\nanonymous_results.local.path = \"/x\"\n");
    assert!(message.starts_with("scheduler.allow_local_sinks:"), "{message}");
    let message = error_of("[scheduler]\nallow_local_sinks = true\nanonymous_results.local = \"/x\"\n");
    assert!(message.starts_with("scheduler.anonymous_results.local:"), "{message}");
}

#[test]
fn sections_the_service_does_not_own_are_ignored() {
    let config = Config::from_toml(
        r#"
[scheduler]
enabled = true
allow_local_sinks = true
port = 5051
anonymous_results.local.path = "/x"

[worker]
threads = 8

[observatory]
enabled = false
"#,
    );
    assert!(config.is_ok(), "{config:?}");
}

#[test]
fn the_embedded_default_is_the_local_backend_under_data() {
    let config = Config::load_with_env(None, Vec::new()).unwrap();
    assert_eq!(config.backend, BackendConfig::Local(LocalConfig { path: PathBuf::from("./data/anonymous-results") }));
}

#[test]
fn environment_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = \"/from/file\"\n")
        .unwrap();
    let env = vec![
        ("PC_CUBLET__SCHEDULER__ANONYMOUS_RESULTS__LOCAL__PATH".to_owned(), "/from/env".to_owned()),
        ("PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__LISTEN".to_owned(), "127.0.0.1:7000".to_owned()),
        ("PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__LOG_FORMAT".to_owned(), "json".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let config = Config::load_with_env(Some(&file), env).unwrap();
    assert_eq!(config.backend, BackendConfig::Local(LocalConfig { path: PathBuf::from("/from/env") }));
    assert_eq!(config.service.listen, "127.0.0.1:7000".parse::<SocketAddr>().unwrap());
    assert_eq!(config.service.log_format, LogFormat::Json);
}

#[test]
fn a_numeric_looking_secret_from_the_environment_stays_text() {
    let env = vec![
        ("PC_CUBLET__SCHEDULER__ANONYMOUS_RESULTS__S3__URL".to_owned(), "s3://bucket/key".to_owned()),
        ("PC_CUBLET__SCHEDULER__ANONYMOUS_RESULTS__S3__AWS_SECRET_ACCESS_KEY".to_owned(), "0123456789".to_owned()),
        ("PC_CUBLET__SCHEDULER__ALLOW_LOCAL_SINKS".to_owned(), "false".to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.toml");
    std::fs::write(&file, "").unwrap();
    let config = Config::load_with_env(Some(&file), env).unwrap();
    let BackendConfig::S3(s3) = &config.backend else { panic!("{config:?}") };
    assert_eq!(s3.options["aws_secret_access_key"].expose(), "0123456789");
}

#[test]
fn a_missing_file_is_named() {
    let error = Config::load_with_env(Some(std::path::Path::new("/nonexistent/cluster.toml")), Vec::new()).unwrap_err();
    assert!(error.to_string().contains("/nonexistent/cluster.toml"), "{error}");
}

#[test]
fn a_toml_syntax_error_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[scheduler\nallow_local_sinks = true\n").unwrap();
    let error = Config::load_with_env(Some(&file), Vec::new()).unwrap_err().to_string();
    assert!(error.contains("broken.toml"), "{error}");
}

#[test]
fn a_syntax_error_names_its_position_and_never_shows_its_line() {
    let secret = "wJalrXUtnFEMI-K7MDENG";
    let broken = [
        format!("[scheduler]\nanonymous_results.s3.aws_secret_access_key = \"{secret}\n"),
        format!("[scheduler]\nanonymous_results.s3.aws_secret_access_key = {secret}\n"),
        format!("[scheduler]\nanonymous_results.s3.aws_secret_access_key = \"{secret}\" \"{secret}\"\n"),
        format!("[scheduler]\nanonymous_results.s3.aws_secret_access_key = '''{secret}\n"),
        format!("[scheduler]\nanonymous_results.s3.aws_secret_access_key = \"{secret}\\q\"\n"),
        format!("[scheduler]\nx = \"{secret}\"\nx = \"{secret}\"\n"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for text in broken {
        let file = dir.path().join("broken.toml");
        std::fs::write(&file, &text).unwrap();
        let error = Config::load_with_env(Some(&file), Vec::new()).unwrap_err().to_string();
        assert!(!error.contains(secret) && !error.contains(&secret[..8]), "{error}");
        assert!(error.contains("broken.toml") && error.contains("line "), "{error}");
        let error = Config::from_toml(&text).unwrap_err().to_string();
        assert!(!error.contains(&secret[..8]), "{error}");
    }
    let error = Config::from_toml("[scheduler]\nallow_local_sinks = true\nx = = 1\n").unwrap_err().to_string();
    assert!(error.contains("line 3, column 5"), "{error}");
}

#[test]
fn durations_past_a_century_are_refused_naming_the_key() {
    for key in ["retention", "max_retention", "commit_timeout", "prune_interval"] {
        for value in ["500000000000y", "101y"] {
            let message = error_of(&format!("{LOCAL}anonymous_results.{key} = \"{value}\"\n"));
            let named = message.starts_with(&format!("scheduler.anonymous_results.{key}:"));
            assert!(named && message.contains("100 years"), "{message}");
        }
    }
    for key in ["shutdown_grace", "url_ttl", "storage_timeout", "refresh_interval", "handshake_timeout", "idle_timeout"]
    {
        let message = service_error(&format!("{key} = \"500000000000y\""));
        assert!(message.starts_with(&format!("anonymous_results_service.{key}:")), "{message}");
        assert!(message.contains("100 years"), "{message}");
    }
    assert!(Config::from_toml(&format!("{LOCAL}anonymous_results.retention = \"100y\"\n")).is_ok());
}

#[test]
fn passwords_in_endpoint_urls_are_never_shown() {
    let config = Config::from_toml(
        r#"
[scheduler]
anonymous_results.s3.url = "s3://bucket/path"
anonymous_results.s3.aws_endpoint_url = "http://minio:pw-in-the-url@storage:9000"
[anonymous_results_service]
client_endpoint_url = "https://user:pw-for-clients@public.example.com"
"#,
    )
    .unwrap();
    for text in [config.to_string(), format!("{config:?}")] {
        assert!(!text.contains("pw-in-the-url") && !text.contains("pw-for-clients"), "{text}");
    }
    let shown = config.to_string();
    assert!(shown.contains("http://<redacted>@storage:9000"), "{shown}");
    assert!(shown.contains("https://<redacted>@public.example.com"), "{shown}");
}

#[test]
fn display_redacts_secrets() {
    let config = Config::from_toml(
        r#"
[scheduler]
anonymous_results.s3.url = "s3://bucket/path"
anonymous_results.s3.aws_access_key_id = "AKIDEXAMPLE"
anonymous_results.s3.aws_secret_access_key = "wJalrXUtnFEMI-SECRET"
anonymous_results.s3.aws_session_token = "SESSION-SECRET"
"#,
    )
    .unwrap();
    let shown = config.to_string();
    let debug = format!("{config:?}");
    for text in [&shown, &debug] {
        assert!(!text.contains("wJalrXUtnFEMI-SECRET"), "{text}");
        assert!(!text.contains("SESSION-SECRET"), "{text}");
    }
    assert!(shown.contains("aws_secret_access_key = \"<redacted>\""), "{shown}");
    assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
    assert!(shown.contains("s3://bucket/path"), "{shown}");
    // What check-config prints is itself a valid configuration.
    assert!(Config::from_toml(&shown).is_ok(), "{shown}");
}

#[test]
fn every_accepted_s3_option_is_an_object_store_key() {
    use std::str::FromStr;
    for key in backend::S3_OPTIONS {
        let key = key.name;
        assert!(object_store::aws::AmazonS3ConfigKey::from_str(key).is_ok(), "{key} is not an object_store key");
    }
}

mod clouds;
mod declarations;
mod service;

const LOCAL: &str = "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = \"/x\"\n";

fn service_error(section: &str) -> String {
    error_of(&format!("{LOCAL}[anonymous_results_service]\n{section}\n"))
}

/// The budget keys of the location table: sizes in binary or decimal units or bytes, checked against each
/// other, shown in binary units by check-config; a label budget needs both its keys.
#[test]
fn the_byte_budget_is_read_in_sizes_and_checked() {
    let base = "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = \"/srv/results\"\n";
    assert_eq!(Config::from_toml(base).unwrap().budget, BudgetConfig::default());
    let config = Config::from_toml(&format!(
        "{base}anonymous_results.max_stored_bytes = \"2TiB\"\nanonymous_results.max_result_bytes = 1048576\n\
         anonymous_results.budget_label = \"user\"\nanonymous_results.max_stored_bytes_per_label = \"1.5 TB\"\n\
         anonymous_results.when_full = \"expire-oldest\"\nanonymous_results.usage_interval = \"10s\"\n"
    ))
    .unwrap();
    let budget = &config.budget;
    assert_eq!(budget.max_stored_bytes, Some(2 << 40));
    assert_eq!(budget.max_result_bytes, Some(1 << 20));
    assert_eq!(budget.per_label, Some(LabelBudget { label: "user".into(), max_bytes: 1_500_000_000_000 }));
    assert_eq!(budget.when_full, WhenFull::ExpireOldest);
    assert_eq!(budget.usage_interval, std::time::Duration::from_secs(10));
    let shown = config.to_string();
    assert!(shown.contains("max_stored_bytes = \"2TiB\"") && shown.contains("max_result_bytes = \"1MiB\""), "{shown}");

    for (lines, says) in [
        ("anonymous_results.max_stored_bytes = \"lots\"", "a size like"),
        ("anonymous_results.max_stored_bytes = \"-1GiB\"", "a size like"),
        ("anonymous_results.max_stored_bytes = 0", "at least 1"),
        ("anonymous_results.max_stored_bytes = \"16384PiB\"", "a size like"),
        (
            "anonymous_results.max_stored_bytes = \"1GiB\"\nanonymous_results.max_result_bytes = \"2GiB\"",
            "never be kept",
        ),
        ("anonymous_results.budget_label = \"user\"", "max_stored_bytes_per_label"),
        ("anonymous_results.max_stored_bytes_per_label = \"1GiB\"", "budget_label"),
        ("anonymous_results.budget_label = \"\"\nanonymous_results.max_stored_bytes_per_label = \"1GiB\"", "key"),
        ("anonymous_results.when_full = \"panic\"", "`refuse` or `expire-oldest`"),
        ("anonymous_results.usage_interval = \"0s\"", "usage_interval"),
    ] {
        let message = error_of(&format!("{base}{lines}\n"));
        assert!(message.contains(says), "{lines}: {message}");
    }
}
