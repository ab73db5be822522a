"""Device events a gateway uploads late (offline for days, or while the worker was down) become alerts: the alerts
pass reads the events stored since its window began as well as those that happened in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import (
    evaluate_alerts,
    services_on,
    upload_overloads,
    wearing_a_unit,
)

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SERIAL = "CTU-U0001"


def _patient_with_a_unit(db, settings, clock, sender):
    return wearing_a_unit(db, settings, clock, sender, SERIAL, T10 - timedelta(days=30))


def _overloads(db, patient) -> list[dict]:
    return list(db.alerts.find({"patient_id": patient.id, "kind": "overload"}))


def test_an_overload_a_gateway_uploads_two_days_late_is_raised_for_the_panel(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_with_a_unit(jobs_db, settings, clock, sender)
    uploaded = T10 + timedelta(days=2)
    traveller.move_to(uploaded - timedelta(minutes=1))
    evaluate_alerts(jobs_db, settings, clock, sender)  # the worker runs every minute, as always
    traveller.move_to(uploaded)
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, T10)  # the gateway was offline for two days
    traveller.move_to(uploaded + timedelta(minutes=1))
    evaluate_alerts(jobs_db, settings, clock, sender)
    [alert] = _overloads(jobs_db, patient)
    assert alert["occurred_at"] == T10
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alert['_id']}"}) == 0  # two days old
    assert emulator.delivered_to(patient_token) == emulator.delivered_to(caregiver_token) == []


def test_an_overload_uploaded_just_after_the_last_pass_before_a_long_outage_is_raised_for_the_panel(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, _, _ = _patient_with_a_unit(jobs_db, settings, clock, sender)
    traveller.move_to(T10)
    evaluate_alerts(jobs_db, settings, clock, sender)  # the last complete pass
    traveller.move_to(T10 + timedelta(minutes=11))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, T10 - timedelta(minutes=20))  # 09:40 to 10:10
    traveller.move_to(T10 + timedelta(hours=26))  # the worker was down from 10:05 to 12:00 the next day
    evaluate_alerts(jobs_db, settings, clock, sender)
    assert len(_overloads(jobs_db, patient)) == 1


def test_an_event_an_upload_under_way_wrote_after_the_last_pass_had_read_is_raised_by_the_next(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, _, _ = _patient_with_a_unit(jobs_db, settings, clock, sender)
    traveller.move_to(T10)
    evaluate_alerts(jobs_db, settings, clock, sender)  # the last complete pass, from 10:00
    # An upload received at 09:59 (its events stored under that time) wrote them after the pass had read the events.
    traveller.move_to(T10 + timedelta(minutes=1))
    received = T10 - timedelta(minutes=1)
    record_id = f"{SERIAL}:late"
    jobs_db.device_events.insert_one({"_id": f"{record_id}:overload", "patient_id": patient.id,
                                      "device_serial": SERIAL, "kind": "overload", "at": T10 - timedelta(hours=30),
                                      "record_id": record_id, "created_at": received})
    traveller.move_to(T10 + timedelta(hours=26))  # the worker was down from 10:05 to 12:00 the next day
    evaluate_alerts(jobs_db, settings, clock, sender)
    assert len(_overloads(jobs_db, patient)) == 1


def test_an_overload_uploaded_more_than_a_week_late_raises_nothing(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, _, _ = _patient_with_a_unit(jobs_db, settings, clock, sender)
    uploaded = T10 + timedelta(days=8)
    traveller.move_to(uploaded - timedelta(minutes=1))
    evaluate_alerts(jobs_db, settings, clock, sender)
    traveller.move_to(uploaded)
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, T10)
    assert jobs_db.device_events.count_documents({"patient_id": patient.id, "kind": "overload"}) == 1
    traveller.move_to(uploaded + timedelta(minutes=1))
    evaluate_alerts(jobs_db, settings, clock, sender)
    assert _overloads(jobs_db, patient) == []  # older than the furthest any pass reads back (DEVICE_CATCH_UP)


def test_an_event_whose_session_is_placed_days_back_raises_its_alert_for_the_day_it_now_belongs_to(
        jobs_db, settings, clock, traveller, sender, emulator):
    """A later clock fix moves a session (and its events) to a day the pass's window by time no longer covers: the
    moved event is stored anew, read by the stored-time read, and its alert raised for that day."""
    patient, _, _ = _patient_with_a_unit(jobs_db, settings, clock, sender)
    traveller.move_to(T10 + timedelta(minutes=40))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, T10)
    evaluate_alerts(jobs_db, settings, clock, sender)
    [first] = _overloads(jobs_db, patient)
    [event] = jobs_db.device_events.find({"patient_id": patient.id, "kind": "overload"})

    fixed = T10 + timedelta(days=3)
    traveller.move_to(fixed - timedelta(minutes=1))
    evaluate_alerts(jobs_db, settings, clock, sender)  # the worker runs every minute, as always
    traveller.move_to(fixed)
    placed = T10 + timedelta(days=1)  # two days before now: outside the last day's window
    services_on(jobs_db, settings, clock, sender).stores.device_events.move(event["record_id"], ["overload"], placed,
                                                                            patient.id)
    traveller.move_to(fixed + timedelta(minutes=1))
    evaluate_alerts(jobs_db, settings, clock, sender)
    assert sorted(a["occurred_at"] for a in _overloads(jobs_db, patient)) == [first["occurred_at"], placed]


def test_an_event_stored_with_no_time_holds_no_alert_back_and_the_pass_is_noted_complete(
        jobs_db, settings, clock, traveller, sender, emulator):
    from companion.services.alerts import ALERTS_JOB

    patient, _, _ = _patient_with_a_unit(jobs_db, settings, clock, sender)
    traveller.move_to(T10)
    evaluate_alerts(jobs_db, settings, clock, sender)
    traveller.move_to(T10 + timedelta(minutes=30))
    jobs_db.device_events.insert_one({"_id": f"{SERIAL}:broken:overload", "patient_id": patient.id,
                                      "device_serial": SERIAL, "kind": "overload", "at": None,
                                      "record_id": f"{SERIAL}:broken", "created_at": T10 + timedelta(minutes=25)})
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, T10 - timedelta(minutes=10))
    traveller.move_to(T10 + timedelta(minutes=31))
    evaluate_alerts(jobs_db, settings, clock, sender)
    assert len(_overloads(jobs_db, patient)) == 1
    assert services_on(jobs_db, settings, clock, sender).stores.days_to_recompute.last_run(ALERTS_JOB) == \
        T10 + timedelta(minutes=31)


def test_a_pass_reads_by_stored_time_only_what_came_since_the_last_complete_pass(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    """The stored-time read of a pass a minute after the last starts at the last pass (less UPLOAD_LAG), not at the
    day's window: the day's events are not read a second time each minute."""
    from companion.services.alerts import UPLOAD_LAG
    from companion.store.sessions import DeviceEvents

    _patient_with_a_unit(jobs_db, settings, clock, sender)
    traveller.move_to(T10)
    evaluate_alerts(jobs_db, settings, clock, sender)
    stored_since = []
    read = DeviceEvents.happened_or_stored_between
    monkeypatch.setattr(DeviceEvents, "happened_or_stored_between",
                        lambda self, since, until, **kw: stored_since.append(kw["stored_since"]) or read(
                            self, since, until, **kw))
    traveller.move_to(T10 + timedelta(minutes=1))
    evaluate_alerts(jobs_db, settings, clock, sender)
    assert stored_since == [T10 - UPLOAD_LAG]
