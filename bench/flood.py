"""Flood: many gateways reconnecting at once with a day's backlog each, while a patient opens "today".

G gateways (each paired to its own patient, one TENS unit each, R records of one day buffered) all start
uploading at the same instant against gunicorn (2 workers x 4 threads), as after an outage of the
server or of a neighbourhood's internet. Each gateway is a thread of one separate process (bench.flood
--upload), posting batches of 50 like device_gateway's uploader and, when answered 503/429, waiting as the
uploader does: full-jitter exponential backoff, never less than the server's Retry-After
(device_gateway.uploader.backoff_delay). Once every gateway has delivered, they go on replaying their
backlog (as gateways that lost their answers would) until the measurement window ends, so that the flood
covers it.

Measured: one patient's "today" (90 days of history) under a closed loop of 4 clients (bench.loadgen),
for the same number of seconds, without the flood and during it, same server, same run. Checked: every
record of every gateway stored exactly once (count by unit, and no id missing). Each figure is given for
each gateway budget named (COMPANION_GATEWAY_UPLOAD_CONCURRENCY, for the whole server; 8 = every thread, i.e. no
budget).

Usage: python -m bench.flood [--gateways 100] [--records 100] [--seconds 20] [--budgets 1 2 8]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import ROOT, app_env, database, gunicorn, mongo, write_result
from bench.ingestion import RECORDS_PATH, item
from bench.reads import TODAY_PATH, history, load, sessions
from bench.world import bench_app, paired_gateways
from device_gateway.uploader import backoff_delay, parse_retry_after
from tests.support.world import make_user

BATCH = 50
READY = "flood starting"
DAYS = 90  # of the reading patient's history, as bench.reads seeds it


def _records(serial: str, count: int) -> list[dict]:
    """A day of one unit's records, ending an hour ago."""
    base = datetime.now(UTC) - timedelta(days=1, hours=1)
    return [{**item(serial, seq, count, base)} for seq in range(1, count + 1)]


def upload_all(server: str, gateways: list[dict], records: int, seconds: float) -> dict:
    """Every gateway at once: deliver the backlog, then replay it until ``seconds`` have passed."""
    # Every gateway's client and backlog are built before the start: the gateways are other machines, and
    # building 200 HTTP clients here would take this machine's CPU from the server at the start of the window.
    start_line = threading.Barrier(len(gateways), action=lambda: print(READY, flush=True))
    statuses: Counter = Counter()
    delivered_at: list[float] = []
    lock = threading.Lock()
    began = time.perf_counter()

    def gateway(g: dict) -> None:
        rng = random.Random(g["serial"])
        backlog = _records(g["serial"], records)
        failures, passes, mine = 0, 0, Counter()
        with httpx.Client(base_url=server, headers=g["headers"], timeout=60) as http:
            start_line.wait()
            while passes == 0 or time.perf_counter() - began < seconds:
                position = 0
                while position < len(backlog):
                    try:
                        answer = http.post(RECORDS_PATH, json={"records": backlog[position:position + BATCH]})
                        status, retry_after = answer.status_code, parse_retry_after(answer.headers.get("Retry-After"))
                    except httpx.HTTPError:
                        status, retry_after = "error", None
                    mine[status] += 1
                    if status == 200:
                        failures, position = 0, position + BATCH
                        continue
                    failures += 1
                    time.sleep(backoff_delay(failures, rng, retry_after, start_s=1.0, cap_s=30.0))
                if passes == 0:
                    with lock:
                        delivered_at.append(time.perf_counter() - began)
                passes += 1
        with lock:
            statuses.update(mine)

    threads = [threading.Thread(target=gateway, args=(g,)) for g in gateways]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "all_delivered_s": round(max(delivered_at), 1), "half_delivered_s": round(sorted(delivered_at)[
                len(delivered_at) // 2], 1), "elapsed_s": round(time.perf_counter() - began, 1)}


def _flood_process(server: str, gateways: list, records: int, seconds: float) -> subprocess.Popen:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump({"server": server, "records": records, "seconds": seconds,
                   "gateways": [{"serial": g.serial, "headers": g.headers} for g in gateways]}, spec)
    process = subprocess.Popen([sys.executable, "-m", "bench.flood", "--upload", spec.name], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    for line in process.stdout:  # the flood begins when every gateway is at the start line
        if line.strip() == READY:
            return process
    raise SystemExit(f"the flood process ended before starting: exit status {process.wait()}")


def stored_once(db, gateways: list, records: int) -> dict:
    serials = [g.serial for g in gateways]
    counts = Counter(d["device_serial"] for d in db.session_records.find({"device_serial": {"$in": serials}},
                                                                         {"device_serial": 1}))
    missing = sum(1 for s in serials for seq in range(1, records + 1)
                  if not db.session_records.count_documents({"_id": f"{s}:{seq}"}, limit=1)) \
        if any(counts[s] != records for s in serials) else 0
    return {"stored": sum(counts.values()), "expected": len(serials) * records,
            "every_record_once": all(counts[s] == records for s in serials) and missing == 0}


def run_budget(uri: str, db_name: str, budget: int, args, patient, today_path: str) -> dict:
    gateways = paired_gateways(uri, db_name, args.gateways, prefix=f"B{budget}")
    env = {**app_env(uri, db_name), "COMPANION_GATEWAY_UPLOAD_CONCURRENCY": str(budget)}
    with gunicorn("companion.wsgi:app", env) as server:
        url = server.url + today_path
        quiet = load(url, patient.headers, args.seconds, 4)
        flood = _flood_process(server.url, gateways, args.records, args.seconds)
        during = load(url, patient.headers, args.seconds, 4)
        flood_figures = json.loads(flood.communicate(timeout=3600)[0].strip().splitlines()[-1])
    check = stored_once(mongo(uri)[db_name], gateways, args.records)
    return {"budget": budget, "today_quiet": quiet, "today_flood": during, **flood_figures, **check,
            "p95_ratio_flood_to_quiet": round(during["p95_ms"] / quiet["p95_ms"], 2),
            "p50_ratio_flood_to_quiet": round(during["p50_ms"] / quiet["p50_ms"], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--budgets", type=int, nargs="*", default=[1, 2, 8])
    parser.add_argument("--upload", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upload:
        spec = json.loads(Path(args.upload).read_text())
        print(json.dumps(upload_all(spec["server"], spec["gateways"], spec["records"], spec["seconds"])))
        return
    figures: dict = {"gateways": args.gateways, "records_per_gateway": args.records, "seconds": args.seconds,
                     "today_clients": 4, "runs": []}
    with database() as uri:
        db_name = "bench_flood"
        mongo(uri).drop_database(db_name)
        app = bench_app(uri, db_name)
        client, services = app.test_client(), app.extensions["companion"]
        patient = make_user(client, services, key="flood_reader", role="patient")
        now = datetime.now(UTC)
        history(services.db, [patient.id], DAYS, now)
        sessions(services.db, patient.id, "CTU-READER", DAYS, now)
        services.client.close()
        today_path = TODAY_PATH.format(patient_id=patient.id)
        with gunicorn("companion.wsgi:app", app_env(uri, db_name)) as server:
            status = httpx.get(server.url + today_path, headers=patient.headers, timeout=60).status_code
        if status != 200:
            raise SystemExit(f"{today_path} answered {status}")
        figures["today_path"] = today_path
        for budget in args.budgets:
            figures["runs"].append(run_budget(uri, db_name, budget, args, patient, today_path))
            print(json.dumps(figures["runs"][-1]), flush=True)
        mongo(uri).drop_database(db_name)
    write_result("flood", figures)


if __name__ == "__main__":
    main()
