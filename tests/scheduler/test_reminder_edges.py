"""Reminders at the edges, through the worker's own jobs (its job table), the real firebase-admin and the
loopback FCM emulator, on a clock moved by the test: a snooze before the due time, the patient's "done"
racing the worker's missed-marking, a move east that jumps over a slot, and two slots that the
spring-forward gap makes fall due at the same instant."""

from __future__ import annotations

import csv
import io
import threading
from datetime import UTC, datetime, timedelta

import pytest

from companion.services import exports
from tests.scheduler.helpers import (
    daily_reminder,
    link_caregiver,
    make_person,
    minute_by_minute,
    own,
    phone,
    run_jobs,
    run_minute,
    services_on,
)

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def race(*actions) -> None:
    """Run the actions at the same moment, each in its own thread; raise the first error any of them met."""
    barrier = threading.Barrier(len(actions))
    errors: list[BaseException] = []

    def run(action):
        try:
            barrier.wait()
            action()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def occurrence_at(db, patient, due: datetime) -> dict:
    return db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": due})


def test_a_snooze_before_the_due_time_counts_from_it_and_only_the_snoozed_push_arrives(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=60)
    traveller.move_to(T10 - timedelta(minutes=30))
    occurrence = occurrence_at(jobs_db, patient, T10)
    snoozed = services_on(jobs_db, settings, clock).reminders.snooze(own(patient.id), occurrence["_id"], 15)
    assert snoozed["snoozed_until"] == T10 + timedelta(minutes=15)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, T10 - timedelta(minutes=2), T10 + timedelta(minutes=20))
    assert [(d.received_at, d.body["message"]["data"]["kind"]) for d in emulator.delivered_to(token)] == [
        (T10 + timedelta(minutes=15), "reminder_repeat")]
    traveller.move_to(T10 + timedelta(minutes=65))
    run_jobs(jobs_db, settings, clock, sender, "reminders-missed", "push-send")
    assert len(emulator.delivered_to(token)) == 1  # reminded by the snooze: no "you missed" summary


def test_a_snooze_after_the_due_time_counts_from_now(jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=60)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, T10, T10 + timedelta(minutes=5))
    occurrence = occurrence_at(jobs_db, patient, T10)
    services_on(jobs_db, settings, clock).reminders.snooze(own(patient.id), occurrence["_id"], 10)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, T10 + timedelta(minutes=6), T10 + timedelta(minutes=20))
    assert [d.received_at for d in emulator.delivered_to(token)] == [T10, T10 + timedelta(minutes=15)]


def test_done_within_the_window_wins_against_the_worker_marking_missed_whichever_comes_first(
        jobs_db, settings, clock, traveller, sender, emulator):
    rounds = 40
    patients = [make_person(jobs_db, "patient") for _ in range(rounds)]
    caregiver_tokens = [phone(jobs_db, link_caregiver(jobs_db, p, ["missed_session"])) for p in patients]
    for patient in patients:
        daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    traveller.move_to(T10)
    run_jobs(jobs_db, settings, clock, sender, "reminders-dispatch", "push-send")
    traveller.move_to(T10 + timedelta(minutes=31))  # the window has closed; the phone was offline since 10:20
    for patient in patients:
        occurrence = occurrence_at(jobs_db, patient, T10)
        race(lambda: run_jobs(jobs_db, settings, clock, sender, "reminders-missed"),
             lambda p=patient, o=occurrence: services_on(jobs_db, settings, clock).reminders.record_outcome(
                 own(p.id), o["_id"], "done", None, at=T10 + timedelta(minutes=20)))
        final = jobs_db.reminder_occurrences.find_one({"_id": occurrence["_id"]})
        assert (final["status"], final["on_time"], final["status_at"]) == ("done", True, T10 + timedelta(minutes=20))
    traveller.move_to(T10 + timedelta(hours=3))
    run_jobs(jobs_db, settings, clock, sender, "alerts-evaluate", "push-send")
    assert jobs_db.alerts.count_documents({}) == 0
    assert [emulator.delivered_to(token) for token in caregiver_tokens] == [[]] * rounds


