#!/usr/bin/env bash
# Runs every test of the project. First installs what the tests need under .test-env/ (git-ignored):
#   - a Python virtualenv with the clients and servers of scripts/test-requirements.txt (grpcurl, moto, Polars,
#     grpcio-tools, pytest, and cryptography for the GCS test server tests/servers/gcs.py);
#   - s3s-fs, an S3 server that checks signatures, built with cargo;
#   - Azurite, Microsoft's Azure Storage emulator, and kubernetes-models (Kubernetes' schemas), with npm;
#   - checkov, in a virtualenv of its own (it pins old versions of common packages);
#   - Debian's prometheus (Prometheus and promtool) and kubernetes-client (kubectl 1.20, kustomize v2.0.3),
#     unpacked under .test-env/debs/ (not installed: no service is started, the system's kubectl is left be);
#   - strace and h2load (nghttp2-client), from the system's packages, if they are missing.
# Then starts one moto server, one Azurite and one GCS test server on free loopback ports for the whole run
# (tests that stop a server start their own, as they do s3s-fs), and runs the tests: the Rust ones, then the
# end-to-end suite (pytest, tests/e2e). Safe to run again: installs are skipped when already done. Exits
# non-zero if any test failed.
set -euo pipefail
cd "$(dirname "$0")/.."

env_dir=.test-env
venv=$env_dir/venv
requirements=scripts/test-requirements.txt
stamp=$venv/.installed
if [ ! -x "$venv/bin/python" ]; then
  echo "test: creating the virtualenv $venv"
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || ! cmp -s "$requirements" "$stamp"; then
  echo "test: installing $requirements"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
if [ ! -x "$env_dir/cargo/bin/s3s-fs" ]; then
  echo "test: building s3s-fs"
  cargo install --quiet s3s-fs@0.14.1 --locked --features binary --root "$env_dir/cargo"
fi
azurite_version=3.35.0
node_packages="azurite@$azurite_version kubernetes-models@5.1.0"
azurite=$env_dir/node/node_modules/.bin/azurite-blob
if [ ! -x "$azurite" ] || [ "$(cat "$env_dir/node/.installed" 2>/dev/null)" != "$node_packages" ]; then
  echo "test: installing $node_packages"
  mkdir -p "$env_dir/node"
  # shellcheck disable=SC2086 # one word per package
  npm install --silent --no-audit --no-fund --prefix "$env_dir/node" $node_packages
  echo "$node_packages" >"$env_dir/node/.installed"
fi
checkov_version=3.3.30
if [ "$(cat "$env_dir/checkov/.installed" 2>/dev/null)" != "$checkov_version" ]; then
  echo "test: installing checkov $checkov_version"
  python3 -m venv "$env_dir/checkov"
  "$env_dir/checkov/bin/pip" install --quiet --disable-pip-version-check "checkov==$checkov_version"
  echo "$checkov_version" >"$env_dir/checkov/.installed"
