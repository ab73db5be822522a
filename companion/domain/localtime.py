"""Wall-clock time in a patient's IANA zone, and the history of the patient's zones.

DST policy (used by every reminder, quiet-hours and summary rule):

* A local time that does not exist (the spring-forward gap) resolves to the first valid instant after
  the gap, which is the transition instant itself. America/New_York 2025-03-09 02:30 resolves to
  03:00 EDT (07:00 UTC); Australia/Lord_Howe 2025-10-05 02:15 resolves to 02:30 +11:00 (15:30 UTC).
  This is deliberately NOT Python's ``fold=0`` reading of a gap time (which would give 03:30 EDT):
  a reminder should come as soon as the clock allows, not an hour late.
* A local time that happens twice (the fall-back overlap) resolves once, to its first occurrence
  (``fold=0``, the offset in force before the transition).

A zone history is a list of ``(effective_from_utc, zone)`` entries: the zone in force at an instant is
that of the latest entry whose ``effective_from_utc`` is at or before the instant. The earliest entry's
zone also applies to every instant before it (it is the zone the patient registered with).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

# How far ahead of the server a moment a phone reports may lie (its clock runs a little fast): accepted, and it
# counts once its time comes.
REPORTED_AHEAD = timedelta(minutes=5)


def zone_named(name: str) -> ZoneInfo:
    """Return the IANA zone called ``name``; raise ``ValueError`` for an unknown or malformed name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


@cache
def _zone_names() -> frozenset[str]:
    # "localtime" is this server's own zone (a link to /etc/localtime), not a zone of the IANA database: a patient
    # given it would follow the server's clock, and another server may have no such file.
    return frozenset(available_timezones() - {"localtime"})


def is_known_zone(name: str) -> bool:
    """Tell whether ``name`` is an IANA zone this installation knows (by its name in the database: not a file
    of the zone directory such as ``right/Europe/London``, ``posixrules`` or ``localtime``)."""
    return isinstance(name, str) and name in _zone_names()


def require_utc(instant: datetime, name: str = "instant") -> datetime:
    """Return ``instant`` in UTC; raise ``ValueError`` when it is naive (has no offset)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return instant.astimezone(UTC)


def _exists(naive: datetime, tz: ZoneInfo) -> bool:
    round_trip = naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    return round_trip == naive


def resolve_local(local_date: date, local_time: time, tz: ZoneInfo) -> datetime:
    """Return the UTC instant at which wall-clock ``local_date local_time`` happens in ``tz``.

    Gap times go to the end of the gap, repeated times to their first occurrence (module docstring).
    """
    naive = datetime.combine(local_date, local_time.replace(tzinfo=None, fold=0))
    if _exists(naive, tz):
        return naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    # Inside a gap: fold=1 reads the time with the offset after the transition (an instant before it)
    # and fold=0 with the offset before it (an instant after it). The transition lies between.
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    after_offset = high.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(tz).utcoffset() == after_offset:
            high = middle
        else:
            low = middle
    return high


def local_date_of(instant: datetime, tz: ZoneInfo) -> date:
    """Return the patient's calendar date at ``instant`` (a timezone-aware datetime) in ``tz``."""
    return require_utc(instant).astimezone(tz).date()


@dataclass(frozen=True)
class ZoneChange:
    """From ``effective_from_utc`` on, the patient lives in ``zone`` (an IANA name)."""

    effective_from_utc: datetime
    zone: str


