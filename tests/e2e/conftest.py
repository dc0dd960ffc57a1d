"""The end-to-end suite's parts: Python stubs generated from the contract's proto (in the client crate) at test
time, the service binary run as a process on 127.0.0.1:0, and the stores it runs over (a temporary folder, moto,
s3s-fs, Azurite, the GCS test server).

Run by scripts/test.sh after the Rust tests, with the binary they built (ANONYMOUS_RESULTS_BIN) and the servers
it started (ANONYMOUS_RESULTS_TEST_MOTO_URL, _AZURITE_URL, _GCS_URL). Under CI=true a missing server or binary
fails the test; elsewhere it skips, saying what to install.
"""

import base64
import email.utils
import hashlib
import hmac
import importlib
import json
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
    """The generated modules: `proto.pb` (messages) and `proto.grpc` (stubs), from the client crate's proto/ as it is now."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    include = Path(importlib.import_module("grpc_tools").__file__).parent / "_proto"
    source = "anonymous_results/v1/anonymous_results.proto"
    code = protoc.main(
        ["protoc", f"-I{REPO / 'crates/anonymous-results-client/proto'}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", source]
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


# Azurite's account and its well-known key (public: every Azurite has them).
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# The test service account of the GCS test server (it exists nowhere else).
GCS_SERVICE_ACCOUNT = REPO / "tests" / "fixtures" / "gcs" / "service-account.json"


def started_server(variable, command, marker):
    """The server the test command started (its URL in `variable`), else `command` started for the session,
    its URL read from the line where it logs `marker`. Yields the URL."""
    url = os.environ.get(variable)
    if url:
        yield url
        return
    if not Path(command[0]).is_file() and shutil.which(command[0]) is None:
        missing(f"{command[0]} is not installed (scripts/test.sh installs it)")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if marker in line:
            url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
            break
    else:
        raise RuntimeError(f"{command[0]} did not start")
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    yield url
    process.terminate()


@pytest.fixture(scope="session")
def azurite_url(tmp_path_factory):
    tool = REPO / ".test-env" / "node" / "node_modules" / ".bin" / "azurite-blob"
    command = [str(tool), "--blobHost", "127.0.0.1", "--blobPort", "0", "--disableTelemetry", "--silent",
               "--inMemoryPersistence"]
    yield from started_server("ANONYMOUS_RESULTS_TEST_AZURITE_URL", command, "successfully listens on")


@pytest.fixture(scope="session")
def gcs_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("gcs")
    command = [sys.executable, str(REPO / "tests" / "servers" / "gcs.py"), "--host", "127.0.0.1", "--port", "0",
               "--root", str(root), "--public-key", str(REPO / "tests" / "fixtures" / "gcs" / "service-account.pub.pem")]
    yield from started_server("ANONYMOUS_RESULTS_TEST_GCS_URL", command, "listening on")


def azure_store(azurite_url):
    """A fresh container on Azurite (created with a Shared Key request, as Azure's tools do)."""
    container = f"e2e-{uuid.uuid4().hex[:12]}"
    endpoint = f"{azurite_url}/{AZURE_ACCOUNT}"
    date = email.utils.formatdate(usegmt=True)
    to_sign = (f"PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:2023-11-03\n"
               f"/{AZURE_ACCOUNT}/{AZURE_ACCOUNT}/{container}\nrestype:container")
    signature = base64.b64encode(hmac.new(base64.b64decode(AZURE_KEY), to_sign.encode(), hashlib.sha256).digest())
    request = urllib.request.Request(f"{endpoint}/{container}?restype=container", method="PUT", headers={
        "x-ms-date": date, "x-ms-version": "2023-11-03", "Content-Length": "0",
        "Authorization": f"SharedKey {AZURE_ACCOUNT}:{signature.decode()}"})
    urllib.request.urlopen(request, timeout=10)
    section = (
        "[scheduler]\n"
        f'anonymous_result_location.abs.url = "az://{container}/results"\n'
        f'anonymous_result_location.abs.azure_storage_account_name = "{AZURE_ACCOUNT}"\n'
        f'anonymous_result_location.abs.azure_storage_account_key = "{AZURE_KEY}"\n'
        f'anonymous_result_location.abs.azure_endpoint = "{endpoint}"\n'
    )
    return Store("azure", section, endpoint)


def gcs_token():
    """A bearer token as a Google client makes one: a JWT the service account signs itself."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    account = json.loads(GCS_SERVICE_ACCOUNT.read_text())
    encode = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    now = int(time.time())
    claims = {"iss": account["client_email"], "sub": account["client_email"], "iat": now, "exp": now + 3600,
              "scope": "https://www.googleapis.com/auth/cloud-platform"}
    signed = f"{encode({'alg': 'RS256', 'typ': 'JWT', 'kid': account['private_key_id']})}.{encode(claims)}"
    key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
    signature = key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def gcs_store(gcs_url):
    """A fresh bucket on the GCS test server (the JSON API's insert)."""
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    request = urllib.request.Request(f"{gcs_url}/storage/v1/b?project=e2e", method="POST",
                                     data=json.dumps({"name": bucket}).encode(),
                                     headers={"Authorization": f"Bearer {gcs_token()}",
                                              "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10)
    section = (
        "[scheduler]\n"
        f'anonymous_result_location.gcs.url = "gs://{bucket}/results"\n'
        f'anonymous_result_location.gcs.google_service_account_path = "{GCS_SERVICE_ACCOUNT}"\n'
        f'anonymous_result_location.gcs.google_base_url = "{gcs_url}"\n'
    )
    return Store("gcs", section, gcs_url)


@pytest.fixture(params=["azure", "gcs"])
def cloud(request):
    """Each cloud in turn: a fresh container on Azurite, then a fresh bucket on the GCS test server."""
    if request.param == "azure":
        return azure_store(request.getfixturevalue("azurite_url"))
    return gcs_store(request.getfixturevalue("gcs_url"))
