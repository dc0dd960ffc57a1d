"""Polars end to end: the scheduler allocates, a worker writes three partitions with a real Polars into the sink
(with exactly the storage_options Allocate answered) and commits them, and the client reads every location of
Resolve back with Polars. The frame must come back equal, for each file type, on each backend, whether the
worker lists its files or lets the service discover them."""

import re

import grpc
import polars as pl
import pytest
from polars.testing import assert_frame_equal

PARTITIONS = 3


def frame(rows=3_000):
    """A frame with the column types every format keeps: integers, floats, text, booleans, and nulls."""
    return pl.DataFrame(
        {
            "id": pl.int_range(0, rows, eager=True),
            "value": [i * 0.25 - 7.5 for i in range(rows)],
            "name": [f"row-{i}" if i % 7 else None for i in range(rows)],
            "even": [i % 2 == 0 for i in range(rows)],
        }
    )


class Format:
    def __init__(self, name, extension, sink, read, scan):
        self.name, self.extension = name, extension
        self.sink, self.read, self.scan = sink, read, scan


FORMATS = {
    "parquet": Format("PARQUET", "parquet", pl.LazyFrame.sink_parquet, pl.read_parquet, pl.scan_parquet),
    "ipc": Format("IPC", "arrow", pl.LazyFrame.sink_ipc, pl.read_ipc, pl.scan_ipc),
    # Text formats carry no types: the reader is given the schema.
    "csv": Format("CSV", "csv", pl.LazyFrame.sink_csv, pl.read_csv, pl.scan_csv),
    "ndjson": Format("NDJSON", "ndjson", pl.LazyFrame.sink_ndjson, pl.read_ndjson, pl.scan_ndjson),
}


def typed(fmt, original):
    """The reader options that give `original`'s types back."""
    return {"schema": original.schema} if fmt.name in ("CSV", "NDJSON") else {}


def client(proto, service):
    channel = grpc.insecure_channel(service.address)
    return proto.grpc.AnonymousResultsStub(channel), channel


def write_partitions(fmt, original, sink):
    """The worker: one file per partition, written by Polars with the sink's own storage_options."""
    options = dict(sink.storage_options)
    size = original.height // PARTITIONS
    written = []
    for i in range(PARTITIONS):
        part = original.slice(i * size, size if i < PARTITIONS - 1 else None)
        path = f"part-{i}.{fmt.extension}"
        fmt.sink(part.lazy(), sink.uri + path, storage_options=options or None)
        written.append((path, part.height))
    return written


def allocate(proto, stub, query_id, fmt):
    file_type = getattr(proto.pb, f"FILE_TYPE_{fmt.name}")
    return stub.Allocate(proto.pb.AllocateRequest(query_id=query_id, file_type=file_type))


def resolve_all(proto, stub, result_id):
    answer = stub.Resolve(proto.pb.ResolveRequest(result_id=result_id))
    assert answer.status.state == proto.pb.RESULT_STATE_COMMITTED, answer.status
    assert not answer.next_page_token
    return answer


