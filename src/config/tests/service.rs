//! The keys of `[anonymous_results_service]` and of retention: defaults, parsing, validation.

use std::path::PathBuf;

use super::{super::*, LOCAL, error_of, service_error};

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

/// The trace keys: off by default; an endpoint, a protocol, a ratio from 0 to 1 and headers whose values
/// check-config never shows; each bad value refused naming its key, never repeating a header's value.
#[test]
fn trace_keys_have_defaults_are_checked_and_keep_headers_secret() {
    let default = Config::from_toml(LOCAL).unwrap();
    assert_eq!(default.service.traces, TraceConfig::default());
    assert_eq!((default.service.traces.endpoint.as_deref(), default.service.traces.sample_ratio), (None, 1.0));
    let config = Config::from_toml(&format!(
        "{LOCAL}[anonymous_results_service]\notlp_endpoint = \"http://collector:4318\"\n\
         otlp_protocol = \"http/protobuf\"\ntrace_sample_ratio = 0.25\notlp_headers = \"authorization=Bearer tr4c3-t0k3n\"\n"
    ))
    .unwrap();
    let traces = &config.service.traces;
    assert_eq!(traces.endpoint.as_deref(), Some("http://collector:4318"));
    assert_eq!((traces.protocol, traces.sample_ratio), (OtlpProtocol::HttpProtobuf, 0.25));
    assert_eq!(traces.headers[0].0, "authorization");
    let shown = config.to_string();
    assert!(!shown.contains("tr4c3-t0k3n") && shown.contains("otlp_headers = \"<redacted>\""), "{shown}");
    assert!(shown.contains("trace_sample_ratio = 0.25"), "{shown}");
    for (line, says) in [
        ("trace_sample_ratio = 1.5", "trace_sample_ratio"),
        ("trace_sample_ratio = -0.1", "from 0 to 1"),
        ("trace_sample_ratio = \"half\"", "from 0 to 1"),
        ("otlp_protocol = \"http/json\"", "`grpc` or `http/protobuf`"),
        ("otlp_endpoint = \"collector:4317\"", "otlp_endpoint"),
        ("otlp_headers = \"authorization Bearer tr4c3-t0k3n\"", "name=value"),
    ] {
        let message = service_error(line);
        assert!(message.contains(says) && !message.contains("tr4c3-t0k3n"), "{line}: {message}");
    }
}
