"""An overload alert resolved (the care team excluded its session) that holds again is open again, and its people
are told once: by the pushes its resolution withdrew, revived as urgent as the overload is now, or by its
escalation's when a fresh overload makes it urgent, never by both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import evaluate_alerts, services_on, upload_overloads
from tests.scheduler.test_overload_urgency import (
    MORNING,
    SERIAL,
    _found_late_at_five,
    _overload_alert,
    _patient_and_caregiver_with_nights,
    _priorities,
)
from tests.support.stops import dead_database

FRESH = datetime(2026, 3, 3, 5, 30, tzinfo=UTC)  # the patient tries again at 05:30, and it stops again


def _excluded_and_counted_again(db, settings, clock, traveller, sender, patient) -> None:
    """The 01:00 overload found late at 05:00 (its pushes held until 07:00); the care team excludes its session at
    05:10 (resolved, the pushes withdrawn) and counts it again at 05:20 (reopened)."""
    _found_late_at_five(db, settings, clock, traveller, sender, patient)
    traveller.move_to(datetime(2026, 3, 3, 5, 10, tzinfo=UTC))
    services_on(db, settings, clock, sender).sessions.resolve(patient.id, f"{SERIAL}:1", "exclude", "clinician-1")
    traveller.move_to(datetime(2026, 3, 3, 5, 20, tzinfo=UTC))
    services_on(db, settings, clock, sender).sessions.resolve(patient.id, f"{SERIAL}:1", "count", "clinician-1")
    assert _overload_alert(db, patient)["resolved_at"] is None


def test_a_reopened_alert_a_fresh_overload_escalates_pushes_each_person_once_though_the_escalation_stopped(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _excluded_and_counted_again(jobs_db, settings, clock, traveller, sender, patient)
    traveller.move_to(FRESH + timedelta(minutes=31))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, FRESH, first_seq=2)
    traveller.move_to(FRESH + timedelta(minutes=32))
    services = services_on(jobs_db, settings, clock, sender)
    monkeypatch.setattr(services.stores.alerts, "escalate", dead_database)  # the worker stops right there
    services.alerts.evaluate()
    monkeypatch.undo()
    services.push.send_due(owner="w")  # the sender, between two passes
    finished = FRESH + timedelta(minutes=33)
    for at in (finished, finished + timedelta(minutes=1), MORNING):
        traveller.move_to(at)
        evaluate_alerts(jobs_db, settings, clock, sender)
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(finished, "high")]
    alert = _overload_alert(jobs_db, patient)
    assert (alert["severity"], alert["urgent"], alert["occurred_at"]) == ("urgent", True, FRESH)


def _excluded(db, settings, clock, sender, patient) -> None:
    services_on(db, settings, clock, sender).sessions.resolve(patient.id, f"{SERIAL}:1", "exclude", "clinician-1",
                                                               note="not a real session")


def test_a_fresh_overload_the_day_the_care_team_excluded_the_session_of_the_first_reopens_its_alert_at_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _found_late_at_five(jobs_db, settings, clock, traveller, sender, patient)
    traveller.move_to(datetime(2026, 3, 3, 5, 10, tzinfo=UTC))
    _excluded(jobs_db, settings, clock, sender, patient)  # resolved; its pushes held until 07:00 withdrawn
    assert _overload_alert(jobs_db, patient)["resolved_at"] is not None
    found = FRESH + timedelta(minutes=32)
    traveller.move_to(found - timedelta(minutes=1))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, FRESH, first_seq=2)
    for at in (found, found + timedelta(minutes=1), MORNING):
        traveller.move_to(at)
        evaluate_alerts(jobs_db, settings, clock, sender)
    alert = _overload_alert(jobs_db, patient)
    assert (alert["resolved_at"], alert["severity"], alert["urgent"], alert["occurred_at"]) == (
        None, "urgent", True, FRESH)
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(found, "high")]


def test_an_overload_read_by_a_pass_before_the_care_team_excluded_its_session_does_not_reopen_its_alert(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _found_late_at_five(jobs_db, settings, clock, traveller, sender, patient)
    traveller.move_to(datetime(2026, 3, 3, 5, 10, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock, sender)
    read = services.stores.alerts.notified_among

    def excluded_meanwhile(keys):  # the pass has read the 01:00 event; the care team excludes its session now
        _excluded(jobs_db, settings, clock, sender, patient)
        return read(keys)

    monkeypatch.setattr(services.stores.alerts, "notified_among", excluded_meanwhile)
    services.alerts.evaluate()
    monkeypatch.undo()
    for at in (datetime(2026, 3, 3, 5, 11, tzinfo=UTC), MORNING):
        traveller.move_to(at)
        evaluate_alerts(jobs_db, settings, clock, sender)
    assert _overload_alert(jobs_db, patient)["resolution"]["code"] == "session_not_counted"
    assert emulator.delivered_to(patient_token) == emulator.delivered_to(caregiver_token) == []


def test_an_alert_reopened_by_its_session_counted_again_tells_those_whose_push_its_resolution_withdrew_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _excluded_and_counted_again(jobs_db, settings, clock, traveller, sender, patient)
    for at in (datetime(2026, 3, 3, 5, 21, tzinfo=UTC), MORNING, MORNING + timedelta(minutes=1)):
        traveller.move_to(at)
        evaluate_alerts(jobs_db, settings, clock, sender)
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(MORNING, "normal")]
    alert = _overload_alert(jobs_db, patient)
    assert (alert["severity"], alert["urgent"]) == ("warning", False)


def test_an_escalation_a_later_pass_finishes_after_two_hours_is_pushed_as_urgent_as_the_alert_says(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _found_late_at_five(jobs_db, settings, clock, traveller, sender, patient)
    traveller.move_to(FRESH + timedelta(minutes=31))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, FRESH, first_seq=2)
    traveller.move_to(FRESH + timedelta(minutes=32))
    services = services_on(jobs_db, settings, clock, sender)
    monkeypatch.setattr(services.stores.outbox, "schedule", dead_database)  # escalated; its pushes not queued
    services.alerts.evaluate()
    monkeypatch.undo()
    finished = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)  # the worker is back two and a half hours after the overload
    traveller.move_to(finished)
    evaluate_alerts(jobs_db, settings, clock, sender)
    alert = _overload_alert(jobs_db, patient)
    assert (alert["severity"], alert["urgent"]) == ("urgent", True)
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(finished, "high")]


def test_a_fresh_overload_reopening_an_alert_whose_push_went_out_is_told_at_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    """An overload found late in the day is told (routine, daytime) and its session then excluded: resolved with
    nothing withdrawn. A fresh overload reopens the alert; revived, it told nobody (nothing to revive). It escalates:
    urgent, told at once, what it said before kept."""
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    traveller.move_to(datetime(2026, 3, 3, 11, 59, tzinfo=UTC))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
    noon = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    traveller.move_to(noon)
    evaluate_alerts(jobs_db, settings, clock, sender)
    traveller.move_to(noon + timedelta(minutes=10))
    services_on(jobs_db, settings, clock, sender).sessions.resolve(patient.id, f"{SERIAL}:1", "exclude", "clinician-1")
    assert _overload_alert(jobs_db, patient)["resolved_at"] is not None
    fresh = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)
    traveller.move_to(fresh + timedelta(minutes=31))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, fresh, first_seq=2)
    told = fresh + timedelta(minutes=32)
    traveller.move_to(told)
    evaluate_alerts(jobs_db, settings, clock, sender)
    alert = _overload_alert(jobs_db, patient)
    assert (alert["resolved_at"], alert["urgent"], alert["escalated_at"]) == (None, True, told)
    assert alert["escalated_from"]["severity"] == "warning"
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [
        (noon, "normal"), (told, "high")]


def test_a_session_excluded_while_a_pass_reopens_its_alert_leaves_it_resolved_and_tells_nobody(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    """The pass reopens the day's alert for a fresh overload and reads its events; the care team excludes that
    session right then (its events deleted, then the alert looked at). Reopened before it reads, the pass's alert
    is seen open by the exclusion, which resolves it: no push in the night about an excluded session."""
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _found_late_at_five(jobs_db, settings, clock, traveller, sender, patient)
    traveller.move_to(datetime(2026, 3, 3, 5, 10, tzinfo=UTC))
    services_on(jobs_db, settings, clock, sender).sessions.resolve(patient.id, f"{SERIAL}:1", "exclude", "clinician-1")
    traveller.move_to(FRESH + timedelta(minutes=31))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, FRESH, first_seq=2)
    traveller.move_to(FRESH + timedelta(minutes=32))
    services = services_on(jobs_db, settings, clock, sender)
    read, excluded = services.alerts._device_events_left, []

    def read_then_excluded(alert, day_of):
        left = read(alert, day_of)
        if not excluded:
            excluded.append(True)
            services_on(jobs_db, settings, clock, sender).sessions.resolve(patient.id, f"{SERIAL}:2", "exclude",
                                                                           "clinician-1")
        return left

    monkeypatch.setattr(services.alerts, "_device_events_left", read_then_excluded)
    services.alerts.evaluate()
    monkeypatch.undo()
    services.push.send_due(owner="w")
    for at in (FRESH + timedelta(minutes=33), MORNING):
        traveller.move_to(at)
        evaluate_alerts(jobs_db, settings, clock, sender)
    assert excluded and _overload_alert(jobs_db, patient)["resolved_at"] is not None
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == []


def test_a_session_counted_again_while_a_pass_reopens_its_alert_for_a_fresh_overload_pushes_each_person_once(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    """The care team counts the excluded session again (its alert read resolved) just as a pass reopens the alert
    for a fresh overload and escalates it: the counting finds it reopened by another and revives nothing; the
    escalation's push is each person's one."""
    patient, patient_token, caregiver_token = _patient_and_caregiver_with_nights(jobs_db, settings, clock, sender)
    _found_late_at_five(jobs_db, settings, clock, traveller, sender, patient)
    traveller.move_to(datetime(2026, 3, 3, 5, 10, tzinfo=UTC))
    _excluded(jobs_db, settings, clock, sender, patient)  # resolved; its pushes held until 07:00 withdrawn
    found = FRESH + timedelta(minutes=32)
    traveller.move_to(found - timedelta(minutes=1))
    upload_overloads(jobs_db, settings, clock, sender, patient, SERIAL, FRESH, first_seq=2)
    traveller.move_to(found)
    services = services_on(jobs_db, settings, clock, sender)
    resolved_as, passed = services.stores.alerts.resolved_as, []

    def read_then_a_pass_reopens(keys, code):
        found_resolved = resolved_as(keys, code)
        if not passed:
            passed.append(True)
            evaluate_alerts(jobs_db, settings, clock, sender)  # the pass reopens and escalates it right then
        return found_resolved

    monkeypatch.setattr(services.stores.alerts, "resolved_as", read_then_a_pass_reopens)
    services.sessions.resolve(patient.id, f"{SERIAL}:1", "count", "clinician-1")
    monkeypatch.undo()
    for at in (found + timedelta(minutes=1), MORNING):
        traveller.move_to(at)
        evaluate_alerts(jobs_db, settings, clock, sender)
    assert passed and _overload_alert(jobs_db, patient)["escalated_at"] == found
    assert _priorities(emulator, patient_token) == _priorities(emulator, caregiver_token) == [(found, "high")]
