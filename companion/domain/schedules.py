"""Reminder schedules in wall-clock terms, and the occurrences they produce in a patient's zone.

A schedule says *when on the patient's clock* a reminder comes: at given times on chosen weekdays
(``WeeklyTimes``), at given times every N days from the start date (``EveryNDays``), or every N hours
inside a daily window (``HourlyWindow``, e.g. 08:00-20:00 every 3 h fires 08, 11, 14, 17, 20: both window
ends are included). Every schedule has a start date, an optional end date (inclusive), a completion window
and optional repeats.

DST policy (see ``companion.domain.localtime``): a time in the spring-forward gap fires at the first
valid instant after the gap (New York 2025-03-09 02:30 fires at 03:00 EDT); a time that happens twice at
fall-back fires once, at its first occurrence. Every local day with a configured time yields exactly one
occurrence for it, whatever the offset does.

Occurrence ids are a hash of (reminder id, local date, local time) and nothing else, so recomputing a
range, or recomputing after the patient changes zone, never produces a second occurrence for the same
slot on the patient's clock.

Two slots of one day that resolve to the same instant (02:30 and 03:00 on a spring-forward day in New
York both fall due at 03:00 EDT) stay two occurrences, each to be done and recorded, but share one push:
the later ones name the earliest in ``push_with``.

Travel: with a ``TimeZoneHistory`` an occurrence belongs to the zone in force at its due instant. Each
zone is asked only for occurrences due while it is in force, so no instant is covered twice or not at
all. A slot (local date + time) that falls due in both zones (flying west: 08:00 in London, then 08:00
in New York on the same date) is reported once, at its first due instant. Flying east, a slot whose
time has already passed on the new clock at the switch, and had not yet come on the old clock, is
*skipped by the move* (``slots_skipped_by_moves``): it is never dropped. It keeps its place on the new
clock (due before the switch, flagged with the switch instant in ``skipped_by_move_at``) so that the
patient can still record it; the service decides what its status is (see companion.services.reminders).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.domain.localtime import TimeZoneHistory, require_utc, resolve_local

MAX_COMPLETION_WINDOW_MINUTES = 24 * 60


@dataclass(frozen=True)
class WeeklyTimes:
    """At each of ``times`` on each ISO weekday in ``weekdays`` (1 = Monday ... 7 = Sunday)."""

    times: tuple[time, ...]
    weekdays: frozenset[int] = frozenset(range(1, 8))


@dataclass(frozen=True)
class EveryNDays:
    """At each of ``times`` on the start date and every ``every_days`` days after it."""

    times: tuple[time, ...]
    every_days: int = 1


@dataclass(frozen=True)
class HourlyWindow:
    """Every ``every_hours`` hours from ``window_start`` up to and including ``window_end``, each day.

    The window must not cross midnight (use two reminders for a night window).
    """

    window_start: time
    window_end: time
    every_hours: int


Recurrence = WeeklyTimes | EveryNDays | HourlyWindow


@dataclass(frozen=True)
class Repeats:
    """Nudge again ``count`` times, every ``every_minutes`` minutes, while the occurrence is not done."""

    count: int = 0
    every_minutes: int = 0


@dataclass(frozen=True)
class ReminderSchedule:
    """A reminder's recurrence, its dates (end inclusive), completion window and repeats."""

    reminder_id: str
    recurrence: Recurrence
    start_date: date
    end_date: date | None = None
    completion_window_minutes: int = 60
    repeats: Repeats = field(default_factory=Repeats)


@dataclass(frozen=True)
class ReminderOccurrence:
    """One due slot of a reminder: when it is due on the patient's clock and in UTC.

    ``push_with``: the id of an earlier slot due at the same instant whose push this one shares (DST gap).
    ``skipped_by_move_at``: the instant of the zone change that jumped over this slot (travel east).
    """

    reminder_id: str
    local_date: date
    local_time: time
    due_at_utc: datetime
    window_ends_at_utc: datetime
    occurrence_id: str
    push_with: str | None = None
    skipped_by_move_at: datetime | None = None


@dataclass(frozen=True)
class ScheduleProblem:
    """Why a schedule is rejected: the offending field and a sentence a patient or clinician can read."""

    field: str
    reason: str


def occurrence_id_for(reminder_id: str, local_date: date, local_time: time) -> str:
    """Return the stable id of the slot (reminder, local date, local time): 32 hex characters."""
    key = f"{reminder_id}|{local_date.isoformat()}|{local_time.strftime('%H:%M')}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _whole_minutes(value: time) -> bool:
    return value.second == 0 and value.microsecond == 0


