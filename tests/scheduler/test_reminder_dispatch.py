"""Reminders reach the patient's phone at the right local minute, once, through the real firebase-admin
and the loopback FCM emulator; nudges, re-sends, dead tokens, 503 bursts and restarts."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, time, timedelta

import pytest
from pymongo.errors import ConnectionFailure

from companion.domain.notifications import send_offset
from companion.domain.quiet_hours import QuietHours
from companion.notify.push import PushSender, TransportRetry
from companion.store.outbox import Outbox
from tests.scheduler.helpers import daily_reminder, make_person, own, phone, run_minute, services_on
from tests.support.stops import dead_database, fail_once

# zone, local date, local time, expected UTC instant (worked out by hand from the zone's offsets)
DST_CASES = {
    "new york spring-forward gap": ("America/New_York", "2026-03-08", "02:30", "2026-03-08T07:00"),
    "new york morning after spring forward": ("America/New_York", "2026-03-08", "08:00", "2026-03-08T12:00"),
    "new york fall-back repeated hour": ("America/New_York", "2026-11-01", "01:30", "2026-11-01T05:30"),
    "london spring-forward gap": ("Europe/London", "2026-03-29", "01:30", "2026-03-29T01:00"),
    "london fall-back repeated hour": ("Europe/London", "2026-10-25", "01:30", "2026-10-25T00:30"),
    "lord howe half-hour gap": ("Australia/Lord_Howe", "2026-10-04", "02:15", "2026-10-03T15:30"),
    "lord howe half-hour repeat": ("Australia/Lord_Howe", "2026-04-05", "01:45", "2026-04-04T14:45"),
    "kolkata (no dst)": ("Asia/Kolkata", "2026-03-08", "08:00", "2026-03-08T02:30"),
}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _one_patient_with_phone(db, zone="UTC"):
    patient = make_person(db, "patient", zone)
    return patient, phone(db, patient)


@pytest.mark.parametrize("case", sorted(DST_CASES))
def test_reminder_reaches_the_phone_at_the_local_minute_across_dst(jobs_db, settings, clock, traveller, sender,
                                                                    emulator, case):
    zone, local_date, local_time, expected = DST_CASES[case]
    due = _at(expected)
    traveller.move_to(due - timedelta(hours=3))
    patient, token = _one_patient_with_phone(jobs_db, zone)
    daily_reminder(jobs_db, patient, [local_time], local_date)
    traveller.move_to(due - timedelta(minutes=1))
    run_minute(jobs_db, settings, clock, sender)
    assert emulator.delivered_to(token) == []
    traveller.move_to(due)
    run_minute(jobs_db, settings, clock, sender)
    traveller.move_to(due + timedelta(minutes=1))
    run_minute(jobs_db, settings, clock, sender)
    deliveries = emulator.delivered_to(token)
    assert [d.received_at for d in deliveries] == [due]
    notification = Outbox(jobs_db).get(deliveries[0].body["message"]["data"]["notification_id"])
    occurrence = jobs_db.reminder_occurrences.find_one({"_id": notification["source_key"].removeprefix("reminder:")})
    assert (occurrence["local_date"], occurrence["local_time"]) == (local_date, local_time)


def test_reminder_push_lives_as_long_as_the_completion_window_and_collapses_per_patient(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    (delivery,) = emulator.delivered_to(token)
    android = delivery.body["message"]["android"]
    assert android["ttl"] == "1800s"
    assert android["collapse_key"].startswith("therapy_reminder-")
    assert "Qzxvy" not in str(delivery.body)  # the reminder's own title never leaves


def test_two_workers_dispatching_at_once_send_each_reminder_exactly_once(
        jobs_db, settings, clock, traveller, sender, emulator, service_account):
    tokens = []
    for _ in range(12):
        patient, token = _one_patient_with_phone(jobs_db)
        daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02")
        tokens.append(token)
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    second = PushSender(service_account, fcm_url=emulator.fcm_url, app_name=f"second-{uuid.uuid4()}",
                        transport_retry=TransportRetry(retries=4, backoff_factor=0.01), rng=random.Random(8))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(name, worker_sender):
        try:
            barrier.wait()
            services = services_on(jobs_db, settings, clock, worker_sender)
            services.reminder_dispatch.dispatch_due()
            services.push.send_due(owner=name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=("a", sender)), threading.Thread(target=worker, args=("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.close()
    assert errors == []
    assert [len(emulator.delivered_to(t)) for t in tokens] == [1] * len(tokens)
    assert jobs_db.push_outbox.count_documents({}) == len(tokens)


def test_nudges_repeat_until_the_session_is_done(jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", repeat={"count": 3, "every_min": 10})
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    for minutes in (0, 10):
        traveller.move_to(start + timedelta(minutes=minutes))
        run_minute(jobs_db, settings, clock, sender)
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": start})
    services_on(jobs_db, settings, clock).reminders.record_outcome(own(patient.id), occurrence["_id"], "done", None)
    for minutes in (20, 30, 40):
        traveller.move_to(start + timedelta(minutes=minutes))
        run_minute(jobs_db, settings, clock, sender)
    kinds = [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(token)]
    assert kinds == ["therapy_reminder", "reminder_repeat"]
    assert jobs_db.reminder_occurrences.find_one({"_id": occurrence["_id"]})["nudges_sent"] == 1


def test_a_nudge_queued_by_a_pass_stopped_before_noting_it_is_counted_by_the_next_pass(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    patient, token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", repeat={"count": 3, "every_min": 10})
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    traveller.move_to(start)
    run_minute(jobs_db, settings, clock, sender)
    traveller.move_to(start + timedelta(minutes=10))
    services = services_on(jobs_db, settings, clock, sender)
    monkeypatch.setattr(services.stores.occurrences, "note_nudge", dead_database)
    with pytest.raises(ConnectionFailure):
        services.reminder_dispatch.dispatch_due()
    monkeypatch.undo()
    traveller.move_to(start + timedelta(minutes=11))
    run_minute(jobs_db, settings, clock, sender)
    assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(token)] == [
        "therapy_reminder", "reminder_repeat"]
    assert jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": start})["nudges_sent"] == 1


def test_unconfirmed_reminder_is_sent_once_more_after_the_delay(jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02")
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    for minutes in (0, 9, 10, 20, 30):
        traveller.move_to(start + timedelta(minutes=minutes))
        run_minute(jobs_db, settings, clock, sender)
    assert [d.received_at for d in emulator.delivered_to(token)] == [start, start + timedelta(minutes=10)]


@pytest.mark.parametrize("minutes", [5, 15])
def test_a_reminder_the_patient_snoozed_is_not_sent_again_besides_the_snooze(
        jobs_db, settings, clock, traveller, sender, emulator, minutes):
    """The app confirmed nothing, but the snooze says the push arrived: the snooze's push reminds again, before the
    re-send's time (08:02 + 5) or after it (08:02 + 15), and no re-send goes (08:10)."""
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    traveller.move_to(start - timedelta(hours=1))
    patient, token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["08:00"], "2026-03-02", kind="medication", window_min=60)
    traveller.move_to(start)
    run_minute(jobs_db, settings, clock, sender)
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": start})
    traveller.move_to(start + timedelta(minutes=2))
    services_on(jobs_db, settings, clock, sender).reminders.snooze(own(patient.id), occurrence["_id"], minutes)
    for minute in range(2, 21):
        traveller.move_to(start + timedelta(minutes=minute))
        run_minute(jobs_db, settings, clock, sender)
    assert [d.received_at for d in emulator.delivered_to(token)] == [start, start + timedelta(minutes=2 + minutes)]


