#!/usr/bin/env bash
# Every benchmark in one run, then bench/RESULTS.md. Installs what it needs like scripts/test.sh.
# Each benchmark starts its own FerretDB (or uses MONGODB_URI) and its own gunicorn.
#   scripts/bench.sh        # everything; ingestion at 10,000 and 100,000 records (about 19 min on 2 cores)
#   INGEST_SIZES="10000 100000 1000000" scripts/bench.sh   # adds 1,000,000 records: about 5 min more
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# BENCH_PYTHON: an existing environment with the project's packages (skips the bootstrap).
if [ -z "${BENCH_PYTHON:-}" ]; then scripts/bootstrap.sh; fi
export FERRETDB_BIN="${FERRETDB_BIN:-$root/var/bin/ferretdb}"
py="${BENCH_PYTHON:-.venv/bin/python}"
rm -f var/bench/*.json
started=$(date +%s)
$py -m bench.ingestion ${INGEST_SIZES:-10000 100000}
$py -m bench.profile_ingestion
$py -m bench.reads
$py -m bench.profile_reads --repeat 2
$py -m bench.scheduler
$py -m bench.flood --gateways ${FLOOD_GATEWAYS:-200} --records 100 --seconds 30 --budgets 1 2 8
$py -m bench.gateway
$py -m bench.report --elapsed-s $(( $(date +%s) - started )) --command "scripts/bench.sh${INGEST_SIZES:+ (INGEST_SIZES=$INGEST_SIZES)}"
echo "==> bench/RESULTS.md written" >&2
