"""Polars as a client with no storage credentials, downloading through the service: in proxy mode on the
local backend, moto and s3s-fs (all four file types), and in redirect mode on s3s-fs, which checks the
signature of every store URL it is sent to (files over 1 MiB: s3s-fs answers 500 to a suffix range longer
than the object, which Polars starts a parquet read with)."""

import time
import urllib.error
import urllib.request
import uuid

import polars as pl
import pytest
from google.protobuf import duration_pb2
from polars.testing import assert_frame_equal
from test_polars import FORMATS, allocate, client, frame, typed, write_partitions


def resolve(proto, stub, result_id, mode):
    answer = stub.Resolve(proto.pb.ResolveRequest(result_id=result_id, download_mode=mode))
    assert answer.status.state == proto.pb.RESULT_STATE_COMMITTED, answer.status
    return answer


def committed(proto, stub, query_id, fmt, original):
    allocated = allocate(proto, stub, query_id, fmt)
    written = write_partitions(fmt, original, allocated.sink)
    stub.Commit(proto.pb.CommitRequest(result_id=allocated.result_id, commit_token=allocated.commit_token))
    return allocated, written


@pytest.fixture(params=["local", "moto", "s3s-fs"])
def any_store(request, tmp_path):
    """Each backend a client may not reach: a folder, a bucket on moto, a bucket on s3s-fs."""
    from conftest import s3_section

    if request.param == "local":
        root = tmp_path / "results"
        return f'[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = "{root}"\n'
    if request.param == "moto":
        endpoint = request.getfixturevalue("moto_url")
        bucket = f"e2e-{uuid.uuid4().hex[:12]}"
        # moto checks no signature: a plain PUT makes the bucket.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=10)
        return s3_section(bucket, endpoint)
    endpoint, root = request.getfixturevalue("s3s_fs")
    (root / "e2e").mkdir()  # an s3s-fs bucket is a folder
    return s3_section("e2e", endpoint)


@pytest.mark.parametrize("kind", FORMATS)
def test_polars_reads_every_file_type_through_the_proxy(proto, any_store, start, kind):
    fmt, original = FORMATS[kind], frame()
    service = start(any_store)
    stub, channel = client(proto, service)
    with channel:
        allocated, written = committed(proto, stub, f"query-proxy-{kind}", fmt, original)
        answer = resolve(proto, stub, allocated.result_id, proto.pb.DOWNLOAD_MODE_PROXY)
    assert [loc.path for loc in answer.locations] == [path for path, _ in written]
    urls = [loc.url for loc in answer.locations]
    assert all(url.startswith(f"http://{service.address}/v1/results/") for url in urls), urls
    options = typed(fmt, original)
    assert_frame_equal(pl.concat([fmt.read(url, **options) for url in urls]), original)
    assert_frame_equal(fmt.scan(urls, **options).collect(), original)


def status_of(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_polars_follows_redirect_links_that_outlive_their_store_urls(proto, start, s3s_fs):
    """Redirect links on s3s-fs: Polars reads them (each GET is sent to a fresh presigned URL, which s3s-fs
    checks); one fetched again after the store URL it was first sent to expired still works; after Renew too;
    after Release it answers 410."""
    from conftest import s3_section

    endpoint, root = s3s_fs
    (root / "e2e").mkdir()
    original = frame(330_000).with_columns(pl.col("id").hash().alias("noise"))
    service = start(s3_section("e2e", endpoint) + '[anonymous_results_service]\nmax_url_ttl = "1s"\n')
    stub, channel = client(proto, service)
    with channel:
        fmt = FORMATS["parquet"]
        allocated, written = committed(proto, stub, "query-redirect", fmt, original)
        answer = resolve(proto, stub, allocated.result_id, proto.pb.DOWNLOAD_MODE_REDIRECT)
        assert all(loc.size_bytes > 1 << 20 for loc in answer.locations)
        assert all(not loc.HasField("expires_at") for loc in answer.locations), "a redirect link does not expire"
        urls = [loc.url for loc in answer.locations]
        assert_frame_equal(pl.scan_parquet(urls).collect(), original)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(urls[0], timeout=10)
        assert redirected.value.code == 307
        store_url = redirected.value.headers["Location"]
        assert status_of(store_url) == 200
        time.sleep(2.5)
        assert status_of(store_url) == 403, "the store URL expired"
        # Fetched again, the link sends Polars to a fresh store URL.
        assert_frame_equal(pl.read_parquet(urls[0]), original.slice(0, written[0][1]))
        stub.Renew(proto.pb.RenewRequest(result_id=allocated.result_id, ttl=duration_pb2.Duration(seconds=3600)))
        assert_frame_equal(pl.concat([pl.read_parquet(url) for url in urls]), original)
        stub.Release(proto.pb.ReleaseRequest(result_id=allocated.result_id))
    assert status_of(urls[0]) == 410