fi
sudo_if_needed=$([ "$(id -u)" = 0 ] || echo sudo)
for package in prometheus kubernetes-client; do
  if [ ! -d "$env_dir/debs/$package/usr/bin" ]; then
    echo "test: unpacking Debian's $package"
    downloads=$(mktemp -d)
    if ! (cd "$downloads" && apt-get download -qq "$package" 2>/dev/null); then
      $sudo_if_needed apt-get update -qq
      (cd "$downloads" && apt-get download -qq "$package")
    fi
    rm -rf "$env_dir/debs/$package"
    mkdir -p "$env_dir/debs/$package"
    dpkg -x "$downloads"/*.deb "$env_dir/debs/$package"
    rm -rf "$downloads"
  fi
done
# From the system's packages, if missing: strace, for the test that checks the order of the local backend's
# syncs and answers (tests/crash.rs); h2load (nghttp2-client), for the load benchmark's outside measurement.
missing_packages=()
command -v strace >/dev/null 2>&1 || missing_packages+=(strace)
command -v h2load >/dev/null 2>&1 || missing_packages+=(nghttp2-client)
if [ "${#missing_packages[@]}" -gt 0 ]; then
  echo "test: installing ${missing_packages[*]}"
  $sudo_if_needed apt-get update -qq && $sudo_if_needed apt-get install -y -qq "${missing_packages[@]}" >/dev/null
fi
export PATH="$PWD/$venv/bin:$PWD/$env_dir/cargo/bin:$PWD/$env_dir/debs/prometheus/usr/bin:$PATH"
# Debian's kubectl 1.20, beside the system's (the Kubernetes test renders with both).
export ANONYMOUS_RESULTS_TEST_OLD_KUBECTL="$PWD/$env_dir/debs/kubernetes-client/usr/bin/kubectl"
export ANONYMOUS_RESULTS_TEST_CHECKOV="$PWD/$env_dir/checkov/bin/checkov"
export ANONYMOUS_RESULTS_TEST_NODE_MODULES="$PWD/$env_dir/node/node_modules"

# One server of each kind for every test (each test makes its own bucket or container), stopped on exit.
server_pids=()
server_data=$(mktemp -d)
trap 'kill "${server_pids[@]}" 2>/dev/null || true; rm -rf "$server_data"' EXIT
# start_server NAME COMMAND...: starts COMMAND, waits for the http://127.0.0.1:PORT it logs, sets $server_url.
start_server() {
  local name=$1 log=$env_dir/$1.log
  shift
  "$@" >"$log" 2>&1 &
  server_pids+=($!)
  server_url=
  for _ in $(seq 1 600); do
    server_url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -n 1 || true)
    [ -n "$server_url" ] && return 0
    kill -0 "${server_pids[-1]}" 2>/dev/null || { cat "$log"; echo "test: $name did not start" >&2; exit 1; }
    sleep 0.1
  done
  cat "$log"
  echo "test: $name did not start within 60 s" >&2
  exit 1
}
start_server moto moto_server -H 127.0.0.1 -p 0
export ANONYMOUS_RESULTS_TEST_MOTO_URL=$server_url
start_server azurite "$azurite" --blobHost 127.0.0.1 --blobPort 0 --disableTelemetry --silent --inMemoryPersistence
export ANONYMOUS_RESULTS_TEST_AZURITE_URL=$server_url
start_server gcs python tests/servers/gcs.py --host 127.0.0.1 --port 0 --root "$server_data/gcs" \
  --public-key tests/fixtures/gcs/service-account.pub.pem
export ANONYMOUS_RESULTS_TEST_GCS_URL=$server_url
echo "test: grpcurl $(grpcurl --version 2>&1 | tail -n 1), $(s3s-fs --version), Azurite $azurite_version;" \
  "moto at $ANONYMOUS_RESULTS_TEST_MOTO_URL, Azurite at $ANONYMOUS_RESULTS_TEST_AZURITE_URL," \
  "the GCS test server at $ANONYMOUS_RESULTS_TEST_GCS_URL"

status=0
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doc tests: run them first, so that the test summary is the last thing printed.
  cargo test --workspace --doc --quiet
  # The client crate documents every public item: its docs build without a warning.
  RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps -p anonymous-results-client
  # The benchmarks at their smoke size, so that they cannot rot (the full runs: BENCHMARKS.md).
  cargo test --quiet --benches
  cargo nextest run --workspace --all-targets --no-fail-fast || status=$?
else
  cargo test --workspace --all-targets --no-fail-fast || status=$?  # the benchmarks at their smoke size too
fi

# The end-to-end suite: a real Polars as worker and client, Python stubs generated from the contract's proto
# (crates/anonymous-results-client/proto) at test time, against the binary the Rust tests built.
cargo build --quiet --bin anonymous-results
export ANONYMOUS_RESULTS_BIN="$PWD/${CARGO_TARGET_DIR:-target}/debug/anonymous-results"
python -m pytest -q -p no:cacheprovider tests/e2e || status=$?
exit "$status"
