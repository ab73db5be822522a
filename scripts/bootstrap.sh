#!/usr/bin/env bash
# What the project needs on a fresh machine: a virtualenv with the locked packages, the FerretDB server
# binary, and dbus-daemon (for the fake BlueZ bus). Idempotent and quiet when done.
#   scripts/bootstrap.sh        # development: requirements-dev.txt (the tests' and tools' packages too)
#   scripts/bootstrap.sh run    # `make run`: requirements.txt, only what running needs
# Packages come from the lock files, every one pinned with its hashes (pip --require-hashes); the browser
# tests' Chromium is installed by scripts/test.sh, not here. Regenerate the locks after changing
# pyproject.toml: see "Dependencies and the lock files" in the README.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mode="${1:-dev}"
case "$mode" in
  run) lock=requirements.txt ;;
  dev) lock=requirements-dev.txt ;;
  *) echo "usage: scripts/bootstrap.sh [run|dev]" >&2; exit 2 ;;
esac
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  "$python" -m venv .venv
fi
stamp_of() { echo ".venv/.installed-$(cat "$1" pyproject.toml | sha256sum | cut -c1-16)"; }
# The development lock holds the runtime one (same versions: tests/deploy/test_deployment_files.py checks), so a
# development install also satisfies `run`.
if [ ! -f "$(stamp_of "$lock")" ] && { [ "$mode" = dev ] || [ ! -f "$(stamp_of requirements-dev.txt)" ]; }; then
  echo "==> installing Python packages ($lock, pinned with hashes)" >&2
  .venv/bin/pip install --quiet --upgrade pip >&2
  .venv/bin/pip install --quiet --require-hashes -r "$lock" >&2
  .venv/bin/pip install --quiet --no-deps -e . >&2
  rm -f .venv/.installed-*
  touch "$(stamp_of "$lock")"
fi
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing $* from Debian's packages" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "missing: $* (install it with your package manager)" >&2; return 1
  fi
}
command -v dbus-daemon >/dev/null || apt_install dbus
export FERRETDB_BIN="$(scripts/ensure-ferretdb.sh)"
