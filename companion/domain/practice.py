"""Mindfulness practice as the figures count it: one stretch of practice recorded twice counts once.

The same practice can be recorded more than once: by the patient and by a caregiver allowed to record for
them, from two phones, or by an app that restarted without its first request's Idempotency-Key. Every
record is kept as it was logged; the figures (minutes of a day and a week, the number of practices, the
adherence snapshots and what is built on them) count the **union** of the patient's completed practices, as
TENS counts a unit's overlapping sessions once (``sessions.overlaps``):

* a completed practice spans its minutes from its start: ``[started_at, started_at + minutes]`` (the minutes
  recorded, which are never more than the time that passed nor than the item lasts);
* practices are taken in order of start (ties by id); each counts only its minutes outside every earlier
  one, on the day it started, to the tenth of a minute the figures show (as a TENS session counts:
  ``sessions.counted_minutes_shown``), so that the practices listed add up to their day and a day shown at its
  target is met;
* an overlap of no more than ``ROUNDING_SLACK`` is none: the minutes are stored to the tenth, so a practice's end
  as read here may be up to half a tenth (3 s) after the moment it ended, and the next practice begun then, back
  to back, would "overlap" it by that much (two 6-minute practices would count 11.97 minutes, shown as 12.0);
* one that overlaps earlier ones by more than ``OVERLAP_SLACK`` (a minute) is not a practice of its own: it is
  left out of the number of practices (its minutes outside them still count).

Computed when the figures are read, from the records, never stored on them: a practice completed late (or a
duplicate completed before the original) changes what the practices after it count, and a number stored on
each of those would have to be rewritten by whichever completion came last, which two completions at once
could each miss. Read, it is the same in every view that reads the records from ``REACH`` before the first
practice it counts: no practice spans more than ``REACH`` (the longest item of the library), so none started
earlier can overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from companion.domain.content_library import DURATION_MIN_RANGE

REACH = timedelta(minutes=DURATION_MIN_RANGE[1])
OVERLAP_SLACK = timedelta(minutes=1)
# Half the tenth of a minute a practice's minutes are stored to (companion.services.library): what rounding alone can
# make two practices back to back overlap by.
ROUNDING_SLACK = timedelta(minutes=0.05)


@dataclass(frozen=True)
class Practised:
    """A completed practice as the counting rule sees it: ``minutes`` practised from ``start``."""

    key: str
    start: datetime
    minutes: float


@dataclass(frozen=True)
class PracticeCount:
    """What one practice adds to the figures: its minutes outside earlier practices, and whether it is a
    practice of its own (``own``)."""

    minutes: float
    own: bool


class PracticeUnion:
    """The union of the practices counted so far, which are given one at a time in order of (start, key) (so a
    long export is counted as it streams)."""

    def __init__(self) -> None:
        self._covered_until: datetime | None = None  # where the union of those so far ends (it reaches the start)
        self._last: tuple[datetime, str] | None = None

    def add(self, practice: Practised) -> PracticeCount:
        """What ``practice`` counts after those added before it. ValueError for one out of order."""
        if self._last is not None and (practice.start, practice.key) < self._last:
            raise ValueError("practices must come in order of start, then key")
        self._last = practice.start, practice.key
        end = practice.start + timedelta(minutes=max(practice.minutes, 0.0))
        overlap = timedelta(0)
        if self._covered_until is not None and self._covered_until - practice.start > ROUNDING_SLACK:
            overlap = min(end, self._covered_until) - practice.start
        # Never more than REACH: what any view reads before its first practice is all that can cover that one.
        reach = practice.start + min(end - practice.start, REACH)
        self._covered_until = reach if self._covered_until is None else max(self._covered_until, reach)
        outside = (end - practice.start) - overlap
        return PracticeCount(round(outside.total_seconds() / 60, 1), overlap <= OVERLAP_SLACK)
