"""Polars end to end on Azure Blob Storage (Azurite) and Google Cloud Storage (the GCS test server): a worker
writes partitions with exactly the storage_options Allocate answered, the client reads every signed URL of
Resolve back with Polars, and the servers refuse a tampered and an expired URL.

Polars reads a parquet file over HTTP starting with a suffix range (`Range: bytes=-262144`), whatever the
file's size. Azure Blob Storage does not serve suffix ranges (only `bytes=start-` and `bytes=start-end`;
object_store refuses to send one to Azure for that reason), and Azurite 3.35 answers one with a broken
response (`Content-Length: NaN`). So on Azure a parquet file is read by Polars from the bytes of a plain GET
of its signed URL (what any HTTP client does), and the URL's explicit ranges are checked too; the README
says so, and points such clients to the download modes of the service."""

import re
import time
import urllib.error
import urllib.request

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from test_polars import FORMATS, allocate, client, frame, resolve_all, typed, write_partitions


def big_frame():
    """Three partitions of well over 1 MiB each, in parquet and in CSV."""
    return frame(330_000).with_columns(pl.col("id").hash().alias("noise"))


def refused(url):
    """The HTTP status a plain GET of `url` is refused with."""
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(url, timeout=10)
    return error.value.code


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_polars_writes_with_the_handed_out_options_and_reads_every_signed_url(proto, cloud, start, kind):
    fmt, original = FORMATS[kind], big_frame()
    service = start(cloud.section)
    stub, channel = client(proto, service)
    with channel:
        allocated = allocate(proto, stub, f"query-{cloud.kind}-{kind}", fmt)
        sink = allocated.sink
        scheme = {"azure": "az://", "gcs": "gs://"}[cloud.kind]
        assert sink.uri.startswith(scheme), sink.uri
        written = write_partitions(fmt, original, sink)
        stub.Commit(proto.pb.CommitRequest(result_id=allocated.result_id, commit_token=allocated.commit_token))
        answer = resolve_all(proto, stub, allocated.result_id)
    assert [loc.path for loc in answer.locations] == [path for path, _ in written]
    assert all(loc.size_bytes > 1 << 20 for loc in answer.locations), [loc.size_bytes for loc in answer.locations]
    urls = [loc.url for loc in answer.locations]
    assert all(url.startswith(cloud.endpoint + "/") for url in urls), urls

    options = typed(fmt, original)
    if cloud.kind == "azure" and kind == "parquet":
        files = [get(url) for url in urls]
        assert all(get(url, "bytes=0-3") == b"PAR1" == data[:4] for url, data in zip(urls, files))
        assert all(get(url, f"bytes={len(data) - 4}-") == b"PAR1" == data[-4:] for url, data in zip(urls, files))
        assert_frame_equal(pl.concat([fmt.read(data, **options) for data in files]), original)
        return
    assert_frame_equal(pl.concat([fmt.read(url, **options) for url in urls]), original)
    assert_frame_equal(fmt.scan(urls, **options).collect(), original)


def get(url, byte_range=None):
    """The body of a plain GET of `url`, of `byte_range` if given (answered with 206)."""
    headers = {"Range": byte_range} if byte_range else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        assert response.status == (206 if byte_range else 200), (byte_range, response.status)
        return response.read()


def test_a_tampered_and_an_expired_signed_url_are_refused(proto, cloud, start):
    service = start(cloud.section)
    stub, channel = client(proto, service)
    original = frame(100)
    with channel:
        allocated = allocate(proto, stub, f"query-{cloud.kind}-expiry", FORMATS["csv"])
        original.write_csv(allocated.sink.uri + "part-0.csv", storage_options=dict(allocated.sink.storage_options))
        stub.Commit(proto.pb.CommitRequest(result_id=allocated.result_id, commit_token=allocated.commit_token))
        from google.protobuf import duration_pb2

        answer = stub.Resolve(proto.pb.ResolveRequest(result_id=allocated.result_id,
                                                      url_ttl=duration_pb2.Duration(seconds=1)))
    url = answer.locations[0].url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert_frame_equal(pl.read_csv(response.read(), schema=original.schema), original)
    # One character of the signature changed (the last of GCS's hex, of Azure's encoded base64).
    signature = re.search(r"(X-Goog-Signature|sig)=([^&]*)", url)
    end = signature.end(2)
    tampered = url[: end - 1] + ("1" if url[end - 1] == "0" else "0") + url[end:]
    assert refused(tampered) == 403
    time.sleep(max(0.0, answer.locations[0].expires_at.ToSeconds() - time.time()) + 1.5)
    assert refused(url) == 403, "an expired URL"
