"""A reminder whose whole window falls inside the patient's quiet hours is never pushed (its first push waits for
their end, which comes too late): its missed session is told to nobody as ignored, and says why no reminder went.
Real FerretDB, real firebase-admin against the loopback FCM emulator."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from companion.domain.quiet_hours import QuietHours
from tests.scheduler.helpers import (
    daily_reminder,
    link_caregiver,
    make_person,
    minute_by_minute,
    own,
    phone,
    run_jobs,
    services_on,
)

DAY = datetime(2026, 3, 2, tzinfo=UTC)
NIGHT = QuietHours(time(22, 0), time(7, 0))




def patient_with_a_caregiver(db, settings, clock, sender):
    """A patient in UTC with quiet hours 22:00-07:00 and a phone, and a caregiver (with a phone) who has agreed to
    hear of missed sessions: the patient and both tokens."""
    patient = make_person(db, "patient")
    token = phone(db, patient)
    services_on(db, settings, clock, sender).stores.users.update_profile(patient.id, version=0, quiet_hours=NIGHT)
    caregiver_token = phone(db, link_caregiver(db, patient, ["missed_session"]))
    return patient, token, caregiver_token


def alerts_after(db, settings, clock, traveller, sender, *hours_after_midnight):
    for hours in hours_after_midnight:
        traveller.move_to(DAY + timedelta(hours=hours))
        run_jobs(db, settings, clock, sender, "reminders-missed", "alerts-evaluate", "push-send")


def test_a_session_due_inside_quiet_hours_is_never_told_to_the_caregiver_as_ignored(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(DAY + timedelta(hours=20))
    patient, token, caregiver_token = patient_with_a_caregiver(jobs_db, settings, clock, sender)
    daily_reminder(jobs_db, patient, ["23:00"], "2026-03-02", kind="tens", window_min=60)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DAY + timedelta(hours=23),
                DAY + timedelta(hours=23, minutes=3))
    alerts_after(jobs_db, settings, clock, traveller, sender, 24.1, 25.1, 26.1)

    assert emulator.delivered_to(token) == []  # the quiet hours held it past its window, as they were asked to
    assert emulator.delivered_to(caregiver_token) == []
    assert jobs_db.push_outbox.count_documents({"recipient_user_id": {"$ne": patient.id}}) == 0
    (alert,) = list(jobs_db.alerts.find({"patient_id": patient.id}))
    assert alert["kind"] == "missed_tens_session"
    assert "no reminder of it was sent" in alert["text"] and "quiet hours" in alert["text"], alert["text"]
    assert "of the last reminder" not in alert["text"]
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    assert occurrence["status"] == "missed" and not occurrence.get("missed_summary")  # no "you missed" summary


def test_a_session_reminded_before_quiet_hours_and_ignored_is_still_pushed_to_the_caregiver(
        jobs_db, settings, clock, traveller, sender, emulator):
    """The same patient and caregiver, a session at 21:00 (its push goes, then quiet hours begin): ignored, the
    caregiver hears of it as before."""
    traveller.move_to(DAY + timedelta(hours=20))
    patient, token, caregiver_token = patient_with_a_caregiver(jobs_db, settings, clock, sender)
    daily_reminder(jobs_db, patient, ["21:00"], "2026-03-02", kind="tens", window_min=60)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DAY + timedelta(hours=21),
                DAY + timedelta(hours=21, minutes=1))
    alerts_after(jobs_db, settings, clock, traveller, sender, 22.1, 23.1)

    assert len(emulator.delivered_to(token)) == 1
    (alert,) = list(jobs_db.alerts.find({"patient_id": patient.id}))
    assert "within 60 minutes of the last reminder" in alert["text"], alert["text"]
    assert len(emulator.delivered_to(caregiver_token)) == 1  # (the caregiver keeps no quiet hours)


def test_a_session_inside_quiet_hours_the_patient_snoozed_is_one_they_were_reminded_of(
        jobs_db, settings, clock, traveller, sender, emulator):
    """A snooze's push goes whatever the hour (the patient asked for it): once it reached their phone, the missed
    session is an ordinary one, counted from that push."""
    traveller.move_to(DAY + timedelta(hours=20))
    patient, token, _ = patient_with_a_caregiver(jobs_db, settings, clock, sender)
    daily_reminder(jobs_db, patient, ["23:00"], "2026-03-02", kind="tens", window_min=60)
    traveller.move_to(DAY + timedelta(hours=23, minutes=5))
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    services_on(jobs_db, settings, clock, sender).reminders.snooze(own(patient.id), occurrence["_id"], 10)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DAY + timedelta(hours=23, minutes=14),
                DAY + timedelta(hours=23, minutes=16))
    alerts_after(jobs_db, settings, clock, traveller, sender, 24.5, 25.1)

    assert len(emulator.delivered_to(token)) == 1
    (alert,) = list(jobs_db.alerts.find({"patient_id": patient.id}))
    assert "within 60 minutes of the last reminder" in alert["text"], alert["text"]


def test_the_hourly_pass_says_which_times_are_silenced_on_a_reminder_stored_before_it_was_said(
        jobs_db, settings, clock, traveller, sender):
    """A reminder stored by an earlier version (or whose patient's change of quiet hours stopped before its
    reminders followed) is given its silenced times by the next materializing pass, as a change the app syncs."""
    traveller.move_to(DAY + timedelta(hours=20))
    patient, _, _ = patient_with_a_caregiver(jobs_db, settings, clock, sender)
    reminder = daily_reminder(jobs_db, patient, ["21:00", "23:00"], "2026-03-02", kind="tens", window_min=60)
    assert reminder["silenced_by_quiet_hours"] == ["23:00"]
    jobs_db.reminders.update_one({"_id": reminder["_id"]}, {"$unset": {"silenced_by_quiet_hours": 1}})
    traveller.move_to(DAY + timedelta(hours=21))
    run_jobs(jobs_db, settings, clock, sender, "reminders-materialize")

    stored = jobs_db.reminders.find_one({"_id": reminder["_id"]})
    assert stored["silenced_by_quiet_hours"] == ["23:00"] and stored["seq"] > reminder["seq"]
    run_jobs(jobs_db, settings, clock, sender, "reminders-materialize")
    assert jobs_db.reminders.find_one({"_id": reminder["_id"]})["seq"] == stored["seq"]  # nothing more to say
