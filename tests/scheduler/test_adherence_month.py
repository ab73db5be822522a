"""A scripted March for one patient, computed by the daily job, against values worked out by hand.

The patient lives in London, then moves to New York (effective 2026-03-20 12:00 UTC). The plan starts on
5 March (so 1-4 March have no plan): TENS 2 x 30 min a day, mindfulness 10 min a day, two doses a day.

TENS minutes per local day (covered = the full 60 minutes):
  1-4: no plan (a 30-min session on the 3rd does not count); 5-14: 60 each (covered);
  15: 30 (0.5); 16: nothing (no events); 17: 45 (0.75); 18: 60; 19: 90 (capped at 1.0);
  20: 30 in London at 09:00 UTC + 30 at 03:00 UTC on the 21st, which is 23:00 on the 20th in New York -> 60;
  21-31 (New York, 10:00 local): 60 each, except 25: nothing and 28: 30.
PDC ending 31 March: 7 days (25-31): covered 26, 27, 29, 30, 31 = 5/7; 30 days (2-31): 27 planned days,
not covered 15, 16, 17, 25, 28 -> 22/27; 90 days: the same 22/27.
Mindfulness: 10 min on 5-9 (covered), 5 min on the 10th (0.5), nothing after: 5/27 over 30 days.
Medication: both doses on 5-20, one dose on 21-31 (0.5): 16/27 over 30 days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tests.scheduler.helpers import make_person, services_on

MOVE = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def _utc(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def _session(db, patient, started: datetime, minutes: int) -> None:
    db.session_records.insert_one({"_id": f"CTU-M:{started.isoformat()}", "patient_id": patient.id,
                                   "device_serial": "CTU-M", "started_at": started, "duration_s": minutes * 60})


def _script_march(db, patient) -> None:
    db.therapy_plans.insert_one({
        "_id": "plan-1", "patient_id": patient.id, "version": 1, "created_at": _utc(5, 10),
        "created_by": "clinician", "active_from": _utc(5, 10), "active_to": None,
        "tens": {"sessions_per_day": 2, "daily_minutes_target": None, "minutes_per_session": 30,
                 "programmes": [1], "start_date": "2026-03-05", "end_date": None, "counts_towards_adherence": True},
        "medications": [{"name": "-", "dose": "-", "times": ["08:00", "20:00"], "counts_towards_adherence": True}],
        "mindfulness": {"minutes_per_day": 10, "sessions_per_week": None, "counts_towards_adherence": True}})
    _session(db, patient, _utc(3, 9), 30)
    for day in range(5, 15):
        _session(db, patient, _utc(day, 9), 30)
        _session(db, patient, _utc(day, 18), 30)
    _session(db, patient, _utc(15, 9), 30)
    _session(db, patient, _utc(17, 9), 45)
    _session(db, patient, _utc(18, 9), 60)
    _session(db, patient, _utc(19, 9), 60)
    _session(db, patient, _utc(19, 18), 30)
    _session(db, patient, _utc(20, 9), 30)
    _session(db, patient, _utc(21, 3), 30)
    for day in range(21, 32):
        if day != 25:
            _session(db, patient, _utc(day, 14), 30 if day == 28 else 60)
    for day in range(5, 11):
        db.practice_log.insert_one({"_id": f"p{day}", "patient_id": patient.id, "item_slug": "breath",
                                    "started_at": _utc(day, 12), "completed_at": _utc(day, 12, 10),
                                    "minutes": 5 if day == 10 else 10})
    for day in range(5, 32):
        for n, local_time in enumerate(["08:00", "20:00"][: 2 if day <= 20 else 1]):
            db.reminder_occurrences.insert_one({
                "_id": f"med:{day}:{n}", "patient_id": patient.id, "reminder_id": "med", "kind": "medication",
                "local_date": f"2026-03-{day:02d}", "local_time": local_time, "zone": "-",
                "due_at": _utc(day, 8 + 12 * n), "window_ends_at": _utc(day, 9 + 12 * n), "status": "done"})
    db.users.update_one({"_id": patient.id}, {"$push": {"time_zone_history": {
        "zone": "America/New_York", "effective_from": MOVE, "previous": "Europe/London"}},
        "$set": {"time_zone": "America/New_York"}})


@pytest.fixture
def march(jobs_db, settings, clock, traveller):
    patient = make_person(jobs_db, "patient", "Europe/London")
    _script_march(jobs_db, patient)
    for day in range(1, 33):  # the job runs every night; 1 April 05:00 UTC finishes 31 March (New York)
        traveller.move_to(datetime(2026, 3, 1, 5, 0, tzinfo=UTC) + timedelta(days=day))
        services_on(jobs_db, settings, clock).adherence_job.run()
    days = {d["date"]: d for d in services_on(jobs_db, settings, clock).adherence.days_between(
        patient.id, date(2026, 3, 1), date(2026, 3, 31))}
    return patient, days


def test_days_before_the_plan_have_no_tasks_even_with_a_session(march):
    _, days = march
    assert [days[f"2026-03-0{d}"]["state"] for d in range(1, 5)] == ["no_tasks"] * 4
    assert days["2026-03-03"]["covered"] is False


def test_partial_and_empty_days_have_their_fractions(march):
    _, days = march
    got = {d: (days[d]["state"], days[d]["tens_fraction"], days[d]["tens_minutes"])
           for d in ("2026-03-15", "2026-03-16", "2026-03-17", "2026-03-19", "2026-03-28")}
    assert got == {"2026-03-15": ("progress", 0.5, 30), "2026-03-16": ("no_events", None, 0),
                   "2026-03-17": ("progress", 0.75, 45), "2026-03-19": ("progress", 1.0, 90),
                   "2026-03-28": ("progress", 0.5, 30)}
    assert (days["2026-03-15"]["sessions_done"], days["2026-03-15"]["sessions_planned"]) == (1, 2)


def test_a_session_after_the_move_counts_on_the_new_zone_day(march):
    _, days = march
    assert days["2026-03-20"]["tens_minutes"] == 60
    assert days["2026-03-21"]["tens_minutes"] == 60
    assert days["2026-03-19"]["zone"] == "Europe/London"
    assert days["2026-03-21"]["zone"] == "America/New_York"


def test_pdc_over_7_30_and_90_days_matches_the_hand_count(march, jobs_db, settings):
    patient, _ = march
    result = services_on(jobs_db, settings, lambda: _utc(1, 5, month=4)).adherence.summary(patient.id, date(2026, 3, 31))
    tens = {p: (r["days_covered"], r["days_with_plan"], r["adherent"]) for p, r in result["tens"].items()}
    assert tens == {"7": (5, 7, False), "30": (22, 27, True), "90": (22, 27, True)}
    assert result["tens"]["30"]["pdc"] == pytest.approx(22 / 27)


def test_mindfulness_and_medication_have_their_own_figures(march, jobs_db, settings):
    patient, days = march
    result = services_on(jobs_db, settings, lambda: _utc(1, 5, month=4)).adherence.summary(patient.id, date(2026, 3, 31))
    assert (result["mindfulness"]["30"]["days_covered"], result["mindfulness"]["30"]["days_with_plan"]) == (5, 27)
    assert (result["medication"]["30"]["days_covered"], result["medication"]["30"]["days_with_plan"]) == (16, 27)
    assert days["2026-03-10"]["mindfulness_fraction"] == 0.5
    assert days["2026-03-22"]["medication_fraction"] == 0.5


def test_responder_check_waits_for_sixty_days(march, jobs_db, settings):
    patient, _ = march
    result = services_on(jobs_db, settings, lambda: _utc(1, 5, month=4)).adherence.summary(patient.id, date(2026, 3, 31))
    assert result["responder"]["status"] == "too_early"


def test_thirty_percent_less_pain_after_sixty_days_is_a_response(jobs_db, settings):
    patient = make_person(jobs_db, "patient")
    jobs_db.therapy_plans.insert_one({
        "_id": "plan-r", "patient_id": patient.id, "version": 1, "created_at": _utc(1, 9, month=1),
        "created_by": "clinician", "active_from": _utc(1, 9, month=1), "active_to": None,
        "tens": {"sessions_per_day": 1, "minutes_per_session": 30, "start_date": "2026-01-05",
                 "counts_towards_adherence": True}, "medications": [], "mindfulness": {}})
    scores = [(_utc(2, 9, month=1), 6), (_utc(6, 9, month=1), 7), (_utc(8, 9, month=1), 5),  # baseline mean 6
              (_utc(25, 9), 4), (_utc(27, 9), 4), (_utc(29, 9), 4)]  # recent mean 4: 33% less
    for at, nrs in scores:
        jobs_db.pain_entries.insert_one({"_id": at.isoformat(), "patient_id": patient.id, "recorded_at": at,
                                         "nrs": nrs, "deleted": False, "bpi": None})
    result = services_on(jobs_db, settings, lambda: _utc(31, 12)).adherence.responder(patient.id)
    assert result["status"] == "responder"
    assert result["pain_reduction"] == pytest.approx(1 / 3)
