from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion.domain.adherence import TaskEvent, TaskKind
from companion.domain.localtime import TimeZoneHistory
from companion.domain.pain import PainEntry
from companion.domain.streaks import streak, weekly_summary

D0 = date(2025, 6, 2)  # a Monday


def days(pattern: str) -> dict:
    """'x' met, '.' missed, '-' no plan; one character per day from D0."""
    values = {"x": True, ".": False, "-": None}
    return {D0 + timedelta(days=i): values[c] for i, c in enumerate(pattern)}


def last_day(pattern: str) -> date:
    return D0 + timedelta(days=len(pattern) - 1)


@pytest.mark.parametrize(
    ("pattern", "grace", "current", "longest"),
    [
        ("xxxx", 1, 4, 4),
        ("xxx.xx", 0, 2, 3),
        ("xxx.xx", 1, 5, 5),
        ("xx..xx", 1, 2, 2),  # second miss within 7 days breaks
        ("xx.xxxxxx.xx", 1, 10, 10),  # misses 7 days apart: both forgiven
        ("xx.xxxxx.xx", 1, 2, 7),  # misses 6 days apart: second breaks
        ("xx--xx", 0, 4, 4),  # days without a plan neither add nor break
        (".xx", 1, 2, 2),  # a miss before any streak is not forgiven
        ("xxx.", 0, 3, 3),  # today not yet met does not break
        ("xx..x", 2, 3, 3),
    ],
)
def test_streak_with_grace_days(pattern, grace, current, longest):
    result = streak(days(pattern), last_day(pattern), grace)
    assert (result.current, result.longest) == (current, longest)


def test_streak_reports_forgiven_days():
    assert streak(days("xxx.xx"), last_day("xxx.xx"), 1).forgiven == (D0 + timedelta(days=3),)


@given(st.text(alphabet="x.-", max_size=40), st.integers(0, 3))
def test_property_streak_bounds(pattern, grace):
    result = streak(days(pattern), last_day(pattern) if pattern else D0, grace)
    assert 0 <= result.current <= result.longest <= pattern.count("x")
    assert streak(days(pattern), last_day(pattern) if pattern else D0, grace + 1).longest >= result.longest


def test_weekly_summary_groups_by_local_iso_week():
    history = TimeZoneHistory.fixed("Pacific/Auckland")  # UTC+12 in June
    sunday_late = datetime(2025, 6, 8, 11, 30, tzinfo=UTC)  # Sunday 23:30 local, week 23
    monday_early = datetime(2025, 6, 8, 12, 30, tzinfo=UTC)  # Monday 00:30 local, week 24
    events = [
        TaskEvent(TaskKind.TENS, sunday_late, 40),
        TaskEvent(TaskKind.TENS, monday_early, 30),
        TaskEvent(TaskKind.MINDFULNESS, monday_early, 10),
        TaskEvent(TaskKind.MEDICATION, monday_early),
    ]
    pain = [PainEntry("a", sunday_late, 6), PainEntry("b", monday_early, 4), PainEntry("c", monday_early, 5)]
    covered = {date(2025, 6, 8): True, date(2025, 6, 9): False, date(2025, 6, 10): None}
    weeks = weekly_summary(covered, events, pain, history)
    assert [
        (w.iso_week, w.days_with_plan, w.days_covered, w.tens_minutes, w.practice_minutes, w.mean_pain)
        for w in weeks
    ] == [
        (23, 1, 1, 40, 0, 6),
        (24, 1, 0, 30, 10, 4.5),
    ]
