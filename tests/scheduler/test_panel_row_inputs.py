"""Inputs of a panel row that no write marked, found by a review of what clinicians see: a rating recorded a few
minutes ahead (a phone whose clock runs fast), a unit released, an alert raised, resolved, reopened or
acknowledged by a process that stopped before marking the row. Each row must agree with the review page as
soon as the input counts, not at the patient's next local midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo.errors import ConnectionFailure

from companion.api.ingestion import SessionRecordSchema, SyncSchema
from companion.clock import now
from companion.domain.access import Grant, Relationship
from companion.domain.alerts import Resolution
from companion.domain.review import PanelFilter
from companion.services.item_failures import ItemFailures
from companion.services.read_models import panel_row_doc
from companion.store.relationships import CareTeams
from tests.scheduler.helpers import make_person, services_on
from tests.support.records import session_record
from tests.support.stops import dead_database, fail_once


def _clinic(db, settings):
    services = services_on(db, settings, now)
    teams = CareTeams(db)
    team = teams.create("Pain clinic")
    clinician, patient = make_person(db, "clinician"), make_person(db, "patient", "UTC")
    teams.add_clinician(team.id, clinician.id)
    teams.enrol(team.id, patient.id)
    return services, clinician, patient


def _rate(services, patient_id: str, at: datetime, nrs: int) -> dict:
    return services.diary.record_entry(Grant(patient_id, Relationship.SELF), {
        "client_entry_id": f"e-{at.timestamp()}-{nrs}", "nrs": nrs, "context": None, "recorded_at": at, "bpi": None,
        "session_record_id": None, "phase": None})


def test_a_rating_from_a_phone_a_few_minutes_ahead_reaches_the_panel_when_its_time_comes(jobs_db, settings,
                                                                                         traveller):
    services, clinician, patient = _clinic(jobs_db, settings)
    wall = datetime.now(UTC)
    _rate(services, patient.id, wall - timedelta(days=20), 3)  # the fortnight before: a mean of 3
    _rate(services, patient.id, wall - timedelta(days=2), 3)
    services.review.panel_page(clinician.id)
    _rate(services, patient.id, wall + timedelta(minutes=4), 10)  # the phone's clock 4 minutes ahead
    services.review.panel_page(clinician.id)  # a clinician reads the panel at that moment
    for _ in range(18):  # three hours of the refresher, every ten minutes
        traveller.shift(timedelta(minutes=10))
        services.panel_rows.refresh_due()
    review_trend = services.review.of_patient(patient).pain(30)["trend"]
    assert review_trend.direction == "rising"
    flagged, _ = services.review.panel_page(clinician.id, keep=PanelFilter(needs_attention=True))
    assert (services.review.summary(patient).pain, [r.patient_id for r in flagged]) == (review_trend, [patient.id])


def test_a_released_unit_leaves_the_panels_last_sync_at_once(jobs_db, settings, traveller):
    services, clinician, patient = _clinic(jobs_db, settings)
    services.gateways.bind_unit(patient.id, "CTU-R0001", "companion-tens",
                                bound_at=datetime.now(UTC) - timedelta(days=30))
    traveller.shift(timedelta(days=-3))  # the unit last uploaded three days ago
    record = SessionRecordSchema().load(session_record("CTU-R0001", 1,
                                                       started_at=datetime.now(UTC) - timedelta(hours=2)))
    services.ingestion.receive(None, patient.id, [record], {"CTU-R0001"})
    traveller.shift(timedelta(days=3))
    services.panel_rows.refresh_due()
    assert services.review.summary(patient).days_since_sync == 3
    services.gateways.release_unit(patient.id, "CTU-R0001")  # the unit went back to the clinic
    services.review.panel_page(clinician.id)
    assert services.review.of_patient(patient).device()["devices"] == []
    assert panel_row_doc(patient, [], [], None, 0, datetime.now(UTC))[0]["last_sync"] is None
    row = services.review.summary(patient)
    assert (row.days_since_sync, row.reasons) == (None, [])



def _unit_last_synced_days_ago(services, patient, serial: str, days: int, traveller) -> None:
    services.gateways.bind_unit(patient.id, serial, "companion-tens", bound_at=datetime.now(UTC) - timedelta(days=30))
    traveller.shift(timedelta(days=-days))  # its last session uploaded then
    record = SessionRecordSchema().load(session_record(serial, 1, started_at=datetime.now(UTC) - timedelta(hours=2)))
    services.ingestion.receive(None, patient.id, [record], {serial})
    traveller.shift(timedelta(days=days))


def _silent(services, serial: str) -> list:
    at = datetime.now(UTC) + timedelta(hours=1)
    return [c for c in services.alerts.silent_units(at, ItemFailures("t")) if serial in c.dedup_key]


def test_the_panel_counts_days_since_sync_from_the_last_status_report_as_the_silent_unit_alert_does(
        jobs_db, settings, traveller):
    services, clinician, patient = _clinic(jobs_db, settings)
    _unit_last_synced_days_ago(services, patient, "CTU-H0001", 5, traveller)
    # Today the hub reaches the unit and reports it: nothing new recorded, so no upload.
    services.ingestion.device_status(patient.id, [{"serial": "CTU-H0001", "battery_pct": 70, "firmware": "1.0",
                                                   "last_seen_at": datetime.now(UTC), "last_seen_clock": "server",
                                                   "last_error": None}])
    services.panel_rows.refresh_due()
    row = services.review.summary(patient)
    device = services.review.of_patient(patient).device()["devices"][0]
    assert _silent(services, "CTU-H0001") == []  # the alert rule: heard from today
    assert (row.days_since_sync, row.reasons, device["days_since_sync"]) == (0, [], 0)
    assert device["last_heard_at"] == services.stores.devices.get("CTU-H0001").status["last_seen_at"]


def test_a_sync_that_brings_no_new_record_counts_as_contact(jobs_db, settings, traveller):
    services, clinician, patient = _clinic(jobs_db, settings)
    _unit_last_synced_days_ago(services, patient, "CTU-H0002", 5, traveller)
    at = datetime.now(UTC)
    sync = SyncSchema().load({"sync_id": "sync-0000001", "serial": "CTU-H0002", "highest_seq": 1,
                              "unit_clock": at.isoformat(), "gateway_clock": at.isoformat(), "boot_id": "b1",
                              "monotonic_s": 100.0})
    services.ingestion.receive(None, patient.id, [], {"CTU-H0002"}, syncs=[sync])
    services.panel_rows.refresh_due()
    status = services.stores.devices.get("CTU-H0002").status
    assert status["last_sync_at"] == status["last_seen_at"] >= at - timedelta(seconds=1)
    assert services.review.summary(patient).days_since_sync == 0
    assert _silent(services, "CTU-H0002") == []


def _sync_without_records(services, patient, serial: str, reached: datetime, sync_id: str = "sync-0000002",
                          records: tuple[dict, ...] = ()) -> None:
    """An upload, now, of a sync the hub made at ``reached`` (in this boot of the gateway: tied to the server's clock
    by its monotonic clock) that brought no new record (or ``records``, captured under it)."""
    at = datetime.now(UTC)
    elapsed = (at - reached).total_seconds()
    sync = SyncSchema().load({"sync_id": sync_id, "serial": serial, "highest_seq": 1 + len(records),
                              "unit_clock": reached.isoformat(), "gateway_clock": reached.isoformat(),
                              "boot_id": "b1", "monotonic_s": 100.0})
    loaded = [SessionRecordSchema().load({**record, "sync_id": sync_id}) for record in records]
    services.ingestion.receive(None, patient.id, loaded, {serial}, syncs=[sync], gateway_clock={
        "wall": at, "boot_id": "b1", "monotonic_s": 100.0 + elapsed})


def test_a_sync_the_gateway_kept_while_offline_counts_as_contact_when_the_hub_reached_the_unit(
        jobs_db, settings, traveller):
    """Uploaded two days after the hub reached the unit (its internet was down): the unit was silent since, and
    the alert is owed now, not a day after the upload."""
    services, clinician, patient = _clinic(jobs_db, settings)
    _unit_last_synced_days_ago(services, patient, "CTU-H0003", 5, traveller)
    reached = datetime.now(UTC) - timedelta(days=2)
    _sync_without_records(services, patient, "CTU-H0003", reached)
    services.panel_rows.refresh_due()
    status = services.stores.devices.get("CTU-H0003").status
    assert abs(status["last_sync_at"] - reached) < timedelta(seconds=5)
    assert abs(status["last_seen_at"] - reached) < timedelta(seconds=5)
    assert services.review.summary(patient).days_since_sync == 2
    assert _silent(services, "CTU-H0003") != []


def test_a_backlog_the_gateway_kept_while_offline_counts_as_contact_when_the_hub_reached_the_unit(
        jobs_db, settings, traveller):
    """The same with a session in the batch: its upload two days late is not contact now, on the unit nor by the
    record's arrival, as a sync with no record is not; the unit was silent since, and the panel says 2 days."""
    services, clinician, patient = _clinic(jobs_db, settings)
    _unit_last_synced_days_ago(services, patient, "CTU-H0005", 5, traveller)
    reached = datetime.now(UTC) - timedelta(days=2)
    session = session_record("CTU-H0005", 2, started_at=reached - timedelta(hours=1), offset_s=0.0)
    _sync_without_records(services, patient, "CTU-H0005", reached, records=(session,))
    assert jobs_db.session_records.count_documents({"device_serial": "CTU-H0005"}) == 2
    services.panel_rows.refresh_due()
    status = services.stores.devices.get("CTU-H0005").status
    assert abs(status["last_sync_at"] - reached) < timedelta(seconds=5)
    assert services.review.summary(patient).days_since_sync == 2
    assert _silent(services, "CTU-H0005") != []


