#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then runs pytest.
# The tests start their own FerretDB (or use MONGODB_URI), private D-Bus and FCM emulator.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh
export FERRETDB_BIN="$root/var/bin/ferretdb"
.venv/bin/ruff check companion device_gateway tests bench
exec .venv/bin/pytest "$@"
