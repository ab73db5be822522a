"""The patient's quiet hours: a daily stretch of wall-clock time when non-urgent nudges wait.

``QuietHours(start, end)`` covers ``start <= t < end``. When ``start > end`` it wraps midnight
(22:00-07:00 covers 23:30 and 06:59, not 07:00). ``start == end`` means no quiet hours at all (an
all-day silence would swallow every reminder, so it is not offered). A deferred nudge goes out when
quiet hours end on the patient's clock; an end time in a DST gap resolves like any reminder time
(``companion.domain.localtime``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.domain.localtime import require_utc, resolve_local


@dataclass(frozen=True)
class QuietHours:
    """Local wall-clock quiet hours, ``start`` inclusive, ``end`` exclusive; may wrap midnight."""

    start: time
    end: time


def in_quiet_hours(local_time: time, quiet: QuietHours | None) -> bool:
    """Tell whether wall-clock ``local_time`` falls inside ``quiet`` (``None`` means no quiet hours)."""
    if quiet is None or quiet.start == quiet.end:
        return False
    t = local_time.replace(tzinfo=None, fold=0)
    if quiet.start < quiet.end:
        return quiet.start <= t < quiet.end
    return t >= quiet.start or t < quiet.end


def next_allowed(due_utc: datetime, tz: ZoneInfo, quiet: QuietHours | None) -> datetime:
    """Return when a non-urgent nudge due at ``due_utc`` may go out: at once, or when quiet hours end."""
    due = require_utc(due_utc, "due_utc")
    local = due.astimezone(tz)
    if quiet is None or not in_quiet_hours(local.time(), quiet):
        return due
    end_date = local.date()
    if quiet.start > quiet.end and local.time().replace(tzinfo=None, fold=0) >= quiet.start:
        end_date += timedelta(days=1)
    end = resolve_local(end_date, quiet.end, tz)
    if end <= due:
        # The end's wall time happens twice (the autumn change) and the nudge is due in the repeated hour,
        # after its first passing: the quiet hours end at its second.
        second = datetime.combine(end_date, quiet.end).replace(tzinfo=tz, fold=1).astimezone(UTC)
        return second if second > due else due
    return end


def silenced(local_time: time, window: timedelta, quiet: QuietHours | None) -> bool:
    """Whether a reminder due at wall-clock ``local_time``, open for ``window``, is never pushed: ``quiet`` covers its
    due time and lasts at least until its window ends, so its first push, which waits for their end
    (:func:`next_allowed`), would come with the window closed (and its nudges fall inside them too). Judged on an
    ordinary day; on a day the clocks change, the quiet hours are an hour longer or shorter in real time."""
    if quiet is None or not in_quiet_hours(local_time, quiet):
        return False
    until_end = (_minute_of_day(quiet.end) - _minute_of_day(local_time)) % (24 * 60)
    return timedelta(minutes=until_end) >= window


def _minute_of_day(clock: time) -> int:
    return clock.hour * 60 + clock.minute
