"""What a therapy plan asks of the patient on a given day.

A plan is stored as versions (dicts: ``version``, ``active_from``, ``active_to``, ``tens``,
``medications``, ``mindfulness``; TENS dates as ISO strings). Which version a local date follows
(:func:`day_plan`, the one place every figure takes it from):

* The version in force at the end of the patient's local day (as they lived it: localtime.day_span) sets the
  day's mindfulness goal and medications (a plan written at 15:00 governs that whole day). They carry no dates
  of their own, so that version covers them on every date from the day it was written.
* The day's TENS follows the newest version written before the day's end whose TENS course covers the date,
  looking back from the one in force: a version whose TENS course starts after the date (a change dated "from
  tomorrow") leaves the date to the versions before it, so the course in force goes on until the new one
  starts. A version that ends the course (its ``end_date`` before the date) or sets no TENS ends it: the
  versions before it are not looked at. A day before any version was written has no plan (a version never
  reaches back before the day it was written, whatever its start date).
* A date the patient never lived (localtime.lived: a move east jumped over it whole) has no plan: nothing was
  asked of a day that never came, and it is not a day missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from companion.domain.adherence import PlannedTask, TaskKind
from companion.domain.localtime import TimeZoneHistory, day_span, lived


def _as_date(value) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    return date.fromisoformat(str(value))


def plan_in_force(plans: Iterable[dict], at: datetime) -> dict | None:
    """The plan version in force at ``at``: the highest version that had started and not ended."""
    live = [p for p in plans if p["active_from"] < at and (p.get("active_to") is None or p["active_to"] >= at)]
    return max(live, key=lambda p: p["version"], default=None)


def tens_course(plan: dict | None) -> tuple[date | None, date | None]:
    """The first and last local dates of a plan's TENS course, both included (None: open on that side)."""
    tens = (plan or {}).get("tens") or {}
    return _as_date(tens.get("start_date")), _as_date(tens.get("end_date"))


def tens_minutes_prescribed(plan: dict | None, local_date: date) -> int | None:
    """Minutes of TENS a plan prescribes for a local date; None outside its dates or when it sets none."""
    tens = (plan or {}).get("tens") or {}
    if not tens:
        return None
    start, end = tens_course(plan)
    if (start and local_date < start) or (end and local_date > end):
        return None
    if tens.get("daily_minutes_target"):
        return int(tens["daily_minutes_target"])
    if tens.get("sessions_per_day") and tens.get("minutes_per_session"):
        return int(tens["sessions_per_day"] * tens["minutes_per_session"])
    return None


def _tens_version(plans: Iterable[dict], in_force: dict, day_end: datetime, local_date: date) -> dict | None:
    """The version whose TENS course ``local_date`` follows (module docstring), from ``in_force`` back."""
    earlier = sorted((p for p in plans if p["version"] <= in_force["version"] and p["active_from"] < day_end),
                     key=lambda p: p["version"], reverse=True)
    for plan in earlier:
        if not plan.get("tens"):
            return None  # this version sets no TENS: the course ended with it
        start, end = tens_course(plan)
        if end is not None and end < local_date:
            return None  # it ended the course before this date
        if start is None or start <= local_date:
            return plan
        # It starts after this date: the course before it goes on until then.
    return None


@dataclass(frozen=True)
class DayPlan:
    """What the plan asks of one local date (:func:`day_plan`): the version in force at the day's end
    (``version``: mindfulness and medications), the one whose TENS course the date follows (``tens_version``,
    None when the date has no TENS), and the day's tasks."""

    local_date: date
    version: dict | None
    tens_version: dict | None
    tasks: tuple[PlannedTask, ...]

    @property
    def tens(self) -> dict | None:
        """The TENS prescription the date follows (None: no TENS that day)."""
        return (self.tens_version or {}).get("tens") or None

    @property
    def tens_minutes(self) -> int | None:
        """Minutes of TENS prescribed for the date (None when it has none, or the prescription sets none)."""
        return tens_minutes_prescribed(self.tens_version, self.local_date)

    @property
    def mindfulness(self) -> dict | None:
        return (self.version or {}).get("mindfulness") or None

    @property
    def medications(self) -> list[dict]:
        return list((self.version or {}).get("medications") or [])


