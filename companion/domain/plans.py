"""What a therapy plan asks of the patient on a given day.

A plan is stored as versions (dicts: ``version``, ``active_from``, ``active_to``, ``tens``,
``medications``, ``mindfulness``; TENS dates as ISO strings). A day follows the version in force at the
end of the patient's local day (a plan written at 15:00 governs that whole day).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from companion.domain.adherence import PlannedTask, TaskKind


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


def planned_tasks(plan: dict | None, local_date: date) -> list[PlannedTask]:
    """The tasks a plan sets for one local date: TENS within its dates, the mindfulness goal, and each
    medication's doses (a medication without times sets none)."""
    if plan is None:
        return []
    tasks = []
    tens = plan.get("tens") or {}
    start, end = tens_course(plan)
    if tens and (start is None or start <= local_date) and (end is None or local_date <= end):
        tasks.append(PlannedTask(TaskKind.TENS, bool(tens.get("counts_towards_adherence", True)),
                                 tens_minutes_prescribed(plan, local_date), tens.get("sessions_per_day")))
    mindfulness = plan.get("mindfulness") or {}
    if mindfulness.get("minutes_per_day"):
        tasks.append(PlannedTask(TaskKind.MINDFULNESS, bool(mindfulness.get("counts_towards_adherence", True)),
                                 mindfulness["minutes_per_day"], None))
    for medication in plan.get("medications") or []:
        if medication.get("times"):
            tasks.append(PlannedTask(TaskKind.MEDICATION, bool(medication.get("counts_towards_adherence", True)),
                                     None, len(medication["times"])))
    return tasks
