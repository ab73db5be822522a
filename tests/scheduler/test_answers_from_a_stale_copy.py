"""A dose the patient took on a phone holding an out-of-date copy of a reminder occurrence, as a review found it
lost: the slot moved later under the phone by a move of time zone westward, or called off because the other phone
re-timed the reminder. The phone reminds at the time it knows and sends the answer for that slot; the dose is
recorded once, the day's other slot is neither pushed nor counted missed, and the day's adherence counts the dose
(companion.domain.answers). An answer more than an hour before every time the slot was shown is still refused."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from companion.domain.errors import Conflict, Invalid
from tests.scheduler.helpers import daily_reminder, link_caregiver, make_person, own, phone, services_on
from tests.scheduler.test_reminder_edges import minute_by_minute, run_jobs

DAY = date(2026, 3, 2)
SIX_PM = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)  # 18:00 in London (GMT in March)


def _taking_an_evening_tablet(db, traveller):
    """A patient in London with a phone, a plan of one dose a day, and an 18:00 tablet reminder (an hour's window)."""
    traveller.move_to(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    patient = make_person(db, "patient", "Europe/London")
    token = phone(db, patient)
    db.therapy_plans.insert_one({
        "_id": f"plan-{patient.id}", "patient_id": patient.id, "version": 1,
        "active_from": datetime(2026, 2, 1, tzinfo=UTC), "active_to": None, "tens": None, "mindfulness": None,
        "medications": [{"name": "-", "dose": "-", "times": ["18:00"], "counts_towards_adherence": True}]})
    reminder = daily_reminder(db, patient, ["18:00"], "2026-03-02", kind="medication", window_min=60)
    evening = db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    assert evening["due_at"] == SIX_PM  # phone A's copy
    return patient, token, reminder, evening


def _doses_counted(db, settings, clock, patient) -> int:
    services = services_on(db, settings, clock)
    return services.adherence.compute_day(services.stores.users.by_id(patient.id), DAY)["medication"]["done"]


def _day(db, patient) -> list[tuple[str, str, bool]]:
    return sorted((o["local_time"], o["status"], o.get("deleted", False))
                  for o in db.reminder_occurrences.find({"patient_id": patient.id, "local_date": DAY.isoformat()}))


def test_a_dose_taken_at_the_time_a_phone_showed_before_a_move_west_is_recorded_once(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token, _, evening = _taking_an_evening_tablet(jobs_db, traveller)
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))  # the other phone sets the new zone
    services_on(jobs_db, settings, clock).profiles.update(patient.id, {"time_zone": "America/New_York"})
    moved = jobs_db.reminder_occurrences.find_one({"_id": evening["_id"]})
    assert moved["due_at"] == SIX_PM + timedelta(hours=5)  # 18:00 in New York
    # Phone A (its feed pull failed) reminds at 18:00 UTC; the patient takes the tablet at 18:05.
    traveller.move_to(SIX_PM + timedelta(minutes=6))
    services = services_on(jobs_db, settings, clock)
    recorded = services.reminders.record_outcome(own(patient.id), evening["_id"], "done", None,
                                                 at=SIX_PM + timedelta(minutes=5))
    assert (recorded["status"], recorded["status_at"], recorded["on_time"]) == (
        "done", SIX_PM + timedelta(minutes=5), True)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, moved["due_at"], moved["due_at"] + timedelta(minutes=1))
    assert emulator.delivered_to(token) == []  # nothing reminds of a dose taken
    traveller.move_to(datetime(2026, 3, 3, 0, 30, tzinfo=UTC))
    run_jobs(jobs_db, settings, clock, sender, "reminders-missed")
    again = services_on(jobs_db, settings, clock).reminders.record_outcome(
        own(patient.id), evening["_id"], "done", None, at=SIX_PM + timedelta(minutes=5))  # the app's retry
    assert (again["status"], again["seq"]) == ("done", recorded["seq"])
    assert _day(jobs_db, patient) == [("18:00", "done", False)]
    assert _doses_counted(jobs_db, settings, clock, patient) == 1


