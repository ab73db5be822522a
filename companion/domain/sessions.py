"""TENS session records as the server keeps them: what makes one unusable, what holds one back from the
figures, whose it is, and how much of it counts.

Nothing a unit handed over is dropped. A record is refused only when it has no identity to be stored under
(its id is not ``<device_serial>:<device_seq>``). Everything else is stored; a record that breaks a clinical
or time rule is stored **held**: kept out of every figure (adherence, streaks, PDC, alerts) with its
findings, until something resolves it:

* a later clock fix: new syncs place its time again, and findings that no longer hold go away;
* a clinician, who counts it (optionally at a start they give) or excludes it;
* a rule: an overlap is counted once (below), with no one's help.

Findings (``Flag``):

* ``clinical``: a duration of 0 or over 24 hours, or a frequency, pulse width or intensity outside what the
  profile allows; held.
* ``future``: the session's start (as placed) is more than 5 minutes after the server received it; held.
* ``outside_window``: it started more than 30 days before the server received it (the offline window); held.
* ``time_uncertain``: its bounds span more than one of the patient's local days by more than ``DAY_EDGE``
  (ten minutes), or are open (see ``device_time``): which day it counts on cannot be known; held. A start
  known to within ten minutes (an exact clock's, say, at 23:59 or 00:00) counts on the day of its best estimate
  even when its bounds cross midnight: holding a bedtime session from the figures until a clinician looks
  would miscount it far more than a day's edge could.
* ``owner_uncertain``: its bounds straddle a change of the unit's binding (or a gap between bindings): which
  patient wore the unit cannot be known; held for a clinician, with the candidates. Also a session that
  another patient's gateway handed over, unless it is what the unit still held when it changed hands (see
  ``relay_vouched``): one patient's gateway does not write into another's figures at will, nor is a new
  wearer's therapy counted for the old one because the app was told of the hand-over late.
* ``overlap``: the unit was already in another session then (one unit cannot be in two sessions at once);
  counted once: it counts only its minutes outside the earlier sessions (by sequence) and not as a session
  of its own. Not held.

An estimated time whose day is certain is not held: it counts on that day.

Whose session it is: whoever the unit was bound to when it started. Bindings are intervals; a unit's first
binding reaches back before its start (a unit is often used before anyone binds it in the app).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from companion.domain.adherence import TaskEvent, TaskKind
from companion.domain.localtime import TimeZoneHistory

END_REASONS = ("completed", "stopped", "electrode_off", "overload", "battery")
CLOCK_STATUSES = ("ok", "skewed", "reset", "ahead")
MAX_DURATION = timedelta(hours=24)
MAX_AHEAD = timedelta(minutes=5)
OFFLINE_WINDOW = timedelta(days=30)
FREQUENCY_HZ = (1, 250)
PULSE_WIDTH_US = (20, 400)
INTENSITY_MA = (0.0, 100.0)
LOW_BATTERY_PCT = 15
OVERLAP_SLACK = timedelta(minutes=1)
UNPULLED_AT_HANDOVER = timedelta(days=14)  # the backlog a unit may still hold when it changes hands
DAY_EDGE = timedelta(minutes=10)  # bounds this narrow count on their best estimate's day, across midnight too


class Flag(StrEnum):
    """A finding about a stored session (see the module docstring)."""

    CLINICAL = "clinical"
    FUTURE = "future"
    OUTSIDE_WINDOW = "outside_window"
    TIME_UNCERTAIN = "time_uncertain"
    OWNER_UNCERTAIN = "owner_uncertain"
    OVERLAP = "overlap"


HOLDING = frozenset({Flag.CLINICAL, Flag.FUTURE, Flag.OUTSIDE_WINDOW, Flag.TIME_UNCERTAIN, Flag.OWNER_UNCERTAIN})
RESOLUTIONS = ("count", "exclude")


@dataclass(frozen=True)
class Finding:
    """One finding: its flag and a sentence for the person who reads it."""

    flag: Flag
    reason: str


def identity_problem(record: Mapping) -> str | None:
    """Why a record cannot be stored at all (its id is not ``<device_serial>:<device_seq>``), or None."""
    if record["record_id"] != f"{record['device_serial']}:{record['device_seq']}":
        return "record_id must be '<device_serial>:<device_seq>'"
    return None


def clinical_findings(record: Mapping) -> list[Finding]:
    """The clinical rules a record breaks (duration, frequency, pulse width, intensity), as findings."""
    found = []
    if not timedelta(0) < timedelta(seconds=record["duration_s"]) <= MAX_DURATION:
        found.append("duration must be more than 0 and at most 24 hours")
    if not FREQUENCY_HZ[0] <= record["frequency_hz"] <= FREQUENCY_HZ[1]:
        found.append(f"frequency must be {FREQUENCY_HZ[0]}-{FREQUENCY_HZ[1]} Hz")
    if not PULSE_WIDTH_US[0] <= record["pulse_width_us"] <= PULSE_WIDTH_US[1]:
        found.append(f"pulse width must be {PULSE_WIDTH_US[0]}-{PULSE_WIDTH_US[1]} µs")
    mean, peak = record["intensity_mean_ma"], record["intensity_peak_ma"]
    if not (INTENSITY_MA[0] <= mean <= peak <= INTENSITY_MA[1]):
        found.append("intensity must satisfy 0 <= mean <= peak <= 100 mA")
    return [Finding(Flag.CLINICAL, reason) for reason in found]


def _local_date(instant: datetime, history: TimeZoneHistory) -> date:
    return instant.astimezone(history.zone_at(instant)).date()


def time_findings(start: datetime, earliest: datetime | None, latest: datetime | None, received_at: datetime,
                  history: TimeZoneHistory | None) -> list[Finding]:
    """What is wrong with a session's placed time: in the future, out of the offline window, or on a local
    day that cannot be known (``history``: the owner's zones; None when the owner is not known)."""
    found = []
    if start > received_at + MAX_AHEAD:
        found.append(Finding(Flag.FUTURE, "starts more than 5 minutes after the server received it"))
    elif start < received_at - OFFLINE_WINDOW:
        found.append(Finding(Flag.OUTSIDE_WINDOW, "started more than 30 days before the server received it"))
    if earliest is None or latest is None:
        found.append(Finding(Flag.TIME_UNCERTAIN, "its time cannot be bounded on both sides"))
    elif (history is not None and latest - earliest > DAY_EDGE
          and _local_date(earliest, history) != _local_date(latest, history)):
        found.append(Finding(Flag.TIME_UNCERTAIN, "its time may fall on more than one local day"))
    return found


# Who wore a unit during a binding whose patient's record has been deleted (after its retention): the interval
# stays, so that the unit's next wearer is never given what was recorded then; such a session is kept by nobody.
ERASED_WEARER = "erased"


@dataclass(frozen=True)
class Binding:
    """A unit bound to a patient (or to :data:`ERASED_WEARER`) from ``start`` until ``end`` (``None``: still
    bound).

    ``end_stated``: whether ``end`` is when someone said the unit changed hands (a release "handed over on", and
    bindings kept from before releases said either way), or only when the app was told (a release with no time:
    the unit may have changed hands any time before). ``last_seen``: the wearer's own hub's last contact with the
    unit while it was bound to them (None: never), as of the release."""

    patient_id: str
    start: datetime
    end: datetime | None = None
    end_stated: bool = True
    last_seen: datetime | None = None


@dataclass(frozen=True)
class Ownership:
    """Whose a session is: the patient when certain, else the candidates (empty: the unit was never bound)."""

    patient_id: str | None
    candidates: tuple[str, ...]

    @property
    def certain(self) -> bool:
        """Whether one patient wore the unit whenever the session may have started."""
        return self.patient_id is not None


class UnitOwners:
    """Whose a unit's sessions are, by its bindings: the spans (bound to a patient, or a gap bound to nobody)
    laid out once, then asked for each session (:meth:`at`)."""

    def __init__(self, bindings: Sequence[Binding]):
        ordered = sorted(bindings, key=lambda b: b.start)
        spans: list[tuple[datetime | None, datetime | None, str | None]] = []
        for n, binding in enumerate(ordered):
            start = None if n == 0 else binding.start
            spans.append((start, binding.end, binding.patient_id))
            following = ordered[n + 1].start if n + 1 < len(ordered) else None
            if binding.end is not None and (following is None or following > binding.end):
                spans.append((binding.end, following, None))  # a gap: bound to nobody
        self.spans = spans
        # One binding for ever (the common case): every session is certainly its patient's.
        self._only = Ownership(spans[0][2], (spans[0][2],)) if len(spans) == 1 and spans[0][1] is None else None

    def at(self, earliest: datetime | None, latest: datetime | None) -> Ownership:
        """Whose a session that started between ``earliest`` and ``latest`` (None: unbounded) is."""
        if self._only is not None:
            return self._only
        spans = self.spans
        if not spans:
            return Ownership(None, ())
        touched = [(s, e, p) for s, e, p in spans
                   if (latest is None or s is None or s <= latest) and (earliest is None or e is None or e > earliest)]
        patients = tuple(dict.fromkeys(p for _, _, p in touched if p is not None))
        gaps = [n for n, (_, _, p) in enumerate(spans) if p is None and (spans[n] in touched)]
        if len(patients) == 1 and not gaps:
            return Ownership(patients[0], patients)
        for n in gaps:  # a gap's neighbours may have had it
            for neighbour in (n - 1, n + 1):
                if 0 <= neighbour < len(spans) and spans[neighbour][2] is not None:
                    patients += (spans[neighbour][2],)
        return Ownership(None, tuple(dict.fromkeys(patients)))


def owner_at(bindings: Sequence[Binding], earliest: datetime | None, latest: datetime | None) -> Ownership:
    """Whose a session that started between ``earliest`` and ``latest`` (None: unbounded) is, by the unit's
    bindings: certain when one binding covers the whole range; the first binding also covers everything
    before it. A range that touches a gap between bindings, or several bindings, is uncertain."""
    return UnitOwners(bindings).at(earliest, latest)


def handover_problem(at: datetime, now: datetime, not_before: datetime | None) -> str | None:
    """Why ``at`` cannot be when a unit changed hands (the end of one binding, or the start of the next), or None:
    it is in the future, or before ``not_before`` (when the binding it ends began, or the one before the binding
    it starts ended: a unit is worn by one patient at a time)."""
    if at > now:
        return "a unit cannot have changed hands in the future"
    if not_before is not None and at < not_before:
        return f"the unit was not free to change hands before {not_before.isoformat()}"
    return None


def relay_vouched(bindings: Sequence[Binding], owner_id: str, delivered_for: str | None,
                  latest: datetime | None) -> bool:
    """Whether a session whose unit was bound to ``owner_id`` when it started (at the latest ``latest``) counts as
    theirs though the gateway of ``delivered_for`` handed it over. Always from the wearer's own gateway. From
    another patient's, only as the unit's backlog when it changed hands: a session the unit recorded at most
    ``UNPULLED_AT_HANDOVER`` before the owner's binding ended, which their hub had not yet pulled (the new
    wearer's hub pulls it at first contact). Anything else another patient's gateway hands over (a session
    placed weeks before the unit changed hands, or one after a unit it no longer holds moved on) is held for a
    clinician, with both patients as candidates.

    The backlog is taken on the word of whoever ended the binding: only a binding whose end someone stated as
    the moment the unit changed hands (``Binding.end_stated``) vouches for it up to that end. One released with
    no time says only that the unit had changed hands by then, perhaps days before the app was told, while the
    new wearer used it: another patient's hub is then believed only for what started before the owner's own hub
    last had contact with the unit (``Binding.last_seen``); anything later may be the new wearer's therapy."""
    if delivered_for is None or delivered_for == owner_id:
        return True
    if latest is None:
        return False
    ended = [b for b in bindings if b.patient_id == owner_id and b.end is not None and b.end >= latest]
    if not ended:
        return False
    binding = min(ended, key=lambda b: b.end)
    if binding.end - latest > UNPULLED_AT_HANDOVER:
        return False
    return binding.end_stated or (binding.last_seen is not None and latest <= binding.last_seen)


@dataclass(frozen=True)
class Timed:
    """A session of one unit as the overlap rule sees it."""

    key: str
    seq: int
    start: datetime
    duration: timedelta


def overlaps(sessions: Iterable[Timed]) -> dict[str, tuple[str, timedelta]]:
    """For each session that overlaps (by more than a minute) sessions of the same unit with a lower sequence
    number: (the first of those, the time it spends outside all of them). Sessions that overlap nothing are
    absent. One sweep in time order: what is checked against each session is only what is still running."""
    by_key = {s.key: s for s in sessions}
    covering: dict[str, list[tuple[datetime, datetime, str]]] = {}
    running: list[tuple[datetime, Timed]] = []  # (end, session) of those that may still overlap a later one
    for session in sorted(by_key.values(), key=lambda s: (s.start, s.seq)):
        lo, end = session.start, session.start + session.duration
        threshold = lo + OVERLAP_SLACK
        # What ends by ``threshold`` overlaps neither this session nor any later one by more than the slack.
        running = [r for r in running if r[0] > threshold]
        if end > threshold:  # then it overlaps every one still running by more than the slack
            for other_end, other in running:
                hi = end if end < other_end else other_end
                later, earlier = (session, other) if session.seq > other.seq else (other, session)
                covering.setdefault(later.key, []).append((lo, hi, earlier.key))
        running.append((end, session))
    found: dict[str, tuple[str, timedelta]] = {}
    for key, covered in covering.items():
        session = by_key[key]
        covered.sort()
        outside, cursor = timedelta(0), session.start
        for lo, hi, _ in covered:
            if lo > cursor:
                outside += lo - cursor
            cursor = max(cursor, hi)
        outside += max(timedelta(0), session.start + session.duration - cursor)
        found[key] = (covered[0][2], outside)
    return found


@dataclass(frozen=True)
class Counting:
    """How a stored session counts: ``held`` (kept out of every figure), ``counts`` (as a session of its
    own) and the minutes it adds to the day it starts on."""

    held: bool
    counts: bool
    minutes: float


def counting(flags: Iterable[Flag], duration: timedelta, outside_overlap: timedelta | None,
             resolution: str | None) -> Counting:
    """How a session with these findings counts: held while a holding finding stands, unless a clinician
    resolved it (``count`` or ``exclude``); an overlapping one counts only its minutes outside the earlier
    sessions and not as a session of its own."""
    flags = set(flags)
    if resolution == "exclude":
        return Counting(True, False, 0.0)
    if flags & HOLDING and resolution != "count":
        return Counting(True, False, 0.0)
    seconds = max(duration, timedelta(0))
    if outside_overlap is not None:
        return Counting(False, False, round(min(outside_overlap, seconds).total_seconds() / 60, 2))
    return Counting(False, True, round(seconds.total_seconds() / 60, 2))


def counted_minutes(record: Mapping) -> float:
    """The minutes a stored session adds to its day's figures (records stored before these rules: all)."""
    if "counted_minutes" in record:
        return float(record["counted_minutes"] or 0)
    return (record.get("duration_s") or 0) / 60


def counted_minutes_shown(record: Mapping) -> float:
    """The minutes a stored session adds to its day's figures, to a tenth of a minute, as the figures and the
    exports show them: a day's minutes are the sum of its sessions' (tens_by_day), so that the sessions listed
    add up to their day."""
    return round(counted_minutes(record), 1)


def counts_as_session(record: Mapping) -> bool:
    """Whether a stored session counts as a session of its own (records stored before these rules: yes)."""
    return bool(record.get("counts", True)) and not record.get("held", False)


def tens_event(record: Mapping) -> TaskEvent:
    """A stored session as a TENS task event: the minutes it counts (all of them, or those outside an earlier
    session it overlaps), to the tenth every figure and export shows (so a day shown at its target is covered),
    and whether it counts as a session of its own. Held sessions are for the caller to leave out."""
    return TaskEvent(TaskKind.TENS, record["started_at"], counted_minutes_shown(record), int(counts_as_session(record)))


def how_it_counts(record: Mapping) -> str:
    """How a stored session counts in the figures, in a word: ``counted``; ``partly_counted`` (it overlapped an
    earlier session of its unit: only its minutes outside that one count); ``held`` (held back, awaiting the care
    team); ``excluded`` (the care team decided it does not count)."""
    if (record.get("resolution") or {}).get("action") == "exclude":
        return "excluded"
    if record.get("held"):
        return "held"
    return "counted" if counts_as_session(record) else "partly_counted"


DEVICE_EVENT_KINDS = ("electrode_off", "overload", "battery_low")  # every kind device_events_for names


def device_events_for(record: Mapping) -> list[str]:
    """The device events a record raises: electrode off, overload, low battery."""
    kinds = []
    if record["end_reason"] in ("electrode_off", "overload"):
        kinds.append(record["end_reason"])
    if record["battery_pct"] < LOW_BATTERY_PCT or record["end_reason"] == "battery":
        kinds.append("battery_low")
    return kinds


def reached_at(sync: Mapping | None, arrived: datetime) -> datetime:
    """When a hub reached a unit, as a stored sync of it tells (``sync``: None if none is known) of something that
    arrived at ``arrived`` (the sync's batch, or a record it captured): the sync's own time on the server's clock,
    else when the server first received it, at most ``arrived``. A backlog a hub kept while offline is contact when
    it reached the unit, not when it was uploaded: counted as now, a unit silent since would look heard from."""
    sync = sync or {}
    return min(sync.get("at") or sync.get("received_at") or arrived, arrived)
