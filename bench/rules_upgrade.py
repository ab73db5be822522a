"""The rules upgrade of `companion migrate` (companion.services.adherence_upgrade): how long it takes per stored day
to compute again every adherence day stored under an earlier version of the rules, extrapolated to 10,000 patients.

The world is bench/nightly.py's (N patients × D days of snapshots, their plans and recent events). The snapshots are
first brought to the current rules (one run of the step), then labelled as an earlier version again, with a share
of them (``--changed``) given other figures: the step computes every day again, and writes the figures of those
that changed and only the version (and run) of the others. A release that changes the rules changes few stored
days (version 4: the days of a plan version written "from tomorrow", days never lived); 100% is the worst case.

Usage: python -m bench.rules_upgrade [--patients 40] [--days 90] [--changed 0.05 1.0]
"""

from __future__ import annotations

import argparse
import time

from bench.common import database, mongo
from bench.nightly import NOW, _services, seed
from companion.domain.adherence import ADHERENCE_RULES
from companion.store.db import ensure_indexes


def _relabel(db, changed: float) -> int:
    """Label every snapshot as computed by the version before, with other figures on ``changed`` of them."""
    db.adherence_upgrades.delete_many({})
    db.adherence_days.update_many({}, {"$set": {"rules": ADHERENCE_RULES - 1}})
    ids = [d["_id"] for d in db.adherence_days.find({}, {"_id": 1})]
    every = round(1 / changed) if changed else 0
    altered = ids[::every] if every else []
    if altered:
        db.adherence_days.update_many({"_id": {"$in": altered}}, {"$inc": {"tens_minutes": 0.1}})
    return len(ids)


def bench_upgrade(patients: int, days: int, shares: list[float]) -> list[dict]:
    with database() as uri:
        client = mongo(uri)
        db = client[f"bench_upgrade_{patients}"]
        ensure_indexes(db)
        seed(db, patients, days)
        services = _services(client, db, NOW)
        services.adherence_upgrade.run()  # every day to the current rules: what a release before left
        runs = []
        for share in shares:
            stored = _relabel(db, share)
            began = time.perf_counter()
            upgraded = services.adherence_upgrade.run()
            took = time.perf_counter() - began
            assert upgraded.written == stored, (upgraded.written, stored)
            assert db.adherence_days.count_documents({"rules": {"$ne": ADHERENCE_RULES}}) == 0
            per_day_ms = took * 1000 / stored
            runs.append({"patients": patients, "days": days, "changed": share, "stored": stored,
                         "seconds": round(took, 2), "ms_per_day": round(per_day_ms, 3),
                         "min_10000x90": round(per_day_ms * 900_000 / 60_000, 1),
                         "min_10000x365": round(per_day_ms * 3_650_000 / 60_000, 1)})
        client.drop_database(db.name)
        client.close()
        return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--changed", type=float, nargs="*", default=[0.05, 1.0])
    args = parser.parse_args(argv)
    for run in bench_upgrade(args.patients, args.days, args.changed):
        print(f"{run['patients']} x {run['days']}, {run['changed']:.0%} changed: {run['stored']} days in "
              f"{run['seconds']} s = {run['ms_per_day']} ms/day; 10,000 x 90 ~ {run['min_10000x90']} min, "
              f"10,000 x 365 ~ {run['min_10000x365']} min")


if __name__ == "__main__":
    main()
