#!/usr/bin/env bash
# The Debian package under a real systemd: boots a Debian container with
# systemd as PID 1 (systemd-nspawn), installs the package built from the
# tests' debug build, and runs check.sh inside as an operator would
# (socket activation, reload, restart, kill -9, the watchdog, the
# sandbox, a restart and an upgrade under load, Redis mode).
#
# The container's root is made once by debootstrap from Debian's
# packages and kept under target/container/ (about 250 MB, 1-2 min);
# every boot runs on a throwaway overlay of it.
#
# When this machine cannot boot a container, it says why and exits 0, or
# 1 under CI (CI=true), where the check must run.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

cannot() {
  echo "container test: NOT RUN: $*" >&2
  if [ "${CI:-}" = true ]; then exit 1; fi
  exit 0
}

[ "$(id -u)" -eq 0 ] || cannot "booting a container needs root"
command -v systemd-nspawn >/dev/null || cannot "systemd-nspawn is missing (apt-get install systemd-container)"
command -v debootstrap >/dev/null || cannot "debootstrap is missing (apt-get install debootstrap)"

packages=systemd,systemd-sysv,dbus,socat,redis-server,procps
cache=target/container
root="$cache/root-$(echo "$packages" | md5sum | cut -c1-8)"
if [ ! -x "$root/usr/bin/socat" ]; then
  mkdir -p "$cache"
  rm -rf "$root.new"
  echo "container test: debootstrap of a bookworm root into $root (once)" >&2
  if ! debootstrap --variant=minbase --include="$packages" bookworm "$root.new" \
      http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1; then
    tail -n 20 "$cache/debootstrap.log" >&2
    cannot "debootstrap failed (see $cache/debootstrap.log)"
  fi
  mv "$root.new" "$root"
fi

deb=$(scripts/package.sh --dev | tail -n 1)
[ -f "$deb" ] || { echo "container test: no package built" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cp "$deb" "$out/seqd.deb"
echo "container test: booting $root with $(basename "$deb")" >&2
status=0
timeout 600 systemd-nspawn --quiet --register=no --keep-unit --volatile=overlay \
  --private-network -D "$root" \
  --bind-ro="$repo/tests/container:/check" --bind="$out:/out" \
  --bind-ro="$repo/tests/container/seqd-check.service:/etc/systemd/system/seqd-check.service" \
  -b systemd.wants=seqd-check.service >"$out/console" 2>&1 || status=$?
cat "$out/log" 2>/dev/null || true
result=$(cat "$out/result" 2>/dev/null || echo "no result (the container's console follows)")
case "$result" in
  PASS) echo "container test: passed" ;;
  *)
    [ -f "$out/log" ] || tail -n 60 "$out/console"
    if [ "$status" -ne 0 ] && [ ! -f "$out/result" ]; then
      grep -qi "failed to\|permission denied\|not supported" "$out/console" &&
        cannot "systemd-nspawn could not boot the container (exit $status): $(grep -i 'failed to\|permission denied\|not supported' "$out/console" | head -n 1)"
    fi
    echo "container test: $result" >&2
    exit 1
    ;;
esac