PLAN_WITH_DOSES = {"tens": {"sessions_per_day": 1, "daily_minutes_target": None, "minutes_per_session": 30,
                            "programmes": [], "intensity_min_ma": 10, "intensity_max_ma": 30,
                            "start_date": datetime(2026, 3, 1).date(), "end_date": None,
                            "counts_towards_adherence": True},
                   "medications": [{"name": "Tablet", "dose": "1", "times": ["08:00", "20:00"],
                                    "counts_towards_adherence": True}],
                   "mindfulness": None}


def test_a_slot_a_move_east_jumps_over_is_kept_missed_without_alerts_and_can_still_be_recorded(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "America/New_York")
    token = phone(jobs_db, patient)
    caregiver_token = phone(jobs_db, link_caregiver(jobs_db, patient, ["missed_session"]))
    services = services_on(jobs_db, settings, clock, sender)
    services.plans.prescribe(patient.id, PLAN_WITH_DOSES, created_by="clinician")
    daily_reminder(jobs_db, patient, ["08:00", "20:00"], "2026-03-11", kind="medication", window_min=60)
    daily_reminder(jobs_db, patient, ["08:00"], "2026-03-11", kind="tens", window_min=60)
    # Wednesday 10:00 UTC: 06:00 in New York (08:00 there is 12:00 UTC), but already 10:00 in London.
    landed = datetime(2026, 3, 11, 10, 0, tzinfo=UTC)
    traveller.move_to(landed)
    services.profiles.update(patient.id, {"time_zone": "Europe/London"})
    run_jobs(jobs_db, settings, clock, sender, "reminders-materialize")
    kept = list(jobs_db.reminder_occurrences.find({"patient_id": patient.id, "local_date": "2026-03-11",
                                                   "local_time": "08:00"}))
    assert sorted((o["kind"], o["status"], o["missed_reason"], o["zone"], o["due_at"]) for o in kept) == [
        ("medication", "missed", "time_zone_change", "Europe/London", datetime(2026, 3, 11, 8, 0, tzinfo=UTC)),
        ("tens", "missed", "time_zone_change", "Europe/London", datetime(2026, 3, 11, 8, 0, tzinfo=UTC))]
    minute_by_minute(jobs_db, settings, clock, traveller, sender, landed, landed + timedelta(minutes=3))
    for at in (landed + timedelta(hours=2), landed + timedelta(hours=4)):
        traveller.move_to(at)
        run_jobs(jobs_db, settings, clock, sender, "reminders-missed", "alerts-evaluate", "push-send")
    assert emulator.delivered_to(token) == [] and emulator.delivered_to(caregiver_token) == []
    assert jobs_db.alerts.count_documents({}) == 0
    dose = next(o for o in kept if o["kind"] == "medication")
    recorded = services.reminders.record_outcome(own(patient.id), dose["_id"], "done", None,
                                                 at=datetime(2026, 3, 11, 11, 0, tzinfo=UTC))
    assert (recorded["status"], recorded["on_time"]) == ("done", False)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, datetime(2026, 3, 11, 20, 0, tzinfo=UTC),
                     datetime(2026, 3, 11, 20, 1, tzinfo=UTC))
    (evening,) = [d for d in emulator.delivered_to(token)]
    assert evening.received_at == datetime(2026, 3, 11, 20, 0, tzinfo=UTC)  # the next dose, on London time
    evening_dose = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "kind": "medication",
                                                          "local_date": "2026-03-11", "local_time": "20:00"})
    services.reminders.record_outcome(own(patient.id), evening_dose["_id"], "done", None)
    medication = services.progress.today(patient.id)["medication"]
    assert (medication["done"], medication["planned"], medication["fraction"]) == (2, 2, 1.0)


