"""API reads under concurrent load: the patient's "today" and the clinician's panel vs a bare Flask endpoint.

One patient with 90 days of history opens "today"; one clinician whose team has 200 patients, each
with 90 days of session records and adherence days, opens the panel. The load comes from a separate
process (bench/loadgen.py); the app and the bare floor (bench/bare_app.py) run on the same gunicorn
setup (2 workers × 4 threads). Figures: requests/s and p50/p95/p99, and each as a ratio to the floor.
Usage: python -m bench.reads [--seconds 15] [--concurrency 16] [--panel-patients 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx

from bench.common import ROOT, app_env, database, gunicorn, mongo, write_result
from bench.ingestion import item, stored
from bench.world import bench_app
from tests.support.world import PASSWORD, make_user

# The first of these that the app serves is measured (the areas name them in their own branches).
TODAY_PATHS = ["/api/v1/patients/{patient_id}/today", "/api/v1/patients/{patient_id}/day"]
PANEL_PATHS = ["/api/v1/clinician/panel", "/api/v1/clinician/teams/{team_id}/panel", "/api/v1/clinician/patients"]
DAYS = 90


def history(db, patient_id: str, serial: str, days: int) -> None:
    """Three sessions a day and one adherence day per day, written in the shared data-contract shape."""
    now = datetime.now(UTC)
    base = now - timedelta(days=days)
    count = days * 3
    records = [stored(item(serial, seq, count, base), patient_id, "bench-gateway", now)
               for seq in range(1, count + 1)]
    for record in records:
        record["started_at"] = base + timedelta(hours=8 * record["device_seq"])
    db.session_records.insert_many(records, ordered=False)
    db.adherence_days.insert_many([
        {"_id": f"{patient_id}:{(base + timedelta(days=d)).date().isoformat()}", "patient_id": patient_id,
         "date": (base + timedelta(days=d)).date().isoformat(), "zone": "UTC", "state": "progress",
         "tens_fraction": 0.8, "tens_minutes": 72, "tens_minutes_target": 90, "sessions_done": 3,
         "sessions_planned": 3, "mindfulness_fraction": None, "medication_fraction": None, "covered": True,
         "computed_at": now} for d in range(days)], ordered=False)


def seed(uri: str, db_name: str, panel_patients: int) -> dict:
    app = bench_app(uri, db_name)
    client, services = app.test_client(), app.extensions["companion"]
    clinician = make_user(client, services, key="bench_clinician", role="clinician")
    care = services.care
    team = care.create_team("Bench clinic")
    care.add_clinician(team.id, clinician.id)
    patient = make_user(client, services, key="bench_reader", role="patient")
    others = [services.accounts.sign_up(email=f"bench_reader_{index}@example.org", password=PASSWORD,
                                        display_name=f"Reader {index}", role="patient", time_zone="UTC").id
              for index in range(1, panel_patients)]
    for index, patient_id in enumerate([patient.id, *others]):
        care.enrol(team.id, patient_id)
        history(services.db, patient_id, f"CTU-R{index:05d}", DAYS)
    services.client.close()
    return {"patient": patient, "clinician": clinician, "team_id": team.id}


def load(url: str, headers: dict, seconds: float, concurrency: int) -> dict:
    command = [sys.executable, "-m", "bench.loadgen", url, "--seconds", str(seconds),
               "--concurrency", str(concurrency)] + [f"--header={k}: {v}" for k, v in headers.items()]
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def first_served(base: str, candidates: list[str], headers: dict, values: dict) -> tuple[str | None, list]:
    answers = []
    for template in candidates:
        path = template.format(**values)
        status = httpx.get(base + path, headers=headers, timeout=60).status_code
        if status == 200:
            return path, answers
        answers.append((template, status))
    return None, answers


def ratios(measured: dict, floor: dict) -> dict:
    return {"rps_ratio_to_bare": round(measured["ok_rps"] / floor["ok_rps"], 4),
            "p50_ratio_to_bare": round(measured["p50_ms"] / floor["p50_ms"], 2),
            "p95_ratio_to_bare": round(measured["p95_ms"] / floor["p95_ms"], 2),
            "p99_ratio_to_bare": round(measured["p99_ms"] / floor["p99_ms"], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--panel-patients", type=int, default=200)
    args = parser.parse_args(argv)
    figures: dict = {"concurrency": args.concurrency, "seconds": args.seconds,
                     "panel_patients": args.panel_patients, "days": DAYS}
    with database() as uri:
        db_name = "bench_reads"
        mongo(uri).drop_database(db_name)
        people = seed(uri, db_name, args.panel_patients)
        with gunicorn("bench.bare_app:app", {}) as bare:
            figures["bare"] = load(bare.url + "/bare", {}, args.seconds, args.concurrency)
        values = {"patient_id": people["patient"].id, "team_id": people["team_id"]}
        with gunicorn("companion.wsgi:app", app_env(uri, db_name)) as server:
            for name, candidates, person in (("today", TODAY_PATHS, people["patient"]),
                                             ("panel", PANEL_PATHS, people["clinician"])):
                path, answers = first_served(server.url, candidates, person.headers, values)
                if path is None:
                    over_budget = [template for template, status in answers if status == 503]
                    figures[name] = {"available": False, "reason": (
                        f"`{over_budget[0]}` answered 503: its queries exceed the database budget "
                        f"(COMPANION_DB_TIMEOUT_MS) even without load" if over_budget
                        else f"no 200 from any of {answers}")}
                    continue
                measured = load(server.url + path, person.headers, args.seconds, args.concurrency)
                figures[name] = {"available": True, "path": path, **measured, **ratios(measured, figures["bare"])}
        mongo(uri).drop_database(db_name)
    write_result("reads", figures)


if __name__ == "__main__":
    main()
