"""The patient's "today": its figures come from the today row until a write touches the patient, and are then
computed again; they are always what a computation from the records gives."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pymongo
from pymongo import monitoring

from companion.api.ingestion import SessionRecordSchema
from companion.domain.access import Grant, Relationship
from companion.services.container import Services
from tests.scheduler.helpers import make_person
from tests.support.records import session_record

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PLAN = {"tens": {"sessions_per_day": 2, "daily_minutes_target": None, "minutes_per_session": 30, "programmes": [1],
                 "intensity_min_ma": 10.0, "intensity_max_ma": 30.0, "start_date": date(2026, 2, 1), "end_date": None,
                 "counts_towards_adherence": True}, "medications": [], "mindfulness": None}


class _Finds(monitoring.CommandListener):
    def __init__(self):
        self.collections = []

    def started(self, event):
        if event.command_name == "find":
            self.collections.append(event.command["find"])

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_today_reads_its_row_until_a_write_touches_the_patient(jobs_db, mongo_uri, settings, traveller):
    traveller.move_to(NOON)
    finds = _Finds()
    client = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[finds])
    try:
        services = Services(settings.with_changes(mongodb_db=jobs_db.name), client=client)
        patient = make_person(jobs_db, "patient", "Europe/London")
        services.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 2, 1, tzinfo=UTC))
        services.gateways.bind_unit(patient.id, "CTU-D0001", "companion-tens", bound_at=datetime(2026, 1, 1, tzinfo=UTC))
        first = services.progress.today(patient.id)
        assert first["tens"]["minutes"] == 0

        finds.collections.clear()
        assert services.progress.today(patient.id) == first
        assert "session_records" not in finds.collections and "today_rows" in finds.collections

        record = SessionRecordSchema().load(session_record("CTU-D0001", 1, started_at=NOON - timedelta(hours=3),
                                                           duration_s=1800))
        services.ingestion.receive(None, patient.id, [record], {"CTU-D0001"})
        finds.collections.clear()
        after_session = services.progress.today(patient.id)
        assert "session_records" in finds.collections  # the write changed the mark's token: computed again
        assert (after_session["tens"]["minutes"], after_session["tens"]["sessions"]) == (30.0, 1)

        services.diary.record_entry(Grant(patient.id, Relationship.SELF), {
            "client_entry_id": "today-1", "recorded_at": NOON - timedelta(hours=1), "nrs": 6, "context": None,
            "bpi": None, "session_record_id": None, "phase": None})
        assert services.progress.today(patient.id)["pain"] == {"entries": 1, "latest_nrs": 6}

        traveller.move_to(NOON + timedelta(days=1))  # a new local day: yesterday's row is not today's
        assert services.progress.today(patient.id)["tens"]["minutes"] == 0
    finally:
        client.close()
