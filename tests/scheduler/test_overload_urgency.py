"""An overload is told at once, through quiet hours, only while it is fresh (OVERLOAD_URGENT_FOR after its event);
found later (a worker back from an outage, a hub's late upload), it is routine device care and waits for the end of
each recipient's quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.api.ingestion import SessionRecordSchema
from tests.scheduler.helpers import link_caregiver, make_person, phone, services_on
from tests.support.records import session_record

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NIGHT = {"start": "22:00", "end": "07:00"}
SERIAL = "CTU-V0001"


def _patient_and_caregiver_with_nights(db, settings, clock, sender):
    """A patient wearing a bound unit and a caregiver shared device faults, both with quiet hours 22:00-07:00 (UTC)."""
    patient = make_person(db, "patient", quiet_hours=NIGHT)
    patient_token = phone(db, patient)
    caregiver_token = phone(db, link_caregiver(db, patient, ["device_fault"], quiet_hours=NIGHT))
    services_on(db, settings, clock, sender).gateways.bind_unit(patient.id, SERIAL, "companion-tens",
                                                                bound_at=T10 - timedelta(days=30))
    return patient, patient_token, caregiver_token


def _upload_overload(db, settings, clock, sender, patient, started: datetime) -> None:
    record = session_record(SERIAL, 1, started_at=started, duration_s=1800, end_reason="overload")
    services_on(db, settings, clock, sender).ingestion.receive(None, patient.id, [SessionRecordSchema().load(record)],
                                                               {SERIAL})


def _evaluate_and_send(db, settings, clock, sender) -> None:
    services = services_on(db, settings, clock, sender)
    services.alerts.evaluate()
    services.push.send_due(owner="w")


def _priorities(emulator, token) -> list[tuple[datetime, str]]:
    return [(d.received_at, d.body["message"]["android"]["priority"]) for d in emulator.delivered_to(token)]


def test_an_overload_found_sixteen_hours_late_in_the_night_waits_for_the_end_of_the_night_as_routine(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    traveller.move_to(T10)
    _evaluate_and_send(jobs_db, settings, clock, sender)  # the worker ran, then stopped at 10:05
    traveller.move_to(T10 + timedelta(hours=1))
    _upload_overload(jobs_db, settings, clock, sender, patient, T10 + timedelta(hours=1) - timedelta(minutes=30))
    back = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)  # the worker is back at 03:00, in both their nights
    traveller.move_to(back)
    _evaluate_and_send(jobs_db, settings, clock, sender)
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "overload"}))
    assert (alert["severity"], alert["urgent"]) == ("warning", False)
    assert emulator.delivered_to(patient_token) == emulator.delivered_to(caregiver_token) == []
    morning = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    traveller.move_to(morning)
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="w")
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(morning, "normal")]


def test_an_overload_found_within_two_hours_goes_at_once_in_the_night(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    session = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)  # a session at 01:00, stopped on an overload
    found = session + timedelta(hours=1, minutes=59)  # the hub uploads it late, the pass finds it at 02:59
    traveller.move_to(found - timedelta(minutes=1))
    _upload_overload(jobs_db, settings, clock, sender, patient, session)
    traveller.move_to(found)
    _evaluate_and_send(jobs_db, settings, clock, sender)
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "overload"}))
    assert (alert["severity"], alert["urgent"]) == ("urgent", True)
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(found, "high")]
