//! The conformance suite, part five: downloads through the service (proxy and redirect links), with a plain
//! HTTP client and no storage credentials.

use std::time::{Duration, SystemTime};

use anonymous_results::proto::{self, DownloadMode};
use reqwest::{StatusCode, header};

use crate::common::{Fixture, TestServer, TestStore};

/// Bytes that differ at every offset a test reads, so that a wrong range cannot pass.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A committed result of one file, `year=2024/part 0.csv` (a name that needs encoding), of `bytes`.
async fn committed(fx: &Fixture, query_id: &str, bytes: &[u8]) -> proto::AllocateResponse {
    let allocated = fx.allocate(query_id).await;
    fx.write(&allocated, "year=2024/part 0.csv", bytes).await;
    fx.commit(&allocated, vec![]).await.expect("a commit");
    allocated
}

/// The location of the result's only file, resolved in `mode` with `url_ttl` seconds (if any).
pub async fn link(fx: &Fixture, id: &str, mode: DownloadMode, url_ttl: Option<i64>) -> proto::Location {
    let request = proto::ResolveRequest {
        result_id: id.into(),
        download_mode: mode as i32,
        url_ttl: url_ttl.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        ..Default::default()
    };
    let mut resolved = fx.client().resolve(request).await.expect("a resolve");
    assert_eq!(resolved.locations.len(), 1);
    resolved.locations.remove(0)
}

/// A client that follows no redirect, and has no storage credentials.
pub fn http() -> reqwest::Client {
    anonymous_results::storage::install_tls_provider();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client")
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("a response")
}