@dataclass(frozen=True)
class TimeZoneHistory:
    """The patient's zones over time, oldest first. Build with ``TimeZoneHistory.of(...)``."""

    changes: tuple[ZoneChange, ...]

    @classmethod
    def of(cls, changes: Sequence[tuple[datetime, str]] | Sequence[ZoneChange]) -> TimeZoneHistory:
        """Build a history from ``(effective_from_utc, zone_name)`` pairs in any order.

        Raises ``ValueError`` when empty, when a zone is unknown, when an instant is naive, or when
        two changes take effect at the same instant.
        """
        items = [c if isinstance(c, ZoneChange) else ZoneChange(c[0], c[1]) for c in changes]
        if not items:
            raise ValueError("a time-zone history needs at least one zone")
        normalised = []
        for item in items:
            zone_named(item.zone)
            normalised.append(
                ZoneChange(require_utc(item.effective_from_utc, "effective_from_utc"), item.zone)
            )
        normalised.sort(key=lambda c: c.effective_from_utc)
        for earlier, later in zip(normalised, normalised[1:], strict=False):
            if earlier.effective_from_utc == later.effective_from_utc:
                raise ValueError("two time-zone changes take effect at the same instant")
        return cls(tuple(normalised))

    @classmethod
    def fixed(cls, zone: str) -> TimeZoneHistory:
        """A history with a single zone, in force at every instant."""
        return cls.of([(datetime(1970, 1, 1, tzinfo=UTC), zone)])

    @cached_property
    def _starts(self) -> list[datetime]:
        return [c.effective_from_utc for c in self.changes]

    def zone_at(self, instant: datetime) -> ZoneInfo:
        """Return the zone in force at ``instant`` (the earliest zone before the first change)."""
        instant = require_utc(instant)
        if len(self.changes) == 1:  # most patients never move: asked once per record placed
            return ZoneInfo(self.changes[0].zone)
        index = max(bisect_right(self._starts, instant) - 1, 0)
        return ZoneInfo(self.changes[index].zone)

    def segments(self, start_utc: datetime, end_utc: datetime) -> list[tuple[datetime, datetime, ZoneInfo]]:
        """Split ``[start_utc, end_utc)`` into consecutive ``(start, end, zone)`` pieces, one per zone in force.

        The pieces cover the interval exactly: no overlap and no hole.
        """
        start, end = require_utc(start_utc, "start_utc"), require_utc(end_utc, "end_utc")
        pieces: list[tuple[datetime, datetime, ZoneInfo]] = []
        cursor = start
        for change in self.changes[1:]:
            if change.effective_from_utc <= cursor:
                continue
            if change.effective_from_utc >= end:
                break
            pieces.append((cursor, change.effective_from_utc, self.zone_at(cursor)))
            cursor = change.effective_from_utc
        if cursor < end:
            pieces.append((cursor, end, self.zone_at(cursor)))
        return pieces


# Any zone's local date lies within its UTC date widened by this much on each side (every UTC offset is within
# 14 hours).
DATE_REACH = timedelta(hours=15)


def dates_reach(first: date, last: date | None = None) -> tuple[datetime, datetime]:
    """The UTC instants between which every instant of the local dates ``first`` to ``last`` (inclusive; ``first``
    alone without it) lies, in whatever zones the patient lived them: what a read of those days' records spans.
    Not the zone of today's day widened by a day: after a move west of 25 hours, today began a day before the new
    zone's midnight."""
    last = last or first
    return (datetime.combine(first, time(0), UTC) - DATE_REACH,
            datetime.combine(last + timedelta(days=1), time(0), UTC) + DATE_REACH)


def _lived_pieces(history: TimeZoneHistory, local_date: date) -> list[tuple[datetime, datetime, ZoneInfo]]:
    """The stretches of UTC time whose local date (in the zone in force then) is ``local_date``, in order."""
    if len(history.changes) == 1:  # most patients never move
        zone = ZoneInfo(history.changes[0].zone)
        began, ended = resolve_local(local_date, time(0), zone), resolve_local(local_date + timedelta(days=1), time(0),
                                                                               zone)
        return [(began, ended, zone)] if began < ended else []
    pieces = []
    for start, end, zone in history.segments(*dates_reach(local_date)):
        began = max(start, resolve_local(local_date, time(0), zone))
        ended = min(end, resolve_local(local_date + timedelta(days=1), time(0), zone))
        if began < ended:
            pieces.append((began, ended, zone))
    return pieces


def lived(history: TimeZoneHistory, local_date: date) -> bool:
    """Whether the patient had any instant on the local date ``local_date``: False for a date a move east jumped
    over whole (Pacific/Pago_Pago to Pacific/Kiritimati at 23:30 lands past the next date), or one the patient's
    zone itself skipped (Pacific/Apia's 30 December 2011). Such a date has nothing planned (plans.day_plan): it is
    not a day missed."""
    return bool(_lived_pieces(history, local_date))


def day_span(history: TimeZoneHistory, local_date: date) -> tuple[datetime, datetime, ZoneInfo]:
    """When the patient's local day ``local_date`` began and ended (UTC instants), as they lived it, and the zone
    they ended it in: from the first instant whose local date (in the zone in force then) is that day to the
    last. A move east that lands past the day ends it at the move (the patient left it then); a move west back
    into it makes it end later. A day never lived (:func:`lived`) has the bounds of the zone in force at noon UTC
    on that date, as for a patient who never moved: it has no plan all the same."""
    pieces = _lived_pieces(history, local_date)
    if not pieces:
        zone = history.zone_at(datetime.combine(local_date, time(12), UTC))
        return resolve_local(local_date, time(0), zone), resolve_local(local_date + timedelta(days=1), time(0), zone), \
            zone
    return pieces[0][0], pieces[-1][1], pieces[-1][2]
