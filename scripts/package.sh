#!/usr/bin/env bash
# Builds the Debian package of seqd (seqd, seqctl, both systemd units, the
# environment file, the seqd user) into target/debian/, and prints its
# path. Installs cargo-deb when it is missing.
#
# Usage: scripts/package.sh [--dev]
#   --dev: from the debug build (what the tests use: no release build).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb" >&2
  cargo install --locked --quiet cargo-deb >&2
fi
if [ "${1:-}" = --dev ]; then
  # The tests' own build (scripts/test.sh): nothing is rebuilt under the
  # tests that run these binaries.
  profile=dev
  cargo build --workspace --all-features --bins >&2
else
  profile=release
  cargo build --release -p seqd -p seqd-client --features seqd-client/cli >&2
fi
# Stripped: the release profile keeps debug info for profiling.
cargo deb -p seqd --no-build --profile "$profile" --strip 2>&1 | tail -n 1
