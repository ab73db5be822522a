"""A move east undone the same day (a phone flipping zones near a border, Indiana/Kentucky or Spain/Portugal; a
wrong zone picked and corrected), through the worker's own jobs, the real firebase-admin and the loopback FCM
emulator: the slots the first move jumped over and kept come due again on the restored clock, and are moved back
there, pending, to be pushed and recorded at their time. One the patient answered meanwhile stays answered, and a
slot already pushed at the move is not pushed again (its first push's key is the occurrence's, sent once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import daily_reminder, make_person, own, phone, services_on
from tests.scheduler.test_reminder_edges import minute_by_minute, run_jobs

NOON_CHICAGO = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)  # 12:00 CST; 12:00 EST was 17:00 UTC


def noon_slot(db, patient) -> dict:
    return db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02",
                                             "local_time": "12:00"})


def to_new_york_and_back(services, traveller, patient, east: datetime, back: datetime) -> None:
    traveller.move_to(east)
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    traveller.move_to(back)
    services.profiles.update(patient.id, {"time_zone": "America/Chicago"})


def test_a_slot_missed_by_a_move_east_undone_minutes_later_fires_at_its_time_on_the_restored_clock(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", "America/Chicago")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["12:00"], "2026-03-02", kind="medication", window_min=30)
    services = services_on(jobs_db, settings, clock, sender)
    # 11:35 in Chicago, 12:35 in New York: New York's noon window closed at 12:30, so the slot is missed by the move.
    traveller.move_to(NOON_CHICAGO - timedelta(minutes=25))
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    assert (noon_slot(jobs_db, patient)["status"], noon_slot(jobs_db, patient)["missed_reason"]) == (
        "missed", "time_zone_change")
    traveller.move_to(NOON_CHICAGO - timedelta(minutes=20))  # the phone is back on Chicago time
    services.profiles.update(patient.id, {"time_zone": "America/Chicago"})
    traveller.move_to(NOON_CHICAGO - timedelta(minutes=10))
    run_jobs(jobs_db, settings, clock, sender, "reminders-materialize")
    minute_by_minute(jobs_db, settings, clock, traveller, sender, NOON_CHICAGO - timedelta(minutes=1),
                     NOON_CHICAGO + timedelta(minutes=2))
    slot = noon_slot(jobs_db, patient)
    assert (slot["status"], slot["due_at"], slot["zone"], slot["status_at"], slot["missed_reason"],
            slot["skipped_by_move_at"]) == ("pending", NOON_CHICAGO, "America/Chicago", None, None, None), slot
    assert [p.received_at for p in emulator.delivered_to(token)] == [NOON_CHICAGO]
    done = services.reminders.record_outcome(own(patient.id), slot["_id"], "done", None)
    assert (done["status"], done["on_time"]) == ("done", True)


def test_an_open_slot_kept_by_a_move_east_undone_minutes_later_is_still_there_to_record_at_its_time(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", "America/Chicago")
    daily_reminder(jobs_db, patient, ["12:00"], "2026-03-02", kind="medication", window_min=60)
    services = services_on(jobs_db, settings, clock, sender)
    # 11:30 CST: New York's noon slot is open (until 13:00 there), kept pending by the move.
    to_new_york_and_back(services, traveller, patient, NOON_CHICAGO - timedelta(minutes=30),
                         NOON_CHICAGO - timedelta(minutes=25))
    # The hourly pass comes round after noon (its phase is the worker's start time).
    traveller.move_to(NOON_CHICAGO + timedelta(minutes=10))
    run_jobs(jobs_db, settings, clock, sender, "reminders-materialize")
    slot = noon_slot(jobs_db, patient)
    assert (slot["status"], slot["due_at"], bool(slot.get("deleted"))) == ("pending", NOON_CHICAGO, False), slot
    done = services.reminders.record_outcome(own(patient.id), slot["_id"], "done", None)
    assert (done["status"], done["on_time"]) == ("done", True)


def test_a_slot_pushed_at_a_move_east_is_not_pushed_again_when_the_move_is_undone(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", "America/Chicago")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["12:00"], "2026-03-02", kind="medication", window_min=60)
    services = services_on(jobs_db, settings, clock, sender)
    moved = NOON_CHICAGO - timedelta(minutes=30)
    traveller.move_to(moved)
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, moved, moved + timedelta(minutes=2))
    assert [p.received_at for p in emulator.delivered_to(token)] == [moved]  # pushed at the move
    traveller.move_to(moved + timedelta(minutes=5))
    services.profiles.update(patient.id, {"time_zone": "America/Chicago"})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, NOON_CHICAGO - timedelta(minutes=1),
                     NOON_CHICAGO + timedelta(minutes=3))
    assert [p.received_at for p in emulator.delivered_to(token)] == [moved]  # once
    slot = noon_slot(jobs_db, patient)
    assert (slot["status"], slot["due_at"]) == ("pending", NOON_CHICAGO)


def test_a_slot_answered_after_a_move_east_stays_answered_when_the_move_is_undone(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", "America/Chicago")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["12:00"], "2026-03-02", kind="medication", window_min=60)
    daily_reminder(jobs_db, patient, ["12:00"], "2026-03-02", kind="tens", window_min=30)
    services = services_on(jobs_db, settings, clock, sender)
    moved = NOON_CHICAGO - timedelta(minutes=30)  # the dose kept pending, the session (window 30) missed by the move
    traveller.move_to(moved)
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    traveller.move_to(moved + timedelta(minutes=2))
    kept = {o["kind"]: o for o in jobs_db.reminder_occurrences.find({"patient_id": patient.id,
                                                                     "local_date": "2026-03-02"})}
    services.reminders.record_outcome(own(patient.id), kept["medication"]["_id"], "done", None)
    services.reminders.record_outcome(own(patient.id), kept["tens"]["_id"], "skipped", "travelling")
    traveller.move_to(moved + timedelta(minutes=5))
    services.profiles.update(patient.id, {"time_zone": "America/Chicago"})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, NOON_CHICAGO - timedelta(minutes=1),
                     NOON_CHICAGO + timedelta(minutes=2))
    after = {o["kind"]: o for o in jobs_db.reminder_occurrences.find({"patient_id": patient.id,
                                                                      "local_date": "2026-03-02"})}
    assert {kind: (o["status"], o["due_at"]) for kind, o in after.items()} == {
        kind: (status, kept[kind]["due_at"]) for kind, status in (("medication", "done"), ("tens", "skipped"))}
    assert emulator.delivered_to(token) == []


def test_nudges_of_a_slot_moved_back_follow_the_restored_time_all_of_them(
        jobs_db, settings, clock, traveller, sender, emulator):
    """The commit says a moved-back slot's 'nudges follow the restored time'; a nudge sent while the slot sat on
    the New York clock must not take away the nudge of the same rank on the restored clock."""
    patient = make_person(jobs_db, "patient", "America/Chicago")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["12:00"], "2026-03-02", kind="medication", window_min=120,
                   repeat={"count": 5, "every_min": 10})
    services = services_on(jobs_db, settings, clock, sender)
    moved = NOON_CHICAGO - timedelta(minutes=35)  # 11:25 CST, 12:25 EST: NY noon kept, pending, pushed now
    traveller.move_to(moved)
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, moved, moved + timedelta(minutes=7))
    before = [p.received_at for p in emulator.delivered_to(token)]
    assert before == [moved, NOON_CHICAGO - timedelta(minutes=30)], before  # first push, NY nudge 3 at 12:30 EST
    traveller.move_to(moved + timedelta(minutes=8))
    services.profiles.update(patient.id, {"time_zone": "America/Chicago"})
    assert noon_slot(jobs_db, patient)["nudges_sent"] == 0  # counted afresh on the restored clock
    minute_by_minute(jobs_db, settings, clock, traveller, sender, NOON_CHICAGO - timedelta(minutes=1),
                     NOON_CHICAGO + timedelta(minutes=32))
    after = [p.received_at for p in emulator.delivered_to(token)][len(before):]
    assert after == [NOON_CHICAGO + timedelta(minutes=m) for m in (10, 20, 30)], after
    assert noon_slot(jobs_db, patient)["nudges_sent"] == 3



def test_a_nudge_queued_on_the_east_clock_is_withdrawn_when_its_slot_is_moved_back(
        jobs_db, settings, clock, traveller, sender, emulator):
    """A nudge of the New York clock that FCM asked to have sent later is still queued when the move is undone: it
    reminds of a time the slot no longer has, and is withdrawn; the restored clock's nudges go at theirs."""
    patient = make_person(jobs_db, "patient", "America/Chicago")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["12:00"], "2026-03-02", kind="medication", window_min=120,
                   repeat={"count": 3, "every_min": 10})
    services = services_on(jobs_db, settings, clock, sender)
    moved = NOON_CHICAGO - timedelta(minutes=35)  # 11:25 CST, 12:25 EST: NY noon kept, pending, pushed now
    traveller.move_to(moved)
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, moved, moved + timedelta(minutes=4))
    emulator.script("QUOTA_EXCEEDED", token=token, times=1, retry_after=600)  # "not before 12:40 EST"
    minute_by_minute(jobs_db, settings, clock, traveller, sender, moved + timedelta(minutes=5),
                     moved + timedelta(minutes=6))
    queued = jobs_db.push_outbox.find_one({"recipient_user_id": patient.id, "source_key": {"$regex": ":repeat:3$"}})
    assert queued["state"] == "scheduled"  # the 12:30 EST nudge, waiting for FCM
    traveller.move_to(moved + timedelta(minutes=8))
    services.profiles.update(patient.id, {"time_zone": "America/Chicago"})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, moved + timedelta(minutes=8),
                     NOON_CHICAGO + timedelta(minutes=32))
    assert [p.received_at for p in emulator.delivered_to(token)] == [
        moved, *(NOON_CHICAGO + timedelta(minutes=m) for m in (10, 20, 30))]
    withdrawn = jobs_db.push_outbox.find_one({"_id": queued["_id"]})
    assert (withdrawn["state"], withdrawn["withdrawn_reason"]) == ("withdrawn", "reminder_called_off")


