"""An overload is told at once, through quiet hours, only while it is fresh (OVERLOAD_URGENT_FOR after its event);
found later (a worker back from an outage, a hub's late upload), it is routine device care and waits for the end of
each recipient's quiet hours. A fresh overload on a day whose overload was found late is told at once all the same:
the day's one alert is the fresh one's, or is made urgent by it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from companion.domain.alerts import AlertKind, Resolution, device_fault
from tests.scheduler.helpers import (
    evaluate_alerts,
    services_on,
    upload_overloads,
    wearing_a_unit,
)
from tests.support.stops import dead_database

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NIGHT = {"start": "22:00", "end": "07:00"}
SERIAL = "CTU-V0001"


def _patient_and_caregiver_with_nights(db, settings, clock, sender):
    """A patient wearing a bound unit and a caregiver shared device faults, both with quiet hours 22:00-07:00 (UTC)."""
    return wearing_a_unit(db, settings, clock, sender, SERIAL, T10 - timedelta(days=30), quiet_hours=NIGHT)




def _priorities(emulator, token) -> list[tuple[datetime, str]]:
    return [(d.received_at, d.body["message"]["android"]["priority"]) for d in emulator.delivered_to(token)]


def test_an_overload_found_sixteen_hours_late_in_the_night_waits_for_the_end_of_the_night_as_routine(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    traveller.move_to(T10)
    evaluate_alerts(jobs_db, settings, clock, sender)  # the worker ran, then stopped at 10:05
    traveller.move_to(T10 + timedelta(hours=1))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, T10 + timedelta(hours=1) - timedelta(minutes=30))
    back = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)  # the worker is back at 03:00, in both their nights
    traveller.move_to(back)
    evaluate_alerts(jobs_db, settings, clock, sender)
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
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, session)
    traveller.move_to(found)
    evaluate_alerts(jobs_db, settings, clock, sender)
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "overload"}))
    assert (alert["severity"], alert["urgent"]) == ("urgent", True)
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(found, "high")]


NIGHT_BEFORE = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)  # an overload at 01:00, found late
MORNING = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # the end of both their nights


def _overload_alert(db, patient) -> dict:
    [alert] = list(db.alerts.find({"patient_id": patient.id, "kind": "overload"}))
    return alert


def _found_late_at_five(db, settings, clock, traveller, sender, patient) -> None:
    """The hub uploads the 01:00 overload at 05:00, and the pass finds it: a warning, its pushes held until 07:00."""
    traveller.move_to(datetime(2026, 3, 3, 4, 59, tzinfo=UTC))
    upload_overloads(db, settings, clock, sender, patient, SERIAL, NIGHT_BEFORE)
    traveller.move_to(datetime(2026, 3, 3, 5, 0, tzinfo=UTC))
    evaluate_alerts(db, settings, clock, sender)
    assert _overload_alert(db, patient)["severity"] == "warning"


def test_a_fresh_overload_uploaded_with_one_found_late_the_same_day_is_told_at_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    found = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # the hub, offline overnight, uploads both at 06:00
    traveller.move_to(found - timedelta(minutes=1))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, NIGHT_BEFORE, datetime(2026, 3, 3, 5, 30, tzinfo=UTC))
    traveller.move_to(found)
    evaluate_alerts(jobs_db, settings, clock, sender)
    traveller.move_to(MORNING)
    evaluate_alerts(jobs_db, settings, clock, sender)
    alert = _overload_alert(jobs_db, patient)
    assert (alert["severity"], alert["urgent"], alert["occurred_at"]) == ("urgent", True, datetime(2026, 3, 3, 5, 30, tzinfo=UTC))
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(found, "high")]


def test_a_fresh_overload_after_one_found_late_the_same_day_makes_its_alert_urgent_and_is_told_at_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _found_late_at_five(jobs_db, settings, clock, traveller, sender, patient)
    fresh = datetime(2026, 3, 3, 5, 30, tzinfo=UTC)  # the patient tries again at 05:30, and it stops again
    traveller.move_to(fresh + timedelta(minutes=31))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, fresh, first_seq=2)
    found = fresh + timedelta(minutes=32)
    traveller.move_to(found)
    evaluate_alerts(jobs_db, settings, clock, sender)
    traveller.move_to(found + timedelta(minutes=1))
    evaluate_alerts(jobs_db, settings, clock, sender)  # the next pass adds nothing
    traveller.move_to(MORNING)
    evaluate_alerts(jobs_db, settings, clock, sender)
    alert = _overload_alert(jobs_db, patient)
    assert (alert["severity"], alert["urgent"], alert["occurred_at"]) == ("urgent", True, fresh)
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(found, "high")]
    held = sorted((d["kind"], d["state"], d.get("withdrawn_reason")) for d in jobs_db.push_outbox.find(
        {"patient_id": patient.id, "source_key": f"alert:{alert['_id']}"}))
    assert held == [("caregiver_overload_found_late", "withdrawn", "alert_escalated"),
                    ("overload_found_late", "withdrawn", "alert_escalated")]


def test_a_fresh_overload_after_one_found_late_and_acknowledged_is_open_again_for_the_care_team_and_told_at_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _found_late_at_five(jobs_db, settings, clock, traveller, sender, patient)
    traveller.move_to(datetime(2026, 3, 3, 5, 10, tzinfo=UTC))  # the on-call clinician has seen the 01:00 one
    acknowledged = services_on(jobs_db, settings, clock, sender).alerts.acknowledge(
        patient.id, _overload_alert(jobs_db, patient)["_id"], "clinician-1")
    fresh = datetime(2026, 3, 3, 5, 30, tzinfo=UTC)
    found = fresh + timedelta(minutes=32)
    traveller.move_to(found - timedelta(minutes=1))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, fresh, first_seq=2)
    traveller.move_to(found)
    evaluate_alerts(jobs_db, settings, clock, sender)
    alert = _overload_alert(jobs_db, patient)
    assert (alert["severity"], alert["acknowledged_at"]) == ("urgent", None)  # back on the panel, as urgent
    assert (alert["escalated_from"]["acknowledged_at"], alert["escalated_from"]["acknowledged_by"]) == (
        acknowledged["acknowledged_at"], "clinician-1")
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(found, "high")]


def test_an_escalation_stopped_before_its_pushes_were_queued_is_finished_once_by_the_next_pass(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _found_late_at_five(jobs_db, settings, clock, traveller, sender, patient)
    fresh = datetime(2026, 3, 3, 5, 30, tzinfo=UTC)
    traveller.move_to(fresh + timedelta(minutes=31))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, fresh, first_seq=2)
    traveller.move_to(fresh + timedelta(minutes=32))
    services = services_on(jobs_db, settings, clock, sender)
    monkeypatch.setattr(services.stores.outbox, "schedule", dead_database)  # the worker stops right there
    services.alerts.evaluate()
    monkeypatch.undo()
    assert _overload_alert(jobs_db, patient)["severity"] == "urgent"
    finished = fresh + timedelta(minutes=33)
    for at in (finished, finished + timedelta(minutes=1), MORNING):
        traveller.move_to(at)
        evaluate_alerts(jobs_db, settings, clock, sender)
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(finished, "high")]


def test_an_escalated_alert_the_care_team_acknowledges_before_its_caregivers_push_goes_withdraws_it(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _found_late_at_five(jobs_db, settings, clock, traveller, sender, patient)
    fresh = datetime(2026, 3, 3, 5, 30, tzinfo=UTC)
    traveller.move_to(fresh + timedelta(minutes=31))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, fresh, first_seq=2)
    traveller.move_to(fresh + timedelta(minutes=32))
    services = services_on(jobs_db, settings, clock, sender)
    services.alerts.evaluate()  # escalated; the sender has not run yet
    services.alerts.acknowledge(patient.id, _overload_alert(jobs_db, patient)["_id"], "clinician-1")
    services.push.send_due(owner="w")
    assert [p for _, p in _priorities(emulator, patient_token)] == ["high"]  # the unit's trouble is the patient's
    assert emulator.delivered_to(caregiver_token) == []
    [escalated] = list(jobs_db.push_outbox.find({"recipient_user_id": {"$ne": patient.id},
                                                  "source_key": {"$regex": ":escalated$"}}))
    assert (escalated["state"], escalated["withdrawn_reason"]) == ("withdrawn", "alert_acknowledged")


def _overload_judged_at(patient, judged: datetime):
    """The 01:00 overload's alert as a pass at ``judged`` finds it."""
    return device_fault(patient.id, SERIAL, AlertKind.OVERLOAD, NIGHT_BEFORE, ZoneInfo("UTC"), judged)


