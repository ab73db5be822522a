#!/usr/bin/env bash
# Builds FerretDB v1.24.2 (the MongoDB-wire server used for development and tests) once,
# into var/bin/ferretdb. The module as served by the Go proxy lacks the generated
# build/version/version.txt, so `go install ...@v1.24.2` builds a binary that panics at start;
# we copy the module source, add that file and build from the copy.
#
# The copy also gets the project's patches, applied in this order (each file says why; see the README):
# - scripts/ferretdb-v1.24.2-sqlite-pushdown.patch: upstream's SQLite backend used no index at all. It
#   queried _id with an expression the _id index does not match, so every _id lookup, update and delete
#   scanned the whole table (41 ms per update_one at 20,000 documents, 158 ms at 80,000; 0.9 ms flat with
#   the patch), and it pushed down nothing but a filter made of _id alone. The patch also pushes down a
#   filter's _id condition ({_id: v}, {_id: {$in}}) and its equalities of top-level fields to strings,
#   written so that SQLite uses the collection's indexes; FerretDB still applies the whole filter afterwards.
# - scripts/ferretdb-v1.24.2-update-statement-close.patch: an update command kept every statement's query
#   iterator (a pooled SQLite connection) open until it returned, so about 100 statements that matched
#   documents (an unordered bulk_write of 150 upserting replaces) exhausted the pool and hung every later
#   command on that database. Each statement now closes its iterator.
# - scripts/ferretdb-v1.24.2-write-atomicity.patch: update, findAndModify and delete read, changed in Go
#   and wrote back with nothing in between, so concurrent writers of one document undid each other
#   (lost $inc and $set, several winners of one conditional claim). Each statement now holds a lock of
#   its collection across its read-modify-write, making single-document writes atomic as on MongoDB
#   (tests/proof/test_single_document_atomicity.py).
# - scripts/ferretdb-v1.24.2-sorted-page.patch: a sorted query decoded and sorted every matching document in
#   Go to return one page (a clinician's panel of 50 out of 2,000 rows read all 2,000). When the filter is one
#   SQLite applies exactly (none, or on _id alone), SQLite now orders and limits the page itself, as MongoDB
#   orders the types it can (null, numbers, strings, ObjectIDs, booleans, dates), and falls back to the old
#   way when a sort field holds anything else (tests/proof/test_sorted_page.py). It also reads a page of the
#   index a query names by hint, and answers a count with a hint, from that index alone (the panel's lines).
# - scripts/ferretdb-v1.24.2-in-set.patch: $in compared each value with every element of its list in turn
#   (a find by 10,000 ids: 50 million comparisons); a long list of strings and ObjectIDs is now a set, and an
#   $in of strings on a top-level field is pushed down to SQLite as an equality is (served by its index).
# - scripts/ferretdb-v1.24.2-date-range.patch: a range between two dates on a top-level field is pushed down
#   to SQLite (served by its index): the adherence job's windowed reads no longer grow with the history.
# - scripts/ferretdb-v1.24.2-sjson-decode.patch: every document read was decoded through a json.Decoder per
#   value and its schema by reflection each time; now one json.Unmarshal each, and schemas kept by text.
# - scripts/ferretdb-v1.24.2-update-batch.patch: an update statement wrote each document it changed back in a
#   transaction of its own (update_many of 500: 220-350 ms); now 500 at a time in one transaction (70-100 ms).
# - scripts/ferretdb-v1.24.2-id-prefix-count.patch: a count of the _ids that start with "<team>:" (the panel's
#   total) is counted from the _id index; by team_id, SQLite read every entry of the team (13 -> 0.7 ms, 2,000);
#   so is a count of _ids in a list of such strings (the panel's check that a page's patients are enrolled).
# - scripts/ferretdb-v1.24.2-resource-track.patch: every iterator (each document's included) was tracked with a
#   stack trace captured for a pprof profile, about a tenth of the server's CPU on reads; release builds now
#   keep only the finalizer that reports a leak.
# The build is stamped v1.24.2-companion.13 so that a binary without the current patches is rebuilt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${FERRETDB_BIN:-$root/var/bin/ferretdb}"
version="v1.24.2"
stamp="${version}-companion.13"
# (Read whole, then matched: with pipefail, grep -q quitting early could make the pipe fail on SIGPIPE and
# rebuild a current binary, or fail on a machine without Go.)
if [ -x "$bin" ] && grep -q "version: ${stamp}$" <<<"$("$bin" --version 2>/dev/null || true)"; then
  echo "$bin"; exit 0
fi
command -v go >/dev/null || { echo "Go is required to build FerretDB (https://go.dev)" >&2; exit 1; }
echo "building FerretDB ${version} (once, about a minute)..." >&2
src="$(go mod download -json "github.com/FerretDB/FerretDB@${version}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
for patch in sqlite-pushdown update-statement-close write-atomicity sorted-page in-set date-range sjson-decode update-batch id-prefix-count resource-track; do
  (cd "$work" && git apply -p1 "$root/scripts/ferretdb-${version}-${patch}.patch")
done
echo "${stamp}" > "$work/build/version/version.txt"
mkdir -p "$(dirname "$bin")"
(cd "$work" && CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/ferretdb) >&2
echo "$bin"