def test_reminder_the_app_confirmed_is_not_sent_again(jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02")
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    traveller.move_to(start)
    run_minute(jobs_db, settings, clock, sender)
    (delivery,) = emulator.delivered_to(token)
    Outbox(jobs_db).record_receipt(delivery.body["message"]["data"]["notification_id"], patient.id, "delivered")
    for minutes in (10, 20):
        traveller.move_to(start + timedelta(minutes=minutes))
        run_minute(jobs_db, settings, clock, sender)
    assert len(emulator.delivered_to(token)) == 1


def test_unregistered_token_is_removed_and_the_other_phone_still_gets_the_reminder(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, dead = _one_patient_with_phone(jobs_db)
    alive = phone(jobs_db, patient, "phone-2")
    emulator.script("UNREGISTERED", token=dead)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02")
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    assert len(emulator.delivered_to(alive)) == 1
    assert sorted(t["install_id"] for t in jobs_db.push_tokens.find({"user_id": patient.id})) == ["phone-2"]


def test_503_burst_is_retried_and_the_reminder_arrives(jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02")
    emulator.script("UNAVAILABLE", times=7)  # firebase-admin's own 5 attempts fail, then 2 more
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    traveller.move_to(start)
    run_minute(jobs_db, settings, clock, sender)
    assert emulator.delivered_to(token) == []
    traveller.move_to(start + timedelta(minutes=1))
    run_minute(jobs_db, settings, clock, sender)
    assert len(emulator.delivered_to(token)) == 1
    assert emulator.hits_for(token) == 8
    assert jobs_db.push_outbox.find_one({"recipient_user_id": patient.id})["state"] == "sent"


def _three_reminders(db, start_date="2026-03-02"):
    patient, token = _one_patient_with_phone(db)
    for at in ("10:00", "10:03", "10:06"):
        daily_reminder(db, patient, [at], start_date)
    return patient, token


def _restart_and_catch_up(db, settings, clock, sender):
    services = services_on(db, settings, clock, sender)
    services.reminder_dispatch.dispatch_due()
    services.reminder_dispatch.mark_missed()
    services.push.send_due(owner="restarted-worker")


def test_worker_down_ten_minutes_sends_each_missed_reminder_once_late(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _three_reminders(jobs_db)
    traveller.move_to(datetime(2026, 3, 2, 9, 59, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    back = datetime(2026, 3, 2, 10, 10, tzinfo=UTC)
    traveller.move_to(back)
    _restart_and_catch_up(jobs_db, settings, clock, sender)
    traveller.move_to(back + timedelta(minutes=1))
    _restart_and_catch_up(jobs_db, settings, clock, sender)
    deliveries = emulator.delivered_to(token)
    assert [d.received_at for d in deliveries] == [back] * 3
    assert jobs_db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "missed"}) == 0


def test_worker_down_two_hours_sends_nothing_late_marks_missed_and_one_summary(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _three_reminders(jobs_db)
    traveller.move_to(datetime(2026, 3, 2, 9, 59, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    traveller.move_to(datetime(2026, 3, 2, 11, 59, tzinfo=UTC))
    _restart_and_catch_up(jobs_db, settings, clock, sender)
    traveller.move_to(datetime(2026, 3, 2, 12, 5, tzinfo=UTC))
    _restart_and_catch_up(jobs_db, settings, clock, sender)
    traveller.move_to(datetime(2026, 3, 2, 12, 40, tzinfo=UTC))  # past the summaries' 30-minute spread
    _restart_and_catch_up(jobs_db, settings, clock, sender)
    kinds = [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(token)]
    assert kinds == ["generic_update"]
    missed = jobs_db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "missed",
                                                           "local_date": "2026-03-02"})
    assert missed == 3


def test_a_reminder_quiet_hours_hold_past_its_window_brings_no_update_push_at_night(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "Europe/Berlin")
    services_on(jobs_db, settings, clock, sender).stores.users.update_profile(
        patient.id, version=0, quiet_hours=QuietHours(time(22, 0), time(7, 0)))
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["23:00"], "2026-03-02", kind="medication")  # inside their quiet hours
    start = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # 23:00 in Berlin
    for minutes in range(0, 100, 5):
        traveller.move_to(start + timedelta(minutes=minutes))
        run_minute(jobs_db, settings, clock, sender)
        services_on(jobs_db, settings, clock, sender).reminder_dispatch.mark_missed()
    assert jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})[
        "status"] == "missed"
    assert emulator.delivered_to(token) == [] and jobs_db.push_outbox.count_documents({}) == 0



@pytest.mark.parametrize("stopped", ["between two patients' marks", "before the summaries",
                                     "after the summaries, on the next day"])
def test_a_missed_pass_stopped_midway_is_finished_by_the_next_with_one_summary_per_patient(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch, stopped):
    first, first_token = _three_reminders(jobs_db)  # windows closing at 11:00, 11:03 and 11:06
    second, second_token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, second, ["10:30"], "2026-03-02")  # closing at 11:30, marked after the first's
    traveller.move_to(datetime(2026, 3, 2, 9, 59, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    traveller.move_to(datetime(2026, 3, 2, 11, 59, tzinfo=UTC))  # the worker was down for two hours
    services = services_on(jobs_db, settings, clock, sender)
    occurrences = services.stores.occurrences
    if stopped == "between two patients' marks":
        second_ids = {o["_id"] for o in jobs_db.reminder_occurrences.find({"patient_id": second.id})}
        mark = occurrences.mark_one_missed
        monkeypatch.setattr(occurrences, "mark_one_missed", lambda oid, *args: dead_database() if oid in second_ids
                            else mark(oid, *args))
        with pytest.raises(ConnectionFailure):
            services.reminder_dispatch.mark_missed()
        assert jobs_db.reminder_occurrences.count_documents({"patient_id": first.id, "status": "missed"}) == 3
    else:
        write = (services.stores.outbox, "schedule") if stopped == "before the summaries" \
            else (occurrences, "note_summarised")
        monkeypatch.setattr(*write, dead_database)
        services.reminder_dispatch.mark_missed()  # (each patient's summary failing is logged and counted)
        assert jobs_db.reminder_occurrences.count_documents({"status": "missed"}) == 4
    monkeypatch.undo()
    for at in (datetime(2026, 3, 2, 12, 5, tzinfo=UTC), datetime(2026, 3, 2, 12, 40, tzinfo=UTC),
               datetime(2026, 3, 3, 0, 5, tzinfo=UTC), datetime(2026, 3, 3, 0, 40, tzinfo=UTC)):
        traveller.move_to(at)
        _restart_and_catch_up(jobs_db, settings, clock, sender)
    for patient, token in ((first, first_token), (second, second_token)):
        assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(token)] == ["generic_update"]
        assert jobs_db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "missed",
                                                             "local_date": "2026-03-02"}) == (3 if patient is first else 1)
    assert jobs_db.reminder_occurrences.count_documents({"missed_summary": "due"}) == 0


