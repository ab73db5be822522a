"""Reminders over the patient's time, as a review found them failing: a schedule edit inventing past occurrences
(missed, and a caregiver alerted, for reminders the patient never had); a slot kept open after a move east
cancelled by a read of another range; an answer given offline lost to an edit that called the occurrence off;
a reactivation past the 50-reminder limit silencing another reminder; a snooze that sent nothing or two pushes;
a worker back from a short outage sending the first push and every nudge at once, and then a missed summary; nudges after a move judged
against quiet hours on the old clock; a first push held by quiet hours let out at their old end after they
were extended, or at the end of the night where the patient no longer was."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from companion.domain.errors import Invalid
from companion.domain.quiet_hours import QuietHours
from companion.services.reminders import MAX_ACTIVE, ReminderService
from companion.store.stores import Stores
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
from tests.support.stops import dead_database

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _done_at_0930_then_moved_to_1000_at_noon(jobs_db, settings, clock, traveller, *, caregiver: bool = False):
    """A patient (UTC) does the 09:30 TENS session at 09:40; at noon the reminder moves to 10:00 from tomorrow
    on. Returns the patient and the services."""
    traveller.move_to(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient")
    if caregiver:
        link_caregiver(jobs_db, patient, ["missed_session"])
    reminder = daily_reminder(jobs_db, patient, ["09:30"], "2026-03-02", kind="tens", window_min=60)
    services = services_on(jobs_db, settings, clock)
    morning = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    traveller.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    services.reminders.record_outcome(own(patient.id), morning["_id"], "done", None)
    traveller.move_to(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["10:00"]}})
    return patient, services


def test_changing_the_time_after_todays_dose_does_not_add_a_missed_one_to_today(jobs_db, settings, clock, traveller):
    patient, services = _done_at_0930_then_moved_to_1000_at_noon(jobs_db, settings, clock, traveller)
    today = services.progress.today(patient.id)["reminders"]
    services.reminders.mark_missed(datetime.now(UTC))
    mine = list(jobs_db.reminder_occurrences.find({"patient_id": patient.id, "local_date": "2026-03-02",
                                                   "deleted": {"$ne": True}}))
    assert [(o["local_time"], o["status"]) for o in mine] == [("09:30", "done")]
    assert (today["due"], today["missed"]) == (1, 0)


def test_reading_last_week_after_a_time_change_does_not_invent_missed_occurrences(jobs_db, settings, clock,
                                                                                   traveller):
    traveller.move_to(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient")
    reminder = daily_reminder(jobs_db, patient, ["09:30"], "2026-03-02", kind="medication", window_min=60)
    services = services_on(jobs_db, settings, clock)
    for day in range(7):  # a week of doses taken at 09:30, the worker keeping ahead
        traveller.move_to(datetime(2026, 3, 2 + day, 9, 35, tzinfo=UTC))
        services.reminders.materialize_ahead(timedelta(minutes=15), timedelta(days=2))
        dose = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id,
                                                      "local_date": f"2026-03-{2 + day:02d}"})
        services.reminders.record_outcome(own(patient.id), dose["_id"], "done", None)
    traveller.move_to(datetime(2026, 3, 9, 12, 0, tzinfo=UTC))
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["20:00"]}})
    # The app shows last week's history.
    items = services.reminders.occurrences_between(own(patient.id), datetime(2026, 3, 2, tzinfo=UTC),
                                                   datetime(2026, 3, 9, tzinfo=UTC))
    assert [(o["local_date"], o["local_time"], o["status"]) for o in items] == [
        (f"2026-03-{d:02d}", "09:30", "done") for d in range(2, 9)]


def test_changing_the_time_after_todays_session_alerts_no_caregiver(jobs_db, settings, clock, traveller):
    patient, services = _done_at_0930_then_moved_to_1000_at_noon(jobs_db, settings, clock, traveller, caregiver=True)
    services.progress.today(patient.id)  # the app opens its today screen
    traveller.move_to(datetime(2026, 3, 2, 12, 5, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    services.reminder_dispatch.mark_missed()
    services.alerts.evaluate()
    assert list(jobs_db.alerts.find({}, {"kind": 1, "_id": 0})) == []


def test_reading_next_weeks_occurrences_does_not_cancel_the_open_slot_kept_after_a_move_east(
        jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "America/New_York")
    daily_reminder(jobs_db, patient, ["08:00"], "2026-03-11", kind="medication", window_min=180)
    landed = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)  # 09:00 in London: 08:00 passed an hour ago, window open
    traveller.move_to(landed)
    services = services_on(jobs_db, settings, clock)
    services.profiles.update(patient.id, {"time_zone": "Europe/London"})
    kept = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-11"})
    assert kept["status"] == "pending"
    traveller.move_to(landed + timedelta(minutes=10))
    # The app shows next week's calendar.
    services.reminders.occurrences_between(own(patient.id), datetime(2026, 3, 16, tzinfo=UTC),
                                           datetime(2026, 3, 18, tzinfo=UTC))
    after = jobs_db.reminder_occurrences.find_one({"_id": kept["_id"]})
    assert after["status"] == "pending", after
    # and the patient can still record the dose they take now
    recorded = services.reminders.record_outcome(own(patient.id), kept["_id"], "done", None)
    assert recorded["status"] == "done"


def test_a_dose_taken_offline_before_a_caregiver_moved_the_reminder_can_still_be_recorded(
        jobs_db, settings, clock, traveller):
    traveller.move_to(T10 - timedelta(hours=1))
    patient = make_person(jobs_db, "patient")
    reminder = daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", kind="medication", window_min=60)
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})
    # 10:05 the patient takes the dose and ticks it off on a phone that is offline.
    traveller.move_to(T10 + timedelta(minutes=10))  # 10:10 their caregiver moves the reminder to the evening
    services = services_on(jobs_db, settings, clock)
    services.reminders.update(patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["18:00"]}})
    traveller.move_to(T10 + timedelta(minutes=20))  # 10:20 the phone syncs
    recorded = services.reminders.record_outcome(own(patient.id), occurrence["_id"], "done", None,
                                                 at=T10 + timedelta(minutes=5))
    assert (recorded["status"], recorded["on_time"]) == ("done", True)


def test_reactivating_a_stopped_reminder_cannot_push_another_out_of_materialization(jobs_db, clock, traveller):
    traveller.move_to(datetime(2026, 3, 2, 6, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient")
    service = ReminderService(Stores(jobs_db))

    def create(time):
        return service.create(patient.id, {"kind": "custom", "title": "x", "completion_window_min": 30, "repeat": None,
                                           "schedule": {"type": "weekly", "times": [time], "start_date": "2026-03-02",
                                                        "end_date": None}})

    made = [create(f"{8 + n // 60:02d}:{n % 60:02d}") for n in range(MAX_ACTIVE)]
    service.stop(patient.id, made[0]["_id"])
    traveller.move_to(datetime(2026, 3, 2, 6, 5, tzinfo=UTC))
    newest = create("20:00")
    with pytest.raises(Invalid):  # 50 are active: a 51st would leave the newest out of every materialization
        service.update(patient.id, made[0]["_id"], {"active": True})
    assert jobs_db.reminder_occurrences.count_documents({"reminder_id": newest["_id"], "status": "pending"}) == 2
    assert service.reminders.count_active(patient.id) <= MAX_ACTIVE




def test_a_snooze_landing_on_a_nudge_time_reminds_once_then(jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=60, repeat={"count": 3, "every_min": 10})
    traveller.move_to(T10 - timedelta(minutes=5))  # the patient sees it coming in the app: "10 minutes later"
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})
    snoozed = services_on(jobs_db, settings, clock).reminders.snooze(own(patient.id), occurrence["_id"], 10)
    assert snoozed["snoozed_until"] == T10 + timedelta(minutes=10)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, T10, T10 + timedelta(minutes=15))
    got = [d.received_at for d in emulator.delivered_to(token)]
    assert len(got) == 1, got  # one reminder at 10:10 (or its place in the spread), not two


def test_a_snooze_capped_at_the_window_end_still_reminds(jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, T10, T10 + timedelta(minutes=1))
    assert len(emulator.delivered_to(token)) == 1
    traveller.move_to(T10 + timedelta(minutes=10))
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})
    snoozed = services_on(jobs_db, settings, clock).reminders.snooze(own(patient.id), occurrence["_id"], 30)
    assert snoozed["snoozed_until"] == T10 + timedelta(minutes=30)  # answered: "we will remind you at 10:30"
    minute_by_minute(jobs_db, settings, clock, traveller, sender, T10 + timedelta(minutes=10), T10 + timedelta(minutes=31))
    assert len(emulator.delivered_to(token)) == 2  # the promised reminder came


def test_after_a_twelve_minute_outage_one_push_not_three(jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=60, repeat={"count": 3, "every_min": 5})
    # The worker is down from 09:59 to 10:12 (less than the 15-minute grace).
    minute_by_minute(jobs_db, settings, clock, traveller, sender, T10 + timedelta(minutes=12),
                     T10 + timedelta(minutes=13))
    got = [d.received_at.strftime("%H:%M") for d in emulator.delivered_to(token)]
    assert len(got) == 1, got
    # Reminded (by the nudge that superseded the rest), the patient gets no "you have an update" when it is missed.
    for at in (T10 + timedelta(minutes=61), T10 + timedelta(minutes=90)):
        traveller.move_to(at)
        run_jobs(jobs_db, settings, clock, sender, "reminders-missed", "push-send")
    assert jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})["status"] == "missed"
    assert jobs_db.push_outbox.count_documents({"source_key": {"$regex": "^missed-summary:"}}) == 0
    assert len(emulator.delivered_to(token)) == 1


def test_after_a_short_outage_into_the_patients_night_neither_a_nudge_nor_the_late_first_push_goes(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "Europe/Berlin")
    services_on(jobs_db, settings, clock).stores.users.update_profile(
        patient.id, version=0, quiet_hours=QuietHours(time(22, 0), time(7, 0)))
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["21:50"], "2026-03-02", window_min=60, repeat={"count": 3, "every_min": 5})
    due = datetime(2026, 3, 2, 20, 50, tzinfo=UTC)  # 21:50 in Berlin; nudges at 21:55, 22:00 and 22:05
    # The worker is down from 21:49 to 22:01 (inside the 15-minute grace); every push due then would go at 22:01,
    # inside the quiet hours: no nudge takes the first push's place, and the first push, queued late, waits for
    # their end, which is past its window.
    minute_by_minute(jobs_db, settings, clock, traveller, sender, due + timedelta(minutes=11),
                     due + timedelta(minutes=20))
    assert emulator.delivered_to(token) == []
    assert [(d["source_key"].count(":repeat:"), d["state"])
            for d in jobs_db.push_outbox.find({"recipient_user_id": patient.id})] == [(0, "expired")]


def test_snoozing_the_slot_that_leads_a_dst_gaps_shared_push_leaves_the_push_to_the_other(
        jobs_db, settings, clock, traveller, sender, emulator):
    due = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT: the 02:30 and 03:00 doses both fall due
    traveller.move_to(due - timedelta(hours=6))
    patient = make_person(jobs_db, "patient", "America/New_York")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["02:30", "03:00"], "2026-03-08", kind="medication", window_min=60)
    traveller.move_to(due - timedelta(minutes=30))
    pair = list(jobs_db.reminder_occurrences.find({"patient_id": patient.id, "due_at": due}))
    leader = next(o for o in pair if not o.get("push_with"))
    services_on(jobs_db, settings, clock).reminders.snooze(own(patient.id), leader["_id"], 20)  # the 02:30 dose
    minute_by_minute(jobs_db, settings, clock, traveller, sender, due - timedelta(minutes=1),
                     due + timedelta(minutes=21))
    # The 03:00 dose, not snoozed, is pushed when due (and again ten minutes on, as any first push no phone
    # confirmed); the snoozed one at its snooze's time.
    assert [d.received_at for d in emulator.delivered_to(token)] == [due, due + timedelta(minutes=10),
                                                                      due + timedelta(minutes=20)]


def test_nudges_after_flying_west_during_the_window_respect_quiet_hours_on_the_new_clock(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(T10 - timedelta(hours=2))
    patient = make_person(jobs_db, "patient", "Europe/London")
    services = services_on(jobs_db, settings, clock)
    services.stores.users.update_profile(patient.id, version=0, quiet_hours=QuietHours(time(22, 0), time(7, 0)))
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=120, repeat={"count": 3, "every_min": 30})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, T10, T10 + timedelta(minutes=1))
    assert len(emulator.delivered_to(token)) == 1  # 10:00 in London
    traveller.move_to(T10 + timedelta(minutes=5))  # landed in New York: 05:05 there, in the patient's quiet hours
    services_on(jobs_db, settings, clock).profiles.update(patient.id, {"time_zone": "America/New_York"})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, T10 + timedelta(minutes=5),
                     T10 + timedelta(minutes=95))
    late = [d.received_at.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M")
            for d in emulator.delivered_to(token)[1:]]
    assert late == [], f"nudged at {late} New York time, inside quiet hours 22:00-07:00"


def test_quiet_hours_extended_while_the_first_push_waits_for_their_end(jobs_db, settings, clock, traveller, sender,
                                                                       emulator):
    traveller.move_to(datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient")  # UTC
    services = services_on(jobs_db, settings, clock)
    services.profiles.update(patient.id, {"quiet_hours": {"start": "22:00", "end": "07:00"}})
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["06:30"], "2026-03-02", window_min=180)
    traveller.move_to(datetime(2026, 3, 2, 6, 40, tzinfo=UTC))  # due, its push waiting for 07:00
    services_on(jobs_db, settings, clock).profiles.update(patient.id, {"quiet_hours": {"start": "22:00",
                                                                                        "end": "08:00"}})
    minute_by_minute(jobs_db, settings, clock, traveller, sender, datetime(2026, 3, 2, 6, 59, tzinfo=UTC),
                     datetime(2026, 3, 2, 8, 1, tzinfo=UTC))
    got = [d.received_at.strftime("%H:%M") for d in emulator.delivered_to(token)]
    assert got == ["08:00"], got


def test_a_first_push_waiting_for_the_end_of_the_night_waits_for_the_night_where_the_patient_landed(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "Europe/London")  # UTC in March
    services = services_on(jobs_db, settings, clock)
    services.profiles.update(patient.id, {"quiet_hours": {"start": "22:00", "end": "07:00"}})
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["06:30"], "2026-03-02", window_min=360)
    traveller.move_to(datetime(2026, 3, 2, 6, 40, tzinfo=UTC))  # due, its push waiting for 07:00 in London
    services_on(jobs_db, settings, clock).profiles.update(patient.id, {"time_zone": "America/New_York"})
    for start in (datetime(2026, 3, 2, 6, 59, tzinfo=UTC), datetime(2026, 3, 2, 11, 59, tzinfo=UTC)):
        minute_by_minute(jobs_db, settings, clock, traveller, sender, start, start + timedelta(minutes=3))
    got = [d.received_at.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M")
           for d in emulator.delivered_to(token)]
    assert got == ["07:00"], f"pushed at {got} New York time (quiet hours 22:00-07:00 there)"


def test_done_in_time_on_an_offline_phone_arriving_after_a_late_done_from_the_tablet(jobs_db, settings, clock,
                                                                                     traveller):
    """Two phones answering the same occurrence: the moment the patient did it in time is not lost to a later
    copy of the same answer."""
    traveller.move_to(T10 - timedelta(hours=1))
    patient = make_person(jobs_db, "patient")
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", kind="tens", window_min=30)
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})
    services = services_on(jobs_db, settings, clock)
    traveller.move_to(T10 + timedelta(minutes=50))
    late = services.reminders.record_outcome(own(patient.id), occurrence["_id"], "done", None)  # the tablet, now
    assert late["on_time"] is False
    traveller.move_to(T10 + timedelta(minutes=55))  # the phone, offline since, syncs its tick of 10:10
    answer = services.reminders.record_outcome(own(patient.id), occurrence["_id"], "done", None,
                                               at=T10 + timedelta(minutes=10))
    assert (answer["on_time"], answer["status_at"]) == (True, T10 + timedelta(minutes=10))
    assert answer["seq"] > late["seq"]  # a change the other devices' feeds carry
    again = services.reminders.record_outcome(own(patient.id), occurrence["_id"], "done", None,
                                              at=T10 + timedelta(minutes=40))  # a later copy changes nothing
    assert (again["status_at"], again["seq"]) == (T10 + timedelta(minutes=10), answer["seq"])


def test_snoozing_the_slot_that_shares_the_push_reminds_at_the_snooze_time(
        jobs_db, settings, clock, traveller, sender, emulator):
    """Two slots the spring-forward gap makes due at once share one push; snoozing the one that does not lead
    it reminds again at the snooze's time."""
    due = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT: 02:30 and 03:00 both fall due then
    traveller.move_to(due - timedelta(hours=6))
    patient = make_person(jobs_db, "patient", "America/New_York")
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["02:30", "03:00"], "2026-03-08", kind="medication", window_min=60)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, due, due + timedelta(minutes=1))
    assert len(emulator.delivered_to(token)) == 1
    pair = list(jobs_db.reminder_occurrences.find({"patient_id": patient.id, "due_at": due}).sort("local_time", 1))
    follower = next(o for o in pair if o.get("push_with"))
    traveller.move_to(due + timedelta(minutes=2))
    services_on(jobs_db, settings, clock).reminders.snooze(own(patient.id), follower["_id"], 10)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, due + timedelta(minutes=2),
                     due + timedelta(minutes=13))
    snoozes = [q for q in jobs_db.push_outbox.find({"recipient_user_id": patient.id})
               if ":snooze:" in q["source_key"]]
    assert [q["state"] for q in snoozes] == ["sent"]
    assert due + timedelta(minutes=12) in [d.received_at for d in emulator.delivered_to(token)]



