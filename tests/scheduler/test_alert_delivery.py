"""Alerts: raised once per condition and period, delivered to the caregivers the patient chose, after the
patient's delay, respecting quiet hours; device troubles also reach the patient."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from pymongo.errors import ConnectionFailure

from companion.domain.alerts import AlertCandidate, AlertKind, Resolution, Severity
from companion.domain.quiet_hours import QuietHours
from tests.scheduler.helpers import (
    daily_reminder,
    link_caregiver,
    make_person,
    own,
    phone,
    run_minute,
    services_on,
)
from tests.support.stops import dead_database

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _evaluate_and_send(db, settings, clock, sender):
    services = services_on(db, settings, clock, sender)
    services.alerts.evaluate()
    services.push.send_due(owner="test-worker")


def _alert_kinds(db, patient):
    return sorted(a["kind"] for a in db.alerts.find({"patient_id": patient.id}))


def _patient_with_session_reminder(db, delay_min=60, repeat=None):
    patient = make_person(db, "patient", caregiver_alert_delay_min=delay_min)
    daily_reminder(db, patient, ["10:00"], "2026-03-02", window_min=30, repeat=repeat)
    return patient


def test_missed_session_reaches_the_caregiver_phone_after_the_delay_and_not_before(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = _patient_with_session_reminder(jobs_db, delay_min=45, repeat={"count": 1, "every_min": 15})
    caregiver = link_caregiver(jobs_db, patient, ["missed_session"])
    token = phone(jobs_db, caregiver)
    last_reminder = T10 + timedelta(minutes=15)
    for at in (T10, last_reminder, last_reminder + timedelta(minutes=44, seconds=59)):
        traveller.move_to(at)
        run_minute(jobs_db, settings, clock, sender)
        _evaluate_and_send(jobs_db, settings, clock, sender)
    assert emulator.delivered_to(token) == []
    for at in (last_reminder + timedelta(minutes=45), last_reminder + timedelta(minutes=46)):
        traveller.move_to(at)
        _evaluate_and_send(jobs_db, settings, clock, sender)
    (delivery,) = emulator.delivered_to(token)
    assert delivery.received_at == last_reminder + timedelta(minutes=45)
    assert delivery.body["message"]["android"]["priority"] == "high"
    assert delivery.body["message"]["data"]["kind"] == "caregiver_alert"
    assert _alert_kinds(jobs_db, patient) == ["missed_tens_session"]


def test_caregiver_who_was_not_given_missed_sessions_hears_nothing(jobs_db, settings, clock, traveller, sender,
                                                                   emulator):
    patient = _patient_with_session_reminder(jobs_db)
    caregiver = link_caregiver(jobs_db, patient, ["pain_flare"])
    token = phone(jobs_db, caregiver)
    traveller.move_to(T10 + timedelta(hours=2))
    _evaluate_and_send(jobs_db, settings, clock, sender)
    assert _alert_kinds(jobs_db, patient) == ["missed_tens_session"]
    assert emulator.delivered_to(token) == []


def test_session_done_in_time_raises_no_alert(jobs_db, settings, clock, traveller, sender, emulator):
    patient = _patient_with_session_reminder(jobs_db)
    traveller.move_to(T10 + timedelta(minutes=5))
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})
    services_on(jobs_db, settings, clock).reminders.record_outcome(own(patient.id), occurrence["_id"], "done", None)
    traveller.move_to(T10 + timedelta(hours=3))
    _evaluate_and_send(jobs_db, settings, clock, sender)
    assert _alert_kinds(jobs_db, patient) == []


def _device(db, patient, serial="CTU-T0001", last_seen=None, battery=80):
    db.devices.insert_one({"_id": serial, "patient_id": patient.id, "profile": "companion",
                           "bound_at": T10 - timedelta(days=30),
                           "status": {"battery_pct": battery, "firmware": "1.0", "last_seen_at": last_seen,
                                      "last_error": None, "last_sync_at": last_seen}})
    return serial


def _event(db, patient, serial, kind, at, battery=50):
    record_id = f"{serial}:{int(at.timestamp())}"
    db.session_records.insert_one({"_id": record_id, "patient_id": patient.id, "device_serial": serial,
                                   "started_at": at, "duration_s": 1800, "battery_pct": battery,
                                   "server_received_at": at})
    db.device_events.insert_one({"_id": f"{record_id}:{kind}", "patient_id": patient.id, "device_serial": serial,
                                 "kind": kind, "at": at, "record_id": record_id})


def test_electrode_off_reaches_the_patient_and_a_consenting_caregiver_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    patient_token = phone(jobs_db, patient)
    sharing = link_caregiver(jobs_db, patient, ["device_fault"])
    not_sharing = link_caregiver(jobs_db, patient, ["missed_session"])
    sharing_token, other_token = phone(jobs_db, sharing), phone(jobs_db, not_sharing)
    serial = _device(jobs_db, patient, last_seen=T10)
    traveller.move_to(T10)
    _event(jobs_db, patient, serial, "electrode_off", T10 - timedelta(minutes=5))
    _event(jobs_db, patient, serial, "electrode_off", T10 - timedelta(minutes=2))
    for minutes in (0, 1):
        traveller.move_to(T10 + timedelta(minutes=minutes))
        _evaluate_and_send(jobs_db, settings, clock, sender)
    assert _alert_kinds(jobs_db, patient) == ["electrode_off"]
    assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(patient_token)] == ["electrode_off"]
    assert len(emulator.delivered_to(sharing_token)) == 1
    assert emulator.delivered_to(other_token) == []


def test_battery_low_event_alerts_once_a_day(jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    serial = _device(jobs_db, patient, last_seen=T10, battery=9)
    traveller.move_to(T10)
    _event(jobs_db, patient, serial, "battery_low", T10 - timedelta(minutes=30), battery=12)
    _event(jobs_db, patient, serial, "battery_low", T10 - timedelta(minutes=10), battery=9)
    _evaluate_and_send(jobs_db, settings, clock, sender)
    assert _alert_kinds(jobs_db, patient) == ["battery_low"]


def test_unit_silent_for_a_day_raises_one_alert(jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    _device(jobs_db, patient, last_seen=T10)
    traveller.move_to(T10 + timedelta(hours=23, minutes=59))
    _evaluate_and_send(jobs_db, settings, clock, sender)
    assert _alert_kinds(jobs_db, patient) == []
    for hours in (24, 30, 48):
        traveller.move_to(T10 + timedelta(hours=hours))
        _evaluate_and_send(jobs_db, settings, clock, sender)
    assert _alert_kinds(jobs_db, patient) == ["unit_silent"]


def test_session_record_received_after_the_status_keeps_the_unit_from_being_silent(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    serial = _device(jobs_db, patient, last_seen=T10)
    jobs_db.session_records.insert_one({"_id": f"{serial}:1", "patient_id": patient.id, "device_serial": serial,
                                        "started_at": T10 + timedelta(hours=5), "duration_s": 1800,
                                        "server_received_at": T10 + timedelta(hours=6)})
    traveller.move_to(T10 + timedelta(hours=25))
    _evaluate_and_send(jobs_db, settings, clock, sender)
    assert _alert_kinds(jobs_db, patient) == []


def _pain(db, patient, at, nrs):
    db.pain_entries.insert_one({"_id": f"{patient.id}:{at.isoformat()}", "patient_id": patient.id,
                                "client_entry_id": at.isoformat(), "recorded_at": at, "nrs": nrs, "deleted": False})


def test_two_high_pain_ratings_within_a_day_alert_the_caregiver_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["pain_flare"])
    token = phone(jobs_db, caregiver)
    traveller.move_to(T10)
    _pain(jobs_db, patient, T10 - timedelta(hours=20), 7)
    _pain(jobs_db, patient, T10 - timedelta(hours=1), 8)
    _pain(jobs_db, patient, T10 - timedelta(minutes=30), 9)
    for minutes in (0, 5):
        traveller.move_to(T10 + timedelta(minutes=minutes))
        _evaluate_and_send(jobs_db, settings, clock, sender)
    assert _alert_kinds(jobs_db, patient) == ["pain_flare"]
    assert len(emulator.delivered_to(token)) == 1
    assert "8" not in str(emulator.delivered_to(token)[0].body["message"]["notification"])


def test_non_urgent_alert_waits_for_the_end_of_the_caregiver_quiet_hours(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", "Europe/London")
    caregiver = link_caregiver(jobs_db, patient, ["device_silent"], zone="Europe/London",
                               quiet_hours={"start": "22:00", "end": "07:00"})
    token = phone(jobs_db, caregiver)
    _device(jobs_db, patient, last_seen=datetime(2026, 3, 1, 23, 0, tzinfo=UTC))
    traveller.move_to(datetime(2026, 3, 2, 23, 30, tzinfo=UTC))  # 23:30 in London: quiet
    _evaluate_and_send(jobs_db, settings, clock, sender)
    assert _alert_kinds(jobs_db, patient) == ["unit_silent"]
    assert emulator.delivered_to(token) == []
    morning = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    traveller.move_to(morning)
    _evaluate_and_send(jobs_db, settings, clock, sender)
    assert [d.received_at for d in emulator.delivered_to(token)] == [morning]


def _low_adherence_candidate(patient) -> AlertCandidate:
    return AlertCandidate(AlertKind.LOW_ADHERENCE, Severity.WARNING, patient.id,
                          f"low_adherence:{patient.id}:2026-02-28", "2026-02-28", "low")


def test_a_routine_alert_retried_after_fcm_said_wait_waits_for_the_end_of_the_quiet_hours_it_ran_into(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 21, 59, 50, tzinfo=UTC))  # ten seconds before the caregiver's night
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["adherence_low"], quiet_hours={"start": "22:00", "end": "07:00"})
    token = phone(jobs_db, caregiver)
    services = services_on(jobs_db, settings, clock, sender)
    services.alerts.raise_once(_low_adherence_candidate(patient))
    emulator.script("QUOTA_EXCEEDED", token=token, times=1, retry_after=30)
    services.push.send_due(owner="test-worker")
    queued = jobs_db.push_outbox.find_one({"recipient_user_id": caregiver.id})
    morning = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    assert (queued["state"], queued["not_before"]) == ("scheduled", morning)  # not 22:00:20
    for at in (datetime(2026, 3, 2, 22, 0, 30, tzinfo=UTC), morning):
        traveller.move_to(at)
        services_on(jobs_db, settings, clock, sender).push.send_due(owner="test-worker")
    assert [d.received_at for d in emulator.delivered_to(token)] == [morning]


def test_a_reopened_alert_whose_held_push_its_resolution_withdrew_is_pushed_after_all(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 23, 5, tzinfo=UTC))  # raised in the caregiver's night: held until 07:00
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["adherence_low"], quiet_hours={"start": "22:00", "end": "07:00"})
    token = phone(jobs_db, caregiver)
    alert = services_on(jobs_db, settings, clock, sender).alerts.raise_once(_low_adherence_candidate(patient))
    traveller.move_to(datetime(2026, 3, 3, 1, 5, tzinfo=UTC))  # later data: it no longer holds; the push withdrawn
    services = services_on(jobs_db, settings, clock, sender)
    services.alerts.resolve(jobs_db.alerts.find_one({"_id": alert["_id"]}), "late data", Resolution.ADHERENCE_REACHED)
    traveller.move_to(datetime(2026, 3, 3, 3, 5, tzinfo=UTC))  # later data again: it holds again, reopened
    services_on(jobs_db, settings, clock, sender).alerts.raise_once(_low_adherence_candidate(patient))
    services_on(jobs_db, settings, clock, sender).alerts.raise_once(_low_adherence_candidate(patient))  # a retry
    morning = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    for at in (datetime(2026, 3, 3, 3, 6, tzinfo=UTC), morning, morning + timedelta(minutes=1)):
        traveller.move_to(at)
        services_on(jobs_db, settings, clock, sender).push.send_due(owner="test-worker")
    assert jobs_db.alerts.find_one({"_id": alert["_id"]})["resolved_at"] is None
    assert [d.received_at for d in emulator.delivered_to(token)] == [morning]  # once, when the night ended


def _withdrawn_at_night_by_a_resolution(jobs_db, settings, clock, traveller, sender):
    """A caregiver's low-adherence push raised at 23:05 (held until 07:00), withdrawn by a resolution at 01:05."""
    traveller.move_to(datetime(2026, 3, 2, 23, 5, tzinfo=UTC))
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["adherence_low"], quiet_hours={"start": "22:00", "end": "07:00"})
    token = phone(jobs_db, caregiver)
    alert = services_on(jobs_db, settings, clock, sender).alerts.raise_once(_low_adherence_candidate(patient))
    traveller.move_to(datetime(2026, 3, 3, 1, 5, tzinfo=UTC))
    services_on(jobs_db, settings, clock, sender).alerts.resolve(
        jobs_db.alerts.find_one({"_id": alert["_id"]}), "late data", Resolution.ADHERENCE_REACHED)
    return patient, token