def day_plan(plans: Iterable[dict], history: TimeZoneHistory, local_date: date) -> DayPlan:
    """What the plan versions ``plans`` (any order) ask of the patient's local date ``local_date``, by the rules
    of the module docstring: the version in force at the day's end as the patient lived it (their zone
    history), and the TENS course the date falls in; nothing for a date they never lived."""
    if not lived(history, local_date):
        return DayPlan(local_date, None, None, ())
    plans = list(plans)
    day_end = day_span(history, local_date)[1]
    version = plan_in_force(plans, day_end)
    if version is None:
        return DayPlan(local_date, None, None, ())
    tens_version = _tens_version(plans, version, day_end, local_date)
    return DayPlan(local_date, version, tens_version, tuple(_tasks(version, tens_version, local_date)))


# A version's TENS days, looked for with day_plan between bounds worked out from the versions' dates: the bounds
# allow for the local date of an instant lying up to two days from its UTC date (zones, and the days a move
# lengthens), so that day_plan, not the bounds, says which days they are.
_MARGIN = timedelta(days=2)


def _tens_window(plans: list[dict], version: dict) -> tuple[date | None, date | None]:
    """The first and last dates whose TENS may follow ``version`` (None: no last one): none before its start date
    or the day it was written, none after its end date, nor once a newer version has been written and has ended
    the course or begun its own."""
    start, end = tens_course(version)
    first = max(d for d in (start, version["active_from"].date() - _MARGIN) if d is not None)
    last = end
    for newer in (p for p in plans if p["version"] > version["version"]):
        written = newer["active_from"].date() + _MARGIN
        takes_over = written
        if newer.get("tens"):
            newer_start, newer_end = tens_course(newer)
            ends = [d for d in (newer_start, newer_end and newer_end + timedelta(days=1)) if d is not None]
            takes_over = max(written, min(ends)) if ends else written
        last = takes_over - timedelta(days=1) if last is None else min(last, takes_over - timedelta(days=1))
    return first, last


def _follows(plans: list[dict], history: TimeZoneHistory, version: dict, local_date: date) -> bool:
    tens_version = day_plan(plans, history, local_date).tens_version
    return tens_version is not None and tens_version["version"] == version["version"]


def last_tens_day(plans: Iterable[dict], history: TimeZoneHistory, version: dict, until: date) -> date | None:
    """The last local date up to ``until`` whose TENS follows ``version`` (:func:`day_plan`, ``plans`` being every
    version), None when none does: the last day of its course as the patient's days went, which a newer version
    written "from later" carries past the day that version was written, and which ends before a course's end
    date when a newer version takes over."""
    plans = list(plans)
    if not version.get("tens"):
        return None
    first, last = _tens_window(plans, version)
    day = until if last is None else min(until, last)
    while day >= first:
        if _follows(plans, history, version, day):
            return day
        day -= timedelta(days=1)
    return None


def next_tens_day(plans: Iterable[dict], history: TimeZoneHistory, version: dict,
                              after: date) -> date | None:
    """The first local date after ``after`` whose TENS follows ``version`` as the versions stand (:func:`day_plan`),
    None when none will: a course still to begin."""
    plans = list(plans)
    if not version.get("tens"):
        return None
    first, last = _tens_window(plans, version)
    day = max(first, after + timedelta(days=1))
    # Past the window's first days the answer is the same every day until its end: a few days settle it.
    stop = day + 2 * _MARGIN if last is None else min(last, day + 2 * _MARGIN)
    while day <= stop:
        if _follows(plans, history, version, day):
            return day
        day += timedelta(days=1)
    return None


def tasks_for_day(plans: Iterable[dict], history: TimeZoneHistory, local_date: date) -> list[PlannedTask]:
    """The tasks the plan sets for one local date (:func:`day_plan`)."""
    return list(day_plan(plans, history, local_date).tasks)


def _tasks(version: dict, tens_version: dict | None, local_date: date) -> list[PlannedTask]:
    tasks = []
    tens = (tens_version or {}).get("tens") or {}
    if tens:
        tasks.append(PlannedTask(TaskKind.TENS, bool(tens.get("counts_towards_adherence", True)),
                                 tens_minutes_prescribed(tens_version, local_date), tens.get("sessions_per_day")))
    mindfulness = version.get("mindfulness") or {}
    if mindfulness.get("minutes_per_day"):
        tasks.append(PlannedTask(TaskKind.MINDFULNESS, bool(mindfulness.get("counts_towards_adherence", True)),
                                 mindfulness["minutes_per_day"], None))
    for medication in version.get("medications") or []:
        if medication.get("times"):
            tasks.append(PlannedTask(TaskKind.MEDICATION, bool(medication.get("counts_towards_adherence", True)),
                                     None, len(medication["times"])))
    return tasks