def test_a_reminder_marked_missed_by_a_pass_stopped_before_touching_today_shows_missed_in_today(
        jobs_db, settings, clock, traveller, sender, monkeypatch):
    patient, _ = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02")
    traveller.move_to(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
    assert services_on(jobs_db, settings, clock, sender).progress.today(patient.id)["reminders"]["pending"] == 1
    traveller.move_to(datetime(2026, 3, 2, 11, 5, tzinfo=UTC))  # its window closed at 11:00
    services = services_on(jobs_db, settings, clock, sender)
    fail_once(monkeypatch, services.stores.today_rows, "touch",
              lambda: jobs_db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "missed"}))
    with pytest.raises(ConnectionFailure):
        services.reminder_dispatch.mark_missed()
    monkeypatch.undo()
    traveller.move_to(datetime(2026, 3, 2, 11, 10, tzinfo=UTC))
    services.reminder_dispatch.mark_missed()
    today = services.progress.today(patient.id)["reminders"]
    assert (today["pending"], today["missed"]) == (0, 1)


def test_a_materializing_pass_stopped_before_touching_today_still_leaves_today_showing_the_moved_reminder(
        jobs_db, settings, clock, traveller, sender, monkeypatch):
    patient, _ = _one_patient_with_phone(jobs_db)
    reminder = daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02")
    traveller.move_to(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock, sender)
    assert [o["due_at"].strftime("%H:%M") for o in services.progress.today(patient.id)["reminders"]["items"]] == ["10:00"]
    # The patient moved it to 15:00 from a request that stopped after writing the reminder: the worker's pass
    # moves its occurrence, and stops before it can say that today changed.
    fail_once(monkeypatch, services.reminders, "refresh_future", lambda: True)
    with pytest.raises(ConnectionFailure):
        services.reminders.update(patient.id, reminder["_id"], {"schedule": {**reminder["schedule"],
                                                                             "times": ["15:00"]}})
    monkeypatch.undo()
    moved = {"patient_id": patient.id, "local_date": "2026-03-02", "local_time": "15:00"}
    fail_once(monkeypatch, services.stores.today_rows, "touch",
              lambda: jobs_db.reminder_occurrences.count_documents(moved))
    with pytest.raises(ConnectionFailure):
        services.reminders.materialize(patient.id, datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))
    monkeypatch.undo()
    services.reminders.materialize_ahead(settings.reminder_grace, settings.materialize_horizon)  # nothing left
    assert [o["due_at"].strftime("%H:%M") for o in services.progress.today(patient.id)["reminders"]["items"]
            if o["status"] == "pending"] == ["15:00"]


