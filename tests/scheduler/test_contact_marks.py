"""A unit's contact marks its patient's panel row only when it changes what the row shows: a gateway reports
each unit about every 30 seconds, and a mark for every report kept every row of a deployment marked for now (no
kept page of the panel was ever answered). Whatever a report leaves unmarked, the row still shows what a
computation from the units would: it is computed again before the days since its sync move on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.api.ingestion import SessionRecordSchema
from companion.clock import now
from tests.scheduler.helpers import make_person, services_on
from tests.support.records import session_record

SERIAL = "CTU-M0001"


def _patient_with_a_synced_unit(db, settings):
    services = services_on(db, settings, now)
    patient = make_person(db, "patient", "UTC")
    services.gateways.bind_unit(patient.id, SERIAL, "companion-tens", bound_at=datetime.now(UTC) - timedelta(days=30))
    record = SessionRecordSchema().load(session_record(SERIAL, 1, started_at=datetime.now(UTC) - timedelta(hours=2)))
    services.ingestion.receive(None, patient.id, [record], {SERIAL})
    services.panel_rows.refresh_due()
    return services, patient


def _report(services, patient) -> datetime:
    at = datetime.now(UTC)
    services.ingestion.device_status(patient.id, [{"serial": SERIAL, "battery_pct": 80, "firmware": "1.0",
                                                   "last_seen_at": at, "last_seen_clock": "server",
                                                   "last_error": None}])
    return at


def _marked_now(db, patient) -> bool:
    return db.panel_row_marks.find_one({"_id": patient.id})["due"] == "now"


def test_status_reports_that_change_nothing_shown_leave_the_row_unmarked(jobs_db, settings, traveller):
    services, patient = _patient_with_a_synced_unit(jobs_db, settings)
    marked = []
    for _ in range(4):  # a gateway's report every 30 s (device_gateway's default), nothing new to say
        traveller.shift(timedelta(seconds=30))
        _report(services, patient)
        marked.append(_marked_now(jobs_db, patient))
    assert marked == [False] * 4
    assert services.review.summary(patient).days_since_sync == 0


def test_a_unit_heard_again_after_days_of_silence_marks_the_row(jobs_db, settings, traveller):
    services, patient = _patient_with_a_synced_unit(jobs_db, settings)
    traveller.shift(timedelta(days=3))
    services.panel_rows.refresh_due()
    assert services.review.summary(patient).days_since_sync == 3
    _report(services, patient)
    assert _marked_now(jobs_db, patient)
    row = services.review.summary(patient)
    assert (row.days_since_sync, row.reasons) == (0, [])


def test_a_row_takes_the_contact_it_was_not_marked_for_before_its_days_since_sync_move_on(
        jobs_db, settings, traveller):
    services, patient = _patient_with_a_synced_unit(jobs_db, settings)  # 09:00 UTC, the patient's zone
    traveller.shift(timedelta(seconds=30))
    first = _report(services, patient)
    traveller.shift(timedelta(hours=16))  # past the patient's midnight: the row computed again, with that report
    services.panel_rows.refresh_due()
    assert jobs_db.panel_rows.find_one({"_id": patient.id})["last_sync"] == first.replace(microsecond=0)
    last = _report(services, patient)  # 01:00: the days since the sync stay 0, nothing marked
    assert not _marked_now(jobs_db, patient)
    # A day after the contact the row holds, before the next midnight: the row is computed again, with the last.
    traveller.move_to(first + timedelta(days=1, minutes=2))
    services.panel_rows.refresh_due()
    assert services.review.summary(patient).days_since_sync == 0
    assert jobs_db.panel_rows.find_one({"_id": patient.id})["last_sync"] == last.replace(microsecond=0)
