"""A change of a reminder's times on a day some of its doses were already seen to (answered, or reminded of): the
new times remind that day only past the doses seen to, and a change dated from a later day leaves the days before it
as they were planned. Real FerretDB, real firebase-admin against the loopback FCM emulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import daily_reminder, make_person, minute_by_minute, own, phone, services_on

DAY = datetime(2026, 3, 2, tzinfo=UTC)



def day_of(db, patient, local_date):
    return sorted((o["local_time"], o["status"]) for o in db.reminder_occurrences.find(
        {"patient_id": patient.id, "local_date": local_date, "deleted": {"$ne": True}}))


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def pushed_at(emulator, token):
    return [d.received_at.strftime("%d %H:%M") for d in emulator.delivered_to(token)]


def test_todays_dose_taken_then_moved_later_is_not_reminded_again_today(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(at(8))
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["09:30"], "2026-03-02", kind="medication", window_min=60)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(9.5), at(9.5))
    services = services_on(jobs_db, settings, clock, sender)
    dose = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    traveller.move_to(at(9 + 40 / 60))
    services.reminders.record_outcome(own(patient.id), dose["_id"], "done", None)
    traveller.move_to(at(12))
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["20:00"]}})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(20), at(20 + 1 / 60))

    assert day_of(jobs_db, patient, "2026-03-02") == [("09:30", "done")]
    assert services.progress.today(patient.id)["reminders"]["due"] == 1  # one dose today, taken
    assert pushed_at(emulator, token) == ["02 09:30"]
    assert day_of(jobs_db, patient, "2026-03-03") == [("20:00", "pending")]  # the new time, from tomorrow
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(24 + 20), at(24 + 20))
    assert pushed_at(emulator, token) == ["02 09:30", "03 20:00"]


def test_a_dose_reminded_of_then_moved_later_is_not_reminded_again_today(
        jobs_db, settings, clock, traveller, sender, emulator):
    """The 09:30 push reached the phone (the patient may have taken it without ticking it off): moved at 09:45 to
    20:00, it is called off as before, and 20:00 starts tomorrow."""
    traveller.move_to(at(8))
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["09:30"], "2026-03-02", kind="medication", window_min=60)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(9.5), at(9.5))
    traveller.move_to(at(9.75))
    services_on(jobs_db, settings, clock, sender).reminders.update(
        patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["20:00"]}})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(20), at(20))

    assert day_of(jobs_db, patient, "2026-03-02") == []  # (09:30 called off while open: a tombstone)
    assert pushed_at(emulator, token) == ["02 09:30"]


def test_a_dose_moved_later_before_it_was_due_reminds_at_its_new_time_today(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(at(8))
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["09:30"], "2026-03-02", kind="medication", window_min=60)
    services_on(jobs_db, settings, clock, sender).reminders.update(
        patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["20:00"]}})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(20), at(20))

    assert day_of(jobs_db, patient, "2026-03-02") == [("20:00", "pending")]
    assert pushed_at(emulator, token) == ["02 20:00"]


def test_the_second_of_two_doses_moved_later_after_the_first_was_taken_still_reminds_today(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(at(8))
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["09:30", "18:00"], "2026-03-02", kind="medication", window_min=60)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(9.5), at(9.5))
    services = services_on(jobs_db, settings, clock, sender)
    morning = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02",
                                                     "local_time": "09:30"})
    traveller.move_to(at(9 + 40 / 60))
    services.reminders.record_outcome(own(patient.id), morning["_id"], "done", None)
    traveller.move_to(at(12))
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {"type": "weekly",
                                                                         "times": ["13:00", "21:00"]}})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(13), at(13))
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(21), at(21))

    # The dose taken stands for the first new time (13:00): only the second (21:00) is left for today.
    assert day_of(jobs_db, patient, "2026-03-02") == [("09:30", "done"), ("21:00", "pending")]
    assert pushed_at(emulator, token) == ["02 09:30", "02 21:00"]


def test_a_dose_moved_earlier_from_tomorrow_keeps_todays_dose_at_its_time(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(at(8))
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["20:00"], "2026-03-02", kind="medication", window_min=60)
    traveller.move_to(at(12))
    services_on(jobs_db, settings, clock, sender).reminders.update(patient.id, reminder["_id"], {"schedule": {
        "type": "weekly", "times": ["08:00"], "start_date": "2026-03-03"}})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(20), at(20))
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(24 + 8), at(24 + 8))

    assert day_of(jobs_db, patient, "2026-03-02") == [("20:00", "pending")]
    assert day_of(jobs_db, patient, "2026-03-03") == [("08:00", "pending")]
    assert pushed_at(emulator, token) == ["02 20:00", "03 08:00"]


def test_a_change_dated_from_a_later_day_leaves_every_day_before_it_as_planned(
        jobs_db, settings, clock, traveller, sender):
    """Days after today, stored already or not yet, keep the schedule they had until the new one starts; a second
    change dated from an earlier day takes them over from then, and one dated from today ends them."""
    traveller.move_to(at(12))
    patient = make_person(jobs_db, "patient", "Europe/London")
    services = services_on(jobs_db, settings, clock, sender)
    reminder = daily_reminder(jobs_db, patient, ["20:00"], "2026-03-02", kind="medication", window_min=60)
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {
        "type": "weekly", "times": ["08:00"], "start_date": "2026-03-06"}})
    services.reminders.occurrences_between(own(patient.id), at(0), at(24 * 7))
    assert [day_of(jobs_db, patient, f"2026-03-0{d}") for d in range(2, 8)] == [[("20:00", "pending")]] * 4 + [
        [("08:00", "pending")]] * 2

    traveller.move_to(at(13))
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {
        "type": "weekly", "times": ["09:00"], "start_date": "2026-03-04"}})
    services.reminders.occurrences_between(own(patient.id), at(0), at(24 * 7))
    assert [day_of(jobs_db, patient, f"2026-03-0{d}") for d in range(2, 8)] == [[("20:00", "pending")]] * 2 + [
        [("09:00", "pending")]] * 4

    services.reminders.update(patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["10:00"],
                                                                         "start_date": "2026-03-02"}})
    assert day_of(jobs_db, patient, "2026-03-02") == []  # from today: 10:00 has passed, 20:00 moved away
    assert day_of(jobs_db, patient, "2026-03-03") == [("10:00", "pending")]


def test_a_reminder_stopped_and_started_again_keeps_the_days_its_change_left_as_planned(
        jobs_db, settings, clock, traveller, sender):
    traveller.move_to(at(12))
    patient = make_person(jobs_db, "patient")
    services = services_on(jobs_db, settings, clock, sender)
    reminder = daily_reminder(jobs_db, patient, ["20:00"], "2026-03-02", kind="medication", window_min=60)
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {
        "type": "weekly", "times": ["08:00"], "start_date": "2026-03-03"}})
    traveller.move_to(at(13))
    services.reminders.stop(patient.id, reminder["_id"])
    assert day_of(jobs_db, patient, "2026-03-02") == []
    traveller.move_to(at(14))
    services.reminders.update(patient.id, reminder["_id"], {"active": True})
    assert day_of(jobs_db, patient, "2026-03-02") == [("20:00", "pending")]
    assert day_of(jobs_db, patient, "2026-03-03") == [("08:00", "pending")]


def test_a_dose_reminded_of_then_removed_leaves_the_other_time_of_the_day(
        jobs_db, settings, clock, traveller, sender, emulator):
    """08:00 pushed, not answered, then removed at 08:30 (20:00 only): the 20:00 the change keeps is its own slot,
    never the time the 08:00 reminded of stands for."""
    traveller.move_to(at(7))
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["08:00", "20:00"], "2026-03-02", kind="medication", window_min=60)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(8), at(8))
    traveller.move_to(at(8.5))
    services_on(jobs_db, settings, clock, sender).reminders.update(
        patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["20:00"]}})
    assert day_of(jobs_db, patient, "2026-03-02") == [("20:00", "pending")]
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(20), at(20))
    assert pushed_at(emulator, token) == ["02 08:00", "02 20:00"]


def test_a_dose_settled_by_a_stale_answer_is_counted_once_when_the_day_is_re_timed_again(
        jobs_db, settings, clock, traveller, sender, emulator):
    """08:00 re-timed to 09:00, 09:00 pushed, then the morning dose arrives from a stale copy as taken at 08:10
    (settling 09:00): one dose, so 20:00 moved to 21:00 still reminds today."""
    traveller.move_to(at(7))
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["08:00", "20:00"], "2026-03-02", kind="medication", window_min=60)
    morning = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02",
                                                     "local_time": "08:00"})
    services = services_on(jobs_db, settings, clock, sender)
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {"type": "weekly",
                                                                         "times": ["09:00", "20:00"]}})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(9), at(9))
    traveller.move_to(at(9.25))
    services.reminders.record_outcome(own(patient.id), morning["_id"], "done", None, at=at(8 + 10 / 60))
    nine = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02",
                                                  "local_time": "09:00"})
    assert (nine["status"], nine["settled_by"]) == ("cancelled", morning["_id"])
    traveller.move_to(at(10))
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {"type": "weekly",
                                                                         "times": ["09:00", "21:00"]}})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, at(21), at(21))
    assert day_of(jobs_db, patient, "2026-03-02") == [("08:00", "done"), ("21:00", "pending")]
    assert pushed_at(emulator, token) == ["02 09:00", "02 21:00"]