@pytest.mark.parametrize("listing", ["listed", "discovered"])
@pytest.mark.parametrize("kind", FORMATS)
def test_polars_writes_a_result_and_reads_it_back(proto, store, start, kind, listing):
    fmt, original = FORMATS[kind], frame()
    service = start(store.section)
    stub, channel = client(proto, service)
    with channel:
        allocated = allocate(proto, stub, f"query-{kind}-{listing}", fmt)
        sink = allocated.sink
        if store.kind == "local":
            assert sink.uri.startswith("/") and dict(sink.storage_options) == {}
        else:
            assert sink.uri.startswith("s3://") and "aws_access_key_id" in sink.storage_options
        written = write_partitions(fmt, original, sink)

        files = []
        if listing == "listed":
            files = [proto.pb.ResultFile(path=path, row_count=rows) for path, rows in written]
        committed = stub.Commit(
            proto.pb.CommitRequest(result_id=allocated.result_id, commit_token=allocated.commit_token, files=files)
        )
        assert committed.status.state == proto.pb.RESULT_STATE_COMMITTED
        assert committed.status.file_count == PARTITIONS

        answer = resolve_all(proto, stub, allocated.result_id)
    assert answer.file_type == getattr(proto.pb, f"FILE_TYPE_{fmt.name}")
    assert [loc.path for loc in answer.locations] == [path for path, _ in written]
    urls = [loc.url for loc in answer.locations]
    if store.kind == "local":
        assert all(url.startswith(sink.uri) for url in urls)
    else:
        assert all(url.startswith("http://") and "X-Amz-Signature=" in url for url in urls), urls
    if listing == "listed":
        assert answer.status.total_rows == original.height

    # The client: each location on its own, then all of them in one scan, exactly as Resolve gave them.
    options = typed(fmt, original)
    parts = [fmt.read(url, **options) for url in urls]
    assert_frame_equal(pl.concat(parts), original)
    assert_frame_equal(fmt.scan(urls, **options).collect(), original)


def test_write_parquet_of_a_whole_frame_commits_and_resolves(proto, store, start):
    """`DataFrame.write_parquet` (not a lazy sink) into the sink, one file, committed in discover mode."""
    original = frame(1_000)
    service = start(store.section)
    stub, channel = client(proto, service)
    with channel:
        allocated = allocate(proto, stub, "query-write-parquet", FORMATS["parquet"])
        options = dict(allocated.sink.storage_options)
        original.write_parquet(allocated.sink.uri + "result.parquet", storage_options=options or None)
        stub.Commit(proto.pb.CommitRequest(result_id=allocated.result_id, commit_token=allocated.commit_token))
        answer = resolve_all(proto, stub, allocated.result_id)
    (location,) = answer.locations
    assert location.path == "result.parquet"
    assert_frame_equal(pl.read_parquet(location.url), original)


def test_polars_reads_presigned_urls_that_are_signature_checked(proto, start, s3s_fs):
    """Against s3s-fs, which checks every signature: Polars reads the presigned GET URLs directly, while a HEAD
    on the same URL is refused (S3 signs the method), so a reader that needed a HEAD first would fail.

    s3s-fs answers 500 to a suffix-range GET longer than the object, and Polars reads a parquet footer with one,
    so each partition here is over 1 MiB."""
    from conftest import s3_section

    endpoint, root = s3s_fs
    (root / "e2e").mkdir()  # an s3s-fs bucket is a folder
    original = frame(330_000).with_columns(pl.col("id").hash().alias("noise"))
    service = start(s3_section("e2e", endpoint))
    stub, channel = client(proto, service)
    with channel:
        fmt = FORMATS["parquet"]
        allocated = allocate(proto, stub, "query-signed", fmt)
        written = write_partitions(fmt, original, allocated.sink)
        stub.Commit(proto.pb.CommitRequest(result_id=allocated.result_id, commit_token=allocated.commit_token))
        answer = resolve_all(proto, stub, allocated.result_id)
    assert [loc.path for loc in answer.locations] == [path for path, _ in written]
    assert all(loc.size_bytes > 1 << 20 for loc in answer.locations), [loc.size_bytes for loc in answer.locations]
    urls = [loc.url for loc in answer.locations]

    assert_frame_equal(pl.concat([pl.read_parquet(url) for url in urls]), original)
    assert_frame_equal(pl.scan_parquet(urls).collect(), original)

    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(urls[0], method="HEAD"), timeout=10)
    assert refused.value.code == 403
    # The same URL with one hex digit of its signature changed.
    tampered = re.sub(r"X-Amz-Signature=(.)", lambda m: "X-Amz-Signature=" + ("1" if m[1] == "0" else "0"), urls[0])
    with pytest.raises(urllib.error.HTTPError) as forged:
        urllib.request.urlopen(tampered, timeout=10)
    assert forged.value.code == 403
