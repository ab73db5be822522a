"""Streaks of days meeting the goal, with grace days, and the weekly summary.

Streak rule, walking the patient's local days from oldest to ``today``:

* a day that met the goal adds 1 to the streak;
* a day with no plan (absent from the mapping, or ``None``) neither adds nor breaks;
* a day that missed the goal is *forgiven* when the streak is running (> 0) and fewer than
  ``grace_days`` days were forgiven in the 7 days ending on it (itself and the 6 before). A forgiven day
  keeps the streak alive without adding to it. Otherwise the streak drops to 0;
* ``today`` is still in progress: if it has not met the goal yet it neither adds nor breaks.

``grace_days=0`` gives a strict streak. The longest streak is the largest value reached on the walk.

The weekly summary groups by ISO week (Monday to Sunday) of the patient's local date, in the zone in
force at each event's instant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from statistics import fmean

from companion.domain.adherence import TaskEvent, TaskKind
from companion.domain.localtime import TimeZoneHistory
from companion.domain.pain import PainEntry

ROLLING_DAYS = 7


@dataclass(frozen=True)
class Streak:
    """The current and the longest streak, in days that met the goal, and the days forgiven on the way."""

    current: int
    longest: int
    forgiven: tuple[date, ...]


def streak(goal_met: Mapping[date, bool | None], today: date, grace_days: int = 1) -> Streak:
    """Compute the current and longest streak up to ``today`` under the module's grace-day rule."""
    if grace_days < 0:
        raise ValueError("grace days cannot be negative")
    known = [d for d in goal_met if d <= today]
    if not known:
        return Streak(0, 0, ())
    current = longest = 0
    forgiven: list[date] = []
    day = min(known)
    while day <= today:
        met = goal_met.get(day)
        if met:
            current += 1
            longest = max(longest, current)
        elif met is False and day != today:
            recent = sum(1 for f in forgiven if day - f < timedelta(days=ROLLING_DAYS))
            if current > 0 and recent < grace_days:
                forgiven.append(day)
            else:
                current = 0
        day += timedelta(days=1)
    return Streak(current, longest, tuple(forgiven))


@dataclass(frozen=True)
class WeekSummary:
    """One ISO week of the patient's therapy on their own clock."""

    iso_year: int
    iso_week: int
    days_with_plan: int
    days_covered: int
    tens_minutes: float
    practice_minutes: float
    mean_pain: float | None
    pain_entries: int


def weekly_summary(
    covered: Mapping[date, bool | None],
    events: Sequence[TaskEvent],
    pain: Sequence[PainEntry],
    history: TimeZoneHistory,
) -> list[WeekSummary]:
    """Summarise each ISO week that has any data, oldest first.

    ``covered`` maps local dates to covered / not covered / no plan (see ``adherence.is_covered``);
    events and pain entries are placed on local dates with ``history``.
    """
    plan_days: dict[tuple[int, int], int] = defaultdict(int)
    covered_days: dict[tuple[int, int], int] = defaultdict(int)
    tens: dict[tuple[int, int], float] = defaultdict(float)
    practice: dict[tuple[int, int], float] = defaultdict(float)
    scores: dict[tuple[int, int], list[int]] = defaultdict(list)

    def week_of(local: date) -> tuple[int, int]:
        iso = local.isocalendar()
        return iso.year, iso.week

    for local, verdict in covered.items():
        if verdict is not None:
            plan_days[week_of(local)] += 1
            covered_days[week_of(local)] += bool(verdict)
    for event in events:
        week = week_of(event.started_at_utc.astimezone(history.zone_at(event.started_at_utc)).date())
        if event.kind == TaskKind.TENS:
            tens[week] += event.minutes
        elif event.kind == TaskKind.MINDFULNESS:
            practice[week] += event.minutes
    for entry in pain:
        scores[
            week_of(entry.recorded_at_utc.astimezone(history.zone_at(entry.recorded_at_utc)).date())
        ].append(entry.score)
    weeks = sorted(set(plan_days) | set(tens) | set(practice) | set(scores))
    return [
        WeekSummary(
            year,
            week,
            plan_days[(year, week)],
            covered_days[(year, week)],
            tens[(year, week)],
            practice[(year, week)],
            fmean(scores[(year, week)]) if scores[(year, week)] else None,
            len(scores[(year, week)]),
        )
        for year, week in weeks
    ]
