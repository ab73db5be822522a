"""Nightly adherence: companion.jobs.adherence.compute_adherence over N patients with 90 days of history,
against a floor of raw reads and writes of the same documents on the same server, in the same run.

What "N patients × 90 days" means here (seeded with insert_many, straight into the collections in the
shapes the app stores):
- per patient: the `users` document (one of six zones), one therapy plan (TENS 2 × 30 min, two doses,
  10 min mindfulness), and 90 days of adherence snapshots already computed as the job leaves them
  (today - 89 .. today; about 5% of patients have a low-adherence run, so the rule raises alerts);
- TENS session records (2-3 a day), completed practice and medication doses done for the last 4 local
  days only: the job recomputes 2 local days per patient and reads events within 15 hours either side
  of them, so older events are never read. Seeding 90 days of them (10,000 × 90 × 2.5 = 2.25M
  records) would take longer than the whole run; what it would change is the size of the
  session_records collection the job's one windowed query goes through (FerretDB scans the whole
  collection for a non-_id filter, about 1 s per 50,000 records; MongoDB uses an index on the window).
The job reads 31 days of snapshots for the low-adherence rule; PDC 7/30/90 (the API) reads the 90.

The floor: one streamed find of each input collection (users, plans, session records, practice,
doses) plus the same `_id $in` reads of the snapshots the rule needs, plus insert_many of as many
snapshot documents as the job writes, into a fresh collection.

Usage: python -m bench.nightly [--patients 1000 10000] [--days 90] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from bench.common import database, mongo
from companion.services.container import Services
from companion.settings import load_settings
from companion.store.adherence import ID_BATCH, snapshot_id
from companion.store.db import ensure_indexes

NOW = datetime(2026, 6, 15, 3, 0, tzinfo=UTC)  # the nightly run: 03:00 UTC
ZONES = ["Europe/London", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney", "UTC"]
EVENT_DAYS = 4
BATCH = 10_000


def _snapshot(patient_id: str, zone: str, day: date, fraction: float) -> dict:
    minutes = round(60 * fraction, 2)

    def progress(state: str, frac: float | None, mins: float, target: float, done: int, planned: int) -> dict:
        return {"state": state, "fraction": frac, "minutes": mins, "minutes_target": target, "done": done,
                "planned": planned}

    return {"_id": snapshot_id(patient_id, day), "patient_id": patient_id, "date": day.isoformat(), "zone": zone,
            "state": "progress", "tens_fraction": fraction, "tens_minutes": minutes, "tens_minutes_target": 60,
            "sessions_done": 2, "sessions_planned": 2, "mindfulness_fraction": 1.0, "medication_fraction": 1.0,
            "covered": fraction >= 1.0, "tens": progress("progress", fraction, minutes, 60, 2, 2),
            "mindfulness": progress("progress", 1.0, 10, 10, 1, 0), "medication": progress("progress", 1.0, 0, 0, 2, 2),
            "computed_at": NOW}


def _patient_docs(index: int, days: int) -> dict[str, list[dict]]:
    pid, zone = f"bench-p{index:06d}", ZONES[index % len(ZONES)]
    today = NOW.astimezone(ZoneInfo(zone)).date()
    low = index % 20 == 0
    docs: dict[str, list[dict]] = {
        "users": [{"_id": pid, "email": f"{pid}@example.org", "password_hash": "-", "role": "patient",
                   "display_name": pid, "time_zone": zone, "created_at": NOW - timedelta(days=200),
                   "mfa": {"enabled": False}, "caregiver_alert_delay_min": 60,
                   "time_zone_history": [{"zone": zone, "effective_from": NOW - timedelta(days=200),
                                          "previous": None}]}],
        "therapy_plans": [{"_id": f"{pid}:plan:1", "patient_id": pid, "version": 1, "created_at": NOW - timedelta(days=120),
                           "created_by": "bench-clinician", "active_from": NOW - timedelta(days=120), "active_to": None,
                           "tens": {"sessions_per_day": 2, "daily_minutes_target": None, "minutes_per_session": 30,
                                    "programmes": [1], "start_date": (today - timedelta(days=120)).isoformat(),
                                    "end_date": None, "counts_towards_adherence": True},
                           "medications": [{"name": "-", "dose": "-", "times": ["08:00", "20:00"],
                                            "counts_towards_adherence": True}],
                           "mindfulness": {"minutes_per_day": 10, "sessions_per_week": None,
                                           "counts_towards_adherence": True}}],
        "adherence_days": [_snapshot(pid, zone, today - timedelta(days=n), 0.5 if low and n < 5 else 1.0)
                           for n in range(days)],
        "session_records": [], "practice_log": [], "reminder_occurrences": [],
    }
    serial = f"CTU-N{index:06d}"
    for n in range(EVENT_DAYS):
        day = today - timedelta(days=n)
        for seq, hour in enumerate((8, 13, 19)[: 2 + (index + n) % 2]):
            started = datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(zone)).astimezone(UTC)
            if started < NOW:
                docs["session_records"].append({
                    "_id": f"{serial}:{n}:{seq}", "device_serial": serial, "device_seq": n * 3 + seq,
                    "device_started_at": started, "started_at": started, "clock_offset_s": 0.0, "clock_status": "ok",
                    "gateway_received_at": started, "duration_s": 900 if low else 1800, "programme": 1,
                    "end_reason": "completed", "battery_pct": 80, "patient_id": pid, "gateway_id": f"gw-{pid}",
                    "server_received_at": started + timedelta(minutes=31)})
        practice_at = datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(zone)).astimezone(UTC)
        if practice_at < NOW and index % 2 == 0:
            docs["practice_log"].append({"_id": f"{pid}:practice:{n}", "patient_id": pid, "item_slug": "breath",
                                         "started_at": practice_at, "completed_at": practice_at + timedelta(minutes=10),
                                         "minutes": 10})
        for k, local_time in enumerate(("08:00", "20:00")):
            due = datetime.combine(day, datetime.strptime(local_time, "%H:%M").time(), ZoneInfo(zone)).astimezone(UTC)
            if due < NOW:
                docs["reminder_occurrences"].append({
                    "_id": f"{pid}:med:{day.isoformat()}:{k}", "patient_id": pid, "reminder_id": f"{pid}:med",
                    "kind": "medication", "local_date": day.isoformat(), "local_time": local_time, "zone": zone,
                    "due_at": due, "window_ends_at": due + timedelta(hours=1), "status": "done"})
    return docs


def seed(db, patients: int, days: int) -> dict[str, int]:
    """Insert the world described in the module docstring; returns documents per collection."""
    pending: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}

    def flush(name: str) -> None:
        if pending.get(name):
            db[name].insert_many(pending[name], ordered=False)
            counts[name] = counts.get(name, 0) + len(pending[name])
            pending[name] = []

    for index in range(patients):
        for name, docs in _patient_docs(index, days).items():
            pending.setdefault(name, []).extend(docs)
            if len(pending[name]) >= BATCH:
                flush(name)
    for name in list(pending):
        flush(name)
    return counts


def floor(db, patients: int) -> float:
    """Seconds for the raw reads of the job's inputs and insert_many of as many snapshots as it writes."""
    started = time.perf_counter()
    ids = [u["_id"] for u in db.users.find({"role": "patient"}, {"time_zone": 1, "time_zone_history": 1})]
    for name in ("therapy_plans", "session_records", "practice_log", "reminder_occurrences"):
        for _ in db[name].find({}):
            pass
    wanted = [snapshot_id(pid, NOW.date() - timedelta(days=n)) for pid in ids for n in range(2, 31)]
    for start in range(0, len(wanted), ID_BATCH):
        for _ in db.adherence_days.find({"_id": {"$in": wanted[start:start + ID_BATCH]}}):
            pass
    scratch = db[f"floor_{uuid.uuid4().hex[:6]}"]
    docs = [{**_snapshot(pid, "UTC", NOW.date() - timedelta(days=n), 1.0)} for pid in ids for n in range(2)]
    for start in range(0, len(docs), BATCH):
        scratch.insert_many(docs[start:start + BATCH], ordered=False)
    elapsed = time.perf_counter() - started
    scratch.drop()
    assert len(ids) == patients
    return elapsed