def test_a_reopening_stopped_before_its_withdrawn_push_was_revived_is_finished_by_the_next_pass(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    patient, token = _withdrawn_at_night_by_a_resolution(jobs_db, settings, clock, traveller, sender)
    traveller.move_to(datetime(2026, 3, 3, 3, 5, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock, sender)
    monkeypatch.setattr(services.stores.outbox, "withdrawn_for", dead_database)  # the process stops right there
    with pytest.raises(ConnectionFailure):
        services.alerts.raise_once(_low_adherence_candidate(patient))
    monkeypatch.undo()
    services_on(jobs_db, settings, clock, sender).alerts.raise_once(_low_adherence_candidate(patient))  # next pass
    morning = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    traveller.move_to(morning)
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="test-worker")
    assert [d.received_at for d in emulator.delivered_to(token)] == [morning]


def test_a_push_withdrawn_by_a_resolution_is_not_revived_past_the_lifetime_it_had(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _withdrawn_at_night_by_a_resolution(jobs_db, settings, clock, traveller, sender)
    friday = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)  # reopened days after the push would have expired
    traveller.move_to(friday)
    services_on(jobs_db, settings, clock, sender).alerts.raise_once(_low_adherence_candidate(patient))
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="test-worker")
    assert emulator.delivered_to(token) == []
    assert jobs_db.push_outbox.find_one({"recipient_user_id": {"$ne": patient.id}})["state"] == "withdrawn"


