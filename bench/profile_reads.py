"""Where "today" and the clinician panel spend their time: queries counted per collection, and cProfile.

Seeds the same world as bench/reads.py (a panel of N patients × 90 days, its read model built), then calls each endpoint
in-process a few times with a pymongo CommandListener counting the commands each request sends
(per collection, with the time spent waiting for the server) and cProfile over the handler.
Usage: python -m bench.profile_reads [--panel-patients 200] [--repeat 3] [--uri mongodb://... --keep]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import threading
import time
from collections import defaultdict
from contextlib import nullcontext
from datetime import timedelta

from pymongo import monitoring

from bench.common import database, mongo, write_result
from bench.reads import seed
from bench.world import bench_app
from tests.support.world import login

DAYS = 90


class QueryCounter(monitoring.CommandListener):
    """Commands (find, getMore, insert, ...) and server time per collection while `recording` is set."""

    def __init__(self):
        self.recording = False
        self.lock = threading.Lock()
        self.pending: dict[int, str] = {}
        self.counts: dict[str, list] = defaultdict(lambda: [0, 0.0])

    def started(self, event):
        if self.recording:
            key = "collection" if event.command_name == "getMore" else event.command_name
            collection = event.command.get(key)
            what = collection if isinstance(collection, str) else event.command_name
            with self.lock:
                self.pending[event.request_id] = what

    def _done(self, event):
        with self.lock:
            what = self.pending.pop(event.request_id, None)
            if what:
                self.counts[what][0] += 1
                self.counts[what][1] += event.duration_micros / 1e6

    succeeded = _done
    failed = _done

    def snapshot(self) -> dict:
        return {k: {"commands": n, "server_s": round(s, 3)}
                for k, (n, s) in sorted(self.counts.items(), key=lambda kv: -kv[1][1])}


def top(profile: cProfile.Profile, count: int = 12) -> list[dict]:
    """The functions of the project (and pymongo) with the most cumulative time."""
    stats = pstats.Stats(profile)
    rows = [(row[3], f"{path.split('site-packages/')[-1].split('wt/reads/')[-1]}:{line} {name}")
            for (path, line, name), row in stats.stats.items() if "companion/" in path]
    return [{"function": name, "cumulative_s": round(cum, 3)} for cum, name in sorted(rows, reverse=True)[:count]]


def seeded(app, client) -> dict | None:
    """The people of an already seeded database (development runs with --keep)."""
    db = app.extensions["companion"].db
    found = {u["email"].split("@")[0]: u for u in db.users.find({"email": {"$in": [
        "bench_reader@example.org", "bench_clinician@example.org"]}})}
    if len(found) < 2:
        return None
    people = {key: login(client, key, found[key]["email"], found[key]["_id"], found[key]["role"])
              for key in ("bench_reader", "bench_clinician")}
    return {"patient": people["bench_reader"], "clinician": people["bench_clinician"]}


def measure(client, path: str, headers: dict, counter: QueryCounter, repeat: int) -> dict:
    assert client.get(path, headers=headers).status_code == 200  # warm: first-call materialisation
    counter.counts.clear()
    profile = cProfile.Profile()
    counter.recording = True
    started = time.perf_counter()
    profile.enable()
    for _ in range(repeat):
        response = client.get(path, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    profile.disable()
    elapsed = time.perf_counter() - started
    counter.recording = False
    queries = counter.snapshot()
    return {"path": path, "seconds_per_request": round(elapsed / repeat, 3),
            "commands_per_request": round(sum(q["commands"] for q in queries.values()) / repeat, 1),
            "server_s_per_request": round(sum(q["server_s"] for q in queries.values()) / repeat, 3),
            "queries": queries, "top": top(profile)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel-patients", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uri", help="an existing server (development); default: a fresh FerretDB")
    parser.add_argument("--keep", action="store_true", help="reuse the seeded database if present")
    args = parser.parse_args(argv)
    counter = QueryCounter()
    monitoring.register(counter)
    db_name = "bench_profile_reads"
    with (nullcontext(args.uri) if args.uri else database()) as uri:
        if not args.keep:
            mongo(uri).drop_database(db_name)
        # A generous database budget: the profile must see a slow query through, not a 503 (and the feeds' settle
        # time three times it, as the settings require).
        app = bench_app(uri, db_name, db_timeout_ms=120_000, sync_settle=timedelta(minutes=6))
        client = app.test_client()
        people = seeded(app, client) if args.keep else None
        people = people or seed(uri, db_name, args.panel_patients, DAYS)
        today = f"/api/v1/patients/{people['patient'].id}/today"
        figures = {"panel_patients": args.panel_patients, "days": DAYS, "repeat": args.repeat,
                   "today": measure(client, today, people["patient"].headers, counter, args.repeat),
                   "panel": measure(client, "/api/v1/clinician/panel", people["clinician"].headers, counter,
                                    args.repeat)}
        app.extensions["companion"].client.close()
        if not args.keep:
            mongo(uri).drop_database(db_name)
    write_result("profile_reads", figures)


if __name__ == "__main__":
    main()
