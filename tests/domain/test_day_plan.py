"""Which plan version a local date follows (companion.domain.plans.day_plan)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from companion.domain.adherence import TaskKind
from companion.domain.localtime import TimeZoneHistory
from companion.domain.plans import day_plan, last_tens_day, next_tens_day

UTC_ONLY = TimeZoneHistory.fixed("UTC")


def _version(n: int, written: datetime, start: date, end: date | None = None, *, sessions: int = 2,
             medication_times: tuple[str, ...] = ()) -> dict:
    return {"version": n, "active_from": written, "active_to": None,
            "tens": {"sessions_per_day": sessions, "minutes_per_session": 30, "start_date": start.isoformat(),
                     "end_date": end.isoformat() if end else None, "counts_towards_adherence": True},
            "medications": [{"name": "m", "dose": "1", "times": list(medication_times)}] if medication_times else [],
            "mindfulness": None}


def _closed(plans: list[dict]) -> list[dict]:
    for older, newer in zip(plans, plans[1:], strict=False):
        older["active_to"] = newer["active_from"]
    return plans


def _tens(plans, on: date):
    return day_plan(plans, UTC_ONLY, on).tens_minutes


def test_a_change_dated_from_tomorrow_leaves_today_and_the_days_before_it_starts_to_the_course_before():
    plans = _closed([_version(1, datetime(2026, 2, 1, tzinfo=UTC), date(2026, 2, 1)),
                     _version(2, datetime(2026, 3, 2, 15, tzinfo=UTC), date(2026, 3, 10), sessions=3)])
    assert [_tens(plans, date(2026, 3, d)) for d in (1, 2, 9, 10)] == [60, 60, 60, 90]


def test_the_last_day_of_an_ended_course_keeps_it_when_the_next_is_written_that_day():
    plans = _closed([_version(1, datetime(2026, 2, 1, tzinfo=UTC), date(2026, 2, 1), date(2026, 3, 2)),
                     _version(2, datetime(2026, 3, 2, 15, tzinfo=UTC), date(2026, 3, 3), sessions=3)])
    assert [_tens(plans, date(2026, 3, d)) for d in (2, 3)] == [60, 90]


def test_a_version_that_ends_the_course_ends_it_and_one_without_tens_sets_none():
    ending = _closed([_version(1, datetime(2026, 2, 1, tzinfo=UTC), date(2026, 2, 1)),
                      _version(2, datetime(2026, 3, 2, 15, tzinfo=UTC), date(2026, 2, 1), date(2026, 3, 1))])
    without = _closed([_version(1, datetime(2026, 2, 1, tzinfo=UTC), date(2026, 2, 1)),
                       {**_version(2, datetime(2026, 3, 2, 15, tzinfo=UTC), date(2026, 2, 1)), "tens": None}])
    assert (_tens(ending, date(2026, 3, 2)), day_plan(ending, UTC_ONLY, date(2026, 3, 2)).tasks) == (None, ())
    assert day_plan(without, UTC_ONLY, date(2026, 3, 2)).tens is None


def test_a_gap_between_courses_stays_a_gap():
    plans = _closed([_version(1, datetime(2026, 2, 1, tzinfo=UTC), date(2026, 2, 1), date(2026, 2, 28)),
                     _version(2, datetime(2026, 3, 2, 15, tzinfo=UTC), date(2026, 3, 5))])
    assert [_tens(plans, date(2026, 3, d)) for d in (2, 4, 5)] == [None, None, 60]


def test_each_version_dated_later_hands_the_date_to_the_newest_one_that_covers_it():
    plans = _closed([_version(1, datetime(2026, 2, 1, tzinfo=UTC), date(2026, 2, 1), sessions=1),
                     _version(2, datetime(2026, 3, 2, 10, tzinfo=UTC), date(2026, 3, 4), sessions=2),
                     _version(3, datetime(2026, 3, 2, 11, tzinfo=UTC), date(2026, 3, 6), sessions=3)])
    assert [_tens(plans, date(2026, 3, d)) for d in (3, 4, 5, 6)] == [30, 60, 60, 90]


def test_medications_and_mindfulness_follow_the_version_in_force_at_the_end_of_the_day():
    plans = _closed([_version(1, datetime(2026, 2, 1, tzinfo=UTC), date(2026, 2, 1)),
                     _version(2, datetime(2026, 3, 2, 15, tzinfo=UTC), date(2026, 3, 3),
                              medication_times=("08:00", "20:00"))])
    today = day_plan(plans, UTC_ONLY, date(2026, 3, 2))
    assert (today.version["version"], today.tens_version["version"]) == (2, 1)
    assert [t.kind for t in today.tasks] == [TaskKind.TENS, TaskKind.MEDICATION]


def test_no_version_reaches_back_before_the_day_it_was_written():
    plans = [_version(1, datetime(2026, 3, 2, 15, tzinfo=UTC), date(2026, 2, 1))]
    assert (_tens(plans, date(2026, 3, 1)), _tens(plans, date(2026, 3, 2))) == (None, 60)


def test_a_date_the_patient_never_lived_has_no_plan():
    jump = TimeZoneHistory.of([(datetime(2026, 1, 1, tzinfo=UTC), "Pacific/Pago_Pago"),
                               (datetime(2026, 3, 6, 10, 30, tzinfo=UTC), "Pacific/Kiritimati")])
    plans = [_version(1, datetime(2026, 2, 1, tzinfo=UTC), date(2026, 2, 1), medication_times=("08:00",))]
    assert [len(day_plan(plans, jump, date(2026, 3, d)).tasks) for d in (5, 6, 7)] == [2, 0, 2]


def test_a_versions_last_and_next_tens_days_are_the_days_day_plan_gives_it():
    """last_tens_day and next_tens_day look for a version's days between bounds worked out from the dates; what
    they answer is what day_plan says of every day, whatever the versions' dates and the patient's moves
    (across the date line, both ways, and a day jumped over)."""
    moves = TimeZoneHistory.of([(datetime(2026, 1, 1, tzinfo=UTC), "Pacific/Pago_Pago"),
                                (datetime(2026, 3, 4, 10, 30, tzinfo=UTC), "Pacific/Kiritimati"),
                                (datetime(2026, 3, 9, 3, tzinfo=UTC), "Pacific/Pago_Pago")])
    first = date(2026, 2, 20)
    days = [first + timedelta(days=n) for n in range(40)]
    pick = random.Random(7)
    for history in (UTC_ONLY, moves):
        for _ in range(150):
            plans, written = [], datetime(2026, 2, 20, tzinfo=UTC)
            for n in range(1, pick.randint(2, 5)):
                written += timedelta(hours=pick.randint(1, 24 * 6))
                start = written.date() + timedelta(days=pick.randint(-3, 6))
                end = start + timedelta(days=pick.randint(0, 12)) if pick.random() < 0.4 else None
                version = _version(n, written, start, end)
                plans.append({**version, "tens": None} if pick.random() < 0.15 else version)
            _closed(plans)
            follows = {p["version"]: [d for d in days if (day_plan(plans, history, d).tens_version or {}).get(
                "version") == p["version"]] for p in plans}
            for until in (date(2026, 3, 3), date(2026, 3, 6), date(2026, 3, 12)):
                for p in plans:
                    before = [d for d in follows[p["version"]] if d <= until]
                    after = [d for d in follows[p["version"]] if d > until]
                    assert last_tens_day(plans, history, p, until) == (before[-1] if before else None), (plans, until)
                    assert next_tens_day(plans, history, p, until) == (after[0] if after else None), (plans, until)