def test_a_batch_sent_again_whose_sync_is_stored_already_moves_no_contact(jobs_db, settings, traveller):
    services, clinician, patient = _clinic(jobs_db, settings)
    _unit_last_synced_days_ago(services, patient, "CTU-H0004", 5, traveller)
    reached = datetime.now(UTC) - timedelta(minutes=1)
    _sync_without_records(services, patient, "CTU-H0004", reached)
    traveller.shift(timedelta(days=2))  # its answer lost, the gateway sends the batch again two days on
    _sync_without_records(services, patient, "CTU-H0004", reached)
    assert abs(services.stores.devices.get("CTU-H0004").status["last_sync_at"] - reached) < timedelta(seconds=5)
    assert _silent(services, "CTU-H0004") != []


def test_an_alert_raised_by_a_pass_stopped_before_marking_the_row_reaches_the_panel_with_the_next_pass(
        jobs_db, settings, traveller, monkeypatch):
    services, clinician, patient = _clinic(jobs_db, settings)
    wall = datetime.now(UTC)
    for hours, nrs in ((20, 7), (1, 8), (0.5, 9)):  # a flare: two high ratings within the day
        _rate(services, patient.id, wall - timedelta(hours=hours), nrs)
    services.review.panel_page(clinician.id)
    assert services.review.summary(patient).open_alerts == 0
    monkeypatch.setattr(services.stores.panel_row_marks, "mark", dead_database)
    services.alerts.evaluate()  # (the failure is logged and counted; the alert stands, unmarked and unnotified)
    monkeypatch.undo()
    assert jobs_db.alerts.count_documents({"patient_id": patient.id, "kind": "pain_flare"}) == 1
    traveller.shift(timedelta(minutes=1))
    services.alerts.evaluate()
    traveller.shift(timedelta(minutes=1))
    services.panel_rows.refresh_due()
    assert services.review.summary(patient).open_alerts == 1


