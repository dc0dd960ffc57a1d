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
fn gcs_and_abs_are_recognised_but_not_supported_yet() {
    let message = error_of("[scheduler]\nanonymous_result_location.gcs.url = \"gs://bucket/key\"\n");
    assert!(message.starts_with("scheduler.anonymous_result_location.gcs:"), "{message}");
    assert!(message.contains("not supported"), "{message}");
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

const LOCAL: &str = "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = \"/x\"\n";

fn service_error(section: &str) -> String {
    error_of(&format!("{LOCAL}[anonymous_results_service]\n{section}\n"))
}

#[test]
fn url_lifetimes_have_defaults_and_the_sigv4_limit() {
    let config = Config::from_toml(LOCAL).unwrap();
    assert_eq!(config.service.urls.default_ttl, std::time::Duration::from_secs(3600));
    assert_eq!(config.service.urls.max_ttl, URL_TTL_LIMIT);
    assert_eq!(config.service.urls.client_endpoint_url, None);
    let config =
        Config::from_toml(&format!("{LOCAL}[anonymous_results_service]\nurl_ttl = \"3h\"\nmax_url_ttl = \"2h\"\n"))
            .unwrap();
    assert_eq!(config.service.urls.default_ttl, std::time::Duration::from_secs(7200), "the default is capped");
    let message = service_error("max_url_ttl = \"8d\"");
    assert!(message.starts_with("anonymous_results_service.max_url_ttl:") && message.contains("7d"), "{message}");
    let message = service_error("url_ttl = \"soon\"");
    assert!(message.starts_with("anonymous_results_service.url_ttl:") && message.contains("\"30s\""), "{message}");
}

#[test]
fn the_client_endpoint_must_be_an_http_url() {
    let message = service_error("client_endpoint_url = \"storage.example.com\"");
    assert!(message.starts_with("anonymous_results_service.client_endpoint_url:"), "{message}");
    let config = Config::from_toml(&format!(
        "{LOCAL}[anonymous_results_service]\nclient_endpoint_url = \"https://storage.example.com\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.service.urls.client_endpoint_url.as_ref().map(crate::secret::Secret::expose),
        Some("https://storage.example.com")
    );
}

#[test]
fn storage_client_settings_are_validated() {
    let config = Config::from_toml(LOCAL).unwrap();
    assert_eq!(config.service.storage.timeout, std::time::Duration::from_secs(30));
    assert_eq!(config.service.storage.retries, 3);
    let message = service_error("storage_retries = 99");
    assert!(
        message.starts_with("anonymous_results_service.storage_retries:") && message.contains("0 to 10"),
        "{message}"
    );
    let message = service_error("storage_timeout = \"0s\"");
    assert!(message.starts_with("anonymous_results_service.storage_timeout:"), "{message}");
    let message = service_error("manifest_cache_bytes = -1");
    assert!(message.starts_with("anonymous_results_service.manifest_cache_bytes:"), "{message}");
}

#[test]
fn retention_keys_have_defaults_and_parse_under_either_table_name() {
    let defaults = Config::from_toml(LOCAL).unwrap().retention;
    assert_eq!(defaults, RetentionConfig::default());
    assert_eq!(defaults.retention, None, "kept until released unless configured");
    assert_eq!(defaults.commit_timeout, std::time::Duration::from_secs(24 * 3600));
    let hours = |h: u64| std::time::Duration::from_secs(h * 3600);
    for table in ["anonymous_results", "anonymous_result_location"] {
        let config = Config::from_toml(&format!(
            "[scheduler]\nallow_local_sinks = true\n{table}.local.path = \"/x\"\n{table}.retention = \"24h\"\n\
             {table}.max_retention = \"7d\"\n{table}.commit_timeout = \"2h\"\n{table}.prune_interval = \"30s\"\n"
        ))
        .unwrap();
        assert_eq!(config.retention.retention, Some(hours(24)));
        assert_eq!(config.retention.max_retention, Some(hours(7 * 24)));
        assert_eq!(config.retention.commit_timeout, hours(2));
        assert_eq!(config.retention.prune_interval, std::time::Duration::from_secs(30));
        assert_eq!(config.retention.ttl(Some(hours(1000))), Some(hours(7 * 24)), "a TTL is capped");
    }
}

#[test]
fn retention_values_are_validated_naming_the_key() {
    let location = |line: &str| error_of(&format!("{LOCAL}anonymous_results.{line}\n"));
    let message = location("retention = \"a day\"");
    assert!(message.starts_with("scheduler.anonymous_results.retention:") && message.contains("\"24h\""), "{message}");
    let message = location("commit_timeout = \"0s\"");
    assert!(
        message.starts_with("scheduler.anonymous_results.commit_timeout:") && message.contains("zero"),
        "{message}"
    );
    let message = location("prune_interval = 60");
    assert!(message.starts_with("scheduler.anonymous_results.prune_interval:"), "{message}");
    let message =
        error_of(&format!("{LOCAL}anonymous_results.retention = \"48h\"\nanonymous_results.max_retention = \"24h\"\n"));
    assert!(
        message.starts_with("scheduler.anonymous_results.retention:") && message.contains("max_retention"),
        "{message}"
    );
    let message = location("retension = \"24h\"");
    assert!(message.starts_with("scheduler.anonymous_results.retension:"), "{message}");
    assert!(message.contains("retention, max_retention, commit_timeout, prune_interval"), "{message}");
}

#[test]
fn security_keys_have_safe_defaults() {
    let security = Config::from_toml(LOCAL).unwrap().service.security;
    assert_eq!(security, SecurityConfig::default());
    assert!(security.auth.token_files.is_none() && security.tls.is_none());
    assert!(!security.allow_unauthenticated, "serving unauthenticated off loopback is an explicit choice");
    assert!(security.reflection);
    assert_eq!(security.limits.max_files_per_commit, DEFAULT_MAX_FILES_PER_COMMIT);
    assert_eq!(security.limits.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
}

#[test]
fn security_keys_parse_from_the_file_and_the_environment() {
    let file = format!(
        "{LOCAL}[anonymous_results_service]\nauth.scheduler_token_file = \"/etc/ar/scheduler\"\n\
         auth.worker_token_file = \"/etc/ar/worker\"\ntls.cert_file = \"/etc/ar/tls.crt\"\n\
         tls.key_file = \"/etc/ar/tls.key\"\nreflection = false\nmax_files_per_commit = 10\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, file).unwrap();
    let env = [("PC_CUBLET__ANONYMOUS_RESULTS_SERVICE__AUTH__COMMIT_SECRET_FILE", "/etc/ar/secret")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let security = Config::load_with_env(Some(&path), env).unwrap().service.security;
    let files = security.auth.token_files.unwrap();
    assert_eq!((files.scheduler, files.worker), (PathBuf::from("/etc/ar/scheduler"), PathBuf::from("/etc/ar/worker")));
    assert_eq!(security.auth.commit_secret_file, Some(PathBuf::from("/etc/ar/secret")));
    let tls = security.tls.unwrap();
    assert_eq!((tls.cert_file, tls.client_ca_file), (PathBuf::from("/etc/ar/tls.crt"), None));
    assert!(!security.reflection);
    assert_eq!(security.limits.max_files_per_commit, 10);
}

#[test]
fn security_keys_are_validated_naming_the_key() {
    let message = service_error("auth.scheduler_token_file = \"/etc/ar/scheduler\"");
    assert!(message.starts_with("anonymous_results_service.auth.worker_token_file:"), "{message}");
    let message = service_error("auth.worker_token_file = \"/etc/ar/worker\"");
    assert!(message.starts_with("anonymous_results_service.auth.scheduler_token_file:"), "{message}");
    let message = service_error("tls.cert_file = \"/etc/ar/tls.crt\"");
    assert!(message.starts_with("anonymous_results_service.tls.key_file:"), "{message}");
    let message = service_error("auth.token_file = \"/x\"");
    assert!(message.starts_with("anonymous_results_service.auth.token_file:"), "{message}");
    assert!(message.contains("scheduler_token_file, worker_token_file, commit_secret_file"), "{message}");
    let message = service_error("allow_unauthenticated = \"yes\"");
    assert!(message.starts_with("anonymous_results_service.allow_unauthenticated:"), "{message}");
    let message = service_error("max_files_per_commit = 0");
    assert!(message.starts_with("anonymous_results_service.max_files_per_commit:"), "{message}");
    let message = service_error("auth.commit_secret_file = \"\"");
    assert!(message.starts_with("anonymous_results_service.auth.commit_secret_file:"), "{message}");
}

/// The names the README's configuration table gives, each with its section: `[section] name` (a `*` ending a
/// name stands for every key it begins; `anonymous_result_location.*` names the table's other name).
fn readme_keys() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme.split("## Configuration").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut keys = Vec::new();
    for row in table.lines().filter(|line| line.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap();
        let mut section = String::new();
        for name in cell.split('`').skip(1).step_by(2) {
            let name = match name.strip_prefix('[').and_then(|rest| rest.split_once("] ")) {
                Some((named, rest)) => {
                    section = named.to_owned();
                    rest
                }
                None => name,
            };
            keys.push((section.clone(), name.to_owned()));
        }
    }
    keys
}

#[test]
fn the_readme_table_names_every_declared_key_and_no_other() {
    let readme = readme_keys();
    let declared = declared_keys();
    let matches = |section: &str, pattern: &str, name: &str| match pattern.strip_suffix('*') {
        Some(prefix) => section == "scheduler" && name.starts_with(prefix) || pattern == "anonymous_result_location.*",
        None => pattern == name,
    };
    for (section, name, _) in &declared {
        let listed = readme.iter().any(|(s, pattern)| s == section && matches(s, pattern, name));
        assert!(listed, "`[{section}] {name}` is declared but not in the README's configuration table");
    }
    for (section, pattern) in &readme {
        if pattern == "anonymous_result_location.*" {
            continue;
        }
        let exists = declared.iter().any(|(s, name, _)| s == section && matches(s, pattern, name));
        assert!(exists, "the README's configuration table names `[{section}] {pattern}`, which is not declared");
    }
    assert!(readme.len() > 30, "the README's table was not read: {readme:?}");
}

#[test]
fn every_default_is_a_value_of_its_key() {
    for (section, name, key) in declared_keys() {
        let Some(value) = key.default_value() else { continue };
        let read = key::read(&key.kind, value).unwrap_or_else(|e| panic!("[{section}] {name}: its default {e}"));
        match (read, &key.default) {
            (key::Read::Duration(d), key::KeyDefault::Duration(default)) => assert_eq!(d, *default, "{name}"),
            (key::Read::Count(n), key::KeyDefault::Count(default)) => assert_eq!(n, *default, "{name}"),
            (key::Read::Bool(b), key::KeyDefault::Bool(default)) => assert_eq!(b, *default, "{name}"),
            (_, key::KeyDefault::Text(_)) => {}
            (read, default) => panic!("[{section}] {name}: {default:?} reads as {read:?}"),
        }
    }
}

#[test]
fn a_misspelt_key_is_answered_with_the_closest_allowed_one() {
    let message = error_of(
        "[scheduler]\nanonymous_results.s3.url = \"s3://bucket/k\"\nanonymous_results.s3.aws_secret_acess_key = \"SECRET\"\n",
    );
    assert!(message.contains("did you mean `aws_secret_access_key`?"), "{message}");
    assert!(!message.contains("SECRET\""), "{message}");
    let message = service_error("storage_timout = \"5s\"");
    assert!(message.starts_with("anonymous_results_service.storage_timout:"), "{message}");
    assert!(message.contains("did you mean `storage_timeout`?"), "{message}");
    let message = service_error("tls.cert = \"/x\"");
    assert!(message.contains("did you mean `cert_file`?"), "{message}");
    let message = service_error("something_else_entirely = 1");
    assert!(!message.contains("did you mean"), "{message}");
}

#[test]
fn check_config_says_what_each_key_means_and_fills_in_the_defaults() {
    let shown = Config::from_toml(LOCAL).unwrap().to_string();
    assert!(
        shown.contains("# the longest one storage operation may take, retries included\nstorage_timeout = \"30s\""),
        "{shown}"
    );
    assert!(shown.contains("anonymous_results.commit_timeout = \"1day\""), "{shown}");
    assert!(Config::from_toml(&shown).unwrap().to_string() == shown, "printing is stable:\n{shown}");
}