def test_a_dose_taken_at_the_old_time_after_the_other_phone_re_timed_the_reminder_settles_the_new_slot(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, token, reminder, evening = _taking_an_evening_tablet(jobs_db, traveller)
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))  # the other phone moves it to 19:00
    services_on(jobs_db, settings, clock).reminders.update(
        patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["19:00"], "start_date": "2026-03-02"}})
    assert _day(jobs_db, patient) == [("18:00", "cancelled", True), ("19:00", "pending", False)]
    # Phone A never got the change: it reminds at 18:00, the patient takes the tablet at 18:05.
    minute_by_minute(jobs_db, settings, clock, traveller, sender, SIX_PM, SIX_PM + timedelta(minutes=5))
    traveller.move_to(SIX_PM + timedelta(minutes=6))
    recorded = services_on(jobs_db, settings, clock).reminders.record_outcome(
        own(patient.id), evening["_id"], "done", None, at=SIX_PM + timedelta(minutes=5))
    assert (recorded["status"], recorded["on_time"], recorded["deleted"]) == ("done", True, False)
    replacement = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_time": "19:00"})
    assert (replacement["status"], replacement["settled_by"]) == ("cancelled", evening["_id"])
    minute_by_minute(jobs_db, settings, clock, traveller, sender, SIX_PM + timedelta(hours=1),
                     SIX_PM + timedelta(hours=1, minutes=2))
    assert emulator.delivered_to(token) == []  # no push inviting a second dose
    traveller.move_to(SIX_PM + timedelta(hours=2, minutes=30))
    run_jobs(jobs_db, settings, clock, sender, "reminders-missed", "reminders-materialize")
    assert _day(jobs_db, patient) == [("18:00", "done", False), ("19:00", "cancelled", True)]
    assert _doses_counted(jobs_db, settings, clock, patient) == 1


def test_the_other_phone_ticking_off_the_settled_slot_is_the_same_dose(jobs_db, settings, clock, traveller):
    patient, _, reminder, evening = _taking_an_evening_tablet(jobs_db, traveller)
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    services.reminders.update(patient.id, reminder["_id"],
                              {"schedule": {"type": "weekly", "times": ["19:00"], "start_date": "2026-03-02"}})
    replacement = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_time": "19:00"})
    traveller.move_to(SIX_PM + timedelta(minutes=6))
    services.reminders.record_outcome(own(patient.id), evening["_id"], "done", None, at=SIX_PM + timedelta(minutes=5))
    settled = jobs_db.reminder_occurrences.find_one({"_id": replacement["_id"]})
    # Phone B, not synced since, shows 19:00 pending: the patient ticks it off there too.
    traveller.move_to(SIX_PM + timedelta(hours=1, minutes=5))
    same = services.reminders.record_outcome(own(patient.id), replacement["_id"], "done", None)
    assert (same["status"], same["settled_by"], same["seq"]) == ("cancelled", evening["_id"], settled["seq"])
    with pytest.raises(Conflict) as refused:
        services.reminders.record_outcome(own(patient.id), replacement["_id"], "skipped", "felt sick")
    assert refused.value.current["settled_by"] == evening["_id"]
    assert _doses_counted(jobs_db, settings, clock, patient) == 1


def test_a_stale_answer_arriving_while_the_new_slot_reminds_stops_its_nudges(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "Europe/London")
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["18:00"], "2026-03-02", kind="medication", window_min=60,
                              repeat={"count": 2, "every_min": 10})
    evening = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    services_on(jobs_db, settings, clock).reminders.update(
        patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["19:00"], "start_date": "2026-03-02"}})
    seven = SIX_PM + timedelta(hours=1)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, seven, seven + timedelta(minutes=1))
    assert len(emulator.delivered_to(token)) == 1  # the 19:00 push went before phone A synced
    traveller.move_to(seven + timedelta(minutes=3))
    services_on(jobs_db, settings, clock).reminders.record_outcome(own(patient.id), evening["_id"], "done", None,
                                                                   at=SIX_PM + timedelta(minutes=5))
    minute_by_minute(jobs_db, settings, clock, traveller, sender, seven + timedelta(minutes=9),
                     seven + timedelta(minutes=11))
    minute_by_minute(jobs_db, settings, clock, traveller, sender, seven + timedelta(minutes=19),
                     seven + timedelta(minutes=21))
    assert len(emulator.delivered_to(token)) == 1  # no nudge for a dose taken


def test_a_stale_answer_arriving_after_the_new_slot_was_marked_missed_settles_it(
        jobs_db, settings, clock, traveller, sender):
    patient, _, reminder, evening = _taking_an_evening_tablet(jobs_db, traveller)
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    services_on(jobs_db, settings, clock).reminders.update(
        patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["19:00"], "start_date": "2026-03-02"}})
    traveller.move_to(SIX_PM + timedelta(hours=2, minutes=5))
    run_jobs(jobs_db, settings, clock, sender, "reminders-missed")
    assert _day(jobs_db, patient) == [("18:00", "cancelled", True), ("19:00", "missed", False)]
    traveller.move_to(SIX_PM + timedelta(hours=3))  # phone A back online
    recorded = services_on(jobs_db, settings, clock).reminders.record_outcome(
        own(patient.id), evening["_id"], "done", None, at=SIX_PM + timedelta(minutes=5))
    assert (recorded["status"], recorded["on_time"]) == ("done", True)
    assert _day(jobs_db, patient) == [("18:00", "done", False), ("19:00", "cancelled", True)]
    assert _doses_counted(jobs_db, settings, clock, patient) == 1


