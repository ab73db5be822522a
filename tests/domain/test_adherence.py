from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion.domain.adherence import (
    DayState,
    PlannedTask,
    ResponderStatus,
    TaskEvent,
    TaskKind,
    adherence_for_day,
    events_by_local_day,
    goal_progress,
    is_covered,
    pdc_over,
    pdc_report,
    responder_check,
)
from companion.domain.localtime import TimeZoneHistory

D = date(2025, 3, 3)
TENS_60 = PlannedTask(TaskKind.TENS, target_minutes=60)
TENS_2_SESSIONS = PlannedTask(TaskKind.TENS, target_count=2)
MEDS_2 = PlannedTask(TaskKind.MEDICATION, target_count=2)
MIND_10 = PlannedTask(TaskKind.MINDFULNESS, target_minutes=10)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def tens(minutes: float, when: datetime | None = None) -> TaskEvent:
    return TaskEvent(TaskKind.TENS, when or at(D, 9), minutes)


@pytest.mark.parametrize(
    ("tasks", "events", "state", "fraction"),
    [
        ([], [tens(30)], DayState.NO_TASKS, None),
        (
            [PlannedTask(TaskKind.TENS, counts_towards_adherence=False, target_minutes=60)],
            [],
            DayState.NO_TASKS,
            None,
        ),
        ([TENS_60], [], DayState.NO_EVENTS, None),
        ([TENS_60], [tens(30)], DayState.PROGRESS, 0.5),
        ([TENS_60], [tens(45), tens(45)], DayState.PROGRESS, 1.0),
        ([TENS_2_SESSIONS], [tens(30)], DayState.PROGRESS, 0.5),
        ([TENS_60, PlannedTask(TaskKind.TENS, target_minutes=30)], [tens(45)], DayState.PROGRESS, 0.5),
    ],
)
def test_tens_day_state_and_progress(tasks, events, state, fraction):
    day = adherence_for_day(D, tasks, events)
    assert (day.tens.state, day.tens.fraction) == (state, fraction)


def test_minutes_each_shown_to_the_tenth_that_add_up_to_the_target_meet_it():
    """2.3 + 6.1 + 6.6 in floats is 14.999...: a day's minutes are summed to the tenth they are shown to."""
    day = adherence_for_day(D, [PlannedTask(TaskKind.TENS, target_minutes=15)], [tens(2.3), tens(6.1), tens(6.6)])
    assert (day.tens.delivered_minutes, day.tens.fraction) == (15.0, 1.0)


def test_kinds_are_reported_separately():
    events = [
        tens(60),
        TaskEvent(TaskKind.MEDICATION, at(D, 8)),
        TaskEvent(TaskKind.MINDFULNESS, at(D, 20), 5),
    ]
    day = adherence_for_day(D, [TENS_60, MEDS_2, MIND_10], events)
    assert (day.tens.fraction, day.medication.fraction, day.mindfulness.fraction) == (1.0, 0.5, 0.5)
    assert (day.medication.done_count, day.medication.planned_count) == (1, 2)


def test_covered_threshold_is_a_parameter():
    day = adherence_for_day(D, [TENS_60], [tens(50)])
    assert is_covered(day) is False
    assert is_covered(day, threshold=0.8) is True
    assert is_covered(adherence_for_day(D, [], [])) is None


def test_session_crossing_midnight_counts_to_the_day_it_started():
    history = TimeZoneHistory.fixed("Europe/London")
    late = TaskEvent(TaskKind.TENS, datetime(2025, 7, 1, 22, 40, tzinfo=UTC), 40)  # 23:40 BST
    grouped = events_by_local_day([late], history)
    assert list(grouped) == [date(2025, 7, 1)]


def test_events_use_the_zone_in_force_at_their_start():
    history = TimeZoneHistory.of(
        [(at(D, 0) - timedelta(days=30), "Europe/London"), (at(D, 12), "Asia/Tokyo")]
    )
    morning = TaskEvent(TaskKind.TENS, at(D, 11), 30)  # 11:00 London, 3 March
    evening = TaskEvent(TaskKind.TENS, at(D, 16), 30)  # 01:00 Tokyo, 4 March
    grouped = events_by_local_day([morning, evening], history)
    assert grouped == {D: [morning], D + timedelta(days=1): [evening]}


