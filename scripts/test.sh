#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need first: a Python virtualenv under .test-env/
# (git-ignored) with the outside clients of scripts/test-requirements.txt. Safe to run again: installs are
# skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.test-env/venv
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
export PATH="$PWD/$venv/bin:$PATH"
grpcurl --version

if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doc tests: run them first, so that the test summary is the last thing printed.
  cargo test --doc --quiet
  cargo nextest run --workspace --all-targets --no-fail-fast
else
  cargo test --workspace --all-targets --no-fail-fast
fi
