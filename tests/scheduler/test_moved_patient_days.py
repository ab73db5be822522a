"""A patient who moves between time zones keeps each record on the day they lived it, in every view: "today", the
week, the review and its exports, and the alerts about their pain and devices (the zone history decides, as it
does for the adherence snapshots the clinician's figures come from)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

from companion.domain.access import Grant, Relationship
from companion.services import exports
from tests.scheduler.helpers import daily_reminder, make_person, own, services_on
from tests.scheduler.test_late_data import PLAN, _bound, _upload

LANDED_IN_LA = datetime(2026, 3, 10, 17, 30, tzinfo=UTC)  # 10:30 on 10 March in Los Angeles


def _plan(patient, version=1, active_from=datetime(2026, 2, 1, tzinfo=UTC), active_to=None, minutes=30):
    return {"_id": f"plan-{patient.id}-{version}", "patient_id": patient.id, "version": version,
            "active_from": active_from, "active_to": active_to,
            "tens": {"sessions_per_day": 1, "minutes_per_session": minutes, "start_date": "2026-02-01"}}


def _rate(services, patient, key, at, nrs):
    services.diary.record_entry(Grant(patient.id, Relationship.SELF), {
        "client_entry_id": key, "recorded_at": at, "nrs": nrs, "context": None, "bpi": None,
        "session_record_id": None, "phase": None})


def _rated_session(jobs_db, settings, clock, traveller, zone: str, session: datetime, nrs: int):
    """A patient living in ``zone`` on a plan of one 30-minute session a day, who did one at ``session`` and
    rated their pain 35 minutes after it began (uploaded then)."""
    traveller.move_to(session - timedelta(hours=1))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", zone)
    jobs_db.therapy_plans.insert_one(_plan(patient))
    serial = _bound(jobs_db, services, patient)
    traveller.move_to(session + timedelta(minutes=40))
    _upload(services, patient, serial, session)
    _rate(services, patient, "after-session", session + timedelta(minutes=35), nrs)
    return services, patient


def test_today_keeps_the_session_done_before_flying_west_on_the_same_date(jobs_db, settings, clock, traveller):
    session = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)  # 09:00 on 10 March in Tokyo
    services, patient = _rated_session(jobs_db, settings, clock, traveller, "Asia/Tokyo", session, 3)
    traveller.move_to(LANDED_IN_LA)
    services = services_on(jobs_db, settings, clock)
    services.profiles.update(patient.id, {"time_zone": "America/Los_Angeles"})
    assert services.adherence.compute_day(services.stores.users.by_id(patient.id), date(2026, 3, 10))[
        "tens_minutes"] == 30.0
    today = services.progress.today(patient.id)
    assert today["date"] == "2026-03-10"
    assert (today["tens"]["minutes"], today["tens"]["sessions"], today["pain"]["entries"]) == (30.0, 1, 1)


def test_today_keeps_the_reminder_ticked_off_before_flying_west(jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 9, 12, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "Asia/Tokyo")
    daily_reminder(jobs_db, patient, ["08:00"], "2026-03-09")
    traveller.move_to(datetime(2026, 3, 9, 23, 10, tzinfo=UTC))  # 08:10 on 10 March in Tokyo
    services.progress.today(patient.id)
    slot = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "local_date": "2026-03-10"})
    services.reminders.record_outcome(own(patient.id), slot["_id"], "done", None)
    traveller.move_to(LANDED_IN_LA)
    services = services_on(jobs_db, settings, clock)
    services.profiles.update(patient.id, {"time_zone": "America/Los_Angeles"})
    items = services.progress.today(patient.id)["reminders"]["items"]
    assert [(o["local_date"], o["local_time"], o["status"]) for o in items] == [("2026-03-10", "08:00", "done")]


def test_the_week_takes_a_past_days_plan_where_that_day_was_lived(jobs_db, settings, clock, traveller):
    changed = datetime(2026, 3, 11, 0, 30, tzinfo=UTC)  # 20:30 on 10 March in New York: 30 -> 60 minutes
    session = datetime(2026, 3, 10, 22, tzinfo=UTC)
    traveller.move_to(session - timedelta(hours=1))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "America/New_York")
    jobs_db.therapy_plans.insert_many([_plan(patient, 1, active_to=changed, minutes=30),
                                       _plan(patient, 2, active_from=changed, minutes=60)])
    serial = _bound(jobs_db, services, patient)
    traveller.move_to(session + timedelta(hours=1))
    _upload(services, patient, serial, session)
    traveller.move_to(datetime(2026, 3, 12, 12, tzinfo=UTC))
    services.profiles.update(patient.id, {"time_zone": "Europe/London"})
    snapshot = services.adherence.compute_day(services.stores.users.by_id(patient.id), date(2026, 3, 10))
    week = {d["date"]: d for d in services.progress.week(patient.id, date(2026, 3, 10))["days"]}["2026-03-10"]
    assert (week["tens_minutes_target"], week["covered"]) == (snapshot["tens_minutes_target"], False) == (60, False)


def test_the_review_and_its_export_put_a_rating_on_the_day_of_its_session(jobs_db, settings, clock, traveller):
    session = datetime(2026, 3, 11, 1, 0, tzinfo=UTC)  # 21:00 on 10 March in New York
    services, patient = _rated_session(jobs_db, settings, clock, traveller, "America/New_York", session, 6)
    traveller.move_to(datetime(2026, 3, 11, 12, tzinfo=UTC))
    services.profiles.update(patient.id, {"time_zone": "Europe/London"})
    traveller.move_to(datetime(2026, 3, 12, 12, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    review = services.review.of_patient(services.stores.users.by_id(patient.id))
    rows = {r["date"]: r for r in csv.DictReader(io.StringIO(exports.patient_csv(review, 7).lstrip("\ufeff")))}
    assert (rows["2026-03-10"]["tens_minutes"], rows["2026-03-10"]["pain_entries"],
            rows["2026-03-11"]["pain_entries"]) == ("30", "1", "0")
    events = list(csv.DictReader(io.StringIO(exports.events_csv(review, 7).lstrip("\ufeff"))))
    assert {(e["event"], e["local_date"], e["local_time"], e["time_zone"]) for e in events} == {
        ("tens_session", "2026-03-10", "21:00", "America/New_York"),
        ("pain_entry", "2026-03-10", "21:35", "America/New_York")}


def _flare_after_a_move(jobs_db, settings, clock, traveller):
    """Two ratings of 8 on 10 March in New York (16:00 and 21:35 there), written down after a move to London."""
    first, second = datetime(2026, 3, 10, 16, tzinfo=UTC), datetime(2026, 3, 11, 1, 35, tzinfo=UTC)
    moved = datetime(2026, 3, 11, 12, tzinfo=UTC)
    traveller.move_to(first - timedelta(days=1))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "America/New_York")
    serial = _bound(jobs_db, services, patient)
    services.adherence_job.run()
    traveller.move_to(moved)
    services.profiles.update(patient.id, {"time_zone": "Europe/London"})
    traveller.move_to(moved + timedelta(minutes=5))
    for n, at in enumerate((first, second)):
        _rate(services, patient, f"rating-{n}", at, 8)
    services.alerts.evaluate()
    return services, patient, serial, moved


def test_a_flare_is_dated_where_it_was_lived_and_later_data_does_not_resolve_it(jobs_db, settings, clock, traveller):
    services, patient, serial, moved = _flare_after_a_move(jobs_db, settings, clock, traveller)
    assert jobs_db.alerts.find_one({"kind": "pain_flare"})["period_key"] == "2026-03-10"
    traveller.move_to(moved + timedelta(hours=3))
    _upload(services, patient, serial, moved + timedelta(hours=2))
    services.adherence_job.run()
    assert jobs_db.alerts.find_one({"kind": "pain_flare"})["resolved_at"] is None


def test_a_plan_written_after_the_patient_left_a_day_by_flying_east_does_not_judge_it(jobs_db, settings, clock,
                                                                                       traveller):
    """New York, 10 March: 30 minutes against a plan of 30. At 20:00 UTC (16:00 in New York) the patient sets their
    zone to Kolkata, where it is already 01:30 on 11 March: 10 March is over for them. At 21:00 UTC the plan goes
    up to 60 minutes. 10 March stays covered, and the days export shows the target it was judged against."""
    from tests.scheduler.test_late_data import PLAN

    traveller.move_to(datetime(2026, 3, 10, 13, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "America/New_York")
    serial = _bound(jobs_db, services, patient)
    thirty = {**PLAN, "tens": {**PLAN["tens"], "sessions_per_day": 1}}
    sixty = {**PLAN, "tens": {**PLAN["tens"], "sessions_per_day": 1, "minutes_per_session": 60}}
    services.plans.prescribe(patient.id, thirty, created_by="clinician", at=datetime(2026, 2, 1, tzinfo=UTC))
    services.adherence_job.run()
    traveller.move_to(datetime(2026, 3, 10, 14, 45, tzinfo=UTC))
    _upload(services, patient, serial, datetime(2026, 3, 10, 14, 0, tzinfo=UTC))  # 10:00 in New York
    traveller.move_to(datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    services.profiles.update(patient.id, {"time_zone": "Asia/Kolkata"})
    traveller.move_to(datetime(2026, 3, 10, 21, 0, tzinfo=UTC))
    services.plans.prescribe(patient.id, sixty, created_by="clinician")
    traveller.move_to(datetime(2026, 3, 11, 6, 0, tzinfo=UTC))  # 11:30 on 11 March in Kolkata
    services.adherence_job.run()
    snapshot = jobs_db.adherence_days.find_one({"patient_id": patient.id, "date": "2026-03-10"})
    assert (snapshot["covered"], snapshot["tens_minutes_target"]) == (True, 30)
    review = services.review.of_patient(services.stores.users.by_id(patient.id))
    [row] = [r for r in csv.DictReader(io.StringIO(exports.patient_csv(review, 3).lstrip("\ufeff")))
             if r["date"] == "2026-03-10"]
    assert (row["covered"], row["tens_target_minutes"]) == ("true", "30")


def test_the_weeks_practice_count_keeps_the_monday_lived_in_another_zone(jobs_db, settings, clock, traveller):
    services = services_on(jobs_db, settings, clock)
    services.library.load()
    patient = make_person(jobs_db, "patient", "Asia/Tokyo")
    services.plans.prescribe(patient.id, {**PLAN, "mindfulness": {
        "minutes_per_day": 5, "sessions_per_week": 3, "counts_towards_adherence": True}},
        created_by="clinician", at=datetime(2026, 2, 1, tzinfo=UTC))
    traveller.move_to(datetime(2026, 3, 2, 0, 0, tzinfo=UTC))  # Monday 2 March, 09:00 in Tokyo
    practice = services.library.start_practice(patient.id, services.library.short_items(10)[0], None)
    done = services.library.complete_practice(patient.id, practice["_id"], datetime(2026, 3, 2, 0, 3, tzinfo=UTC), 3)
    traveller.move_to(datetime(2026, 3, 3, 12, 0, tzinfo=UTC))  # Tuesday: to New York
    services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    traveller.move_to(datetime(2026, 3, 4, 15, 0, tzinfo=UTC))  # Wednesday in New York
    week = services.progress.week(patient.id)
    monday = next(d for d in week["days"] if d["date"] == "2026-03-02")
    assert monday["mindfulness_minutes"] == done["minutes"] > 0  # the week shows it on Monday...
    assert services.progress.today(patient.id)["mindfulness"]["sessions_this_week"] == 1  # ... and today counts it


def test_a_date_a_move_east_jumped_over_is_planned_nowhere(jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 2, 9, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "Pacific/Pago_Pago")
    jobs_db.therapy_plans.insert_one(_plan(patient))
    serial = _bound(jobs_db, services, patient)
    traveller.move_to(datetime(2026, 3, 6, 10, 30, tzinfo=UTC))  # 23:30 on 5 March -> 00:30 on 7 March
    services.profiles.update(patient.id, {"time_zone": "Pacific/Kiritimati"})
    traveller.move_to(datetime(2026, 3, 8, 11, tzinfo=UTC))  # 01:00 on 9 March in Kiritimati
    noons = [datetime(2026, 3, d, 23, tzinfo=UTC) for d in (2, 3, 4, 5)] + [
        datetime(2026, 3, d, 22, tzinfo=UTC) for d in (6, 7)]  # noon of 2..5 March, then of 7 and 8 March
    _upload(services, patient, serial, *noons)
    account = services.stores.users.by_id(patient.id)
    week = services.progress.week(patient.id, date(2026, 3, 6))
    skipped = {d["date"]: d for d in week["days"]}["2026-03-06"]
    assert (week["days_with_plan"], week["days_covered"], skipped["covered"], skipped["tens_minutes_target"]) == (
        6, 6, None, 0)  # as any day without a plan
    assert services.adherence.compute_day(account, date(2026, 3, 6))["state"] == "no_tasks"
    assert services.progress.streaks(patient.id, 0, 14)["current"] == 6
    review_day = {d.date: d for d in services.review.of_patient(account).tens(14)}[date(2026, 3, 6)]
    assert review_day.target_minutes is None


def test_the_week_and_the_streak_keep_a_session_done_before_a_25_hour_move_west(jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 8, 9, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "Pacific/Kiritimati")
    jobs_db.therapy_plans.insert_one(_plan(patient))
    serial = _bound(jobs_db, services, patient)
    traveller.move_to(datetime(2026, 3, 8, 11, tzinfo=UTC))
    _upload(services, patient, serial, datetime(2026, 3, 8, 10, 20, tzinfo=UTC))  # 00:20, Monday 9 March
    traveller.move_to(datetime(2026, 3, 8, 20, tzinfo=UTC))  # 10:00 on Monday -> 09:00 on Sunday 8 March
    services.profiles.update(patient.id, {"time_zone": "Pacific/Pago_Pago"})
    traveller.move_to(datetime(2026, 3, 9, 12, tzinfo=UTC))  # 01:00 on Monday 9 March in Pago Pago
    week = services.progress.week(patient.id)
    assert (week["week_start"], week["tens_minutes"], week["days"][0]["covered"]) == ("2026-03-09", 30.0, True)
    assert services.progress.streaks(patient.id, 0, 1)["current"] == 1
