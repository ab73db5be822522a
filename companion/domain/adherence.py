"""Adherence: how much of the day's plan the patient did, days covered, PDC, and the responder check.

Daily states follow CareKit: for each kind of task (TENS, mindfulness, medication) a day is
``no_tasks`` (nothing planned that counts towards adherence), ``no_events`` (planned, nothing recorded)
or a progress fraction 0..1. Progress is minutes delivered / minutes prescribed when the counting tasks
of that kind carry a minutes target, else sessions (or doses) done / planned; it is capped at 1. A kind
whose counting tasks carry both kinds of target uses minutes (the clinical dose of TENS is time).
Events are matched to tasks by kind only.

A day is *covered* when its TENS progress reaches ``threshold`` (default 1.0, the full prescription; a
service may pass e.g. 0.8 to count a mostly-done day). PDC = covered days / days with a plan in the
period. Days with no plan (no counting task of that kind, e.g. before therapy started or a rest day)
are left out of the denominator: CareKit treats "no tasks" as a different state from "did nothing", and
counting a day with nothing to do as non-adherent would punish the patient for the clinician's plan.
The same computation gives separate PDC figures for mindfulness and medications.

A session is counted on the patient's local date at its start, in the zone in force at that instant:
a session from 23:40 to 00:20 counts 40 minutes to the earlier day.

Today is in progress. PDC counts only whole days: its periods end on yesterday at the latest
(``pdc_period_end``), so a morning with nothing done yet never lowers it, and today is shown beside it as in
progress. The streak (``streaks.streak``) agrees: today never breaks it, and it adds today only once the
goal is met.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from statistics import fmean

from companion.domain.localtime import TimeZoneHistory

ADHERENT_PDC = 0.8
# The version of these rules (and of what an event counts) a stored day was computed by. 1, stored without a
# version: a session counted its minutes as recorded; 2: each session counts its minutes to the tenth shown
# (companion.domain.sessions.counted_minutes_shown), so a day shown at its target is covered; 3: practice counts
# as companion.domain.practice says (one stretch recorded twice counts once; each practice's minutes to the tenth
# shown, an overlap within the stored minutes' rounding none), and a day's minutes are summed to the tenth; 4: a
# date's TENS is the course of the newest plan version that covers it (companion.domain.plans.day_plan), so a
# version dated "from tomorrow" no longer leaves the days before its start without TENS; and a date the patient never
# lived (a move east jumped over it) has no plan, where it was a planned day missed. Raise it with any change
# that changes a stored day's figures: `companion migrate` computes again the days stored under another.
ADHERENCE_RULES = 4
PDC_PERIODS = (7, 30, 90)
RESPONDER_AFTER_DAYS = 60
RESPONDER_PAIN_REDUCTION = 0.30
RESPONDER_INTERFERENCE_REDUCTION = 2.0


class TaskKind(StrEnum):
    """The kinds of planned task the patient does."""

    TENS = "tens"
    MINDFULNESS = "mindfulness"
    MEDICATION = "medication"


class DayState(StrEnum):
    """CareKit-style state of a day for one kind of task."""

    NO_TASKS = "no_tasks"
    NO_EVENTS = "no_events"
    PROGRESS = "progress"


@dataclass(frozen=True)
class PlannedTask:
    """One task planned for a day: a minutes target (e.g. 60 min TENS) or a count target (e.g. 2 doses)."""

    kind: TaskKind
    counts_towards_adherence: bool = True
    target_minutes: float | None = None
    target_count: int | None = None


@dataclass(frozen=True)
class TaskEvent:
    """Something the patient did: a TENS session, a practice, a dose (``minutes`` 0 for a dose)."""

    kind: TaskKind
    started_at_utc: datetime
    minutes: float = 0.0
    count: int = 1


@dataclass(frozen=True)
class KindProgress:
    """A day's result for one kind of task; ``fraction`` is set only in state ``progress``."""

    state: DayState
    fraction: float | None
    delivered_minutes: float
    target_minutes: float
    done_count: int
    planned_count: int