pub async fn proxy_links_serve_http_as_a_client_expects(store: TestStore) {
    let fx = Fixture::start(store).await;
    let bytes = pattern(100_000);
    let allocated = committed(&fx, "q", &bytes).await;
    let location = link(&fx, &allocated.result_id, DownloadMode::Proxy, None).await;
    let url = location.url.as_str();
    assert!(url.starts_with(&format!("http://{}/v1/results/{}/files/", fx.server.addr, allocated.result_id)), "{url}");
    assert!(location.expires_at.is_some(), "a proxy link lives url_ttl");

    let head = http().head(url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let h = head.headers();
    assert_eq!(h[header::CONTENT_LENGTH], "100000");
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert_eq!(h[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(h[header::CONTENT_DISPOSITION], "attachment; filename=\"part 0.csv\"; filename*=UTF-8''part%200.csv");
    let etag = h[header::ETAG].to_str().unwrap().to_owned();

    let whole = get(url, &[]).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()[header::ETAG], etag.as_str());
    assert_eq!(whole.bytes().await.unwrap(), bytes);

    for (range, expected, content_range) in [
        ("bytes=1000-1999", &bytes[1000..2000], "bytes 1000-1999/100000"),
        ("bytes=-500", &bytes[99_500..], "bytes 99500-99999/100000"),
        ("bytes=-1000000", &bytes[..], "bytes 0-99999/100000"),
        ("bytes=99990-", &bytes[99_990..], "bytes 99990-99999/100000"),
        ("bytes=99990-200000", &bytes[99_990..], "bytes 99990-99999/100000"),
    ] {
        let part = get(url, &[("range", range)]).await;
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(part.headers()[header::CONTENT_RANGE], content_range, "{range}");
        assert_eq!(part.headers()[header::CONTENT_LENGTH], expected.len().to_string().as_str(), "{range}");
        assert_eq!(part.bytes().await.unwrap(), expected, "{range}");
    }
    let refused = get(url, &[("range", "bytes=100000-")]).await;
    assert_eq!(refused.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(refused.headers()[header::CONTENT_RANGE], "bytes */100000");

    let not_modified = get(url, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert!(not_modified.bytes().await.unwrap().is_empty());
    // The range holds only while the tag does.
    let kept = get(url, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!(kept.status(), StatusCode::PARTIAL_CONTENT);
    let changed = get(url, &[("range", "bytes=0-9"), ("if-range", "\"another\"")]).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(changed.bytes().await.unwrap().len(), 100_000);

    let posted = http().post(url).send().await.unwrap();
    assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);
    fx.stop().await;
}

/// A changed, foreign or expired link is refused with 403 before any storage request; a path that is not a
/// link is 404.
pub async fn changed_foreign_and_expired_links_are_refused_before_storage(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = committed(&fx, "q", b"some bytes").await;
    let location = link(&fx, &allocated.result_id, DownloadMode::Proxy, Some(1)).await;
    let url = location.url;
    assert_eq!(get(&url, &[]).await.bytes().await.unwrap().as_ref(), b"some bytes");
    let last = url.chars().last().unwrap();
    let tampered = format!("{}{}", &url[..url.len() - 1], if last == '0' { '1' } else { '0' });
    let other_file = url.replace("part%200.csv", "part%201.csv");
    let other_result = url.replace(&allocated.result_id, "bbbbbbbbbbbbbbbbbbbbbbbbbb");
    let later = {
        let expires = url.split("expires=").nth(1).unwrap().split('&').next().unwrap();
        url.replace(&format!("expires={expires}"), &format!("expires={}", expires.parse::<u64>().unwrap() + 3600))
    };
    let other_key = url.replace("&key=", "&key=f");
    let before = fx.server.storage_requests();
    for forged in [&tampered, &other_file, &other_result, &later, &other_key] {
        assert_eq!(get(forged, &[]).await.status(), StatusCode::FORBIDDEN, "{forged}");
    }
    let not_a_link = format!("http://{}/v1/results/{}", fx.server.addr, allocated.result_id);
    assert_eq!(get(&not_a_link, &[]).await.status(), StatusCode::NOT_FOUND);
    let expires_at: SystemTime = location.expires_at.unwrap().try_into().unwrap();
    tokio::time::sleep(expires_at.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(200))
        .await;
    assert_eq!(get(&url, &[]).await.status(), StatusCode::FORBIDDEN, "an expired link");
    assert_eq!(fx.server.storage_requests(), before, "a refused link made a storage request");
    fx.stop().await;
}

/// Links verify on every replica with the same secret; a released result's links answer 410 on both.
pub async fn a_link_made_by_one_replica_works_on_another_until_the_result_is_released(store: TestStore) {
    let fx = Fixture::start(store).await;
    let config = anonymous_results::Config::from_toml(&fx.store.config_toml("refresh_interval = \"100ms\""));
    let other = TestServer::start(&config.unwrap()).await;
    let allocated = committed(&fx, "q", b"replicated").await;
    let url = link(&fx, &allocated.result_id, DownloadMode::Proxy, None).await.url;
    let on_other = url.replace(&fx.server.addr.to_string(), &other.addr.to_string());
    assert_eq!(get(&on_other, &[]).await.bytes().await.unwrap().as_ref(), b"replicated");
    fx.client().release(proto::ReleaseRequest { result_id: allocated.result_id.clone() }).await.unwrap();
    assert_eq!(get(&url, &[]).await.status(), StatusCode::GONE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&on_other, &[]).await.status(), StatusCode::GONE, "the other replica learns of the release");
    other.stop().await;
    fx.stop().await;
}

/// A redirect link has no expiry: each GET is sent (307) to a freshly signed store URL, HEAD is answered by
/// the service, and it works as long as the result exists. On a shared filesystem it is served as a proxy link.
pub async fn redirect_links_send_each_get_to_a_fresh_store_url(store: TestStore) {
    let fx = Fixture::start(store).await;
    let bytes = pattern(10_000);
    let allocated = committed(&fx, "q", &bytes).await;
    let location = link(&fx, &allocated.result_id, DownloadMode::Redirect, None).await;
    let local = fx.store.local_root().is_some();
    assert_eq!(location.expires_at.is_some(), local, "only a proxy link expires");
    let head = http().head(&location.url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "10000");
    let answer = get(&location.url, &[("range", "bytes=100-199")]).await;
    if local {
        assert_eq!(answer.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(answer.bytes().await.unwrap(), &bytes[100..200]);
    } else {
        assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
        let target = answer.headers()[header::LOCATION].to_str().unwrap().to_owned();
        assert!(!target.contains("/v1/results/"), "to the store: {target}");
        let part = get(&target, &[("range", "bytes=100-199")]).await;
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.bytes().await.unwrap(), &bytes[100..200]);
        // Followed as a client follows it.
        assert_eq!(reqwest::get(&location.url).await.unwrap().bytes().await.unwrap(), bytes);
        let text = fx.server.service.metrics().render();
        assert!(text.contains("anonymous_results_download_redirects_total 2\n"), "{text}");
    }
    fx.client().release(proto::ReleaseRequest { result_id: allocated.result_id.clone() }).await.unwrap();
    assert_eq!(get(&location.url, &[]).await.status(), StatusCode::GONE);
    fx.stop().await;
}

/// The store URL a redirect sends a client to expires (here after `max_url_ttl`, 1 s); the redirect link
/// itself does not: fetched again, it sends the client to a fresh one. Renew keeps it working.
pub async fn a_redirect_link_outlives_the_store_urls_it_sends_clients_to(store: TestStore) {
    // No store URL on a shared filesystem (a redirect link is served as a proxy link); moto checks no expiry.
    if store.local_root().is_some() || !store.checks_signed_urls() {
        return;
    }
    let config = anonymous_results::Config::from_toml(&store.config_toml("max_url_ttl = \"1s\"")).unwrap();
    let fx = Fixture { server: TestServer::start(&config).await, store };
    let allocated = committed(&fx, "q", b"redirected bytes").await;
    let url = link(&fx, &allocated.result_id, DownloadMode::Redirect, None).await.url;
    let store_url = |answer: reqwest::Response| {
        assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
        answer.headers()[header::LOCATION].to_str().unwrap().to_owned()
    };
    let first = store_url(get(&url, &[]).await);
    assert_eq!(get(&first, &[]).await.bytes().await.unwrap().as_ref(), b"redirected bytes");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(get(&first, &[]).await.status(), StatusCode::FORBIDDEN, "the store URL expired");
    let renew = proto::RenewRequest {
        result_id: allocated.result_id.clone(),
        ttl: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
    };
    fx.client().renew(renew).await.unwrap();
    let second = store_url(get(&url, &[]).await);
    assert_ne!(first, second);
    assert_eq!(get(&second, &[]).await.bytes().await.unwrap().as_ref(), b"redirected bytes");
    fx.stop().await;
}
