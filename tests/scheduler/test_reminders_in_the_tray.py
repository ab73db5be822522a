"""Two reminders of one morning show side by side in the phone's tray; a reminder's nudge replaces its own first
push there. What the real firebase-admin sent to the loopback FCM emulator: the Android tag and the APNs collapse id
per occurrence, the FCM collapse key (which message FCM keeps for an offline phone) per kind and patient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import daily_reminder, make_person, phone, run_minute

EIGHT = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_two_doses_of_a_morning_do_not_replace_each_other_and_a_nudge_replaces_its_own(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(EIGHT - timedelta(hours=1))
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["08:00"], "2026-03-02", kind="medication", window_min=60,
                   repeat={"count": 1, "every_min": 15})
    daily_reminder(jobs_db, patient, ["08:30"], "2026-03-02", kind="medication", window_min=60)
    for minutes in (0, 15, 30):
        traveller.move_to(EIGHT + timedelta(minutes=minutes))
        run_minute(jobs_db, settings, clock, sender)

    sent = [d.body["message"] for d in emulator.delivered_to(token)]
    assert [d.received_at for d in emulator.delivered_to(token)] == [
        EIGHT, EIGHT + timedelta(minutes=15), EIGHT + timedelta(minutes=30)]
    tags = [m["android"]["notification"]["tag"] for m in sent]
    assert tags[0] == tags[1] != tags[2]  # the 08:15 nudge replaces the 08:00 push; the 08:30 dose shows beside it
    assert [m["apns"]["headers"]["apns-collapse-id"] for m in sent] == tags
    # FCM's offline storage still keeps the latest of each kind for the patient (a medication's nudge is one too).
    assert len({m["android"]["collapse_key"] for m in sent}) == 1
    occurrence_ids = {o["_id"] for o in jobs_db.reminder_occurrences.find({"patient_id": patient.id})}
    assert not any(oid in tag for oid in occurrence_ids for tag in tags) and patient.id not in "".join(tags)
