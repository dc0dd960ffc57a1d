//! What operators run beside the service, under `deploy/`: the alert rules and the dashboard name only metrics
//! the service exports (held against their declarations, `src/metrics/families.rs`); promtool checks the
//! scrape configuration and checks and unit-tests the rules; and a real Prometheus (Debian's, unpacked by the
//! test command) scrapes the binary every second while a known sequence of calls runs: its HTTP API then
//! shows the counters, histograms and gauges expected, the alert rules loaded and evaluated, and every
//! PromQL expression of the dashboard answering.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, SystemTime},
};

use anonymous_results::{metrics::families, proto};
use common::{TestStore, file, outside_tool, process::Process};
use serde_json::Value;

const JOB: &str = "anonymous-results";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The dashboard's PromQL: every panel's targets' expressions.
fn dashboard_expressions() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&read("grafana/anonymous-results.json")).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let expressions: Vec<String> = panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("a target's expr").to_owned())
        .collect();
    assert!(expressions.len() >= 20, "{} expressions", expressions.len());
    expressions
}

/// The dashboard's query variables, `label_values(series, label)`: each series and label.
fn dashboard_variables() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&read("grafana/anonymous-results.json")).expect("the dashboard is JSON");
    let variables: Vec<(String, String)> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter(|variable| variable["type"] == "query")
        .map(|variable| {
            let query = variable["query"]["query"].as_str().expect("a variable's query");
            let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).expect("label_values");
            let (series, label) = inner.rsplit_once(',').expect("a series and a label");
            (series.trim().to_owned(), label.trim().to_owned())
        })
        .collect();
    assert!(variables.iter().any(|(_, label)| label == "job"), "{variables:?}");
    variables
}

/// The names in `text` that look like the service's metrics.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("anonymous_results_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn the_rules_and_the_dashboard_name_only_metrics_the_service_exports() {
    let exported: BTreeSet<String> = families::ALL.iter().flat_map(|family| family.series_names()).collect();
    for path in ["prometheus/alerts.yml", "prometheus/alerts.test.yml", "grafana/anonymous-results.json"] {
        let named = metric_names(&read(path));
        assert!(!named.is_empty(), "{path} names no metric");
        let unknown: Vec<&String> = named.difference(&exported).collect();
        assert!(unknown.is_empty(), "{path} names metrics the service does not export: {unknown:?}");
    }
    // What each is for: the alerts watch storage, the pruner, downloads, latency, timeouts and the budgets; the
    // dashboard shows calls, latency, storage, downloads, the pruner and what is stored.
    let alerts = metric_names(&read("prometheus/alerts.yml"));
    let dashboard = metric_names(&read("grafana/anonymous-results.json"));
    for (named, families) in [
        (
            &alerts,
            [
                &families::STORAGE_ERRORS,
                &families::PRUNE_LAST_PASS,
                &families::PRUNE_BACKLOG,
                &families::DOWNLOAD_REFUSALS,
                &families::RPC_DURATION,
                &families::REQUEST_TIMEOUTS,
                &families::BUDGET_USED,
                &families::RPC_REQUESTS,
            ],
        ),
        (
            &dashboard,
            [
                &families::RPC_REQUESTS,
                &families::RPC_DURATION,
                &families::RPC_STORAGE_REQUESTS,
                &families::STORAGE_ERRORS,
                &families::DOWNLOAD_BYTES,
                &families::PRUNE_BACKLOG,
                &families::PRUNE_LAST_PASS,
                &families::STORED_BYTES,
            ],
        ),
    ] {
        for family in families {
            assert!(family.series_names().iter().any(|name| named.contains(name)), "{} is not used", family.name);
        }
    }
    assert!(read("prometheus/alerts.yml").contains(&format!("up{{job=\"{JOB}\"}}")), "no alert for no replica up");
}

