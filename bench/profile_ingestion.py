"""Where an ingestion request spends its time: cProfile over batches of 500 posted in-process.

Splits the handler's time into request validation (marshmallow), the database writes (insert_many),
the rest of the service, and the audit write, so RESULTS.md can explain the gap to raw insert_many.
Usage: python -m bench.profile_ingestion [--records 10000]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from datetime import UTC, datetime, timedelta

from bench.common import database, mongo, write_result
from bench.ingestion import RECORDS_PATH, WINDOW, batches
from bench.world import bench_app, paired_gateways

PARTS = {
    "validation (marshmallow load of each record)": ("marshmallow/schema.py", "_do_load"),
    "insert_many into session_records": ("pymongo/synchronous/collection.py", "insert_many"),
    "ingestion service (checks, results, events, device status)": ("companion/services/ingestion.py", "receive"),
    "audit write (hash chain)": ("companion/services/audit.py", "write"),
    "throttle counter": ("companion/services/ingestion.py", "_throttle"),
    "JSON parse of the request": ("json/decoder.py", "decode"),
}


def cumulative(stats: pstats.Stats, file_part: str, function: str) -> float:
    return sum(row[3] for (path, _, name), row in stats.stats.items() if file_part in path and name == function)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args(argv)
    with database() as uri:
        db_name = "bench_profile"
        mongo(uri).drop_database(db_name)
        gateway = paired_gateways(uri, db_name, 1)[0]
        app = bench_app(uri, db_name, gateway_uploads_per_min=10**6)
        client = app.test_client()
        work = list(batches(gateway.serial, args.records, datetime.now(UTC) - WINDOW - timedelta(hours=1)))
        profile = cProfile.Profile()
        profile.enable()
        for batch in work:
            assert client.post(RECORDS_PATH, json={"records": batch}, headers=gateway.headers).status_code == 200
        profile.disable()
        app.extensions["companion"].client.close()
        mongo(uri).drop_database(db_name)
    stats = pstats.Stats(profile)
    total = stats.total_tt
    parts = {name: round(cumulative(stats, *where) / total, 3) for name, where in PARTS.items()}
    write_result("profile_ingestion", {"records": args.records, "seconds_in_process": round(total, 2),
                                       "fraction_of_time": parts})


if __name__ == "__main__":
    main()
