"""Which answers a reminder slot takes, and which slot of the day a late-arriving answer settles.

A phone reminds at the times of its copy of the patient's occurrences and sends the patient's answer (done or
skipped, with the moment they gave it) for the slot it showed. Its copy may be older than the server's: a move of
time zone westward moved the slot later on the UTC clock (the same slot, kept pending), or a change of the
reminder's time called the slot off and made another the same day (its *replacement*). A phone that did not sync
in between still reminds at the time it knows, and the patient answers that. So an answer is judged against every
window the slot was shown with (``Window``: its current one and those it was moved later from; a stale phone's
answer to a slot moved earlier comes after its time now and is taken as any late answer), never only the current:

- **Too early**: more than ``EARLY_MARK`` before every time the slot was shown due (a tap on tomorrow's slot, say):
  refused. An answer later than that is the patient's, however late (the slot missed meanwhile or not).
- **On time**: inside one of its windows (from ``EARLY_MARK`` before that due time to that window's end).
- **A slot called off** takes an answer given before it was called off (a phone offline meanwhile), or given
  inside one of the windows it was shown with (a phone that never heard of the call-off reminded then); any
  other answer is to a slot no longer the patient's.
- **Settled with it**: an answer on a slot called off settles the same reminder's slot of the same local date made
  by the change that called it off (its replacement: ``made_by`` equal to its ``called_off_by``) that is nearest in
  time, so that the one dose is not pushed again, counted missed, or counted twice: unless that slot was answered
  already (then the patient answered both). A slot the reminder had already (kept, or brought back by the change:
  a reminder stopped and started again brings its evening slot back, which replaces nothing) is no replacement;
  nor is any slot for an answer on a slot called off before changes were noted (the answer is still recorded).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

EARLY_MARK = timedelta(hours=1)  # an occurrence can be ticked off at most this long before it is due


@dataclass(frozen=True)
class Window:
    """A time a slot was shown due, and the end of its completion window then (UTC)."""

    due_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class DaySlot:
    """A slot of the same reminder and local date as an answered one, as the replacement rule reads it.

    ``made_at``: when it was made (or brought back), None when not known (stored before this was noted: taken for
    older than any call-off). ``state``: ``open`` (pending or missed), ``answered`` or ``called_off``.
    ``settled_by``: the slot whose answer settled it, if one did. ``made_by``: the change that made it new (None:
    kept, brought back, or made before changes were noted)."""

    occurrence_id: str
    due_at: datetime
    made_at: datetime | None
    state: str
    settled_by: str | None = None
    made_by: str | None = None


def too_early(at: datetime, windows: Iterable[Window]) -> bool:
    """Whether an answer given at ``at`` is more than ``EARLY_MARK`` before every time the slot was shown due."""
    return all(at < window.due_at - EARLY_MARK for window in windows)


def in_time(at: datetime, windows: Iterable[Window]) -> bool:
    """Whether an answer given at ``at`` lies inside a window the slot was shown with (from ``EARLY_MARK`` before
    its due time to its end)."""
    return any(window.due_at - EARLY_MARK <= at <= window.ends_at for window in windows)


def taken_after_call_off(at: datetime, windows: Iterable[Window], called_off_at: datetime) -> bool:
    """Whether a slot called off at ``called_off_at`` takes an answer given at ``at``: one given before the call-off
    that is not too early, or one inside a window the slot was shown with."""
    shown = list(windows)
    return (at <= called_off_at and not too_early(at, shown)) or in_time(at, shown)


def replacement(answered_id: str, answered_due: datetime, called_off_by: str | None,
                same_day: Iterable[DaySlot]) -> DaySlot | None:
    """The slot an answer on a slot called off (``answered_id``, due at ``answered_due``, called off by the change
    ``called_off_by``) settles, among the same reminder's slots of its local date: the one it settled already (a
    retry finishes what followed), else the slot that change made nearest in time to it (the earlier of two as
    near), if that one is open. None when there is none (a change not noted: ``called_off_by`` None), or when the
    nearest was answered itself."""
    slots = [slot for slot in same_day if slot.occurrence_id != answered_id]
    settled = [slot for slot in slots if slot.settled_by == answered_id]
    if settled:
        return settled[0]
    if called_off_by is None:
        return None
    made_since = [slot for slot in slots if slot.state != "called_off" and slot.made_by == called_off_by]
    if not made_since:
        return None
    nearest = min(made_since, key=lambda slot: (abs(slot.due_at - answered_due), slot.due_at))
    return nearest if nearest.state == "open" else None