NIGHT = {"start": "22:00", "end": "07:00"}
MORNING = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)


def _send_in_the_morning(jobs_db, settings, clock, traveller, sender) -> None:
    traveller.move_to(MORNING)
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="test-worker")


def test_an_alert_acknowledged_during_the_caregivers_night_is_not_pushed_when_the_night_ends(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 23, 5, tzinfo=UTC))  # raised in the caregiver's night: held until 07:00
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["adherence_low"], quiet_hours=NIGHT)
    token = phone(jobs_db, caregiver)
    alert = services_on(jobs_db, settings, clock, sender).alerts.raise_once(_low_adherence_candidate(patient))
    traveller.move_to(datetime(2026, 3, 3, 1, 0, tzinfo=UTC))  # the on-call clinician deals with it at 01:00
    services_on(jobs_db, settings, clock, sender).alerts.acknowledge(patient.id, alert["_id"], "clinician-1")
    _send_in_the_morning(jobs_db, settings, clock, traveller, sender)
    assert emulator.delivered_to(token) == []  # nobody needs waking about what the care team already handled
    held = jobs_db.push_outbox.find_one({"recipient_user_id": caregiver.id})
    assert (held["state"], held["withdrawn_reason"]) == ("withdrawn", "alert_acknowledged")


def test_an_acknowledged_battery_alert_still_reaches_the_patient_who_must_charge_the_unit(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 23, 5, tzinfo=UTC))  # both are asleep: both pushes held until 07:00
    patient = make_person(jobs_db, "patient", quiet_hours=NIGHT)
    caregiver = link_caregiver(jobs_db, patient, ["battery_low"], quiet_hours=NIGHT)
    patient_token, caregiver_token = phone(jobs_db, patient), phone(jobs_db, caregiver)
    battery = AlertCandidate(AlertKind.BATTERY_LOW, Severity.INFO, patient.id, "battery_low:CTU-1:2026-03-02",
                             "2026-03-02", "battery at 9%", device_serial="CTU-1", details={"battery_percent": 9})
    alert = services_on(jobs_db, settings, clock, sender).alerts.raise_once(battery)
    traveller.move_to(datetime(2026, 3, 3, 1, 0, tzinfo=UTC))
    services_on(jobs_db, settings, clock, sender).alerts.acknowledge(patient.id, alert["_id"], "clinician-1")
    _send_in_the_morning(jobs_db, settings, clock, traveller, sender)
    assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(patient_token)] == ["battery_low"]
    assert emulator.delivered_to(caregiver_token) == []