def test_a_reminder_changed_after_a_move_east_keeps_no_slot_of_its_new_schedule_for_that_move(
        jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "America/New_York")
    reminder = daily_reminder(jobs_db, patient, ["08:00"], "2026-03-11", kind="medication", window_min=60)
    landed = datetime(2026, 3, 11, 10, 0, tzinfo=UTC)  # 10:00 in London: the 08:00 dose was jumped over
    traveller.move_to(landed)
    services_on(jobs_db, settings, clock).profiles.update(patient.id, {"time_zone": "Europe/London"})
    traveller.move_to(landed + timedelta(minutes=30))  # then the dose is moved to 09:00
    services_on(jobs_db, settings, clock).reminders.update(patient.id, reminder["_id"],
                                                            {"schedule": {"type": "weekly", "times": ["09:00"]}})
    today = sorted((o["local_time"], o["status"], o["missed_reason"])
                   for o in jobs_db.reminder_occurrences.find({"patient_id": patient.id, "local_date": "2026-03-11",
                                                               "deleted": {"$ne": True}}))
    # The 08:00 dose the move jumped over, kept; not a 09:00 one of a schedule that did not exist at the move.
    assert today == [("08:00", "missed", "time_zone_change")]


def test_a_slot_kept_open_after_a_move_east_stays_when_the_schedule_changed_since_still_has_it(
        jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "America/New_York")
    reminder = daily_reminder(jobs_db, patient, ["08:00"], "2026-03-11", kind="medication", window_min=180)
    landed = datetime(2026, 3, 11, 10, 0, tzinfo=UTC)  # 10:00 in London: 08:00 jumped over, its window open
    traveller.move_to(landed)
    services_on(jobs_db, settings, clock).profiles.update(patient.id, {"time_zone": "Europe/London"})
    traveller.move_to(landed + timedelta(minutes=30))  # an evening dose is added
    services_on(jobs_db, settings, clock).reminders.update(
        patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["08:00", "21:00"]}})
    today = sorted((o["local_time"], o["status"])
                   for o in jobs_db.reminder_occurrences.find({"patient_id": patient.id, "local_date": "2026-03-11"}))
    assert today == [("08:00", "pending"), ("21:00", "pending")]


def test_a_dose_a_move_east_jumps_over_counts_on_its_slots_day_in_today_as_in_the_snapshot(
        jobs_db, settings, clock, traveller, sender):
    # The 03:00 dose of Wednesday on London's clock is 23:00 on Tuesday in New York, where the patient still was.
    traveller.move_to(datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "America/New_York")
    services = services_on(jobs_db, settings, clock, sender)
    services.plans.prescribe(patient.id, {**PLAN_WITH_DOSES, "medications": [
        {"name": "Tablet", "dose": "1", "times": ["03:00"], "counts_towards_adherence": True}]}, created_by="clinician")
    daily_reminder(jobs_db, patient, ["03:00"], "2026-03-11", kind="medication", window_min=60)
    landed = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)  # 05:00 in London, 01:00 in New York
    traveller.move_to(landed)
    services.profiles.update(patient.id, {"time_zone": "Europe/London"})
    run_jobs(jobs_db, settings, clock, sender, "reminders-materialize")
    dose = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-11"})
    assert dose["due_at"] == datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
    services.reminders.record_outcome(own(patient.id), dose["_id"], "done", None, at=landed)
    snapshot = services.adherence.compute_day(services.stores.users.by_id(patient.id), datetime(2026, 3, 11).date())
    medication = services.progress.today(patient.id)["medication"]
    assert (medication["done"], medication["fraction"]) == (1, snapshot["medication_fraction"]) == (1, 1.0)
    # The events export puts the dose on its slot's day and clock too (not 23:00 on 10 March in New York), and a
    # period from the 11th keeps it.
    review = services.review.of_patient(services.stores.users.by_id(patient.id))
    for period in (7, 1):
        events = csv.DictReader(io.StringIO(exports.events_csv(review, period).lstrip("\ufeff")))
        assert [(e["local_date"], e["local_time"], e["time_zone"]) for e in events
                if e["event"] == "medication_dose"] == [("2026-03-11", "03:00", "Europe/London")], period


