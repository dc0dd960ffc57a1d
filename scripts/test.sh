#!/usr/bin/env bash
# Runs every test of the project. First installs what the tests need under .test-env/ (git-ignored):
#   - a Python virtualenv with the clients and servers of scripts/test-requirements.txt (grpcurl, moto, Polars,
#     grpcio-tools, pytest);
#   - s3s-fs, an S3 server that checks signatures, built with cargo.
# Then starts one moto server on a free loopback port for the whole run (tests start their own s3s-fs), and
# runs the tests: the Rust ones, then the end-to-end suite (pytest, tests/e2e). Safe to run again: installs
# are skipped when already done. Exits non-zero if any test failed.
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
export PATH="$PWD/$venv/bin:$PWD/$env_dir/cargo/bin:$PATH"

# One moto server for every test (each test makes its own bucket).
moto_log=$env_dir/moto.log
moto_server -H 127.0.0.1 -p 0 >"$moto_log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  moto_url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$moto_log" | head -n 1 || true)
  [ -n "$moto_url" ] && break
  kill -0 "$moto_pid" 2>/dev/null || { cat "$moto_log"; echo "test: moto did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$moto_url" ] || { cat "$moto_log"; echo "test: moto did not start within 60 s" >&2; exit 1; }
export ANONYMOUS_RESULTS_TEST_MOTO_URL=$moto_url
echo "test: grpcurl $(grpcurl --version 2>&1 | tail -n 1), moto at $moto_url, $(s3s-fs --version)"

status=0
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doc tests: run them first, so that the test summary is the last thing printed.
  cargo test --doc --quiet
  # The benchmarks at their smoke size, so that they cannot rot (the full runs: BENCHMARKS.md).
  cargo test --quiet --benches
  cargo nextest run --workspace --all-targets --no-fail-fast || status=$?
else
  cargo test --workspace --all-targets --no-fail-fast || status=$?  # the benchmarks at their smoke size too
fi

# The end-to-end suite: a real Polars as worker and client, Python stubs generated from proto/ at test time,
# against the binary the Rust tests built.
cargo build --quiet --bin anonymous-results
export ANONYMOUS_RESULTS_BIN="$PWD/${CARGO_TARGET_DIR:-target}/debug/anonymous-results"
python -m pytest -q -p no:cacheprovider tests/e2e || status=$?
exit "$status"
