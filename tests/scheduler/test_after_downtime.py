"""What people get after the worker or the push sender was down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import daily_reminder, make_person, phone, run_minute, services_on

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