def _month() -> dict:
    """30 days ending 30 March: days 1-5 no plan; 6-30 planned 60 min; full on even days, 30 min on odd."""
    days = {}
    for n in range(1, 31):
        day = date(2025, 3, n)
        tasks = [] if n <= 5 else [TENS_60]
        minutes = 60 if n % 2 == 0 else 30
        days[day] = adherence_for_day(day, tasks, [tens(minutes, at(day, 9))])
    return days


def test_pdc_excludes_days_without_a_plan_from_denominator():
    result = pdc_over(_month(), date(2025, 3, 30), 30)
    # planned days 6..30 = 25; covered = even days in 6..30 = 13
    assert (result.days_with_plan, result.days_covered) == (25, 13)
    assert result.pdc == pytest.approx(13 / 25)
    assert result.adherent is False


def test_pdc_report_over_7_30_90_days():
    report = pdc_report(_month(), date(2025, 3, 30))
    assert (report[7].days_with_plan, report[7].days_covered) == (7, 4)  # 24..30: 24, 26, 28, 30
    assert report[90].days_with_plan == 25
    assert pdc_over({}, date(2025, 3, 30), 7).pdc is None


def test_pdc_at_80_percent_is_adherent():
    days = {
        date(2025, 3, n): adherence_for_day(date(2025, 3, n), [TENS_60], [tens(60 if n != 1 else 0)])
        for n in range(1, 6)
    }
    result = pdc_over(days, date(2025, 3, 5), 5)
    assert (result.pdc, result.adherent) == (0.8, True)


START = datetime(2025, 1, 1, tzinfo=UTC)


def _pain(offsets_and_scores):
    return [(START + timedelta(days=d), s) for d, s in offsets_and_scores]


@pytest.mark.parametrize(
    ("pain", "interference", "status"),
    [
        (_pain([(-3, 8), (-2, 8), (1, 8), (55, 5), (58, 6), (59, 5)]), [], ResponderStatus.RESPONDER),
        (_pain([(-3, 8), (-2, 8), (1, 8), (55, 7), (58, 6), (59, 7)]), [], ResponderStatus.NON_RESPONDER),
        (_pain([(-3, 8), (55, 7), (58, 6), (59, 7)]), [], ResponderStatus.INSUFFICIENT_DATA),
        (
            _pain([(-3, 8), (-2, 8), (1, 8), (55, 7), (58, 7), (59, 7)]),
            [(START, 6.0), (START + timedelta(days=58), 3.5)],
            ResponderStatus.RESPONDER,
        ),
    ],
)
def test_responder_check_after_60_days(pain, interference, status):
    assert responder_check(START, START + timedelta(days=60), pain, interference).status == status


def test_responder_check_before_60_days_is_too_early():
    assert responder_check(START, START + timedelta(days=59), []).status == ResponderStatus.TOO_EARLY


@given(
    targets=st.lists(st.integers(1, 120), min_size=1, max_size=3),
    minutes=st.lists(st.floats(0, 300, allow_nan=False), max_size=5),
)
def test_property_progress_is_between_0_and_1(targets, minutes):
    tasks = [PlannedTask(TaskKind.TENS, target_minutes=t) for t in targets]
    day = adherence_for_day(D, tasks, [tens(m) for m in minutes])
    assert day.tens.fraction is None or 0.0 <= day.tens.fraction <= 1.0


def test_a_goal_kept_out_of_adherence_still_shows_its_progress():
    mindfulness = PlannedTask(TaskKind.MINDFULNESS, counts_towards_adherence=False, target_minutes=10)
    practice = TaskEvent(TaskKind.MINDFULNESS, at(D, 9), 4)
    assert adherence_for_day(D, [mindfulness], [practice]).mindfulness.state == DayState.NO_TASKS
    shown = goal_progress(TaskKind.MINDFULNESS, [mindfulness], [practice])
    assert (shown.state, shown.fraction, shown.target_minutes) == (DayState.PROGRESS, 0.4, 10)
