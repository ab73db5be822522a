"""Translating stored reminders and patients into the schedule rules of companion.domain.schedules.

A stored schedule is plain JSON in wall-clock terms:
  {"type": "weekly", "times": ["08:00"], "weekdays": [1, 3, 5], "start_date": "2026-03-01", "end_date": null}
  {"type": "every_n_days", "times": ["09:30"], "every_days": 2, "start_date": ..., "end_date": ...}
  {"type": "hourly", "window_start": "08:00", "window_end": "20:00", "every_hours": 3, "start_date": ..., ...}
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from companion.domain.errors import Invalid
from companion.domain.localtime import TimeZoneHistory
from companion.domain.quiet_hours import QuietHours, silenced
from companion.domain.schedules import (
    EveryNDays,
    HourlyWindow,
    ReminderOccurrence,
    ReminderSchedule,
    Repeats,
    WeeklyTimes,
    daily_times,
    occurrences_with_history,
    schedule_problems,
    slots_skipped_by_moves,
)


def _clock(value: str) -> time:
    return time.fromisoformat(value)


def _recurrence(schedule: dict):
    kind = schedule["type"]
    if kind == "weekly":
        return WeeklyTimes(times=tuple(_clock(t) for t in schedule["times"]),
                           weekdays=frozenset(schedule.get("weekdays") or range(1, 8)))
    if kind == "every_n_days":
        return EveryNDays(times=tuple(_clock(t) for t in schedule["times"]), every_days=schedule["every_days"])
    return HourlyWindow(window_start=_clock(schedule["window_start"]), window_end=_clock(schedule["window_end"]),
                        every_hours=schedule["every_hours"])


def schedule_of(reminder: dict) -> ReminderSchedule:
    """The domain schedule of a stored (or about to be stored) reminder."""
    schedule = reminder["schedule"]
    repeat = reminder.get("repeat") or {}
    return ReminderSchedule(
        reminder_id=reminder.get("_id", "new"),
        recurrence=_recurrence(schedule),
        start_date=date.fromisoformat(schedule["start_date"]),
        end_date=date.fromisoformat(schedule["end_date"]) if schedule.get("end_date") else None,
        completion_window_minutes=reminder["completion_window_min"],
        repeats=Repeats(count=repeat.get("count", 0), every_minutes=repeat.get("every_min", 0)),
    )


def silenced_times(reminder: dict, quiet: QuietHours | None) -> list[str]:
    """The reminder's wall-clock times (``HH:MM``) that the patient's quiet hours ``quiet`` keep from ever being
    pushed: the quiet hours last past the end of their completion window (companion.domain.quiet_hours.silenced).
    Empty when every time gets its push."""
    window = timedelta(minutes=reminder["completion_window_min"])
    return [t.strftime("%H:%M") for t in daily_times(_recurrence(reminder["schedule"])) if silenced(t, window, quiet)]


def check_reminder(reminder: dict, *, repeats: bool = True) -> None:
    """Refuse (422, per field) a reminder whose schedule is malformed or would never fire, or (``repeats``: the
    repeats or the window are being set) whose repeats do not fit inside its completion window: a change of
    either alone is checked against the other as stored, while a change of neither (a pause, a new title) is not
    held up by a reminder stored before this rule."""
    problems = schedule_problems(schedule_of(reminder))
    if problems:
        errors: dict[str, list[str]] = {}
        for problem in problems:
            errors.setdefault(f"schedule.{problem.field}", []).append(problem.reason)
        raise Invalid("this schedule would never remind you; see errors", errors=errors)
    if not repeats:
        return
    repeat, window = reminder.get("repeat"), reminder.get("completion_window_min")
    if repeat and window is not None and repeat["count"] * repeat["every_min"] > window:
        raise Invalid("repeats must fit inside the completion window",
                      errors={"repeat": [f"count x every_min must be at most completion_window_min ({window})"]})


def plans_of(reminder: dict) -> list[tuple[dict, datetime]]:
    """The schedules a stored reminder plans by, each as a reminder with that schedule and with the moment from which
    it plans: its schedule, from when it was set (``schedule_since``, or its creation); and those it keeps on the days
    before that schedule's start date (``earlier_schedules``: a change dated from a later day leaves the days until
    then as they were planned), each ending the day before, from the change."""
    created = reminder["created_at"]
    plans = [(reminder, max(created, reminder.get("schedule_since") or created))]
    return plans + [({**reminder, "schedule": kept["schedule"]}, max(created, kept["since"]))
                    for kept in reminder.get("earlier_schedules") or ()]


def slots_for(reminder: dict, history: TimeZoneHistory, start_utc: datetime, end_utc: datetime, *,
              as_planned: bool = True) -> list[ReminderOccurrence]:
    """The reminder's occurrences due in [start_utc, end_utc), each in the zone in force at its moment, of every
    schedule it plans by (``plans_of``): only those each schedule planned, due once it was set (no slot is made for
    a time before, so reading past days never adds reminders the patient never had); ``as_planned`` False: those
    due before too (an occurrence open at the change that the schedule still has stays open)."""
    found = []
    for planned, since in plans_of(reminder):
        begin = max(start_utc, since) if as_planned else start_utc
        if begin < end_utc:
            found += occurrences_with_history(schedule_of(planned), history, begin, end_utc)
    return found


def skipped_slots_for(reminder: dict, history: TimeZoneHistory, start_utc: datetime,
                      end_utc: datetime, *, new_schedule_too: bool = False) -> list[ReminderOccurrence]:
    """The reminder's slots jumped over by the patient's zone changes in [start_utc, end_utc) (travel east),
    each on the new clock; a reminder created (or its schedule changed) after a change has nothing skipped by
    it: the move jumped over slots of the schedule it had then, not of this one. ``new_schedule_too``: also the
    slots of a schedule changed since that its slots at the move still share (a kept slot the new schedule
    still has is still wanted)."""
    return [slot for planned, since in plans_of(reminder)
            for slot in slots_skipped_by_moves(schedule_of(planned), history, start_utc, end_utc)
            if slot.skipped_by_move_at > (reminder["created_at"] if new_schedule_too else since)]


def schedule_kept_until(reminder: dict, start: date, today: date, at: datetime) -> list[dict]:
    """What a reminder whose schedule is changed at ``at`` (``today`` on the patient's clock) to one starting on
    ``start`` keeps planning by on the days before it (its ``earlier_schedules`` after the change): the schedules it
    plans by now, each ending the day before ``start``, and planning from ``at`` at the earliest (what they planned
    before was made already). None when the new schedule starts today or before."""
    until = start - timedelta(days=1)
    kept = []
    for planned, since in plans_of(reminder):
        schedule = planned["schedule"]
        end = min(until, date.fromisoformat(schedule["end_date"])) if schedule.get("end_date") else until
        if end >= max(today, date.fromisoformat(schedule["start_date"])):
            kept.append({"schedule": {**schedule, "end_date": end.isoformat()}, "since": max(since, at)})
    return kept