def test_a_stop_interrupted_between_cancelling_and_withdrawing_is_finished_by_its_retry_and_nothing_goes_out(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch):
    patient, token = _one_patient_with_phone(jobs_db)
    reminder = daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02")
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock, sender)
    services.reminder_dispatch.dispatch_due()  # its push is queued, not sent yet
    [queued] = list(jobs_db.push_outbox.find({"recipient_user_id": patient.id}))
    fail_once(monkeypatch, services.stores.outbox, "withdraw_sources",
              lambda: jobs_db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "cancelled"}))
    with pytest.raises(ConnectionFailure):
        services.reminders.stop(patient.id, reminder["_id"])
    monkeypatch.undo()
    services.reminders.stop(patient.id, reminder["_id"])  # the app's retry
    services.push.send_due(owner="test-worker")
    assert emulator.delivered_to(token) == []
    assert jobs_db.push_outbox.find_one({"_id": queued["_id"]})["state"] == "withdrawn"


def test_the_summary_after_an_outage_waits_for_the_end_of_quiet_hours(jobs_db, settings, clock, traveller, sender):
    patient, _ = _three_reminders(jobs_db)
    services_on(jobs_db, settings, clock, sender).stores.users.update_profile(
        patient.id, version=0, quiet_hours=QuietHours(time(11, 30), time(13, 0)))
    traveller.move_to(datetime(2026, 3, 2, 9, 59, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    traveller.move_to(datetime(2026, 3, 2, 11, 59, tzinfo=UTC))  # back after two hours, inside quiet hours
    _restart_and_catch_up(jobs_db, settings, clock, sender)
    [summary] = list(jobs_db.push_outbox.find({"source_key": {"$regex": "^missed-summary:"}}))
    assert summary["not_before"] >= datetime(2026, 3, 2, 13, 0, tzinfo=UTC)


def test_a_summary_whose_place_in_the_spread_falls_in_quiet_hours_goes_at_its_time(
        jobs_db, settings, clock, traveller, sender, emulator):
    summaries = timedelta(hours=24)
    while True:  # a patient whose place in the summaries' spread is a few minutes after the marking
        patient, token = _one_patient_with_phone(jobs_db)
        if send_offset("generic_update", patient.id, summaries) > timedelta(minutes=3):
            break
    for at in ("10:00", "10:03", "10:06"):
        daily_reminder(jobs_db, patient, [at], "2026-03-02")
    marked = datetime(2026, 3, 2, 11, 59, tzinfo=UTC)
    services_on(jobs_db, settings, clock, sender).stores.users.update_profile(  # quiet from two minutes after
        patient.id, version=0, quiet_hours=QuietHours(time(12, 1), time(13, 30)))
    traveller.move_to(datetime(2026, 3, 2, 9, 59, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    traveller.move_to(marked)  # back after two hours, just before the quiet hours
    _restart_and_catch_up(jobs_db, settings, clock, sender)
    [summary] = list(jobs_db.push_outbox.find({"source_key": {"$regex": "^missed-summary:"}}))
    assert summary["not_before"] == marked  # not at its place in the spread, inside the quiet hours
    assert [d.received_at for d in emulator.delivered_to(token)] == [marked]


def test_nudges_that_fall_in_quiet_hours_are_not_sent(jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "Europe/Berlin")
    services_on(jobs_db, settings, clock, sender).stores.users.update_profile(
        patient.id, version=0, quiet_hours=QuietHours(time(22, 0), time(7, 0)))
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["21:45"], "2026-03-02", repeat={"count": 3, "every_min": 10})
    start = datetime(2026, 3, 2, 20, 45, tzinfo=UTC)  # 21:45 in Berlin: nudges at 21:55, 22:05 and 22:15
    for minutes in range(0, 60, 5):
        traveller.move_to(start + timedelta(minutes=minutes))
        run_minute(jobs_db, settings, clock, sender)
    sent = [(d.received_at - start, d.body["message"]["data"]["kind"]) for d in emulator.delivered_to(token)]
    assert sent == [(timedelta(0), "therapy_reminder"), (timedelta(minutes=10), "reminder_repeat")]



@pytest.mark.parametrize("act", ["done", "skipped", "snoozed"])
def test_a_reminder_answered_or_snoozed_while_its_push_was_past_withdrawing_is_withdrawn_at_sending_not_sent(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch, act):
    patient, token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=60)
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock, sender)
    services.reminder_dispatch.dispatch_due()  # its push is queued, not sent yet
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    # The answer (or snooze) is recorded, and its withdrawal of the queued push never happens (a sender had
    # claimed it already, or the request stopped there): the sender's own check at sending stops it.
    monkeypatch.setattr(services.stores.outbox, "withdraw_sources", dead_database)
    with pytest.raises(ConnectionFailure):
        if act == "snoozed":
            services.reminders.snooze(own(patient.id), occurrence["_id"], 15)
        else:
            services.reminders.record_outcome(own(patient.id), occurrence["_id"], act, None)
    monkeypatch.undo()
    services.push.send_due(owner="test-worker")
    assert emulator.delivered_to(token) == []
    [push] = list(jobs_db.push_outbox.find({"recipient_user_id": patient.id}))
    assert (push["state"], push["withdrawn_reason"]) == (
        "withdrawn", "reminder_snoozed" if act == "snoozed" else "reminder_answered")
    if act == "snoozed":
        traveller.move_to(datetime(2026, 3, 2, 10, 15, tzinfo=UTC))  # the snooze's time: its own push goes
        later = services_on(jobs_db, settings, clock, sender)
        later.reminder_dispatch.dispatch_due()
        later.push.send_due(owner="test-worker")
        assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(token)] == ["reminder_repeat"]


