"""Pain measures: the 0-10 numeric rating scale (NRS), the Brief Pain Inventory short form, flares,
and the change in pain around a TENS session.

Flare rule (one of two, both on NRS entries):

* ``two_high``: this entry is >= 7 and another entry >= 7 was recorded in the 24 hours before it
  (``recorded_at - 24 h <= other < recorded_at``).
* ``above_median``: this entry is at least 3 points above the median of the patient's entries of the
  14 days before it (``recorded_at - 14 d <= other < recorded_at``, the entry itself excluded). With
  fewer than 3 such entries there is no baseline to compare with, and this rule does not apply.

Before/after pairing for a TENS session: entries the app linked to the session (``session_id`` with
``role`` "before" or "after") win; otherwise the latest entry in the hour before the session start and
the earliest entry in the two hours after its end are used. Change = after - before (negative = relief).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from statistics import fmean, median

NRS_MIN, NRS_MAX = 0, 10
FLARE_HIGH_SCORE = 7
FLARE_HIGH_WITHIN = timedelta(hours=24)
FLARE_ABOVE_MEDIAN = 3
MEDIAN_WINDOW = timedelta(days=14)
MEDIAN_MIN_ENTRIES = 3
BPI_INTERFERENCE_MIN_ANSWERED = 4


def validate_nrs(score: object) -> int:
    """Return ``score`` as an NRS rating (an integer 0-10); raise ``ValueError`` otherwise."""
    if isinstance(score, bool) or not isinstance(score, int):
        raise ValueError("pain is a whole number from 0 to 10")
    if not NRS_MIN <= score <= NRS_MAX:
        raise ValueError(f"pain must be between 0 and 10, got {score}")
    return score


class Role(StrEnum):
    """How a diary entry relates to a TENS session."""

    BEFORE = "before"
    AFTER = "after"


@dataclass(frozen=True)
class PainEntry:
    """One NRS rating in the pain diary, optionally linked to a TENS session as before/after."""

    entry_id: str
    recorded_at_utc: datetime
    score: int
    session_id: str | None = None
    role: Role | None = None


@dataclass(frozen=True)
class BriefPainInventory:
    """The BPI short form: four severity items (all required) and seven interference items (optional).

    Interference items, in order: general activity, mood, walking ability, normal work, relations with
    other people, sleep, enjoyment of life.
    """

    worst: int
    least: int
    average: int
    now: int
    interference: tuple[int | None, ...] = (None,) * 7


def bpi_severity_problems(worst: int, least: int, average: int, now: int) -> dict[str, str]:
    """Return why the four severity answers of a BPI short form contradict each other, by item (empty: none).

    The short form (Cleeland, *The Brief Pain Inventory User Guide*, MD Anderson Cancer Center, 2009; items
    3-6) asks for the pain "at its worst in the last 24 hours", "at its least in the last 24 hours", "on the
    average" and "right now". Worst and least bound the same 24 hours, and the average and the pain right
    now both lie inside them (now is part of the last 24 hours; an average cannot leave the range it
    averages), so: least <= average <= worst and least <= now <= worst. Equal answers are consistent (pain
    that did not vary). Each contradiction is reported on the item that breaks it against ``worst``/``least``.
    """
    problems: dict[str, str] = {}
    if least > worst:
        problems["least"] = f"the least pain ({least}) cannot be above the worst pain ({worst}) of the same 24 hours"
    for item, value in (("average", average), ("now", now)):
        if value > worst:
            problems[item] = f"cannot be above the worst pain of the last 24 hours ({worst})"
        elif value < least:
            problems[item] = f"cannot be below the least pain of the last 24 hours ({least})"
    return problems


def validate_bpi(form: BriefPainInventory) -> BriefPainInventory:
    """Return ``form`` when every answered item is 0-10, the severity items agree with each other
    (``bpi_severity_problems``) and there are seven interference slots; raise ``ValueError`` otherwise."""
    for value in (form.worst, form.least, form.average, form.now):
        validate_nrs(value)
    problems = bpi_severity_problems(form.worst, form.least, form.average, form.now)
    if problems:
        raise ValueError("; ".join(f"{item}: {reason}" for item, reason in problems.items()))
    if len(form.interference) != 7:
        raise ValueError("the Brief Pain Inventory has 7 interference items")
    for value in form.interference:
        if value is not None:
            validate_nrs(value)
    return form


def bpi_severity(form: BriefPainInventory) -> float:
    """Return the BPI pain severity score: the mean of worst, least, average and now."""
    return fmean((form.worst, form.least, form.average, form.now))


def bpi_interference(form: BriefPainInventory) -> float | None:
    """Return the BPI interference score (mean of answered items), or ``None`` with fewer than 4 answered."""
    answered = [v for v in form.interference if v is not None]
    if len(answered) < BPI_INTERFERENCE_MIN_ANSWERED:
        return None
    return fmean(answered)


def median_pain(
    entries: Sequence[PainEntry], before: datetime, window: timedelta = MEDIAN_WINDOW
) -> float | None:
    """Return the median score of entries in ``[before - window, before)``, or ``None`` when there are none."""
    scores = [e.score for e in entries if before - window <= e.recorded_at_utc < before]
    return median(scores) if scores else None


class FlareReason(StrEnum):
    """Which flare rule matched."""

    TWO_HIGH = "two_high"
    ONE_HIGH = "one_high"
    ABOVE_MEDIAN = "above_median"


@dataclass(frozen=True)
class Flare:
    """A pain flare found at ``entry``; ``baseline_median`` is set for the above-median rule."""

    entry: PainEntry
    reason: FlareReason
    baseline_median: float | None = None


def flare_at(entry: PainEntry, history: Sequence[PainEntry], *, high_readings: int = 2) -> Flare | None:
    """Tell whether ``entry`` is a pain flare given the patient's other entries (module docstring rule).

    ``history`` may include ``entry`` itself and later entries; only earlier ones are used.
    ``high_readings`` is how many readings of 7 or more within 24 hours make a flare: 2 for
    caregiver and clinician alerts (one bad moment should not page anyone), 1 for the patient's
    own suggestions after a bad moment.
    """
    earlier = [
        e for e in history if e.recorded_at_utc < entry.recorded_at_utc and e.entry_id != entry.entry_id
    ]
    if entry.score >= FLARE_HIGH_SCORE and any(
        e.score >= FLARE_HIGH_SCORE and e.recorded_at_utc >= entry.recorded_at_utc - FLARE_HIGH_WITHIN
        for e in earlier
    ):
        return Flare(entry, FlareReason.TWO_HIGH)
    baseline = [e for e in earlier if e.recorded_at_utc >= entry.recorded_at_utc - MEDIAN_WINDOW]
    if len(baseline) >= MEDIAN_MIN_ENTRIES:
        middle = median(e.score for e in baseline)
        if entry.score >= middle + FLARE_ABOVE_MEDIAN:
            return Flare(entry, FlareReason.ABOVE_MEDIAN, middle)
    if high_readings == 1 and entry.score >= FLARE_HIGH_SCORE:
        return Flare(entry, FlareReason.ONE_HIGH)
    return None


def flares(entries: Sequence[PainEntry]) -> list[Flare]:
    """Return every flare in ``entries``, in recording order."""
    ordered = sorted(entries, key=lambda e: e.recorded_at_utc)
    return [flare for entry in ordered if (flare := flare_at(entry, ordered)) is not None]


@dataclass(frozen=True)
class SessionPainChange:
    """Ratings before and after a TENS session and the change (after - before; negative = relief)."""

    before: PainEntry
    after: PainEntry
    change: int


def pain_change_for_session(
    session_id: str,
    started_at_utc: datetime,
    ended_at_utc: datetime,
    entries: Sequence[PainEntry],
    before_within: timedelta = timedelta(hours=1),
    after_within: timedelta = timedelta(hours=2),
) -> SessionPainChange | None:
    """Pair a before and an after rating around a TENS session; ``None`` when either is missing."""
    linked_before = [e for e in entries if e.session_id == session_id and e.role == Role.BEFORE]
    linked_after = [e for e in entries if e.session_id == session_id and e.role == Role.AFTER]
    before_candidates = linked_before or [
        e
        for e in entries
        if e.role is None and started_at_utc - before_within <= e.recorded_at_utc <= started_at_utc
    ]
    after_candidates = linked_after or [
        e
        for e in entries
        if e.role is None and ended_at_utc <= e.recorded_at_utc <= ended_at_utc + after_within
    ]
    if not before_candidates or not after_candidates:
        return None
    before = max(before_candidates, key=lambda e: e.recorded_at_utc)
    after = min(after_candidates, key=lambda e: e.recorded_at_utc)
    return SessionPainChange(before, after, after.score - before.score)
