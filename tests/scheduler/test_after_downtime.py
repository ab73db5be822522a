"""What people get after the worker or the push sender was down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import (
    daily_reminder,
    link_caregiver,
    make_person,
    phone,
    run_minute,
    services_on,
)

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_reminders_that_reached_no_phone_while_the_sender_was_down_bring_the_outage_summary(
        jobs_db, settings, clock, traveller, sender, emulator):
    # The scheduler runs (it queues each reminder's push), the sending side is down from 09:59 to 12:00
    # (sender process stopped / FCM unreachable): exactly the case the worker-outage summary exists for.
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    for at in ("10:00", "10:03", "10:06"):
        daily_reminder(jobs_db, patient, [at], "2026-03-02")
    traveller.move_to(datetime(2026, 3, 2, 9, 59, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    for minute in range(0, 120, 1):  # the scheduler's dispatch and missed passes go on; nothing is sent
        traveller.move_to(T10 + timedelta(minutes=minute))
        services = services_on(jobs_db, settings, clock, sender)
        services.reminder_dispatch.dispatch_due()
        if minute % 5 == 0:
            services.reminder_dispatch.mark_missed()
    for at in (datetime(2026, 3, 2, 12, 0, tzinfo=UTC), datetime(2026, 3, 2, 12, 40, tzinfo=UTC)):
        traveller.move_to(at)  # the sender is back
        services = services_on(jobs_db, settings, clock, sender)
        services.reminder_dispatch.mark_missed()
        services.push.send_due(owner="back")
    assert jobs_db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "missed"}) == 3
    kinds = [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(token)]
    assert kinds == ["generic_update"], kinds  # as after a worker outage: told once that reminders did not reach them


def test_a_reminder_one_phone_got_while_the_other_was_owed_it_until_its_window_closed_brings_no_summary(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    tablet = phone(jobs_db, patient, "tablet")
    handset = phone(jobs_db, patient, "handset")
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    emulator.script("QUOTA_EXCEEDED", token=handset, retry_after=60)
    traveller.move_to(T10)
    run_minute(jobs_db, settings, clock, sender)  # then the sender is down until the window has closed
    [push] = list(jobs_db.push_outbox.find({"source_key": {"$regex": "^reminder:"}}))
    assert (push["state"], push["pending_phones"]) == ("scheduled", ["handset"])  # the tablet has it
    traveller.move_to(T10 + timedelta(minutes=31))
    services = services_on(jobs_db, settings, clock, sender)
    services.reminder_dispatch.mark_missed()
    assert jobs_db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "missed"}) == 1
    assert jobs_db.push_outbox.count_documents({"source_key": {"$regex": "^missed-summary:"}}) == 0
    assert len(emulator.delivered_to(tablet)) == 1


def _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender, *, reminded: bool):
    """A patient (delay 60 min) with a 10:00 TENS reminder (window 30 min) and a caregiver shared missed sessions;
    the worker runs until 09:59, or until the reminder has gone out at 10:00 (``reminded``), then stops."""
    patient = make_person(jobs_db, "patient", caregiver_alert_delay_min=60)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    patient_token = phone(jobs_db, patient)
    caregiver = link_caregiver(jobs_db, patient, ["missed_session"])
    token = phone(jobs_db, caregiver)
    traveller.move_to(T10 if reminded else T10 - timedelta(minutes=1))
    run_minute(jobs_db, settings, clock, sender)
    return patient, patient_token, token


def _worker_back_at(at, jobs_db, settings, clock, traveller, sender) -> None:
    traveller.move_to(at)
    services = services_on(jobs_db, settings, clock, sender)
    services.reminder_dispatch.dispatch_due()
    services.alerts.evaluate()  # (before the missed pass: the worker's jobs run in no fixed order)
    services.reminder_dispatch.mark_missed()
    services.push.send_due(owner="back")


def test_a_worker_back_the_next_morning_raises_yesterdays_never_reminded_session_for_the_panel_alone(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, token = _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender,
                                                                     reminded=False)
    _worker_back_at(datetime(2026, 3, 3, 8, 0, tzinfo=UTC), jobs_db, settings, clock, traveller, sender)
    assert not [d for d in emulator.delivered_to(patient_token)
                if d.body["message"]["data"]["kind"] == "therapy_reminder"]  # the patient was never reminded
    alert = jobs_db.alerts.find_one({"patient_id": patient.id, "kind": "missed_tens_session"})
    assert alert is not None  # the care team's panel has it
    stale = [d.received_at for d in emulator.delivered_to(token)]
    assert stale == [], f"caregiver pushed at {stale} about a 10:00 session of the day before"


def test_a_missed_session_alert_after_an_outage_says_no_reminder_could_be_sent_and_pushes_nobody(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, _, token = _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender, reminded=False)
    _worker_back_at(T10 + timedelta(hours=2), jobs_db, settings, clock, traveller, sender)  # down 09:59-12:00
    assert jobs_db.push_outbox.count_documents({"source_key": {"$regex": "^reminder:"}}) == 0  # never reminded
    alert = jobs_db.alerts.find_one({"patient_id": patient.id, "kind": "missed_tens_session"})
    assert "no reminder of it could be sent" in alert["text"], alert["text"]
    assert "of the last reminder" not in alert["text"]
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alert['_id']}"}) == 0
    assert emulator.delivered_to(token) == []


def test_a_worker_back_the_next_morning_raises_a_reminded_sessions_alert_for_the_panel_without_pushing(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, token = _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender,
                                                                     reminded=True)
    assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(patient_token)] == ["therapy_reminder"]
    _worker_back_at(datetime(2026, 3, 3, 8, 0, tzinfo=UTC), jobs_db, settings, clock, traveller, sender)
    alert = jobs_db.alerts.find_one({"patient_id": patient.id, "kind": "missed_tens_session"})
    assert "within 60 minutes of the last reminder" in alert["text"]  # true: it was reminded
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alert['_id']}"}) == 0
    assert emulator.delivered_to(token) == []


def test_a_worker_back_within_the_margin_still_pushes_the_caregiver_about_a_reminded_missed_session(
        jobs_db, settings, clock, traveller, sender, emulator):
    _, _, token = _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender, reminded=True)
    _worker_back_at(T10 + timedelta(hours=4), jobs_db, settings, clock, traveller, sender)  # due at 11:00, +3 h
    assert len(emulator.delivered_to(token)) == 1