def test_a_snooze_capped_at_the_windows_end_still_sends_its_own_push_a_minute_before_its_time(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token = _one_patient_with_phone(jobs_db)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    assert len(emulator.delivered_to(token)) == 1
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    traveller.move_to(datetime(2026, 3, 2, 10, 20, tzinfo=UTC))
    services_on(jobs_db, settings, clock).reminders.snooze(own(patient.id), occurrence["_id"], 15)  # to 10:30, the end
    # Its push goes at 10:29, the last minute of the window, while the snooze's time (10:30) has not come: the
    # send-time check holds back every push planned before a snooze but this one.
    traveller.move_to(datetime(2026, 3, 2, 10, 29, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(token)] == [
        "therapy_reminder", "reminder_repeat"]


def test_a_push_shared_by_two_slots_of_a_dst_gap_is_settled_only_when_both_are(jobs_db):
    from companion.store.reminders import Occurrences

    slots = Occurrences(jobs_db)
    base = {"patient_id": "p", "reminder_id": "r", "local_date": "2026-03-08"}
    jobs_db.reminder_occurrences.insert_many([{**base, "_id": "first", "status": "done", "local_time": "02:00"},
                                              {**base, "_id": "second", "status": "pending", "local_time": "02:30",
                                               "push_with": "first"},
                                              {**base, "_id": "alone", "status": "cancelled", "local_time": "09:00"},
                                              {**base, "_id": "open", "status": "pending", "local_time": "10:00"}])
    at = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)

    def held(leaders):
        return {k: v["status"] for k, v in slots.held_pushes(leaders, at).items()}

    assert held(["first", "alone", "open", "unknown"]) == {"alone": "cancelled"}
    jobs_db.reminder_occurrences.update_one({"_id": "second"}, {"$set": {"status": "skipped"}})
    assert held(["first", "alone"]) == {"first": "done", "alone": "cancelled"}
    # Snoozed to a later time: held until then; a snooze whose time has come holds nothing.
    jobs_db.reminder_occurrences.update_one({"_id": "open"}, {"$set": {"snoozed_until": at + timedelta(minutes=1)}})
    assert held(["open"]) == {"open": "pending"}
    jobs_db.reminder_occurrences.update_one({"_id": "open"}, {"$set": {"snoozed_until": at}})
    assert held(["open"]) == {}