def test_an_alert_resolved_by_a_pass_stopped_before_marking_the_row_leaves_the_panel_with_the_next_pass(
        jobs_db, settings, traveller, monkeypatch):
    services, clinician, patient = _clinic(jobs_db, settings)
    wall = datetime.now(UTC)
    services.gateways.bind_unit(patient.id, "CTU-S0001", "companion-tens", bound_at=wall - timedelta(days=30))
    jobs_db.devices.update_one({"_id": "CTU-S0001"}, {"$set": {"status.last_seen_at": wall}})
    traveller.shift(timedelta(hours=25))
    services.alerts.evaluate()
    services.review.panel_page(clinician.id)
    assert services.review.summary(patient).open_alerts == 1  # the unit has been silent for a day
    services.ingestion.device_status(patient.id, [{"serial": "CTU-S0001", "battery_pct": 70, "firmware": "1.4.2",
                                                   "last_seen_at": datetime.now(UTC), "last_error": None}])
    traveller.shift(timedelta(minutes=1))
    services.panel_rows.refresh_due()  # the status's own mark is answered before the alerts job runs
    fail_once(monkeypatch, services.stores.panel_row_marks, "mark",
              lambda: jobs_db.alerts.count_documents({"patient_id": patient.id, "resolved_at": {"$ne": None}}))
    services.alerts.evaluate()  # (the failure is logged and counted; the alert stands resolved)
    monkeypatch.undo()
    assert jobs_db.alerts.find_one({"patient_id": patient.id})["resolved_at"] is not None
    traveller.shift(timedelta(minutes=1))
    services.alerts.evaluate()
    services.panel_rows.refresh_due()
    assert services.review.summary(patient).open_alerts == 0