def test_a_slot_a_move_east_jumps_over_while_its_window_is_open_is_pushed_at_the_landing(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "America/New_York")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["08:00"], "2026-03-11", kind="medication", window_min=180)
    landed = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)  # 09:00 in London: 08:00 passed an hour ago, window open
    traveller.move_to(landed)
    services_on(jobs_db, settings, clock).profiles.update(patient.id, {"time_zone": "Europe/London"})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, landed, landed + timedelta(minutes=2))
    (push,) = emulator.delivered_to(token)
    assert push.received_at == landed
    # The text names the slot as the app lists it, 08:00 on London's clock; on New York's, where the patient was
    # at 08:00 UTC, it said 04:00.
    assert push.body["message"]["android"]["notification"]["body_loc_args"] == ["8:00\u202fAM"]
    kept = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-11"})
    assert (kept["status"], kept["due_at"], kept["zone"]) == ("pending", datetime(2026, 3, 11, 8, 0, tzinfo=UTC),
                                                              "Europe/London")


def test_a_slot_a_move_east_jumps_over_into_the_night_it_lands_in_is_missed_by_the_move_and_alerts_no_caregiver(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", "America/New_York")
    token = phone(jobs_db, patient)
    caregiver_token = phone(jobs_db, link_caregiver(jobs_db, patient, ["missed_session"]))
    services = services_on(jobs_db, settings, clock, sender)
    services.plans.prescribe(patient.id, PLAN_WITH_DOSES, created_by="clinician")
    services.profiles.update(patient.id, {"quiet_hours": {"start": "22:00", "end": "07:00"}})
    daily_reminder(jobs_db, patient, ["20:00"], "2026-03-02", kind="tens", window_min=180)
    # 17:30 in New York (the 20:00 session is hours away), 22:30 in London: London's 20:00 has passed, its window
    # is open until 23:00, but the push would wait for 07:00, past it.
    landed = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
    traveller.move_to(landed)
    services.profiles.update(patient.id, {"time_zone": "Europe/London"})
    for at in (landed + timedelta(minutes=35), landed + timedelta(hours=2), landed + timedelta(hours=4)):
        traveller.move_to(at)
        run_jobs(jobs_db, settings, clock, sender, "reminders-dispatch", "reminders-missed", "alerts-evaluate",
                 "push-send")
    slot = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    assert emulator.delivered_to(token) == [] and emulator.delivered_to(caregiver_token) == []
    assert (slot["status"], slot["missed_reason"], slot["status_at"]) == ("missed", "time_zone_change", landed)
    assert list(jobs_db.alerts.find({})) == []
    recorded = services.reminders.record_outcome(own(patient.id), slot["_id"], "done", None,
                                                 at=datetime(2026, 3, 2, 22, 45, tzinfo=UTC))
    assert (recorded["status"], recorded["on_time"]) == ("done", True)


def test_two_slots_the_spring_forward_gap_makes_due_at_once_share_one_push_and_both_can_be_recorded(
        jobs_db, settings, clock, traveller, sender, emulator):
    due = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT, the end of the gap
    traveller.move_to(due - timedelta(hours=6))
    patient = make_person(jobs_db, "patient", "America/New_York")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["02:30", "03:00"], "2026-03-08", kind="medication", window_min=60)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, due - timedelta(minutes=1), due + timedelta(minutes=2))
    (push,) = emulator.delivered_to(token)
    assert push.received_at == due
    pair = list(jobs_db.reminder_occurrences.find({"patient_id": patient.id, "due_at": due}).sort("local_time", 1))
    assert [(o["local_time"], o["push_with"]) for o in pair] == [("02:30", None), ("03:00", pair[0]["_id"])]
    services = services_on(jobs_db, settings, clock, sender)
    assert services.reminders.record_outcome(own(patient.id), pair[0]["_id"], "done", None)["status"] == "done"
    traveller.move_to(due + timedelta(minutes=61))
    run_jobs(jobs_db, settings, clock, sender, "reminders-missed", "push-send")
    assert jobs_db.reminder_occurrences.find_one({"_id": pair[1]["_id"]})["status"] == "missed"
    assert len(emulator.delivered_to(token)) == 1  # the shared push reminded of both: no missed summary
    assert services.reminders.record_outcome(own(patient.id), pair[1]["_id"], "done", None)["status"] == "done"


