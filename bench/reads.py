"""API reads under concurrent load: the patient's "today" and the clinician's panel, against two floors.

For each case (panel size × days of history) a fresh database holds one clinician whose team has N patients,
each with `days` of adherence snapshots and a pain rating every third day; the patient who opens "today" also
has three TENS sessions a day over those days. The panel's read model is built as `companion migrate` builds it
(its time is reported). The load comes from a separate process (bench/loadgen.py); the app and the floors
(bench/bare_app.py) run on the same gunicorn setup (2 workers × 4 threads):

- the bare floor: a Flask endpoint that touches no database;
- the database floor: a Flask endpoint doing one `find_one` by `_id` on the same server, measured in each case
  in turns with the endpoints it is the floor of (``--slices`` turns: in each, the floor and every endpoint run
  for seconds / slices, in an order that moves on by one each turn), so that load from other work on a shared
  machine falls on the floor and the endpoints alike; each figure adds its turns together, and the ratio of
  each turn is kept (``slice_rps_ratios``) to show how steady the machine was.

The panel is measured twice: as served (a page read again while the team's panel is unchanged is answered from
the page each web process kept, after checking the team's panel version) and with no page kept
(`panel_unkept`: every read after a change costs this).
Figures: requests/s and p50/p95/p99, each as a ratio to the database floor, and each case at its longest
history against the same panel size at its shortest (the growth column).
Usage: python -m bench.reads [--seconds 10] [--concurrency 16] [--sizes 200,2000] [--days 90,365]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
from bson import ObjectId

from bench.bare_app import FLOOR_ID
from bench.common import ROOT, app_env, database, gunicorn, mongo, write_result
from bench.ingestion import item, stored
from bench.loadgen import summary
from bench.world import bench_app
from tests.support.world import make_user

TODAY_PATH = "/api/v1/patients/{patient_id}/today"
PANEL_PATH = "/api/v1/clinician/panel?limit=50"
INSERT_BATCH = 5000


def _insert(collection, docs) -> None:
    batch = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == INSERT_BATCH:
            collection.insert_many(batch, ordered=False)
            batch = []
    if batch:
        collection.insert_many(batch, ordered=False)


def sessions(db, patient_id: str, serial: str, days: int, now: datetime) -> None:
    """Three sessions a day over ``days``, in the shared data-contract shape."""
    base = now - timedelta(days=days)
    count = days * 3
    records = [stored(item(serial, seq, count, base), patient_id, "bench-gateway", now) for seq in range(1, count + 1)]
    for record in records:
        record["started_at"] = base + timedelta(hours=8 * record["device_seq"])
    _insert(db.session_records, records)


def history(db, patient_ids: list[str], days: int, now: datetime) -> None:
    """One adherence snapshot a day and a pain rating every third day, for each patient."""
    base = now - timedelta(days=days)

    def snapshots():
        for index, pid in enumerate(patient_ids):
            for d in range(days):
                on = (base + timedelta(days=d)).date().isoformat()
                covered = (index + d) % 5 != 0
                yield {"_id": f"{pid}:{on}", "patient_id": pid, "date": on, "zone": "UTC", "state": "progress",
                       "tens_fraction": 1.0 if covered else 0.4, "tens_minutes": 90 if covered else 36,
                       "tens_minutes_target": 90, "sessions_done": 3, "sessions_planned": 3,
                       "mindfulness_fraction": None, "medication_fraction": None, "covered": covered,
                       "computed_at": now}

    def ratings():
        for index, pid in enumerate(patient_ids):
            for d in range(0, days, 3):
                at = base + timedelta(days=d, hours=9)
                yield {"_id": str(ObjectId()), "patient_id": pid, "client_entry_id": f"b{d}", "recorded_at": at,
                       "nrs": (index + d) % 11, "context": None, "bpi": None, "session_record_id": None,
                       "phase": None, "version": 1, "created_at": at, "updated_at": at, "deleted": False}

    _insert(db.adherence_days, snapshots())
    _insert(db.pain_entries, ratings())


def seed(uri: str, db_name: str, patients: int, days: int) -> dict:
    app = bench_app(uri, db_name)
    client, services = app.test_client(), app.extensions["companion"]
    db = services.db
    now = datetime.now(UTC)
    clinician = make_user(client, services, key="bench_clinician", role="clinician")
    team = services.care.create_team("Bench clinic")
    services.care.add_clinician(team.id, clinician.id)
    reader = make_user(client, services, key="bench_reader", role="patient")
    others = [services.stores.users.create(email=f"bench_reader_{n}@example.org", password_hash="-", role="patient",
                                           display_name=f"Reader {n:05d}", time_zone="UTC",
                                           extra={"time_zone_history": [], "caregiver_alert_delay_min": 60}).id
              for n in range(1, patients)]
    ids = [reader.id, *others]
    for pid in ids:
        services.stores.care_teams.enrol(team.id, pid)
    history(db, ids, days, now)
    sessions(db, reader.id, "CTU-R00000", days, now)
    db.bench_floor.insert_one({"_id": FLOOR_ID, "name": "floor"})
    started = time.perf_counter()
    built = services.panel_rows.rebuild().written
    rebuild_s = round(time.perf_counter() - started, 2)
    services.client.close()
    return {"patient": reader, "clinician": clinician, "rows": built, "rebuild_s": rebuild_s}


def load(url: str, headers: dict, seconds: float, concurrency: int, raw: bool = False) -> dict:
    command = [sys.executable, "-m", "bench.loadgen", url, "--seconds", str(seconds),
               "--concurrency", str(concurrency)] + [f"--header={k}: {v}" for k, v in headers.items()]
    out = subprocess.run(command + (["--raw"] if raw else []), cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def added(runs: list[dict], concurrency: int) -> dict:
    """Several load runs of one endpoint (``load(..., raw=True)``) as one: their requests and errors over their
    summed time, and the percentiles of all their latencies."""
    return summary([x for r in runs for x in r["latencies_s"]], sum(r["errors"] for r in runs),
                   sum(r["elapsed_s"] for r in runs), concurrency)


def sliced(targets: dict[str, tuple[str, dict]], seconds: float, concurrency: int, slices: int) -> dict[str, dict]:
    """Measure each target (name: (url, headers)) for ``seconds`` in all, cut into ``slices`` turns: in each turn
    every target runs once, in an order that moves on by one each turn, so that load from other work on the
    machine falls on each alike (the floor included). Each target's figures are its turns added together, with
    ``slice_ok_rps``: its rate in each turn (the ratios per turn show how steady the machine was)."""
    names = list(targets)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for turn in range(slices):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            url, headers = targets[name]
            runs[name].append(load(url, headers, seconds / slices, concurrency, raw=True))
    return {name: {**added(runs[name], concurrency), "slice_ok_rps": [r["ok_rps"] for r in runs[name]]}
            for name in names}


def ratios(measured: dict, floor: dict) -> dict:
    turns = list(zip(measured.get("slice_ok_rps", []), floor.get("slice_ok_rps", []), strict=True))
    return {"rps_ratio_to_floor": round(measured["ok_rps"] / floor["ok_rps"], 4),
            "p50_ratio_to_floor": round(measured["p50_ms"] / floor["p50_ms"], 2),
            "p95_ratio_to_floor": round(measured["p95_ms"] / floor["p95_ms"], 2),
            **({"slice_rps_ratios": [round(m / f, 3) for m, f in turns]} if turns else {})}


def one_case(uri: str, patients: int, days: int, seconds: float, concurrency: int, slices: int = 5) -> dict:
    db_name = f"bench_reads_{patients}_{days}"
    mongo(uri).drop_database(db_name)
    started = time.perf_counter()
    people = seed(uri, db_name, patients, days)
    case = {"patients": patients, "days": days, "seed_s": round(time.perf_counter() - started, 1),
            "rows": people["rows"], "rebuild_s": people["rebuild_s"]}
    env = app_env(uri, db_name)
    today_path = TODAY_PATH.format(patient_id=people["patient"].id)
    # The panel is also served with no page kept by the web processes (*panel_unkept*): what every read costs
    # when the team's panel has changed since the last one (the *panel* figure is the page read again while
    # nothing changed). The three servers run side by side, the load taking turns among them.
    with gunicorn("bench.bare_app:app", env) as floor, gunicorn("companion.wsgi:app", env) as server, \
            gunicorn("companion.wsgi:app", env | {"COMPANION_PANEL_PAGE_CACHE": "0"}) as unkept:
        targets, paths = {"floor": (floor.url + "/floor", {})}, {}
        for name, base, path, person in (("today", server.url, today_path, people["patient"]),
                                         ("panel", server.url, PANEL_PATH, people["clinician"]),
                                         ("panel_unkept", unkept.url, PANEL_PATH, people["clinician"])):
            status = httpx.get(base + path, headers=person.headers, timeout=60).status_code
            if status != 200:
                case[name] = {"available": False, "reason": f"{path} answered {status}"}
                continue
            targets[name], paths[name] = (base + path, person.headers), path.split("?")[0]
        measured = sliced(targets, seconds, concurrency, slices)
    case["floor"] = measured.pop("floor")
    case["slices"] = slices
    for name, figures in measured.items():
        case[name] = {"available": True, "path": paths[name], **figures, **ratios(figures, case["floor"])}
    mongo(uri).drop_database(db_name)
    return case


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sizes", default="200,2000", help="panel sizes (patients on the clinician's team)")
    parser.add_argument("--days", default="90,365", help="days of history per patient")
    parser.add_argument("--slices", type=int, default=5,
                        help="turns the floor and the endpoints take (each measured seconds / slices a turn)")
    args = parser.parse_args(argv)
    figures: dict = {"concurrency": args.concurrency, "seconds": args.seconds, "slices": args.slices, "page": 50,
                     "cases": []}
    with database() as uri:
        with gunicorn("bench.bare_app:app", {"MONGODB_URI": uri, "MONGODB_DB": "bench_floor"}) as bare:
            figures["bare"] = load(bare.url + "/bare", {}, args.seconds, args.concurrency)
        for patients in (int(s) for s in args.sizes.split(",")):
            for days in (int(d) for d in args.days.split(",")):
                figures["cases"].append(one_case(uri, patients, days, args.seconds, args.concurrency, args.slices))
                print(json.dumps(figures["cases"][-1]), flush=True)
    write_result("reads", figures)


if __name__ == "__main__":
    main()