def test_an_alert_reopened_by_a_pass_stopped_before_marking_the_row_reaches_the_panel_with_the_next_pass(
        jobs_db, settings, traveller, monkeypatch):
    services, clinician, patient = _clinic(jobs_db, settings)
    wall = datetime.now(UTC)
    jobs_db.therapy_plans.insert_one({
        "_id": "plan-1", "patient_id": patient.id, "version": 1, "created_at": wall - timedelta(days=10),
        "created_by": "clinician", "active_from": wall - timedelta(days=10), "active_to": None,
        "tens": {"sessions_per_day": 2, "daily_minutes_target": None, "minutes_per_session": 30,
                 "start_date": (wall - timedelta(days=10)).date().isoformat(), "end_date": None,
                 "counts_towards_adherence": True},
        "medications": [], "mindfulness": {}})  # no session at all: every day is low
    for _ in range(4):
        traveller.shift(timedelta(days=1))
        services.adherence_job.run()
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "low_adherence"}))
    services.alerts.resolve(alert, "resolved by hand for the test", Resolution.ADHERENCE_REACHED)
    traveller.shift(timedelta(minutes=1))
    services.panel_rows.refresh_due()
    assert services.review.summary(patient).open_alerts == 0

    # Data for yesterday arrives that changes nothing (its own mark answered by the refresher): the job judges the
    # run again, which still holds, and reopens the alert.
    services.touched_days.dates(patient.id, {datetime.now(UTC).date() - timedelta(days=1)}, "session")
    traveller.shift(timedelta(minutes=1))
    services.panel_rows.refresh_due()
    fail_once(monkeypatch, services.stores.panel_row_marks, "mark",
              lambda: jobs_db.alerts.count_documents({"_id": alert["_id"], "resolved_at": None}))
    services.adherence_job.run()  # (the failure is logged and counted)
    monkeypatch.undo()
    assert jobs_db.alerts.find_one({"_id": alert["_id"]})["resolved_at"] is None
    traveller.shift(timedelta(hours=1))
    services.adherence_job.run()
    services.panel_rows.refresh_due()
    assert services.review.summary(patient).open_alerts == 1


