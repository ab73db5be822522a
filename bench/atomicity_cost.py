"""What the FerretDB write-atomicity patch costs: the same writes against two FerretDB builds, one run.

scripts/ferretdb-v1.24.2-write-atomicity.patch makes each update, findAndModify and delete statement
hold a lock of its collection across its read-modify-write, so those statements run one at a time per
collection. This starts one FerretDB per build (each with its own data directory, all running
throughout, the workloads alternating between them so that other load on the machine hits each alike)
and times, with 8 client threads unless said otherwise:

- update_one by string `_id` (served by the `_id` index), each of a distinct document;
- `$inc` of one document (the old build loses most of them: the notes say how many counted);
- update_one by integer `_id`, which SQLite cannot push down: each reads and decodes the whole
  collection in Go, the case where serialising statements costs most (the old build runs two at once
  on two cores);
- one insert_many of small documents, one thread (takes no lock: a control);
- update_many({_id: {$in: [100 ids]}}) "settles" of disjoint blocks.

Prints a markdown table with the ratio of each time to the baseline's (above 1: slower than the
baseline). The baseline is a build without the patch, e.g. one made by
`FERRETDB_BIN=/tmp/old/ferretdb scripts/ensure-ferretdb.sh` in a checkout from before it (its
`--version` says v1.24.2-companion.2).

Usage: python -m bench.atomicity_cost --baseline /tmp/old/ferretdb [--candidate var/bin/ferretdb]
       [--also LABEL=PATH ...] [--reps 2] [--updates 2000] [--incs 2000] [--scans 200] [--scan-docs 1000]
       [--inserts 20000] [--settles 300]
(--baseline defaults to $FERRETDB_BASELINE_BIN.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pymongo

from tests.support.ferretdb import ROOT, FerretServer

THREADS = 8
SETTLE_BLOCK = 100


def version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("version:")), "?")


def start(binary: str, data_dir: Path) -> FerretServer:
    """FerretServer takes its binary from $FERRETDB_BIN when it starts."""
    os.environ["FERRETDB_BIN"] = binary
    server = FerretServer(data_dir)
    server.start()
    return server


def in_threads(items: list, work: Callable[[object], None]) -> float:
    """Seconds taken by THREADS threads released together to run work on every item (split evenly)."""
    barrier = threading.Barrier(THREADS + 1, timeout=120)
    shares = [items[i::THREADS] for i in range(THREADS)]

    def run(share: list) -> None:
        barrier.wait()
        for item in share:
            work(item)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(run, share) for share in shares]
        barrier.wait()
        t0 = time.perf_counter()
        for f in futures:
            f.result()
        return time.perf_counter() - t0


def update_by_id(db, n: int) -> tuple[float, str]:
    coll = db.update_by_id
    coll.insert_many([{"_id": f"d{i:06d}", "n": 0, "note": "x" * 40} for i in range(n)])
    seconds = in_threads(list(range(n)), lambda i: coll.update_one({"_id": f"d{i:06d}"}, {"$set": {"n": 1}}))
    return seconds, ""


def incs_of_one(db, n: int) -> tuple[float, str]:
    coll = db.incs_of_one
    coll.insert_one({"_id": "counter", "n": 0})
    seconds = in_threads(list(range(n)), lambda _: coll.update_one({"_id": "counter"}, {"$inc": {"n": 1}}))
    return seconds, f"counted {coll.find_one({'_id': 'counter'})['n']} of {n}"


def scans(db, n: int, docs: int) -> tuple[float, str]:
    coll = db.scans
    coll.insert_many([{"_id": i, "n": 0, "note": "x" * 40} for i in range(docs)])
    seconds = in_threads([i * docs // n for i in range(n)],
                         lambda i: coll.update_one({"_id": i}, {"$set": {"n": 1}}))
    return seconds, ""


def insert_many(db, n: int) -> tuple[float, str]:
    docs = [{"_id": f"i{i:06d}", "k": i % 97, "s": "abc"} for i in range(n)]
    t0 = time.perf_counter()
    db.insert_many.insert_many(docs, ordered=False)
    return time.perf_counter() - t0, ""


def settles(db, n: int) -> tuple[float, str]:
    coll = db.settles
    coll.insert_many([{"_id": f"s{i:06d}", "settled": False} for i in range(n * SETTLE_BLOCK)])
    blocks = [[f"s{i:06d}" for i in range(b * SETTLE_BLOCK, (b + 1) * SETTLE_BLOCK)] for b in range(n)]
    seconds = in_threads(blocks, lambda ids: coll.update_many({"_id": {"$in": ids}}, {"$set": {"settled": True}}))
    return seconds, f"settled {coll.count_documents({'settled': True})} of {n * SETTLE_BLOCK}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=os.environ.get("FERRETDB_BASELINE_BIN"),
                        help="FerretDB binary without the patch (default $FERRETDB_BASELINE_BIN)")
    parser.add_argument("--candidate", default=str(ROOT / "var" / "bin" / "ferretdb"))
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=PATH",
                        help="another build to measure against the baseline (repeatable)")
    parser.add_argument("--reps", type=int, default=2, help="runs of each workload per build (median kept)")
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--incs", type=int, default=2000)
    parser.add_argument("--scans", type=int, default=200, help="update_one by integer _id")
    parser.add_argument("--scan-docs", type=int, default=1000, help="documents each of those reads")
    parser.add_argument("--inserts", type=int, default=20000)
    parser.add_argument("--settles", type=int, default=300, help=f"update_many of {SETTLE_BLOCK} ids each")
    args = parser.parse_args()
    if not args.baseline or not Path(args.baseline).exists():
        sys.exit("give the baseline build: --baseline PATH or FERRETDB_BASELINE_BIN (see the docstring)")

    builds = {"baseline": args.baseline, "candidate": args.candidate}
    for extra in args.also:
        label, _, path = extra.partition("=")
        builds[label] = path
    for label, path in builds.items():
        if not Path(path).exists():
            sys.exit(f"{label}: no FerretDB binary at {path}")

    workloads = [
        (f"{args.updates:,} update_one by string _id, distinct docs, {THREADS} threads", update_by_id, args.updates),
        (f"{args.incs:,} $inc of one doc, {THREADS} threads", incs_of_one, args.incs),
        (f"{args.scans:,} update_one by integer _id (reads all {args.scan_docs:,} docs), {THREADS} threads",
         lambda db, n: scans(db, n, args.scan_docs), args.scans),
        (f"insert_many of {args.inserts:,} small docs, 1 thread", insert_many, args.inserts),
        (f"{args.settles:,} update_many of {SETTLE_BLOCK} _ids, {THREADS} threads", settles, args.settles),
    ]

    tmp = Path(tempfile.mkdtemp(prefix="atomicity-cost-"))
    servers = {label: start(path, tmp / label) for label, path in builds.items()}
    clients = {label: pymongo.MongoClient(s.uri, socketTimeoutMS=300_000) for label, s in servers.items()}
    seconds: dict[tuple[str, str], list[float]] = {}
    notes: dict[tuple[str, str], str] = {}
    t_start = time.perf_counter()
    try:
        for rep in range(args.reps):
            for name, workload, n in workloads:
                for label in (builds if rep % 2 == 0 else list(reversed(builds))):
                    db = clients[label][f"rep{rep}"]
                    s, note = workload(db, n)
                    seconds.setdefault((name, label), []).append(s)
                    notes[(name, label)] = note
                    print(f"rep {rep} {label:>10}: {name}: {s:.2f} s {note}", file=sys.stderr, flush=True)
    finally:
        for c in clients.values():
            c.close()
        for s in servers.values():
            s.stop()

    others = [label for label in builds if label != "baseline"]
    print("\nFerretDB builds: " + ", ".join(f"{label} `{version(path)}`" for label, path in builds.items()))
    print(f"Median of {args.reps} runs each, seconds (lower is better); whole run "
          f"{time.perf_counter() - t_start:.0f} s; load average {os.getloadavg()[0]:.1f}.\n")
    header = ["workload", "baseline s"] + [f"{o} s" for o in others] + [f"{o}/baseline" for o in others]
    print("| " + " | ".join([*header, "notes"]) + " |")
    print("|" + "---|" * (len(header) + 1))
    for name, _, _ in workloads:
        med = {label: statistics.median(seconds[(name, label)]) for label in builds}
        cells = [name, f"{med['baseline']:.2f}"] + [f"{med[o]:.2f}" for o in others]
        cells += [f"{med[o] / med['baseline']:.2f}" for o in others]
        cells.append("; ".join(f"{label}: {notes[(name, label)]}" for label in builds if notes[(name, label)]))
        print("| " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
