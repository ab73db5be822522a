"""The one-pass adherence job stores, for several patients at once, what computing each day alone would."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from companion.services.adherence_batch import recompute_everyone
from companion.store.adherence import snapshot_id
from companion.store.stores import Stores
from tests.scheduler.helpers import make_person, services_on

NOW = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)
ZONES = ["Pacific/Auckland", "Europe/London", "America/Los_Angeles"]


def _world(db) -> list:
    patients = []
    for index, zone in enumerate(ZONES):
        patient = make_person(db, "patient", zone)
        db.therapy_plans.insert_many([{
            "_id": f"plan-{index}-{version}", "patient_id": patient.id, "version": version,
            "active_from": datetime(2026, 3, 1 + 8 * (version - 1), tzinfo=UTC), "active_to": None,
            "tens": {"sessions_per_day": version, "minutes_per_session": 30, "start_date": "2026-03-01"},
            "medications": [{"times": ["08:00"]}], "mindfulness": {"minutes_per_day": 10}} for version in (1, 2)])
        for hours in range(-40, 6, 7):  # sessions every 7 hours up to the run, on both sides of midnight
            started = NOW + timedelta(hours=hours)
            db.session_records.insert_one({"_id": f"CTU-{index}:{hours}", "patient_id": patient.id,
                                           "device_serial": f"CTU-{index}", "started_at": started,
                                           "duration_s": 1200 + 60 * index})
        db.practice_log.insert_one({"_id": f"pr-{index}", "patient_id": patient.id, "started_at": NOW,
                                    "completed_at": NOW, "minutes": 5})
        db.reminder_occurrences.insert_one({"_id": f"med-{index}", "patient_id": patient.id, "kind": "medication",
                                            "status": "done", "local_date": "2026-03-09", "due_at": NOW})
        patients.append(patient)
    return patients


def test_the_one_pass_job_stores_what_each_day_computed_alone_stores(jobs_db, settings):
    patients = _world(jobs_db)
    services = services_on(jobs_db, settings, lambda: NOW)
    services.adherence_job.run()
    # The same snapshots but for the number of the job's run that wrote them (which orders overlapping runs) and
    # the id of the write (which tells the run's own write from a stored day of the same number).
    batch = {d["_id"]: d for d in jobs_db.adherence_days.find({}, {"run": 0, "write": 0})}
    assert jobs_db.adherence_days.count_documents({"run": {"$gte": 1}}) == len(batch)
    jobs_db.adherence_days.delete_many({})
    for patient in patients:
        today = NOW.astimezone(patient.zone_history().zone_at(NOW)).date()
        for n in (1, 0):
            services.adherence.compute_day(patient, today - timedelta(days=n))
    alone = {d["_id"]: d for d in jobs_db.adherence_days.find()}
    assert batch == alone and len(batch) == 2 * len(ZONES)


def test_low_adherence_is_judged_on_older_snapshots_read_by_id(jobs_db, settings):
    patient = _world(jobs_db)[1]
    jobs_db.session_records.delete_many({"patient_id": patient.id})  # nothing yesterday either
    for n in range(2, 6):
        day = date(2026, 3, 10) - timedelta(days=n)
        jobs_db.adherence_days.insert_one({"_id": snapshot_id(patient.id, day), "patient_id": patient.id,
                                           "date": day.isoformat(), "state": "progress", "tens_fraction": 0.2})
    chunks = list(recompute_everyone(Stores(jobs_db), NOW, chunk_size=2))
    flagged = [c.patient_id for chunk in chunks for c in chunk.candidates]
    assert flagged == [patient.id] and [chunk.written for chunk in chunks] == [4, 2]