def test_an_overload_alert_reopened_hours_after_its_event_revives_its_withdrawn_pushes_as_routine(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    raised = NIGHT_BEFORE + timedelta(minutes=5)  # fresh: urgent, queued at once (the sender not round yet)
    traveller.move_to(raised)
    alert = services_on(jobs_db, settings, clock, sender).alerts.raise_once(_overload_judged_at(patient, raised))
    traveller.move_to(raised + timedelta(minutes=5))  # the care team excludes the session: resolved, pushes withdrawn
    services_on(jobs_db, settings, clock, sender).alerts.resolve(
        jobs_db.alerts.find_one({"_id": alert["_id"]}), "excluded", Resolution.SESSION_NOT_COUNTED)
    reopened = datetime(2026, 3, 3, 3, 30, tzinfo=UTC)  # counted again two and a half hours after the overload
    traveller.move_to(reopened)
    services_on(jobs_db, settings, clock, sender).alerts.raise_once(_overload_judged_at(patient, reopened))
    for at in (reopened, MORNING):
        traveller.move_to(at)
        services_on(jobs_db, settings, clock, sender).push.send_due(owner="w")
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(MORNING, "normal")]
    assert sorted(d["kind"] for d in jobs_db.push_outbox.find({"patient_id": patient.id})) == [
        "caregiver_overload_found_late", "overload_found_late"]
    assert (_overload_alert(jobs_db, patient)["severity"], _overload_alert(jobs_db, patient)["urgent"]) == (
        "warning", False)


def test_an_overload_stored_while_fresh_but_first_told_after_two_hours_is_a_routine_warning(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    stored = NIGHT_BEFORE + timedelta(hours=1, minutes=55)  # the pass finds it fresh, stores it urgent, and stops
    traveller.move_to(stored - timedelta(minutes=1))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, NIGHT_BEFORE)
    traveller.move_to(stored)
    services = services_on(jobs_db, settings, clock, sender)
    monkeypatch.setattr(services.stores.outbox, "schedule", dead_database)
    services.alerts.evaluate()
    monkeypatch.undo()
    assert _overload_alert(jobs_db, patient)["urgent"] is True
    traveller.move_to(stored + timedelta(minutes=10))  # the next pass tells of it: no longer fresh
    evaluate_alerts(jobs_db, settings, clock, sender)
    traveller.move_to(MORNING)
    evaluate_alerts(jobs_db, settings, clock, sender)
    alert = _overload_alert(jobs_db, patient)
    assert (alert["severity"], alert["urgent"]) == ("warning", False)
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(MORNING, "normal")]
