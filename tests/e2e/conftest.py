"""The end-to-end suite's parts: Python stubs generated from proto/ at test time, the service binary run as a
process on 127.0.0.1:0, and the stores it runs over (a temporary folder, moto, s3s-fs).

Run by scripts/test.sh after the Rust tests, with the binary they built (ANONYMOUS_RESULTS_BIN) and the moto
server it started (ANONYMOUS_RESULTS_TEST_MOTO_URL). Under CI=true a missing server or binary fails the test;
elsewhere it skips, saying what to install.
"""

import importlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ACCESS_KEY = "AKIDANONYMOUSRESULTS"
SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def missing(what):
    """Fails under CI=true, where everything must be there; skips elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: nothing may be skipped); run scripts/test.sh")
    pytest.skip(what)


@pytest.fixture(scope="session")
def proto(tmp_path_factory):
    """The generated modules: `proto.pb` (messages) and `proto.grpc` (stubs), from proto/ as it is now."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    include = Path(importlib.import_module("grpc_tools").__file__).parent / "_proto"
    source = "anonymous_results/v1/anonymous_results.proto"
    code = protoc.main(
        ["protoc", f"-I{REPO / 'proto'}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", source]
    )
    assert code == 0, f"grpc_tools.protoc failed on {source}"
    sys.path.insert(0, str(out))

    class Generated:
        pb = importlib.import_module("anonymous_results.v1.anonymous_results_pb2")
        grpc = importlib.import_module("anonymous_results.v1.anonymous_results_pb2_grpc")

    return Generated


def binary():
    path = Path(os.environ.get("ANONYMOUS_RESULTS_BIN", REPO / "target" / "debug" / "anonymous-results"))
    if not path.is_file():
        missing(f"the service binary {path} is not built (cargo build)")
    return path


class Service:
    """`anonymous-results serve` on 127.0.0.1:0 with a config file; its address read from its log."""

    def __init__(self, config_text, workdir):
        config = workdir / "config.toml"
        config.write_text(config_text)
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG" and not k.startswith("PC_CUBLET__")}
        self.process = subprocess.Popen(
            [binary(), "serve", "--config", config, "--listen", "127.0.0.1:0"],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        found = threading.Event()

        def read():
            for line in self.process.stderr:
                line = ANSI.sub("", line)
                self.log.append(line)
                match = re.search(r"address=(\S+)", line)
                if "serving" in line and match and not found.is_set():
                    self.address = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(30):
            self.stop()
            raise RuntimeError("the service did not start; its log:\n" + "".join(self.log))

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Store:
    """Where a test's results live: the `[scheduler]` section naming it, and how to make it."""

    def __init__(self, kind, section, endpoint=None):
        self.kind = kind
        self.section = section
        self.endpoint = endpoint


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_section(bucket, endpoint):
    return (
        "[scheduler]\n"
        f'anonymous_results.s3.url = "s3://{bucket}/results"\n'
        f'anonymous_results.s3.aws_access_key_id = "{ACCESS_KEY}"\n'
        f'anonymous_results.s3.aws_secret_access_key = "{SECRET_KEY}"\n'
        'anonymous_results.s3.aws_region = "us-east-1"\n'
        f'anonymous_results.s3.aws_endpoint_url = "{endpoint}"\n'
    )


@pytest.fixture(scope="session")
def moto_url():
    """The moto server of the test command, else one started for this session."""
    url = os.environ.get("ANONYMOUS_RESULTS_TEST_MOTO_URL")
    if url:
        yield url
        return
    tool = shutil.which("moto_server")
    if tool is None:
        missing("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    process = subprocess.Popen([tool, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process)
    yield url
    process.terminate()


@pytest.fixture
def s3s_fs(tmp_path):
    """A fresh s3s-fs (checks SigV4 signatures and presigned URLs) over a temporary folder."""
    tool = REPO / ".test-env" / "cargo" / "bin" / "s3s-fs"
    if not tool.is_file():
        tool = shutil.which("s3s-fs")
        if tool is None:
            missing("s3s-fs is not installed (scripts/test.sh builds it)")
    root = tmp_path / "s3s-fs"
    root.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [tool, "--host", "127.0.0.1", "--port", str(port), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
         root],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process)
    yield url, root
    process.terminate()


def wait_until_up(url, process):
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"the test server for {url} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers (403 to an unsigned request)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the test server did not answer at {url} within 30 s")


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """Each backend in turn: a temporary folder, then a fresh bucket on moto."""
    if request.param == "local":
        root = tmp_path / "results"
        return Store("local", f'[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = "{root}"\n')
    endpoint = request.getfixturevalue("moto_url")
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    # moto checks no signature: a plain PUT makes the bucket.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=10)
    return Store("s3", s3_section(bucket, endpoint), endpoint)


@pytest.fixture
def start(tmp_path):
    """Starts services; stops them after the test."""
    started = []

    def run(config_text):
        service = Service(config_text, tmp_path)
        started.append(service)
        return service

    yield run
    for service in started:
        service.stop()
