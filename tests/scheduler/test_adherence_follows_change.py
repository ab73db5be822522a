"""The adherence job's cost follows the change, not the population: after its first run it recomputes only the
days that received data (however late) and the local days begun since its last run, stores exactly what
computing each of those days alone stores, and with nothing new and no local midnight passed writes nothing.
Its reads do not grow with the number of patients (commands counted on the wire)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pymongo
from pymongo import monitoring

from companion.services.container import Services
from tests.scheduler.helpers import make_person, services_on
from tests.scheduler.test_late_data import _bound, _upload

T0 = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=1)  # every zone's local day has rolled over once
ZONES = ["Pacific/Auckland", "Europe/London", "America/Los_Angeles"]
LATE = T0 - timedelta(days=10)


class _Commands(monitoring.CommandListener):
    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def started(self, event):
        collection = event.command.get(event.command_name)
        self.seen.append((event.command_name, collection if isinstance(collection, str) else ""))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def reads(self) -> int:
        return sum(1 for name, _ in self.seen if name in ("find", "aggregate", "count", "distinct"))

    def writes(self) -> list[tuple[str, str]]:
        return [(n, c) for n, c in self.seen if n in ("insert", "update", "delete", "findAndModify")]


def _world(db, services, size: int) -> list:
    patients = []
    for index in range(size):
        patient = make_person(db, "patient", ZONES[index % len(ZONES)])
        db.therapy_plans.insert_one({
            "_id": f"plan-{patient.id}", "patient_id": patient.id, "version": 1,
            "active_from": datetime(2026, 2, 1, tzinfo=UTC), "active_to": None,
            "tens": {"sessions_per_day": 2, "minutes_per_session": 30, "start_date": "2026-02-01"},
            "medications": [{"times": ["08:00"]}], "mindfulness": {"minutes_per_day": 10}})
        _bound(db, services, patient, serial=f"CTU-F{index:04d}")
        patients.append(patient)
    return patients


def _run_then_new_data(db, services, traveller, patients) -> None:
    """The first run at T0; one session each later that day (and one ten days late for the first patient)."""
    traveller.move_to(T0)
    services.adherence_job.run()
    for index, patient in enumerate(patients):
        starts = [T0 + timedelta(hours=2)] + ([LATE] if index == 0 else [])
        _upload(services, patient, f"CTU-F{index:04d}", *starts)
    traveller.move_to(T1)


def test_only_touched_and_begun_days_are_recomputed_and_they_match_a_recomputation(jobs_db, settings, clock,
                                                                                   traveller):
    services = services_on(jobs_db, settings, clock)
    patients = _world(jobs_db, services, 6)
    _run_then_new_data(jobs_db, services, traveller, patients)
    before = {d["_id"]: d["computed_at"] for d in jobs_db.adherence_days.find()}
    written = services.adherence_job.run()
    stored = {d["_id"]: d for d in jobs_db.adherence_days.find()}
    recomputed = {d["_id"] for d in stored.values() if d["computed_at"] == T1}
    expected = set()
    for index, patient in enumerate(patients):
        history = patient.zone_history()
        touched = {(T0 + timedelta(hours=2)).astimezone(history.zone_at(T0)).date(),
                   T1.astimezone(history.zone_at(T1)).date()}
        if index == 0:
            touched.add(LATE.astimezone(history.zone_at(LATE)).date())
        expected |= {f"{patient.id}:{d.isoformat()}" for d in touched}
    assert recomputed == expected and written == len(expected)
    assert set(before) < set(stored)  # the first run's days are kept; untouched ones not rewritten
    # What the job stored is what computing each stored day alone stores.
    jobs_db.adherence_days.delete_many({})
    for patient in patients:
        for doc_id in [i for i in stored if i.startswith(patient.id + ":")]:
            services.adherence.compute_day(patient, datetime.fromisoformat(doc_id.split(":", 1)[1]).date())
    alone = {d["_id"]: d for d in jobs_db.adherence_days.find()}
    assert {k: {**v, "computed_at": None, "run": None, "write": None} for k, v in stored.items()} == \
           {k: {**v, "computed_at": None, "run": None, "write": None} for k, v in alone.items()}
    assert jobs_db.days_to_recompute.count_documents({}) == 0
    # The late day completes a run of three low planned days for the first patient only.
    assert [a["patient_id"] for a in jobs_db.alerts.find({"kind": "low_adherence"})] == [patients[0].id]


def test_with_nothing_new_the_job_writes_nothing(jobs_db, settings, clock, traveller, mongo_uri):
    services = services_on(jobs_db, settings, clock)
    patients = _world(jobs_db, services, 4)
    _run_then_new_data(jobs_db, services, traveller, patients)
    services.adherence_job.run()
    traveller.move_to(T1 + timedelta(minutes=30))  # no zone of the world passes midnight
    listener = _Commands()
    watched = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    try:
        assert Services(settings.with_changes(mongodb_db=jobs_db.name), client=watched,
                        clock=clock).adherence_job.run() == 0
    finally:
        watched.close()
    assert listener.writes() == [("update", "recompute_runs")]
    assert listener.reads() <= 3  # the last run, the marks, the patients' zones


def test_the_jobs_reads_do_not_grow_with_the_number_of_patients(jobs_db, settings, clock, traveller, mongo_uri,
                                                                 mongo_client):
    reads = []
    for size in (3, 12):
        db = mongo_client[f"{jobs_db.name}_{size}"]
        try:
            services = services_on(db, settings, clock)
            services.stores.ensure_indexes()
            _run_then_new_data(db, services, traveller, _world(db, services, size))
            listener = _Commands()
            watched = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
            try:
                written = Services(settings.with_changes(mongodb_db=db.name), client=watched,
                                   clock=clock).adherence_job.run()
            finally:
                watched.close()
            # Two days each (the touched one and the one begun), but in Los Angeles they are the same day; plus
            # the late day.
            assert written == 2 * size - size // len(ZONES) + 1
            reads.append(listener.reads())
        finally:
            mongo_client.drop_database(db.name)
    assert reads[0] == reads[1], reads
