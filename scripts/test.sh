#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then runs pytest.
# The tests start their own FerretDB (or use MONGODB_URI), private D-Bus and FCM emulator.
# The browser tests need Chromium, installed here from Debian's packages (COMPANION_BROWSER_TESTS=0 skips it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh dev
if [ "${COMPANION_BROWSER_TESTS:-1}" = 1 ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing chromium from Debian's packages (for the browser tests)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || echo "chromium unavailable: browser tests will fail" >&2
  else
    echo "missing: chromium (install it with your package manager); browser tests will fail" >&2
  fi
fi
# The FHIR export test builds HAPI FHIR's validator with Maven (Java); the accessibility test fetches
# axe-core with npm. Both are fetched once and cached under var/.
missing=()
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing ${missing[*]} from Debian's packages (for the FHIR validation and accessibility tests)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || echo "could not install ${missing[*]}: the FHIR validation or accessibility test will fail" >&2
  else
    echo "missing: ${missing[*]} (install with your package manager); the FHIR validation or accessibility test will fail" >&2
  fi
fi
export FERRETDB_BIN="$root/var/bin/ferretdb"
.venv/bin/ruff check companion device_gateway tests bench
# Two pytest processes (pytest-xdist), each with its own FerretDB, push emulator and databases, a test module kept
# whole in one of them: on 2 cores a test waits on the database or a child process much of its time, and the other
# process uses it. COMPANION_TEST_WORKERS=0 runs in this one process (as a targeted `pytest <file>` does).
# The 25 slowest tests are listed at the end, to keep the run under its 20 minutes on 2 shared cores.
exec .venv/bin/pytest -n "${COMPANION_TEST_WORKERS:-2}" --dist loadfile --durations=25 "$@"