def _check_times(times: tuple[time, ...]) -> list[ScheduleProblem]:
    if not times:
        return [ScheduleProblem("times", "choose at least one time of day")]
    if not all(_whole_minutes(t) for t in times):
        return [ScheduleProblem("times", "times of day are whole minutes (no seconds)")]
    return []


def _weekly_fires_between(weekdays: frozenset[int], start: date, end: date | None) -> bool:
    if end is None or (end - start).days >= 6:
        return True
    days = (start + timedelta(days=n) for n in range((end - start).days + 1))
    return any(day.isoweekday() in weekdays for day in days)


def schedule_problems(schedule: ReminderSchedule) -> list[ScheduleProblem]:
    """List why ``schedule`` is invalid or would never fire; an empty list means it is acceptable."""
    problems: list[ScheduleProblem] = []
    if schedule.end_date is not None and schedule.end_date < schedule.start_date:
        problems.append(ScheduleProblem("end_date", "the end date is before the start date"))
    if not 1 <= schedule.completion_window_minutes <= MAX_COMPLETION_WINDOW_MINUTES:
        problems.append(
            ScheduleProblem("completion_window_minutes", "the completion window is 1 minute to 24 hours")
        )
    repeats = schedule.repeats
    if repeats.count < 0:
        problems.append(ScheduleProblem("repeats.count", "the number of repeats cannot be negative"))
    if repeats.count > 0 and repeats.every_minutes < 1:
        problems.append(
            ScheduleProblem("repeats.every_minutes", "repeats need an interval of at least 1 minute")
        )
    recurrence = schedule.recurrence
    if isinstance(recurrence, WeeklyTimes):
        problems += _check_times(recurrence.times)
        if not recurrence.weekdays:
            problems.append(ScheduleProblem("weekdays", "choose at least one day of the week"))
        elif not recurrence.weekdays <= frozenset(range(1, 8)):
            problems.append(ScheduleProblem("weekdays", "weekdays are 1 (Monday) to 7 (Sunday)"))
        elif not problems and not _weekly_fires_between(
            recurrence.weekdays, schedule.start_date, schedule.end_date
        ):
            problems.append(
                ScheduleProblem(
                    "weekdays", "none of the chosen weekdays falls between the start and end dates"
                )
            )
    elif isinstance(recurrence, EveryNDays):
        problems += _check_times(recurrence.times)
        if recurrence.every_days < 1:
            problems.append(ScheduleProblem("every_days", "repeat every 1 day or more"))
    elif isinstance(recurrence, HourlyWindow):
        if recurrence.every_hours < 1:
            problems.append(ScheduleProblem("every_hours", "repeat every 1 hour or more"))
        if not (_whole_minutes(recurrence.window_start) and _whole_minutes(recurrence.window_end)):
            problems.append(ScheduleProblem("window", "window times are whole minutes (no seconds)"))
        if recurrence.window_end <= recurrence.window_start:
            problems.append(ScheduleProblem("window", "the window must end after it starts, on the same day"))
        elif recurrence.every_hours >= 1 and _window_minutes(recurrence) < recurrence.every_hours * 60:
            problems.append(
                ScheduleProblem(
                    "every_hours",
                    "the window is shorter than the interval, so it would only ever fire at its start",
                )
            )
    else:
        problems.append(ScheduleProblem("recurrence", "unknown kind of recurrence"))
    return problems


def validate_schedule(schedule: ReminderSchedule) -> ReminderSchedule:
    """Return ``schedule`` unchanged when it is acceptable, else raise ``InvalidSchedule`` with the problems."""
    problems = schedule_problems(schedule)
    if problems:
        raise InvalidSchedule(problems)
    return schedule