def test_a_first_push_queued_on_the_east_clock_goes_at_the_restored_time_when_its_slot_is_moved_back(
        jobs_db, settings, clock, traveller, sender, emulator):
    """The first push of a kept slot, held back by FCM at the move, has not gone when the move is undone: it goes
    at the slot's time on the restored clock, naming it, not on the one it left (nor never, its key taken)."""
    patient = make_person(jobs_db, "patient", "America/Chicago")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["12:00"], "2026-03-02", kind="medication", window_min=60)
    services = services_on(jobs_db, settings, clock, sender)
    moved = NOON_CHICAGO - timedelta(minutes=35)
    traveller.move_to(moved)
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    emulator.script("QUOTA_EXCEEDED", token=token, times=1, retry_after=900)  # "not before 12:40 EST"
    minute_by_minute(jobs_db, settings, clock, traveller, sender, moved, moved + timedelta(minutes=1))
    assert emulator.delivered_to(token) == []
    traveller.move_to(moved + timedelta(minutes=5))
    services.profiles.update(patient.id, {"time_zone": "America/Chicago"})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, moved + timedelta(minutes=5),
                     NOON_CHICAGO + timedelta(minutes=5))
    (push,) = emulator.delivered_to(token)
    assert push.received_at == NOON_CHICAGO
    first = jobs_db.push_outbox.find_one({"recipient_user_id": patient.id})
    assert (first["planned_at"], first["planned_zone"]) == (NOON_CHICAGO, "America/Chicago")