def test_a_slot_sharing_the_gaps_push_is_still_pushed_when_the_other_was_ticked_off_early(
        jobs_db, settings, clock, traveller, sender, emulator):
    due = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT: 02:30 and 03:00 both fall due then
    traveller.move_to(due - timedelta(hours=6))
    patient = make_person(jobs_db, "patient", "America/New_York")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["02:30", "03:00"], "2026-03-08", kind="medication", window_min=60)
    traveller.move_to(due - timedelta(minutes=20))
    services = services_on(jobs_db, settings, clock, sender)
    services.reminders.materialize_ahead(timedelta(minutes=15), timedelta(days=2))
    pair = list(jobs_db.reminder_occurrences.find({"patient_id": patient.id, "due_at": due}).sort("local_time", 1))
    assert pair[1]["push_with"] == pair[0]["_id"]
    services.reminders.record_outcome(own(patient.id), pair[0]["_id"], "done", None)  # the 02:30 dose, early
    minute_by_minute(jobs_db, settings, clock, traveller, sender, due - timedelta(minutes=1), due + timedelta(minutes=3))
    assert jobs_db.reminder_occurrences.find_one({"_id": pair[1]["_id"]})["status"] == "pending"
    (push,) = emulator.delivered_to(token)  # the 03:00 dose is reminded of, once
    assert push.received_at == due


@pytest.mark.parametrize("change", ["stopped", "moved to the evening"])
def test_a_reminder_called_off_while_its_occurrence_is_open_nudges_no_more_and_alerts_nobody(
        jobs_db, settings, clock, traveller, sender, emulator, change):
    patient = make_person(jobs_db, "patient", "Europe/Berlin")
    token = phone(jobs_db, patient)
    caregiver = link_caregiver(jobs_db, patient, ["missed_session"])
    caregiver_token = phone(jobs_db, caregiver)
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
    traveller.move_to(start)
    reminder = daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", repeat={"count": 3, "every_min": 10})
    run_minute(jobs_db, settings, clock, sender)  # the 10:00 push
    traveller.move_to(start + timedelta(minutes=5))  # the patient (or their clinician) calls it off
    services = services_on(jobs_db, settings, clock, sender)
    if change == "stopped":
        services.reminders.stop(patient.id, reminder["_id"])
    else:
        services.reminders.update(patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["18:00"]}})
    for minutes in (10, 20, 30, 61, 95, 131):
        traveller.move_to(start + timedelta(minutes=minutes))
        run_minute(jobs_db, settings, clock, sender)
        services = services_on(jobs_db, settings, clock, sender)
        services.reminder_dispatch.mark_missed()
        services.alerts.evaluate()
        services.push.send_due(owner="test-worker")
    assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(token)] == ["therapy_reminder"]
    morning = jobs_db.reminder_occurrences.find_one({"reminder_id": reminder["_id"], "local_time": "10:00",
                                                      "local_date": "2026-03-02"})
    assert morning["status"] == "cancelled"
    assert jobs_db.alerts.count_documents({}) == 0 and emulator.delivered_to(caregiver_token) == []