def test_a_catch_up_pass_that_failed_for_a_patient_is_taken_up_again_by_the_next(
        jobs_db, settings, clock, traveller, monkeypatch):
    traveller.move_to(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient")
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", kind="medication", window_min=60)
    services_on(jobs_db, settings, clock).reminders.materialize_ahead(settings.reminder_grace,
                                                                      settings.materialize_horizon)
    traveller.move_to(datetime(2026, 3, 8, 12, 0, tzinfo=UTC))  # back after six days...
    services = services_on(jobs_db, settings, clock)
    monkeypatch.setattr(services.reminders, "materialize", dead_database)  # ... and the database drops out
    services.reminders.materialize_ahead(settings.reminder_grace, settings.materialize_horizon)
    monkeypatch.undo()
    traveller.move_to(datetime(2026, 3, 8, 13, 0, tzinfo=UTC))  # the next pass, an hour later
    services_on(jobs_db, settings, clock).reminders.materialize_ahead(settings.reminder_grace,
                                                                      settings.materialize_horizon)
    made = sorted(o["local_date"] for o in jobs_db.reminder_occurrences.find({"patient_id": patient.id}))
    assert made == [f"2026-03-{d:02d}" for d in range(2, 11)]  # the days of the outage too


def test_a_worker_stopped_longer_than_the_horizon_makes_the_days_it_missed_and_counts_them_missed(
        jobs_db, settings, clock, traveller):
    """The worker keeps occurrences two days ahead; stopped for six days, its first pass back made only the days
    from its return, so the doses of the days between were never made: neither missed nor counted anywhere
    (the patient's figures simply lost them). Now the pass starts where the last complete one left off."""
    traveller.move_to(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient")
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", kind="medication", window_min=60)
    services = services_on(jobs_db, settings, clock)
    services.reminders.materialize_ahead(settings.reminder_grace, settings.materialize_horizon)
    traveller.move_to(datetime(2026, 3, 8, 12, 0, tzinfo=UTC))  # back after six days
    services = services_on(jobs_db, settings, clock)
    services.reminders.materialize_ahead(settings.reminder_grace, settings.materialize_horizon)
    services.reminder_dispatch.dispatch_due()
    services.reminder_dispatch.mark_missed()
    made = {o["local_date"]: o["status"] for o in jobs_db.reminder_occurrences.find({"patient_id": patient.id})}
    assert made == {f"2026-03-{d:02d}": "missed" for d in range(2, 9)} | {"2026-03-09": "pending",
                                                                          "2026-03-10": "pending"}
    queued = list(jobs_db.push_outbox.find({"recipient_user_id": patient.id}))
    assert [n["kind"] for n in queued] == ["generic_update"]  # one summary, no stale reminders
    # A normal pass an hour later starts at the grace again: nothing more is made or marked.
    traveller.move_to(datetime(2026, 3, 8, 13, 0, tzinfo=UTC))
    assert services_on(jobs_db, settings, clock).reminders.materialize_ahead(settings.reminder_grace,
                                                                             settings.materialize_horizon) == 0
