#!/usr/bin/env bash
# Builds FerretDB v1.24.2 (the MongoDB-wire server used for development and tests) once,
# into var/bin/ferretdb. The module as served by the Go proxy lacks the generated
# build/version/version.txt, so `go install ...@v1.24.2` builds a binary that panics at start;
# we copy the module source, add that file and build from the copy.
#
# The copy also gets scripts/ferretdb-v1.24.2-sqlite-pushdown.patch (see the patch and the README):
# upstream's SQLite backend used no index at all. It queried _id with an expression the _id index does
# not match, so every _id lookup, update and delete scanned the whole table (41 ms per update_one at
# 20,000 documents, 158 ms at 80,000; 0.9 ms flat with the patch), and it pushed down nothing but a
# filter made of _id alone. The patch also pushes down a filter's _id condition ({_id: v}, {_id: {$in}})
# and its equalities of top-level fields to strings, written so that SQLite uses the collection's
# indexes; FerretDB still applies the whole filter afterwards. The build is stamped
# v1.24.2-companion.2 so that a binary without the current patch is rebuilt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${FERRETDB_BIN:-$root/var/bin/ferretdb}"
version="v1.24.2"
stamp="${version}-companion.2"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "version: ${stamp}$"; then
  echo "$bin"; exit 0
fi
command -v go >/dev/null || { echo "Go is required to build FerretDB (https://go.dev)" >&2; exit 1; }
echo "building FerretDB ${version} (once, about a minute)..." >&2
src="$(go mod download -json "github.com/FerretDB/FerretDB@${version}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
(cd "$work" && git apply -p1 "$root/scripts/ferretdb-v1.24.2-sqlite-pushdown.patch")
echo "${stamp}" > "$work/build/version/version.txt"
mkdir -p "$(dirname "$bin")"
(cd "$work" && CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/ferretdb) >&2
echo "$bin"