def test_an_acknowledgement_stopped_before_withdrawing_the_held_push_never_sends_it(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    traveller.move_to(datetime(2026, 3, 2, 23, 5, tzinfo=UTC))
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["adherence_low"], quiet_hours=NIGHT)
    token = phone(jobs_db, caregiver)
    alert = services_on(jobs_db, settings, clock, sender).alerts.raise_once(_low_adherence_candidate(patient))
    traveller.move_to(datetime(2026, 3, 3, 1, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock, sender)
    monkeypatch.setattr(services.stores.outbox, "withdraw", dead_database)  # the request stops right there
    with pytest.raises(ConnectionFailure):
        services.alerts.acknowledge(patient.id, alert["_id"], "clinician-1")
    monkeypatch.undo()
    assert jobs_db.push_outbox.find_one({"recipient_user_id": caregiver.id})["state"] == "scheduled"  # left behind
    _send_in_the_morning(jobs_db, settings, clock, traveller, sender)
    assert emulator.delivered_to(token) == []  # the sender read the alert again
    stopped = jobs_db.push_outbox.find_one({"recipient_user_id": caregiver.id})
    assert (stopped["state"], stopped["withdrawn_reason"]) == ("withdrawn", "alert_acknowledged")


def test_a_resolved_alert_acknowledged_and_then_reopened_does_not_revive_its_caregivers_push(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _withdrawn_at_night_by_a_resolution(jobs_db, settings, clock, traveller, sender)
    alert = jobs_db.alerts.find_one({"patient_id": patient.id})
    traveller.move_to(datetime(2026, 3, 3, 2, 0, tzinfo=UTC))
    services_on(jobs_db, settings, clock, sender).alerts.acknowledge(patient.id, alert["_id"], "clinician-1")
    traveller.move_to(datetime(2026, 3, 3, 3, 5, tzinfo=UTC))  # later data again: it holds again, reopened
    services_on(jobs_db, settings, clock, sender).alerts.raise_once(_low_adherence_candidate(patient))
    _send_in_the_morning(jobs_db, settings, clock, traveller, sender)
    assert emulator.delivered_to(token) == []
    held = jobs_db.push_outbox.find_one({"recipient_user_id": {"$ne": patient.id}})
    assert (held["state"], held["withdrawn_reason"], held["round"]) == ("withdrawn", "alert_resolved", 0)


def test_three_low_adherence_days_raise_one_alert_for_the_run(jobs_db, settings, clock, traveller):
    patient = make_person(jobs_db, "patient")
    jobs_db.therapy_plans.insert_one({
        "_id": "plan-1", "patient_id": patient.id, "version": 1, "created_at": T10 - timedelta(days=10),
        "created_by": "clinician", "active_from": T10 - timedelta(days=10), "active_to": None,
        "tens": {"sessions_per_day": 2, "daily_minutes_target": None, "minutes_per_session": 30,
                 "start_date": "2026-02-20", "end_date": None, "counts_towards_adherence": True},
        "medications": [], "mindfulness": {}})
    for day in range(5):  # 20 minutes a day out of 60: every day is low
        at = datetime(2026, 3, 2 + day, 9, 0, tzinfo=UTC)
        jobs_db.session_records.insert_one({"_id": f"S:{day}", "patient_id": patient.id, "device_serial": "S",
                                            "started_at": at, "duration_s": 1200})
    for day in range(1, 6):
        traveller.move_to(datetime(2026, 3, 2 + day, 1, 0, tzinfo=UTC))
        services_on(jobs_db, settings, clock).adherence_job.run()
        assert len(_alert_kinds(jobs_db, patient)) == (1 if day >= 3 else 0)
    (alert,) = jobs_db.alerts.find({"patient_id": patient.id})
    assert alert["kind"] == "low_adherence"
    assert alert["dedup_key"].endswith(":2026-03-02")


@pytest.mark.parametrize("held", ["snoozed", "quiet hours"])
def test_the_missed_session_delay_runs_from_the_last_reminder_the_patient_actually_had(
        jobs_db, settings, clock, traveller, sender, held):
    due = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    traveller.move_to(due - timedelta(hours=3))
    patient = make_person(jobs_db, "patient")  # a 60-minute delay before their caregiver is alerted
    link_caregiver(jobs_db, patient, ["missed_session"])
    services = services_on(jobs_db, settings, clock, sender)
    if held == "quiet hours":  # the first push waits for 08:30
        services.stores.users.update_profile(patient.id, version=0, quiet_hours=QuietHours(time(22, 0), time(8, 30)))
    daily_reminder(jobs_db, patient, ["08:00"], "2026-03-02", window_min=120)
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": due})
    last_push = due + timedelta(minutes=30)
    if held == "snoozed":
        traveller.move_to(due + timedelta(minutes=5))
        services_on(jobs_db, settings, clock, sender).reminders.snooze(own(patient.id), occurrence["_id"], 25)
    for minutes, alerted in ((61, False), (89, False), (last_push - due + timedelta(minutes=61), True)):
        traveller.move_to(due + (minutes if isinstance(minutes, timedelta) else timedelta(minutes=minutes)))
        services_on(jobs_db, settings, clock, sender).alerts.evaluate()
        assert (jobs_db.alerts.count_documents({"patient_id": patient.id}) == 1) is alerted, minutes



@pytest.mark.parametrize("delay_min, window_min, repeat", [
    (60, 30, None),
    (24 * 60, 30, None),  # the longest delay the API accepts (PATCH caregiver_alert_delay_min)
    (14 * 60, 12 * 60, {"count": 5, "every_min": 120}),  # last nudge at +10 h, then a 14-hour delay
    # the last nudge (+10 h) a minute before the window ends, then the longest delay: due 24 h after the window
    (24 * 60, 10 * 60 + 1, {"count": 5, "every_min": 120}),
])
def test_a_missed_session_is_alerted_whatever_delay_and_window_the_api_accepts(
        jobs_db, settings, clock, traveller, sender, delay_min, window_min, repeat):
    due = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    traveller.move_to(due - timedelta(hours=1))
    patient = make_person(jobs_db, "patient", caregiver_alert_delay_min=delay_min)
    link_caregiver(jobs_db, patient, ["missed_session"])
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=window_min, repeat=repeat)
    # The alerts job runs every minute at second 30 (companion/jobs/worker.py); walked here every 10 minutes over
    # the hours the alert may fall due (a missed-session alert once due stays due).
    at = due + timedelta(hours=23, seconds=30)
    while at <= due + timedelta(hours=35):
        traveller.move_to(at)
        services_on(jobs_db, settings, clock, sender).alerts.evaluate()
        at += timedelta(minutes=10)
    assert jobs_db.alerts.count_documents({"patient_id": patient.id, "kind": "missed_tens_session",
                                           "details.local_date": "2026-03-02"}) == 1