class InvalidSchedule(ValueError):
    """A schedule that is malformed or would never fire; ``problems`` says why."""

    def __init__(self, problems: list[ScheduleProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.reason}" for p in problems))
        self.problems = problems


def _window_minutes(recurrence: HourlyWindow) -> int:
    start = recurrence.window_start.hour * 60 + recurrence.window_start.minute
    end = recurrence.window_end.hour * 60 + recurrence.window_end.minute
    return end - start


def daily_times(recurrence: Recurrence) -> tuple[time, ...]:
    """The wall-clock times ``recurrence`` fires at on a day it fires, earliest first."""
    if isinstance(recurrence, WeeklyTimes | EveryNDays):
        return tuple(sorted(set(recurrence.times)))
    start = recurrence.window_start.hour * 60 + recurrence.window_start.minute
    steps = range(start, start + _window_minutes(recurrence) + 1, recurrence.every_hours * 60)
    return tuple(time(minute // 60, minute % 60) for minute in steps)


def times_on(schedule: ReminderSchedule, local_date: date) -> tuple[time, ...]:
    """Return the wall-clock times at which ``schedule`` fires on ``local_date``, earliest first."""
    if local_date < schedule.start_date or (schedule.end_date is not None and local_date > schedule.end_date):
        return ()
    recurrence = schedule.recurrence
    if isinstance(recurrence, WeeklyTimes) and local_date.isoweekday() not in recurrence.weekdays:
        return ()
    if isinstance(recurrence, EveryNDays) and (local_date - schedule.start_date).days % recurrence.every_days:
        return ()
    return daily_times(recurrence)


def occurrence_on(
    schedule: ReminderSchedule, local_date: date, local_time: time, tz: ZoneInfo
) -> ReminderOccurrence:
    """Build the occurrence of ``schedule`` for the slot ``local_date local_time`` on the clock of ``tz``."""
    due = resolve_local(local_date, local_time, tz)
    return ReminderOccurrence(
        reminder_id=schedule.reminder_id,
        local_date=local_date,
        local_time=local_time,
        due_at_utc=due,
        window_ends_at_utc=due + timedelta(minutes=schedule.completion_window_minutes),
        occurrence_id=occurrence_id_for(schedule.reminder_id, local_date, local_time),
    )


def occurrences(
    schedule: ReminderSchedule, tz: ZoneInfo, start_utc: datetime, end_utc: datetime
) -> Iterator[ReminderOccurrence]:
    """Yield the occurrences of ``schedule`` in ``tz`` due in ``[start_utc, end_utc)``, by due time.

    The schedule is assumed valid (see ``validate_schedule``).
    """
    start, end = require_utc(start_utc, "start_utc"), require_utc(end_utc, "end_utc")
    if end <= start:
        return
    # One day of margin each side: an offset change can move a slot across the UTC date boundary.
    first_day = max(start.astimezone(tz).date() - timedelta(days=1), schedule.start_date)
    last_day = end.astimezone(tz).date() + timedelta(days=1)
    if schedule.end_date is not None:
        last_day = min(last_day, schedule.end_date)
    found = []
    day = first_day
    while day <= last_day:
        for local_time in times_on(schedule, day):
            occurrence = occurrence_on(schedule, day, local_time, tz)
            if start <= occurrence.due_at_utc < end:
                found.append(occurrence)
        day += timedelta(days=1)
    found.sort(key=lambda o: (o.due_at_utc, o.local_date, o.local_time))
    yield from merge_colliding_pushes(found)


def merge_colliding_pushes(found: list[ReminderOccurrence]) -> list[ReminderOccurrence]:
    """Return the occurrences (sorted by due time) with every slot due at the same instant as an earlier
    one of the same reminder marked to share that earlier slot's push (``push_with``)."""
    leaders: dict[tuple[str, datetime], str] = {}
    merged = []
    for occurrence in found:
        key = (occurrence.reminder_id, occurrence.due_at_utc)
        leader = leaders.setdefault(key, occurrence.occurrence_id)
        merged.append(occurrence if leader == occurrence.occurrence_id else replace(occurrence, push_with=leader))
    return merged


def occurrences_with_history(
    schedule: ReminderSchedule, history: TimeZoneHistory, start_utc: datetime, end_utc: datetime
) -> list[ReminderOccurrence]:
    """Return the occurrences due in ``[start_utc, end_utc)`` while the patient moves between zones.

    Each occurrence is computed in the zone in force at its due instant; a slot reached in two zones is
    kept once, at its first due instant (module docstring).
    """
    seen: set[str] = set()
    result: list[ReminderOccurrence] = []
    for piece_start, piece_end, zone in history.segments(start_utc, end_utc):
        for occurrence in occurrences(schedule, zone, piece_start, piece_end):
            if occurrence.occurrence_id not in seen:
                seen.add(occurrence.occurrence_id)
                result.append(occurrence)
    return result


def slots_skipped_by_moves(
    schedule: ReminderSchedule, history: TimeZoneHistory, start_utc: datetime, end_utc: datetime
) -> list[ReminderOccurrence]:
    """Return the slots jumped over by the zone changes that take effect in ``[start_utc, end_utc)``.

    A change at instant T from zone A to zone B skips a slot when the slot had not yet come on A's clock
    (due at or after T there) and had already passed on B's clock (due before T there), and no zone of
    the history brings it due while that zone is in force (flying back west the same day would). Each is
    returned as its occurrence in B (so due before T), with ``skipped_by_move_at`` = T. Together with
    ``occurrences_with_history`` every slot of the schedule is accounted for exactly once.
    """
    start, end = require_utc(start_utc, "start_utc"), require_utc(end_utc, "end_utc")
    zones = {ZoneInfo(c.zone) for c in history.changes}
    skipped: list[ReminderOccurrence] = []
    seen: set[tuple[date, time]] = set()  # a slot two moves of the same day jump over is skipped once (the first)
    for before, change in zip(history.changes, history.changes[1:], strict=False):
        moment = change.effective_from_utc
        if not start <= moment < end or before.zone == change.zone:
            continue
        old, new = ZoneInfo(before.zone), ZoneInfo(change.zone)
        days = {moment.astimezone(old).date(), moment.astimezone(new).date()}
        day, last = min(days) - timedelta(days=1), max(days) + timedelta(days=1)
        while day <= last:
            for local_time in times_on(schedule, day):
                jumped = resolve_local(day, local_time, new) < moment <= resolve_local(day, local_time, old)
                if jumped and (day, local_time) not in seen and not _falls_due_somewhere(day, local_time, history,
                                                                                         zones):
                    seen.add((day, local_time))
                    slot = occurrence_on(schedule, day, local_time, new)
                    skipped.append(replace(slot, skipped_by_move_at=moment))
            day += timedelta(days=1)
    return sorted(skipped, key=lambda o: (o.due_at_utc, o.local_date, o.local_time))


def _falls_due_somewhere(local_date: date, local_time: time, history: TimeZoneHistory, zones: set[ZoneInfo]) -> bool:
    """Whether the slot comes due in some zone of the history while that zone is in force."""
    return any(history.zone_at(resolve_local(local_date, local_time, zone)) == zone for zone in zones)


def nudge_times(occurrence: ReminderOccurrence, repeats: Repeats) -> tuple[datetime, ...]:
    """Return the first reminder and its repeats, stopping before the end of the completion window."""
    nudges = [occurrence.due_at_utc]
    for n in range(1, max(repeats.count, 0) + 1):
        at = occurrence.due_at_utc + timedelta(minutes=n * repeats.every_minutes)
        if at >= occurrence.window_ends_at_utc:
            break
        nudges.append(at)
    return tuple(nudges)


def snoozed_until(occurrence: ReminderOccurrence, now_utc: datetime, snooze_minutes: int) -> datetime | None:
    """Return when a snoozed reminder nudges again, capped at the window end.

    The snooze counts from now, or from the due time when it comes before the reminder is due ("remind me
    ten minutes later than planned"): a snooze never brings a reminder forward. Returns ``None`` when the
    window has already closed (nothing more to nudge about). Raises ``ValueError`` for a snooze shorter
    than 1 minute.
    """
    if snooze_minutes < 1:
        raise ValueError("snooze for at least 1 minute")
    now = require_utc(now_utc, "now_utc")
    if now >= occurrence.window_ends_at_utc:
        return None
    base = max(now, occurrence.due_at_utc)
    return min(base + timedelta(minutes=snooze_minutes), occurrence.window_ends_at_utc)


def changed_schedule_starts(changed_at_utc: datetime, slots_that_day: list[ReminderOccurrence], seen_that_day: int,
                            next_day_utc: datetime, kept: frozenset[str] = frozenset()) -> datetime:
    """Return when a reminder whose schedule changed at ``changed_at_utc`` plans its new slots from.

    From the change: no slot is made for a time before it (a reminder the patient never had, marked missed).
    A time the new schedule keeps (``kept``: the ids of that day's slots it still has, the same time) keeps its
    slot, whatever the patient did with it. The doses of the patient's day of the change already seen to that the
    change does not keep (``seen_that_day``: answered, or reminded of and not called off by it) stand for the
    first of that day's changed times on the new schedule (``slots_that_day`` not kept), in order: the new
    schedule reminds that day only of the changed times after those, and when none is left it starts the next day
    (``next_day_utc``, the start of it); never past a kept slot still to come. Moving today's only dose from 09:30
    to 20:00 once it was taken does not remind of it again today; moving the second of two from 18:00 to 21:00 on
    the day the first was taken does; removing 08:00 of 08:00 and 20:00 once 08:00 was reminded of leaves 20:00.
    """
    at = require_utc(changed_at_utc, "changed_at_utc")
    if seen_that_day <= 0:
        return at
    ordered = sorted((slot for slot in slots_that_day if slot.occurrence_id not in kept), key=lambda slot: slot.due_at_utc)
    since = ordered[seen_that_day].due_at_utc if seen_that_day < len(ordered) else require_utc(next_day_utc, "next_day_utc")
    to_come = [slot.due_at_utc for slot in slots_that_day if slot.occurrence_id in kept and slot.due_at_utc >= at]
    return max(at, min([since, *to_come]))