/// The README's table of metrics lists each family with its type and labels, and nothing else.
#[test]
fn the_readme_lists_every_metric_as_declared() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let rows: Vec<&str> = readme.lines().filter(|line| line.starts_with("| `anonymous_results_")).collect();
    let listed: Vec<String> = rows.iter().map(|row| row.split('`').nth(1).unwrap().to_owned()).collect();
    let declared: Vec<String> = families::ALL.iter().map(|family| family.name.to_owned()).collect();
    assert_eq!(listed.iter().collect::<BTreeSet<_>>(), declared.iter().collect::<BTreeSet<_>>());
    for family in families::ALL {
        let row = rows.iter().find(|row| row.contains(&format!("`{}`", family.name))).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], family.kind.as_str(), "{row}");
        assert_eq!(cells[3], family.labels.join(", "), "{row}");
    }
}

/// Runs promtool with `args` in `deploy/prometheus`, asserting it succeeds; answers what it printed.
fn promtool(promtool: &Path, args: &[&str]) -> String {
    let output = Command::new(promtool).args(args).current_dir(deploy("prometheus")).output().expect("run promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?}:\n{said}");
    said
}

/// `prometheus.yml` with its Kubernetes discovery swapped for a static target (Debian's promtool has no
/// Kubernetes discovery) and its rule file named by its full path.
fn scrape_config_with_static_targets(target: &str) -> String {
    let mut lines = Vec::new();
    let mut skipping = None;
    for line in read("prometheus/prometheus.yml").lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = skipping {
            if indent > at {
                continue;
            }
            skipping = None;
        }
        if line.trim_start() == "kubernetes_sd_configs:" {
            skipping = Some(indent);
            lines.push(format!("{}static_configs:", " ".repeat(indent)));
            lines.push(format!("{}  - targets: [\"{target}\"]", " ".repeat(indent)));
            continue;
        }
        lines.push(line.replace("  - alerts.yml", &format!("  - {}", deploy("prometheus/alerts.yml").display())));
    }
    lines.join("\n")
}