@dataclass(frozen=True)
class DayAdherence:
    """A day's progress for TENS, mindfulness and medications."""

    local_date: date
    tens: KindProgress
    mindfulness: KindProgress
    medication: KindProgress

    def of(self, kind: TaskKind) -> KindProgress:
        """Return the progress for ``kind``."""
        return {
            TaskKind.TENS: self.tens,
            TaskKind.MINDFULNESS: self.mindfulness,
            TaskKind.MEDICATION: self.medication,
        }[kind]


def _progress(kind: TaskKind, tasks: Sequence[PlannedTask], events: Sequence[TaskEvent], *,
              counting_only: bool = True) -> KindProgress:
    counting = [t for t in tasks if t.kind == kind and (t.counts_towards_adherence or not counting_only)]
    mine = [e for e in events if e.kind == kind]
    target_minutes = sum(t.target_minutes or 0 for t in counting)
    planned_count = sum(t.target_count or 0 for t in counting)
    # Each event's minutes are to the tenth shown; their sum to the tenth too, so that a float's error in adding
    # them (2.3 + 6.1 + 6.6 is 14.999...) cannot leave a day shown at its target short of it.
    delivered = round(sum(max(e.minutes, 0) for e in mine), 1)
    done = sum(max(e.count, 0) for e in mine)
    if not counting or (target_minutes <= 0 and planned_count <= 0):
        state, fraction = DayState.NO_TASKS, None
    elif not mine:
        state, fraction = DayState.NO_EVENTS, None
    elif target_minutes > 0:
        state, fraction = DayState.PROGRESS, min(delivered / target_minutes, 1.0)
    else:
        state, fraction = DayState.PROGRESS, min(done / planned_count, 1.0)
    return KindProgress(state, fraction, delivered, target_minutes, done, planned_count)


def adherence_for_day(
    local_date: date, tasks: Sequence[PlannedTask], events: Sequence[TaskEvent]
) -> DayAdherence:
    """Return the day's state per kind from its planned tasks and the events already assigned to it."""
    return DayAdherence(
        local_date,
        _progress(TaskKind.TENS, tasks, events),
        _progress(TaskKind.MINDFULNESS, tasks, events),
        _progress(TaskKind.MEDICATION, tasks, events),
    )


def goal_progress(kind: TaskKind, tasks: Sequence[PlannedTask], events: Sequence[TaskEvent]) -> KindProgress:
    """Return the day's progress towards the plan's goal for ``kind``, counting every planned task of that
    kind, including those the plan keeps out of adherence (what the patient is asked to do is shown
    whether or not it is scored; CareKit's opt-out only leaves a task out of adherence)."""
    return _progress(kind, tasks, events, counting_only=False)


def events_by_local_day(events: Sequence[TaskEvent], history: TimeZoneHistory) -> dict[date, list[TaskEvent]]:
    """Group events by the patient's local date at their start, in the zone in force at that instant."""
    days: dict[date, list[TaskEvent]] = defaultdict(list)
    for event in events:
        zone = history.zone_at(event.started_at_utc)
        days[event.started_at_utc.astimezone(zone).date()].append(event)
    return dict(days)


def is_covered(day: DayAdherence, kind: TaskKind = TaskKind.TENS, threshold: float = 1.0) -> bool | None:
    """Tell whether the day is covered for ``kind``: ``None`` with no plan, else progress >= ``threshold``."""
    progress = day.of(kind)
    if progress.state == DayState.NO_TASKS:
        return None
    return progress.state == DayState.PROGRESS and (progress.fraction or 0.0) >= threshold - 1e-9


@dataclass(frozen=True)
class PdcResult:
    """Proportion of days covered over ``period_days`` ending on ``end_date`` (inclusive)."""

    period_days: int
    end_date: date
    days_with_plan: int
    days_covered: int
    pdc: float | None
    adherent: bool | None


def pdc_over(
    days: Mapping[date, DayAdherence],
    end_date: date,
    period_days: int,
    kind: TaskKind = TaskKind.TENS,
    threshold: float = 1.0,
) -> PdcResult:
    """Return the PDC over the ``period_days`` days ending on ``end_date``; absent days count as unplanned.

    ``pdc`` and ``adherent`` are ``None`` when no day of the period had a plan.
    """
    planned = covered = 0
    for n in range(period_days):
        day = days.get(end_date - timedelta(days=n))
        verdict = None if day is None else is_covered(day, kind, threshold)
        if verdict is not None:
            planned += 1
            covered += verdict
    pdc = covered / planned if planned else None
    return PdcResult(
        period_days, end_date, planned, covered, pdc, None if pdc is None else pdc >= ADHERENT_PDC
    )