def _services(client, db, at: datetime) -> Services:
    """The app's services on the bench database, their clock stopped at ``at``."""
    return Services(load_settings({"mongodb_db": db.name}, environ={}), client=client, clock=lambda: at)


def next_day(client, db) -> dict:
    """The hourly job after the first run: a day later every patient's local day has rolled over once and each
    has one new session on it (its day and panel row marked, as ingestion marks them, and the rows computed by
    the refresher's pass); then, ten minutes later, nothing new (no zone of the world passes midnight). Each run
    timed alone, and the refresher's passes: before the run, and at the next midnight with nothing new."""
    later = NOW + timedelta(days=1)
    sessions, marks = [], []
    for user in db.users.find({"role": "patient"}, {"time_zone": 1}):
        pid, zone = user["_id"], ZoneInfo(user["time_zone"])
        day = later.astimezone(zone).date()
        started = min(datetime(day.year, day.month, day.day, 0, 30, tzinfo=zone).astimezone(UTC), later)
        sessions.append({"_id": f"{pid}:next", "device_serial": f"CTU-X{pid}", "device_seq": 0, "patient_id": pid,
                         "device_started_at": started, "started_at": started, "duration_s": 1800, "programme": 1,
                         "end_reason": "completed", "battery_pct": 80, "server_received_at": later})
        marks.append({"_id": f"{pid}:{day.isoformat()}", "patient_id": pid, "date": day.isoformat(),
                      "token": uuid.uuid4().hex, "marked_at": later, "reason": "sessions"})
    for start in range(0, len(sessions), BATCH):
        db.session_records.insert_many(sessions[start:start + BATCH], ordered=False)
        db.days_to_recompute.insert_many(marks[start:start + BATCH], ordered=False)
    # As ingestion does, the patients' panel rows are marked too; the refresher (every minute, the job at minute
    # 5) computes them, and the rows due at each local midnight, before the job runs. Its pass is timed apart.
    refresher = _services(client, db, later)
    refresher.panel_rows.mark([m["patient_id"] for m in marks], "sessions")
    started = time.perf_counter()
    refreshed = refresher.panel_rows.refresh_due()
    figures = {"refresher_s": round(time.perf_counter() - started, 2), "refresher_rows": refreshed}
    for name, at in (("one_new_day", later), ("nothing_new", later + timedelta(minutes=10))):
        services = _services(client, db, at)
        started = time.perf_counter()
        profiler = cProfile.Profile() if os.environ.get("NIGHTLY_PROFILE_NEXT") else None
        if profiler:
            profiler.enable()
        written = services.adherence_job.run()
        if profiler:
            profiler.disable()
            print(name, _top(profiler, 40), flush=True)
        figures[f"{name}_s"] = round(time.perf_counter() - started, 2)
        figures[f"{name}_written"] = written
    # The next local midnight with nothing new: the refresher computes every row again (their PDC periods move
    # on), by time alone, from the days each row keeps plus the day just completed.
    midnight = _services(client, db, later + timedelta(days=1))
    started = time.perf_counter()
    figures["midnight_rows"] = midnight.panel_rows.refresh_due()
    figures["midnight_refresher_s"] = round(time.perf_counter() - started, 2)
    return figures