def test_an_answer_more_than_an_hour_before_every_time_the_slot_was_shown_is_still_refused(
        jobs_db, settings, clock, traveller):
    patient, _, _, evening = _taking_an_evening_tablet(jobs_db, traveller)
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})  # shown at 18:00 and 23:00 UTC
    traveller.move_to(SIX_PM - timedelta(minutes=61))
    with pytest.raises(Invalid, match="not due yet"):
        services.reminders.record_outcome(own(patient.id), evening["_id"], "done", None)
    traveller.move_to(SIX_PM + timedelta(minutes=6))
    with pytest.raises(Invalid, match="more than an hour before"):
        services.reminders.record_outcome(own(patient.id), evening["_id"], "done", None,
                                          at=SIX_PM - timedelta(minutes=61))
    assert jobs_db.reminder_occurrences.find_one({"_id": evening["_id"]})["status"] == "pending"


def test_a_missed_session_alert_about_the_new_slot_ends_when_the_stale_answer_arrives(
        jobs_db, settings, clock, traveller, sender):
    traveller.move_to(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "Europe/London")
    link_caregiver(jobs_db, patient, ["missed_session"])
    reminder = daily_reminder(jobs_db, patient, ["18:00"], "2026-03-02", kind="tens", window_min=60)
    evening = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02"})
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    services_on(jobs_db, settings, clock).reminders.update(
        patient.id, reminder["_id"], {"schedule": {"type": "weekly", "times": ["19:00"], "start_date": "2026-03-02"}})
    traveller.move_to(SIX_PM + timedelta(hours=3, minutes=5))  # 19:00's window closed, the caregiver's delay passed
    run_jobs(jobs_db, settings, clock, sender, "reminders-missed", "alerts-evaluate")
    assert [a["resolved_at"] for a in jobs_db.alerts.find({"patient_id": patient.id})] == [None]
    traveller.move_to(SIX_PM + timedelta(hours=3, minutes=10))  # phone A: the session was done at 18:05
    services_on(jobs_db, settings, clock).reminders.record_outcome(own(patient.id), evening["_id"], "done", None,
                                                                   at=SIX_PM + timedelta(minutes=5))
    assert [a["resolved_at"] is not None for a in jobs_db.alerts.find({"patient_id": patient.id})] == [True]


def test_a_stale_answer_after_the_reminder_was_stopped_and_started_again_leaves_the_evening_dose(
        jobs_db, settings, clock, traveller, sender, emulator):
    """The stop called both slots off, the start brought 20:00 back: 20:00 is the patient's evening dose, not the
    replacement of the 08:00 the phone answered (a replacement is made by the change that called the slot off)."""
    traveller.move_to(datetime(2026, 3, 2, 7, 0, tzinfo=UTC))
    patient = make_person(jobs_db, "patient", "Europe/London")
    token = phone(jobs_db, patient)
    reminder = daily_reminder(jobs_db, patient, ["08:00", "20:00"], "2026-03-02", kind="medication", window_min=60)
    morning = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02",
                                                     "local_time": "08:00"})
    eight = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, eight, eight)
    services = services_on(jobs_db, settings, clock)
    traveller.move_to(eight + timedelta(minutes=30))
    services.reminders.stop(patient.id, reminder["_id"])
    traveller.move_to(eight + timedelta(minutes=45))
    services.reminders.update(patient.id, reminder["_id"], {"active": True})
    traveller.move_to(eight + timedelta(minutes=50))  # the phone, offline since 08:10, sends the morning dose
    recorded = services.reminders.record_outcome(own(patient.id), morning["_id"], "done", None,
                                                 at=eight + timedelta(minutes=10))
    assert (recorded["status"], recorded["deleted"]) == ("done", False)
    evening = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-02",
                                                     "local_time": "20:00"})
    assert (evening["status"], evening.get("settled_by")) == ("pending", None)
    minute_by_minute(jobs_db, settings, clock, traveller, sender, eight + timedelta(hours=12),
                     eight + timedelta(hours=12))
    assert [d.received_at.strftime("%H:%M") for d in emulator.delivered_to(token)] == ["08:00", "20:00"]
    assert _day(jobs_db, patient) == [("08:00", "done", False), ("20:00", "pending", False)]