def pdc_period_end(as_of: date, today: date) -> date:
    """The last day a PDC period may count: ``as_of``, but never today or later (a day in progress is not
    judged)."""
    return min(as_of, today - timedelta(days=1))


def pdc_report(
    days: Mapping[date, DayAdherence], end_date: date, kind: TaskKind = TaskKind.TENS, threshold: float = 1.0
) -> dict[int, PdcResult]:
    """Return the PDC over 7, 30 and 90 days ending on ``end_date``, keyed by period length."""
    return {period: pdc_over(days, end_date, period, kind, threshold) for period in PDC_PERIODS}


class ResponderStatus(StrEnum):
    """Outcome of the responder check."""

    TOO_EARLY = "too_early"
    INSUFFICIENT_DATA = "insufficient_data"
    RESPONDER = "responder"
    NON_RESPONDER = "non_responder"


@dataclass(frozen=True)
class ResponderResult:
    """Baseline vs recent pain and interference, and whether the patient responds to TENS."""

    status: ResponderStatus
    baseline_pain: float | None = None
    recent_pain: float | None = None
    pain_reduction: float | None = None
    interference_reduction: float | None = None


def responder_windows(therapy_start_utc: datetime, as_of_utc: datetime) -> tuple[tuple[datetime, datetime], ...]:
    """The periods the responder check compares, each [start, end): the baseline, from 14 days before the
    therapy start to 7 days after it, and the recent, the 14 days up to ``as_of_utc``."""
    return ((therapy_start_utc - timedelta(days=14), therapy_start_utc + timedelta(days=7)),
            (as_of_utc - timedelta(days=14), as_of_utc))


def responder_check(
    therapy_start_utc: datetime,
    as_of_utc: datetime,
    pain: Sequence[tuple[datetime, int]],
    interference: Sequence[tuple[datetime, float]] = (),
    min_entries: int = 3,
) -> ResponderResult:
    """Compare baseline with recent pain after 60 days of therapy.

    Baseline: entries from 14 days before the therapy start to 7 days after it. Recent: the 14 days up
    to ``as_of_utc`` (:func:`responder_windows`). A responder has mean NRS at least 30% lower, or mean BPI interference at least 2
    points lower (interference needs one score in each window). Each pain window needs ``min_entries``
    entries, else the status is ``insufficient_data`` (unless interference alone shows a response).
    """
    if as_of_utc - therapy_start_utc < timedelta(days=RESPONDER_AFTER_DAYS):
        return ResponderResult(ResponderStatus.TOO_EARLY)
    (base_from, base_to), (recent_from, _) = responder_windows(therapy_start_utc, as_of_utc)

    def window(series, start, end):
        return [value for at, value in series if start <= at < end]

    base_pain, recent_pain = window(pain, base_from, base_to), window(pain, recent_from, as_of_utc)
    base_int, recent_int = (
        window(interference, base_from, base_to),
        window(interference, recent_from, as_of_utc),
    )
    interference_drop = fmean(base_int) - fmean(recent_int) if base_int and recent_int else None
    base_mean = fmean(base_pain) if len(base_pain) >= min_entries else None
    recent_mean = fmean(recent_pain) if len(recent_pain) >= min_entries else None
    reduction = None
    if base_mean is not None and recent_mean is not None and base_mean > 0:
        reduction = (base_mean - recent_mean) / base_mean
    responds = (reduction is not None and reduction >= RESPONDER_PAIN_REDUCTION - 1e-9) or (
        interference_drop is not None and interference_drop >= RESPONDER_INTERFERENCE_REDUCTION - 1e-9
    )
    if responds:
        status = ResponderStatus.RESPONDER
    elif reduction is None:
        status = ResponderStatus.INSUFFICIENT_DATA
    else:
        status = ResponderStatus.NON_RESPONDER
    return ResponderResult(status, base_mean, recent_mean, reduction, interference_drop)