def _top(profile: cProfile.Profile, count: int = 12) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(count)
    return out.getvalue()


def bench_nightly(patients: int, days: int, profile: bool = False) -> dict:
    """Seed, run the job once over every patient, measure the floor; figures for the report."""
    with database() as uri:
        client = mongo(uri)
        db = client[f"bench_nightly_{patients}"]
        ensure_indexes(db)
        started = time.perf_counter()
        counts = seed(db, patients, days)
        seed_s = time.perf_counter() - started
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        services = _services(client, db, NOW)
        written = services.adherence_job.run()
        if profiler:
            profiler.disable()
        job_s = time.perf_counter() - started
        alerts = db.alerts.count_documents({"kind": "low_adherence"})
        floor_s = floor(db, patients)
        changed = next_day(client, db)
        client.close()
    figures = {"patients": patients, "days": days, "seeded": counts, "seed_s": round(seed_s, 1),
               "job_s": round(job_s, 2), "snapshots_written": written, "low_adherence_alerts": alerts,
               "floor_s": round(floor_s, 2), "ratio_job_to_floor": round(job_s / floor_s, 2),
               "patients_per_s": round(patients / job_s), **changed}
    if profiler:
        figures["profile_top"] = _top(profiler)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    for count in args.patients:
        figures = bench_nightly(count, args.days, args.profile)
        print({k: v for k, v in figures.items() if k != "profile_top"}, flush=True)
        if args.profile:
            print(figures["profile_top"], flush=True)


if __name__ == "__main__":
    main()