def test_an_alert_acknowledged_by_a_request_stopped_before_marking_the_row_leaves_the_panel(
        jobs_db, settings, traveller, monkeypatch):
    services, clinician, patient = _clinic(jobs_db, settings)
    wall = datetime.now(UTC)
    for hours, nrs in ((3, 8), (1, 9)):
        _rate(services, patient.id, wall - timedelta(hours=hours), nrs)
    services.alerts.evaluate()
    services.review.panel_page(clinician.id)
    assert services.review.summary(patient).open_alerts == 1
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id}))

    fail_once(monkeypatch, services.stores.panel_row_marks, "mark",
              lambda: jobs_db.alerts.count_documents({"_id": alert["_id"], "acknowledged_at": {"$ne": None}}))
    with pytest.raises(ConnectionFailure):
        services.alerts.acknowledge(patient.id, alert["_id"], clinician.id)
    monkeypatch.undo()
    traveller.shift(timedelta(minutes=1))
    services.panel_rows.refresh_due()
    assert services.review.summary(patient).open_alerts == 0


def test_a_day_the_adherence_job_writes_after_the_patients_midnight_reaches_the_row_computed_past_it(
        jobs_db, settings, traveller, monkeypatch):
    """The job takes its clock once: a run that starts before the patient's midnight recomputes that day (a late
    session) and writes it after the refresher, past midnight, computed the row with the day as completed, from
    its snapshot before the run. The row must take the day as written, not keep the old one for 30 days."""
    day = datetime(2026, 3, 10, tzinfo=UTC)
    traveller.move_to(day + timedelta(hours=23, minutes=55))
    services, clinician, patient = _clinic(jobs_db, settings)
    jobs_db.therapy_plans.insert_one({
        "_id": "plan-midnight", "patient_id": patient.id, "version": 1, "created_at": day - timedelta(days=10),
        "created_by": "clinician", "active_from": day - timedelta(days=10), "active_to": None,
        "tens": {"sessions_per_day": 1, "daily_minutes_target": None, "minutes_per_session": 30,
                 "start_date": (day - timedelta(days=10)).date().isoformat(), "end_date": None,
                 "counts_towards_adherence": True},
        "medications": [], "mindfulness": {}})
    services.adherence_job.run()
    services.panel_rows.refresh_due()
    services.gateways.bind_unit(patient.id, "CTU-MID01", "companion-tens", bound_at=day - timedelta(days=30))
    record = SessionRecordSchema().load(session_record("CTU-MID01", 1, started_at=day + timedelta(hours=12)))
    services.ingestion.receive(None, patient.id, [record], {"CTU-MID01"})  # the day's session, uploaded late

    store = services.stores.adherence_days
    real_save = store.save_many

    def refresher_passes_midnight_first(docs):
        monkeypatch.setattr(store, "save_many", real_save)
        traveller.move_to(day + timedelta(days=1, minutes=1))
        services.panel_rows.refresh_due()  # the row, now of the 11th, takes the 10th as it was stored before
        return real_save(docs)

    monkeypatch.setattr(store, "save_many", refresher_passes_midnight_first)
    services.adherence_job.run()  # its clock: 23:55 on the 10th
    monkeypatch.undo()
    traveller.move_to(day + timedelta(days=1, minutes=10))
    services.panel_rows.refresh_due()
    kept = services.stores.panel_row_days.by_ids([patient.id])[patient.id]
    _, fresh_days, _ = services.panel_rows.compute(patient, datetime.now(UTC))
    assert kept["today"] == "2026-03-11"
    assert kept["days"]["2026-03-10"] == fresh_days["2026-03-10"], (kept["days"]["2026-03-10"],
                                                                     fresh_days["2026-03-10"])
