"""The alerts job reads in batches: finding the conditions of every patient (missed sessions, device troubles,
silent units, pain flares) takes the same number of queries for 2 patients as for 8 (commands counted on the
wire), and it reads everything in its window (no silent cap on its input)."""

from __future__ import annotations

from datetime import timedelta

import pymongo

from companion.services.container import Services
from companion.services.item_failures import ItemFailures
from tests.proof.test_database_server import is_ferretdb, plan_of
from tests.scheduler.helpers import daily_reminder, make_person, run_minute
from tests.scheduler.test_adherence_follows_change import _Commands
from tests.scheduler.test_alert_delivery import T10, _device, _event, _pain

EVALUATED_AT = T10 + timedelta(hours=2)


def _world(db, settings, clock, traveller, sender, size: int) -> list:
    patients = []
    traveller.move_to(T10 - timedelta(hours=1))
    for index in range(size):
        patient = make_person(db, "patient", caregiver_alert_delay_min=30)
        daily_reminder(db, patient, ["10:00"], "2026-03-02", window_min=30)
        _device(db, patient, serial=f"CTU-S{index:04d}", last_seen=T10 - timedelta(hours=30))  # silent
        faulty = _device(db, patient, serial=f"CTU-B{index:04d}", last_seen=T10, battery=9)
        _event(db, patient, faulty, "battery_low", T10 - timedelta(hours=3), battery=9)  # before the reminder
        _pain(db, patient, T10 - timedelta(hours=1), 8)
        _pain(db, patient, T10 - timedelta(minutes=30), 9)
        patients.append(patient)
    for at in (T10, EVALUATED_AT):
        traveller.move_to(at)
        run_minute(db, settings, clock, sender)  # the reminders are due, then missed
    return patients


def test_the_alerts_jobs_reads_do_not_grow_with_the_number_of_patients(jobs_db, settings, clock, traveller, sender,
                                                                       mongo_uri, mongo_client):
    reads, kinds = [], []
    for size in (2, 8):
        db = mongo_client[f"{jobs_db.name}_{size}"]
        try:
            Services(settings.with_changes(mongodb_db=db.name), client=mongo_client, clock=clock).stores \
                .ensure_indexes()
            _world(db, settings, clock, traveller, sender, size)
            listener = _Commands()
            watched = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
            try:
                alerts = Services(settings.with_changes(mongodb_db=db.name), client=watched, clock=clock).alerts
                first = alerts.evaluate()  # raises every alert once: its own reads, per alert raised
                listener.seen.clear()
                second = alerts.evaluate()  # finds every condition again, all raised already
            finally:
                watched.close()
            assert first.failed == second.failed == 0
            assert sum(first.raised.values()) == 4 * size and second.raised == {}
            kinds.append(sorted({a["kind"] for a in db.alerts.find()}))
            reads.append(listener.reads())
        finally:
            mongo_client.drop_database(db.name)
    assert kinds[0] == ["battery_low", "missed_tens_session", "pain_flare", "unit_silent"] == kinds[1]
    assert reads[0] == reads[1], reads


class _Finds(pymongo.monitoring.CommandListener):
    def __init__(self):
        self.filters: list[tuple[str, dict]] = []

    def started(self, event):
        if event.command_name == "find":
            self.filters.append((event.command["find"], event.command.get("filter", {})))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_the_missed_session_read_is_bounded_on_an_index(jobs_db, settings, clock, traveller, sender, mongo_uri):
    """The alerts job reads the TENS reminders it may alert about every minute, back as far as the longest delay
    accepted: within bounds of the status_window index at both ends, never every missed occurrence ever kept
    (occurrences stay missed for good)."""
    Services(settings.with_changes(mongodb_db=jobs_db.name), client=jobs_db.client, clock=clock).stores \
        .ensure_indexes()
    _world(jobs_db, settings, clock, traveller, sender, 2)
    listener = _Finds()
    watched = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    try:
        alerts = Services(settings.with_changes(mongodb_db=jobs_db.name), client=watched, clock=clock).alerts
        assert len(alerts.missed_sessions(EVALUATED_AT, ItemFailures("test"))) == 2
    finally:
        watched.close()
    (query,) = [f for collection, f in listener.filters if collection == "reminder_occurrences"]
    plan = plan_of(jobs_db, "reminder_occurrences", query)
    if is_ferretdb(jobs_db):  # SQLite's plan: each index search bounded on window_ends_at (> and <)
        searches = [line for line in plan.split('", "') if "USING INDEX" in line]
        assert searches and all("status_window" in s and "<expr>>? AND <expr><?" in s for s in searches), plan
    else:  # MongoDB: the status_window index, with window_ends_at bounded
        assert "status_window" in plan and "MinKey" not in plan and "MaxKey" not in plan, plan
