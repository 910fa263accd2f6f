#!/usr/bin/env bash
# Runs the whole test suite. Installs redis-server, socat, openssl,
# python3, golang-go, systemd (for `systemd-analyze verify` of the units),
# prometheus (for `promtool`, which checks the alert rules), lintian
# (for the Debian package), systemd-container and debootstrap (to boot
# the package under systemd in a container) with apt-get, and cargo-deb
# with cargo, when they are missing (the integration tests start real
# redis-server processes on free loopback ports, never 6379), builds the
# binaries the tests start (seqd, seqctl), then runs every test: the Go
# and Python clients' first, then the Rust suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v socat >/dev/null 2>&1 || need+=(socat)
# openssl generates the CA and certificates of the TLS tests.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The Python client's tests (standard library only, Python >= 3.9), and
# the Go client's (standard library only, Go as Debian ships it).
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v go >/dev/null 2>&1 || need+=(golang-go)
# promtool checks and unit-tests the alert rules in monitoring/; only the
# package itself (no node exporter and friends from its recommends).
lean=()
command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
# lintian checks the Debian package the package test builds.
command -v lintian >/dev/null 2>&1 || lean+=(lintian)
# The package under a real systemd: a container booted by systemd-nspawn
# from a root debootstrap makes.
command -v systemd-nspawn >/dev/null 2>&1 || lean+=(systemd-container)
command -v debootstrap >/dev/null 2>&1 || lean+=(debootstrap)
if ((${#need[@]} + ${#lean[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need[*]} ${lean[*]} with apt-get"
  $sudo apt-get update -qq
  if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if ((${#lean[@]})); then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
  fi
fi

cargo build --workspace --all-features --bins
# cargo-deb builds the Debian package (scripts/package.sh) in its test.
cargo deb --version >/dev/null 2>&1 || cargo install --locked --quiet cargo-deb
# The Go client: golden vectors, then against live seqd processes (local
# and Redis mode) built above. Standard library only: no module proxy.
export GOPROXY=off GOFLAGS=-mod=mod
(cd clients/go && go build -o ../../target/seqd-go-example ./cmd/seqd-example && go test -count=1 ./...)
# The Python client, the same way; its last test has Python, seqctl, the
# Go example and socat draw from one counter in turn. The package is typed
# (py.typed): mypy --strict checks it, installed from PyPI when missing.
# flit_core, its build backend, lets a test build the wheel and check that
# building leaves the source tree as it was.
if ! python3 -m mypy --version >/dev/null 2>&1 || ! python3 -c 'import flit_core' >/dev/null 2>&1; then
  python3 -m pip install --quiet mypy flit_core >/dev/null 2>&1 ||
    python3 -m pip install --quiet --break-system-packages mypy flit_core >/dev/null 2>&1 ||
    echo "warning: mypy or flit_core could not be installed from PyPI; the checks that need them are skipped"
fi
if python3 -m mypy --version >/dev/null 2>&1; then
  (cd clients/python && python3 -m mypy --strict --cache-dir=/dev/null seqd)
fi
(cd clients/python && SEQD_GO_EXAMPLE="$PWD/../../target/seqd-go-example" python3 -m unittest discover -s tests)
# The package installed and run under systemd as PID 1 (says so when
# this machine cannot boot a container).
tests/container/run.sh
if cargo nextest --version >/dev/null 2>&1; then
  # Doc tests first: nextest does not run them, and its summary line
  # should close the output.
  cargo test --workspace --all-features --doc
  cargo nextest run --workspace --all-features --no-fail-fast
else
  cargo test --workspace --all-features
fi