def _patient_late_in_the_spread(db):
    """A patient whose practice nudge waits at least two minutes for its place in the spread."""
    from companion.domain.notifications import send_offset, ttl_for

    ttl = ttl_for("practice_nudge", timedelta(minutes=30))
    while True:
        patient = make_person(db, "patient")
        if send_offset("practice_nudge", patient.id, ttl) >= timedelta(minutes=2):
            return patient


@pytest.mark.parametrize("action", ["done", "snoozed", "stopped"])
def test_a_push_still_queued_is_withdrawn_when_the_patient_answers_snoozes_or_stops_the_reminder(
        jobs_db, settings, clock, traveller, sender, emulator, action):
    patient = _patient_late_in_the_spread(jobs_db)
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["10:00"], "2026-03-01", kind="mindfulness", window_min=30)
    traveller.move_to(T10)
    run_minute(jobs_db, settings, clock, sender)
    assert emulator.delivered_to(token) == []  # queued at its place in the spread
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})
    traveller.move_to(T10 + timedelta(seconds=60))
    services = services_on(jobs_db, settings, clock)
    if action == "done":
        services.reminders.record_outcome(own(patient.id), occurrence["_id"], "done", None)
    elif action == "snoozed":
        services.reminders.snooze(own(patient.id), occurrence["_id"], 20)  # until 10:21: that push comes then
    else:
        services.reminders.stop(patient.id, reminder["_id"])
    traveller.move_to(T10 + timedelta(minutes=10))
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="test-worker")
    assert emulator.delivered_to(token) == []
    [queued] = list(jobs_db.push_outbox.find({"recipient_user_id": patient.id}))
    assert (queued["state"], queued["withdrawn_reason"]) == (
        "withdrawn", {"done": "reminder_answered", "snoozed": "reminder_snoozed", "stopped": "reminder_called_off"}[action])


def test_a_reminder_waiting_to_be_retried_is_not_sent_once_the_patient_recorded_it(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-01", window_min=60)
    emulator.script("UNAVAILABLE", token=token, times=5)  # the first try and firebase-admin's transport retries
    traveller.move_to(T10)
    run_minute(jobs_db, settings, clock, sender)
    [queued] = list(jobs_db.push_outbox.find({"recipient_user_id": patient.id}))
    assert (queued["state"], queued["attempts"]) == ("scheduled", 1)  # back for a retry
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})
    traveller.move_to(T10 + timedelta(seconds=5))
    services_on(jobs_db, settings, clock).reminders.record_outcome(own(patient.id), occurrence["_id"], "done", None)
    traveller.move_to(T10 + timedelta(minutes=2))
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="test-worker")
    assert emulator.delivered_to(token) == []


def test_a_first_push_whose_place_in_the_spread_falls_in_quiet_hours_goes_at_its_time(
        jobs_db, settings, clock, traveller, sender, emulator):
    from datetime import time as wall

    from companion.domain.notifications import send_offset, ttl_for
    from companion.domain.quiet_hours import QuietHours

    traveller.move_to(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    ttl = ttl_for("practice_nudge", timedelta(minutes=30))
    while True:  # a patient whose place in the spread is at least four minutes in
        patient = make_person(jobs_db, "patient")
        if send_offset("practice_nudge", patient.id, ttl) >= timedelta(minutes=4):
            break
    services_on(jobs_db, settings, clock).stores.users.update_profile(
        patient.id, version=0, quiet_hours=QuietHours(wall(22, 0), wall(7, 0)))
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["21:58"], "2026-03-02", kind="mindfulness", window_min=30)
    start = datetime(2026, 3, 2, 21, 58, tzinfo=UTC)
    for minutes in range(0, 12):
        traveller.move_to(start + timedelta(minutes=minutes))
        run_minute(jobs_db, settings, clock, sender)
    sent = [d.received_at.strftime("%H:%M") for d in emulator.delivered_to(token)]
    assert sent == ["21:58"]  # at its time, not at its place in the spread (22:02 or later, in quiet hours)
