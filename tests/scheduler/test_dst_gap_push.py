"""Two slots the spring-forward gap makes fall due at one instant (02:30 and 03:00 in New York on 2026-03-08, both
at 03:00 EDT) share one push, keyed by the first of them (``push_with``), through the worker's own jobs, the real
firebase-admin and the loopback FCM emulator. The push and its nudges and re-send are the pair's: they go while either
slot is open, and are withdrawn when the last of the two is answered or called off, not before; a snooze's push is
its own slot's, withdrawn with it. FCM's "not now" (429 with Retry-After) keeps a push queued across the change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import daily_reminder, make_person, own, phone, services_on
from tests.scheduler.test_reminder_edges import minute_by_minute

DUE = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT, the end of the gap


def gap_pair(jobs_db, traveller, **reminder):
    traveller.move_to(DUE - timedelta(hours=6))
    patient = make_person(jobs_db, "patient", "America/New_York")
    token = phone(jobs_db, patient)
    made = daily_reminder(jobs_db, patient, ["02:30", "03:00"], "2026-03-08", kind="medication", window_min=60,
                          **reminder)
    leader, follower = jobs_db.reminder_occurrences.find({"patient_id": patient.id, "due_at": DUE}).sort(
        "local_time", 1)
    assert follower["push_with"] == leader["_id"]
    return patient, token, made, leader, follower


def queued(jobs_db, patient, suffix: str) -> dict:
    return jobs_db.push_outbox.find_one({"recipient_user_id": patient.id, "source_key": {"$regex": f"{suffix}$"}})


def test_the_pairs_one_push_is_withdrawn_only_when_both_slots_are_answered(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token, _, leader, follower = gap_pair(jobs_db, traveller, repeat={"count": 2, "every_min": 10})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE - timedelta(minutes=1), DUE + timedelta(minutes=1))
    assert [p.received_at for p in emulator.delivered_to(token)] == [DUE]  # one push for the two doses
    emulator.script("QUOTA_EXCEEDED", token=token, times=1, retry_after=300)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE + timedelta(minutes=10),
                     DUE + timedelta(minutes=10))
    nudge = queued(jobs_db, patient, ":repeat:1")
    assert (nudge["source_key"], nudge["state"]) == (f"reminder:{leader['_id']}:repeat:1", "scheduled")
    services = services_on(jobs_db, settings, clock, sender)
    traveller.move_to(DUE + timedelta(minutes=12))
    services.reminders.record_outcome(own(patient.id), leader["_id"], "done", None)
    assert queued(jobs_db, patient, ":repeat:1")["state"] == "scheduled"  # the 03:00 dose is still to take
    traveller.move_to(DUE + timedelta(minutes=13))
    services.reminders.record_outcome(own(patient.id), follower["_id"], "done", None)
    withdrawn = queued(jobs_db, patient, ":repeat:1")
    assert (withdrawn["state"], withdrawn["withdrawn_reason"]) == ("withdrawn", "reminder_answered")
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE + timedelta(minutes=14),
                     DUE + timedelta(minutes=21))
    assert [p.received_at for p in emulator.delivered_to(token)] == [DUE]


def test_calling_off_one_slot_of_the_pair_leaves_the_shared_push_to_the_other(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token, reminder, leader, _ = gap_pair(jobs_db, traveller)
    emulator.script("QUOTA_EXCEEDED", token=token, times=1, retry_after=300)  # "not before 07:05"
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE - timedelta(minutes=1), DUE)
    traveller.move_to(DUE + timedelta(minutes=2))  # the 03:00 dose is taken off the schedule; 02:30 stays
    services_on(jobs_db, settings, clock, sender).reminders.update(patient.id, reminder["_id"], {"schedule": {
        "type": "weekly", "times": ["02:30"], "start_date": "2026-03-08", "end_date": None}})
    assert jobs_db.reminder_occurrences.find_one({"_id": leader["_id"]})["status"] == "pending"
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE + timedelta(minutes=2),
                     DUE + timedelta(minutes=6))
    assert [p.received_at for p in emulator.delivered_to(token)] == [DUE + timedelta(minutes=5)]


def test_answering_a_slot_of_the_pair_withdraws_its_own_snoozes_push_while_the_other_is_open(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token, _, _, follower = gap_pair(jobs_db, traveller)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE - timedelta(minutes=1), DUE)
    traveller.move_to(DUE + timedelta(minutes=1))
    services = services_on(jobs_db, settings, clock, sender)
    services.reminders.snooze(own(patient.id), follower["_id"], 10)  # the 03:00 dose, to 07:11
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE + timedelta(minutes=1),
                     DUE + timedelta(minutes=10))
    emulator.script("QUOTA_EXCEEDED", token=token, times=1, retry_after=300)  # the snooze's push: "not before 07:16"
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE + timedelta(minutes=11),
                     DUE + timedelta(minutes=11))
    assert queued(jobs_db, patient, ":snooze:20260308T071100")["state"] == "scheduled"
    traveller.move_to(DUE + timedelta(minutes=12))
    services.reminders.record_outcome(own(patient.id), follower["_id"], "done", None)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE + timedelta(minutes=12),
                     DUE + timedelta(minutes=17))
    # The shared push at 03:00 and its re-send ten minutes on (the 02:30 dose is still open); no snooze push after
    # the 03:00 dose was taken.
    assert [p.received_at for p in emulator.delivered_to(token)] == [DUE, DUE + timedelta(minutes=10)]
    snoozed = queued(jobs_db, patient, ":snooze:20260308T071100")
    assert (snoozed["state"], snoozed["withdrawn_reason"]) == ("withdrawn", "reminder_answered")


def test_a_snoozes_push_claimed_before_its_slot_was_answered_is_refused_at_sending_while_the_other_is_open(
        jobs_db, settings, clock, traveller, sender, emulator):
    """The answer withdraws what is queued; one a sender had claimed just before is stopped by the check at sending,
    which judges a snooze's push by its own slot (not by the pair, the other slot still open)."""
    from companion.services.notifications import DeliveryConsent
    from companion.store.stores import Stores

    patient, token, _, _, follower = gap_pair(jobs_db, traveller)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE - timedelta(minutes=1), DUE)
    traveller.move_to(DUE + timedelta(minutes=1))
    services_on(jobs_db, settings, clock, sender).reminders.snooze(own(patient.id), follower["_id"], 10)
    emulator.script("QUOTA_EXCEEDED", token=token, times=2, retry_after=300)  # the re-send at 07:10 and the snooze's
    minute_by_minute(jobs_db, settings, clock, traveller, sender, DUE + timedelta(minutes=10),
                     DUE + timedelta(minutes=11))
    snoozed = queued(jobs_db, patient, ":snooze:20260308T071100")
    resend = queued(jobs_db, patient, ":resend")
    # Answered as a sender holds both (the answer's withdrawal came too late for them).
    jobs_db.reminder_occurrences.update_one({"_id": follower["_id"]}, {"$set": {"status": "done"}})
    traveller.move_to(DUE + timedelta(minutes=16))
    refused = DeliveryConsent(Stores(jobs_db), clock).refusals([snoozed, resend])
    assert refused == {snoozed["_id"]: "reminder_answered"}  # the re-send still reminds of the 02:30 dose
