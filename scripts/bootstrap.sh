#!/usr/bin/env bash
# Everything the project needs on a fresh machine: a virtualenv with the pinned packages,
# the FerretDB server binary, and dbus-daemon (for the fake BlueZ bus). Idempotent and quiet when done.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing Python packages (pinned in pyproject.toml)" >&2
  .venv/bin/pip install --quiet --upgrade pip >&2
  .venv/bin/pip install --quiet -e ".[dev]" >&2
  rm -f .venv/.installed-*
  touch "$stamp"
fi
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing $* from Debian's packages" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    echo "missing: $* (install it with your package manager)" >&2; return 1
  fi
}
command -v dbus-daemon >/dev/null || apt_install dbus
export FERRETDB_BIN="$(scripts/ensure-ferretdb.sh)"
if [ "${COMPANION_BROWSER_TESTS:-1}" = 1 ] && ! command -v chromium >/dev/null; then
  apt_install chromium || echo "chromium unavailable: browser tests will fail" >&2
fi
