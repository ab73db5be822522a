"""A missed-session alert is not judged while the reminder's push is still queued and may go: whether the patient
was reminded decides its text and whether the caregiver is pushed, and that is known once the push is sent or
expired."""

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


def _missed_alert(db, patient) -> dict | None:
    return db.alerts.find_one({"patient_id": patient.id, "kind": "missed_tens_session"})


def _patient_with_a_caregiver(db):
    """A patient (delay 15 min) with a 10:00 TENS reminder (window 60 min), and a caregiver shared missed sessions."""
    patient = make_person(db, "patient", caregiver_alert_delay_min=15)
    daily_reminder(db, patient, ["10:00"], "2026-03-02", window_min=60)
    patient_token = phone(db, patient)
    caregiver_token = phone(db, link_caregiver(db, patient, ["missed_session"]))
    return patient, patient_token, caregiver_token


def test_a_missed_session_whose_reminder_fcm_put_off_waits_for_it_and_then_pushes_the_caregiver(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_with_a_caregiver(jobs_db)
    emulator.script("QUOTA_EXCEEDED", token=patient_token, times=1, retry_after=60)
    traveller.move_to(T10)
    run_minute(jobs_db, settings, clock, sender)  # FCM: "not now"; the reminder is to be tried again at 10:01
    # The sender is behind: the alerts pass at 10:16 (the alert fell due at 10:15) finds the reminder still queued.
    traveller.move_to(T10 + timedelta(minutes=16))
    services_on(jobs_db, settings, clock, sender).alerts.evaluate()
    assert _missed_alert(jobs_db, patient) is None  # it may still go: not judged yet
    traveller.move_to(T10 + timedelta(minutes=17))
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="w")  # the reminder reaches the phone
    traveller.move_to(T10 + timedelta(minutes=18))
    services = services_on(jobs_db, settings, clock, sender)
    services.alerts.evaluate()
    services.push.send_due(owner="w")
    assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(patient_token)] == ["therapy_reminder"]
    alert = _missed_alert(jobs_db, patient)
    assert "within 15 minutes of the last reminder" in alert["text"], alert["text"]
    assert len(emulator.delivered_to(caregiver_token)) == 1


def test_a_missed_session_whose_queued_reminder_expired_unsent_is_raised_then_as_never_reminded(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _patient_with_a_caregiver(jobs_db)
    traveller.move_to(T10)
    services_on(jobs_db, settings, clock, sender).reminder_dispatch.dispatch_due()  # queued; the sender is down
    traveller.move_to(T10 + timedelta(minutes=16))
    services_on(jobs_db, settings, clock, sender).alerts.evaluate()
    assert _missed_alert(jobs_db, patient) is None  # queued and valid until 11:00
    traveller.move_to(T10 + timedelta(minutes=61))  # its lifetime is over, and the sender still down
    services_on(jobs_db, settings, clock, sender).alerts.evaluate()
    alert = _missed_alert(jobs_db, patient)
    assert "no reminder of it could be sent" in alert["text"], alert["text"]
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alert['_id']}"}) == 0
    traveller.move_to(T10 + timedelta(minutes=62))
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="back")
    assert emulator.delivered_to(patient_token) == emulator.delivered_to(caregiver_token) == []