def test_a_first_push_moved_to_the_restored_time_is_not_sent_early_by_a_later_profile_change(
        jobs_db, settings, clock, traveller, sender, emulator):
    """The first push, queued on the New York clock and not sent yet, is moved to 12:00 CST when the move is
    undone (Outbox.retime). The app's retry of that zone change (or any quiet-hours change) minutes later re-times
    the patient's queued pushes to the quiet hours: it must leave that push at 12:00, not send it at once."""
    patient = make_person(jobs_db, "patient", "America/Chicago")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["12:00"], "2026-03-02", kind="medication", window_min=60)
    services = services_on(jobs_db, settings, clock, sender)
    moved = NOON_CHICAGO - timedelta(minutes=35)  # 12:25 EST: NY noon due, queued now
    traveller.move_to(moved)
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    run_jobs(jobs_db, settings, clock, sender, "reminders-dispatch")  # queued, not sent yet
    traveller.move_to(moved + timedelta(minutes=1))
    services.profiles.update(patient.id, {"time_zone": "America/Chicago"})
    first = jobs_db.push_outbox.find_one({"recipient_user_id": patient.id})
    assert (first["state"], first["not_before"]) == ("scheduled", NOON_CHICAGO)  # moved to the restored time
    traveller.move_to(moved + timedelta(minutes=2))
    services.profiles.update(patient.id, {"time_zone": "America/Chicago"})  # the app's retry: its answer was lost
    again = jobs_db.push_outbox.find_one({"_id": first["_id"]})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, moved + timedelta(minutes=2),
                     NOON_CHICAGO + timedelta(minutes=5))
    assert (again["not_before"], [p.received_at for p in emulator.delivered_to(token)]) == (
        NOON_CHICAGO, [NOON_CHICAGO])