#[test]
fn promtool_checks_the_scrape_configuration_and_checks_and_unit_tests_the_rules() {
    let Some(promtool_path) = outside_tool("promtool") else { return };
    let checked = promtool(&promtool_path, &["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    let tested = promtool(&promtool_path, &["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let swapped = scrape_config_with_static_targets("127.0.0.1:9090");
    assert!(swapped.contains("static_configs") && !swapped.contains("kubernetes_sd_configs"), "{swapped}");
    std::fs::write(&config, swapped).unwrap();
    let checked = promtool(&promtool_path, &["check", "config", config.to_str().unwrap()]);
    assert!(checked.contains("SUCCESS: 1 rule files found"), "{checked}");
}

/// A Prometheus on a free loopback port scraping `target` every second as the job the rules name, with the
/// rules loaded; killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, target: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{target}\"]\n",
            deploy("prometheus/alerts.yml").display()
        );
        std::fs::write(&config, text).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Self { child, url: format!("http://127.0.0.1:{port}"), _data: data }
    }

    async fn ready(&self) {
        for _ in 0..300 {
            if let Ok(response) = reqwest::get(format!("{}/-/ready", self.url)).await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus did not get ready within 30 s");
    }

    /// The instant vector (or scalar) `query` answers now: each series' labels and value.
    async fn query(&self, query: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
        let url = url::Url::parse_with_params(&format!("{}/api/v1/query", self.url), [("query", query)]).unwrap();
        let body = json(url.as_ref()).await;
        assert_eq!(body["status"], "success", "{query}: {body}");
        let value = |pair: &Value| pair[1].as_str().expect("a value").parse::<f64>().expect("a number");
        match body["data"]["resultType"].as_str() {
            Some("vector") => body["data"]["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|series| (series["metric"].as_object().cloned().unwrap_or_default(), value(&series["value"])))
                .collect(),
            Some("scalar") => vec![(Default::default(), value(&body["data"]["result"]))],
            other => panic!("{query}: a {other:?} answer"),
        }
    }

    /// The one value `query` answers, once it is `expected` (within 30 s: scrapes come every second).
    async fn eventually(&self, query: &str, expected: f64) {
        let mut last = Vec::new();
        for _ in 0..300 {
            last = self.query(query).await;
            if last.len() == 1 && last[0].1 == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{query} is {last:?}, not {expected}");
    }

    async fn value(&self, query: &str) -> f64 {
        let answer = self.query(query).await;
        assert_eq!(answer.len(), 1, "{query}: {answer:?}");
        answer[0].1
    }
}

/// The JSON document at `url`.
async fn json(url: &str) -> Value {
    let body = reqwest::get(url).await.expect("ask prometheus").bytes().await.expect("its answer");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&body)))
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service with metrics on a free port, a byte budget, and the pruner and the usage refresh every second.
fn start_service(store: &TestStore, dir: &Path) -> (Process, String) {
    let config = dir.join("cluster.toml");
    let location = "prune_interval = \"1s\"\nusage_interval = \"1s\"\nmax_stored_bytes = 1000000";
    std::fs::write(&config, store.config_toml_with(location, "metrics_listen = \"127.0.0.1:0\"")).unwrap();
    let service = Process::start(dir, &["--config", config.to_str().unwrap()], &[]);
    for _ in 0..100 {
        if let Some(line) = service.log().into_iter().find(|line| line.contains("metrics_address=")) {
            let rest = &line[line.find("metrics_address=").unwrap() + "metrics_address=".len()..];
            return (service, rest.chars().take_while(|c| !c.is_whitespace()).collect());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the metrics address is not logged: {:#?}", service.log());
}

/// Writes `bytes` into `result`'s sink as its one file, and commits it.
async fn commit(client: &common::Client, store: &TestStore, result: &proto::AllocateResponse, bytes: &[u8]) {
    store.write(result.sink.as_ref().unwrap(), "part-0.csv", bytes).await;
    let commit = proto::CommitRequest {
        result_id: result.result_id.clone(),
        commit_token: result.commit_token.clone(),
        files: vec![file("part-0.csv", bytes.len() as u64, None)],
    };
    client.commit(commit).await.unwrap();
}

/// Allocates a result for `query` and commits `bytes` as its one file.
async fn allocate_and_commit(
    client: &common::Client,
    store: &TestStore,
    query: &str,
    bytes: &[u8],
) -> proto::AllocateResponse {
    let request = proto::AllocateRequest { query_id: query.into(), ..Default::default() };
    let allocated = client.allocate(request).await.unwrap();
    commit(client, store, &allocated, bytes).await;
    allocated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_calls_evaluates_the_rules_and_answers_the_dashboard() {
    let Some(binary) = outside_tool("prometheus") else { return };
    anonymous_results::storage::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::local();
    let (service, metrics) = start_service(&store, dir.path());
    let prometheus = Prometheus::start(&binary, &metrics);
    prometheus.ready().await;
    prometheus.eventually(&format!("up{{job=\"{JOB}\"}}"), 1.0).await;

    // Three results: two committed (11 and 5 bytes), one aborted; one committed released; a Resolve of each
    // committed one, one of an id that was never allocated, and a download through the service.
    let client = service.client().await;
    let mut allocated = Vec::new();
    for query in ["q-1", "q-2", "q-3"] {
        let request = proto::AllocateRequest { query_id: query.into(), ..Default::default() };
        allocated.push(client.allocate(request).await.unwrap());
    }
    for (result, bytes) in [(&allocated[0], &b"a,b\n1,2\n3,4"[..]), (&allocated[1], &b"c\n5\n6"[..])] {
        commit(&client, &store, result, bytes).await;
    }
    let abort = proto::AbortRequest {
        result_id: allocated[2].result_id.clone(),
        commit_token: allocated[2].commit_token.clone(),
        reason: "cancelled".into(),
    };
    client.abort(abort).await.unwrap();
    for result in &allocated[..2] {
        let resolve = proto::ResolveRequest { result_id: result.result_id.clone(), ..Default::default() };
        client.resolve(resolve).await.unwrap();
    }
    let proxied = proto::ResolveRequest {
        result_id: allocated[1].result_id.clone(),
        download_mode: proto::DownloadMode::Proxy as i32,
        ..Default::default()
    };
    let link = client.resolve(proxied.clone()).await.unwrap().locations[0].url.clone();
    assert_eq!(reqwest::get(&link).await.unwrap().bytes().await.unwrap().as_ref(), b"c\n5\n6");
    let unknown = allocated[0].result_id.replace(|c: char| c.is_ascii_digit(), "7");
    let unknown = proto::ResolveRequest { result_id: unknown, ..Default::default() };
    let code = client.resolve(unknown).await.unwrap_err().code();
    client.release(proto::ReleaseRequest { result_id: allocated[0].result_id.clone() }).await.unwrap();

    // Counters, once scraped.
    let job = format!("job=\"{JOB}\"");
    prometheus.eventually(&format!("anonymous_results_released_total{{{job}}}"), 1.0).await;
    for (query, expected) in [
        (format!("anonymous_results_allocated_total{{{job}}}"), 3.0),
        (format!("anonymous_results_committed_total{{{job}}}"), 2.0),
        (format!("anonymous_results_aborted_total{{{job}}}"), 1.0),
        (format!("anonymous_results_committed_bytes_total{{{job}}}"), 16.0),
        (format!("anonymous_results_rpc_requests_total{{{job},method=\"Allocate\",code=\"OK\"}}"), 3.0),
        (format!("anonymous_results_rpc_requests_total{{{job},method=\"Resolve\",code=\"OK\"}}"), 3.0),
        (
            format!(
                "anonymous_results_rpc_requests_total{{{job},method=\"Resolve\",code=\"{}\"}}",
                anonymous_results_client::code_name(code)
            ),
            1.0,
        ),
        (format!("anonymous_results_download_bytes_total{{{job},mode=\"proxy\"}}"), 5.0),
        (format!("anonymous_results_storage_errors_total{{{job},kind=\"io\"}}"), 0.0),
    ] {
        assert_eq!(prometheus.value(&query).await, expected, "{query}");
    }
    // The histogram: a series per method and code, its buckets cumulative up to the count.
    let histogram = "anonymous_results_rpc_duration_seconds";
    let count = format!("{histogram}_count{{{job},method=\"Commit\",code=\"OK\"}}");
    assert_eq!(prometheus.value(&count).await, 2.0);
    let infinite = format!("{histogram}_bucket{{{job},method=\"Commit\",code=\"OK\",le=\"+Inf\"}}");
    assert_eq!(prometheus.value(&infinite).await, 2.0);
    let buckets = prometheus.query(&format!("{histogram}_bucket{{{job},method=\"Commit\",code=\"OK\"}}")).await;
    assert_eq!(buckets.len(), 15, "14 bounds and +Inf: {buckets:?}");
    // A series' first scrape already holds its calls, which a rate does not see: another Commit, Resolve and
    // download, once that scrape is in, give the rates something to see.
    let second = allocate_and_commit(&client, &store, "q-4", b"d\n7").await;
    let resolve = proto::ResolveRequest { result_id: second.result_id.clone(), ..Default::default() };
    client.resolve(resolve).await.unwrap();
    let proxied = proto::ResolveRequest { download_mode: proto::DownloadMode::Proxy as i32, ..proxied };
    let link = client.resolve(proxied).await.unwrap().locations[0].url.clone();
    assert_eq!(reqwest::get(&link).await.unwrap().bytes().await.unwrap().as_ref(), b"c\n5\n6");
    prometheus.eventually(&format!("anonymous_results_committed_total{{{job}}}"), 3.0).await;
    prometheus.eventually(&format!("anonymous_results_download_bytes_total{{{job},mode=\"proxy\"}}"), 10.0).await;
    let quantile =
        format!("histogram_quantile(0.5, sum by (le) (rate({histogram}_bucket{{{job},method=\"Commit\"}}[1m])))");
    let median = prometheus.value(&quantile).await;
    assert!(median.is_finite() && median > 0.0 && median <= 10.0, "{median}");
    // Gauges: what is stored, the budget, the pruner.
    let committed = format!("anonymous_results_stored_results{{{job},state=\"committed\"}}");
    prometheus.eventually(&committed, 2.0).await;
    let bytes = format!("anonymous_results_stored_bytes{{{job},state=\"committed\"}}");
    prometheus.eventually(&bytes, 8.0).await;
    let budget = format!("anonymous_results_budget_bytes{{{job},budget=\"max_stored_bytes\"}}");
    assert_eq!(prometheus.value(&budget).await, 1_000_000.0);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    let last_pass = prometheus.value(&format!("anonymous_results_prune_last_pass_seconds{{{job}}}")).await;
    assert!((now - 60.0..=now + 5.0).contains(&last_pass), "the last pass ended at {last_pass}, now is {now}");
    let took = prometheus.value(&format!("anonymous_results_prune_pass_duration_seconds{{{job}}}")).await;
    assert!((0.0..5.0).contains(&took), "{took}");
    assert_eq!(prometheus.value(&format!("anonymous_results_prune_backlog{{{job}}}")).await, 0.0);
    assert_eq!(prometheus.value(&format!("anonymous_results_prune_failures_total{{{job}}}")).await, 0.0);
    // Every family the service declares is scraped, with its labels.
    for family in families::ALL {
        let series = prometheus.query(&format!("{{__name__=~\"{}\",{job}}}", family.series_names().join("|"))).await;
        assert!(!series.is_empty(), "{} is not scraped", family.name);
        for (labels, _) in &series {
            let mut names: Vec<&str> = labels.keys().map(String::as_str).collect();
            names.retain(|name| !["__name__", "job", "instance", "le"].contains(name));
            let mut declared = family.labels.to_vec();
            declared.sort_unstable();
            assert_eq!(names, declared, "{}: {labels:?}", family.name);
        }
    }

    // The rules are loaded and evaluated, and nothing fires against a healthy service.
    let mut rules = Value::Null;
    for _ in 0..100 {
        rules = json(&format!("{}/api/v1/rules", prometheus.url)).await;
        let all: Vec<&Value> =
            rules["data"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
        if all.len() == 11 && all.iter().all(|rule| rule["health"] == "ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let group = &rules["data"]["groups"][0];
    assert_eq!(group["name"], JOB, "{rules}");
    let rule_list = group["rules"].as_array().unwrap();
    assert_eq!(rule_list.len(), 11, "{rules}");
    assert!(rule_list.iter().all(|rule| rule["health"] == "ok"), "a rule did not evaluate: {rules}");
    let firing = prometheus.query("ALERTS{alertstate=\"firing\"}").await;
    assert!(firing.is_empty(), "alerts fire against a healthy service: {firing:?}");

    // Its variables: each `label_values(series, label)` query finds values (the job among them).
    for (series, label) in dashboard_variables() {
        let series = series.replace("$job", JOB);
        let url = url::Url::parse_with_params(
            &format!("{}/api/v1/label/{label}/values", prometheus.url),
            [("match[]", series.as_str())],
        )
        .unwrap();
        let values = json(url.as_ref()).await;
        let values: Vec<&str> = values["data"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(!values.is_empty(), "the variable over {series} finds no {label}");
        if label == "job" {
            assert!(values.contains(&JOB), "{values:?}");
        }
    }
    // Every expression of the dashboard, its variables given what Grafana would: the job, every replica,
    // and a rate window of a minute.
    for expression in dashboard_expressions() {
        let query = expression.replace("$job", JOB).replace("$instance", ".*").replace("$__rate_interval", "1m");
        assert!(!query.contains('$'), "a variable the test does not know: {expression}");
        let answer = prometheus.query(&query).await;
        assert!(
            answer.iter().any(|(_, value)| value.is_finite()),
            "the dashboard's `{expression}` answers no finite value: {answer:?}"
        );
    }
    drop(service);
}
