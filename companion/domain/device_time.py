"""When a TENS session really happened: its start rebuilt from what the unit, the gateway and the server
each know, with how sure that is.

A unit's clock is evidence, not truth: a battery change restarts it at its epoch (1970 or 2000) or at a
plausible wrong date, it drifts, and a gateway with a wrong clock may have set it wrong. What can be trusted:

* the unit's **sequence numbers**: every record gets the next one, so they order sessions without any clock;
* **syncs**: each time a gateway connects it reads the unit's clock and the unit's highest sequence number,
  and it may set the unit's clock right after. The server knows the real time of that reading (``at``, within
  ``error``) when it can tie the gateway's clock to its own (see the ingestion service); a sync it cannot tie
  has ``at = None``.

The rules, for one unit:

1. **Intervals.** A session belongs to the interval between the last sync whose highest sequence is below
   its own (its record did not exist yet) and the first sync whose highest sequence reaches it (it existed):
   it *ended* inside that interval. An unanchored sync's real time is bounded by the anchored syncs around it
   (in sequence order) and by when the server first received it (``received_by``, else ``received_at``); a
   session ended before the server first received its record.
2. **Offsets.** A unit's clock offset (its reading minus the real time) is known at each anchored sync, and
   just after one where the gateway set the clock. Within an interval it runs from the offset after the
   earlier sync to the offset at the later one. If those agree within drift (``JUMP_FLOOR`` plus
   ``DRIFT_PPM`` of the interval), one offset covers every session of the interval: the range between them,
   widened by that same drift. Readings agreeing do not rule out a jump: a reading whose real time is loosely
   bounded (a sync nothing ties to real time) measures a wide offset that fits the other one whatever the
   clock did, and the sessions before a jump hidden there kept the earlier offset, drifting.
3. **One jump.** Otherwise the clock jumped (a reset, or a change nobody recorded). The sessions before the
   jump keep the earlier offset and those after it take the later one; the jump is placed where the sessions
   then break the unit's order least (a session never starts before the one before it ended: one unit cannot
   be in two sessions at once) and, among those placements, where most of them fit their interval. Where
   several placements are equally good, a session they place differently gets bounds covering all of them.
   A session that began before the sync opening its interval may have been recorded with an offset from
   before that sync; every offset it may have had is tried, and the unit's order (sessions one at a time, a
   clock's offsets only ever moving forward) drops those that contradict its neighbours.
4. **By sequence.** A session no offset places (several jumps in one interval, or no earlier sync to say what
   the clock read before a jump) is placed by sequence: after the placed session before it ended, before the
   placed session after it started, and inside its interval. Its best estimate is the unit's raw reading
   when that lies within those bounds (the clock was probably right), else their middle.
5. **Quality.** ``exact``: placed by an offset of at most a minute (the unit's own reading was right) and
   known to within ten minutes. ``corrected``: placed by what the syncs measured (a skewed or reset clock, or
   a jump that two placements put in nearly the same place), known to within half an hour. ``estimated``:
   anything less certain; the bounds say how uncertain, and are ``None`` on a side nothing limits.

Where nothing says what the clock read at the start of an interval, the sessions whose readings fit the offset
measured at its end are taken to have had it; the others are placed by sequence. Before the unit's first sync,
a session that offset would start after the sync had another offset: the clock jumped after it, and the sessions
before it had that unmeasured offset too (one jump between two syncs), so they are placed by sequence as well,
however their readings fit. A jump that leaves every reading fitting the later offset, in the unit's order, cannot be told from a clock
that was that far off all along. The basis says so: ``first_sync``
when nothing came before the unit's first sync (a unit's first contact with any gateway, or a session that
may have begun before it), ``unmeasured`` when an earlier sync's offset is unknown (nothing ties it to real
time). Everywhere else the bounds assume nothing but steady drift between two readings that agree and at
most one jump between two syncs (two resets between two syncs can pass for one when the readings fit either
way). A session interrupted by a sync that set or read a jumped clock may fit both sides of it; then its
bounds cover both.

Everything here is pure: datetimes in, values out. Tested with random clock behaviour in
``tests/domain/test_device_time.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

DRIFT_PPM = 200  # a generous bound for a unit's crystal plus the gateway's monotonic clock
JUMP_FLOOR = timedelta(seconds=10)  # readings are whole seconds; a set command lands within a second or two
ORDER_SLACK = timedelta(seconds=5)  # two sessions of one unit may touch, not overlap, by more than this
EXACT_OFFSET = timedelta(minutes=1)
EXACT_WIDTH = timedelta(minutes=10)
CORRECTED_WIDTH = timedelta(minutes=30)


class TimeQuality(StrEnum):
    """How sure a session's start is (rule 5 of the module docstring)."""

    EXACT = "exact"
    CORRECTED = "corrected"
    ESTIMATED = "estimated"


@dataclass(frozen=True)
class SyncPoint:
    """One connection of a gateway to a unit: what the unit's clock read and when that really was.

    ``at`` is the real time of the reading within ``error`` (``None``: nothing the server trusts ties it to
    real time); ``unit_clock`` is ``None`` when the clock could not be read; ``clock_set_to`` is what the
    gateway set the unit's clock to right after the reading (``None``: not set). Syncs of one ``source`` (a
    gateway's run of its clock) are ordered by ``order`` (its monotonic clock), which no error blurs.
    ``received_by``: when the server first received the sync (it happened no later); ``None``: now.
    """

    highest_seq: int
    unit_clock: datetime | None
    at: datetime | None
    error: timedelta = timedelta(0)
    clock_set_to: datetime | None = None
    sync_id: str = ""
    source: str = ""
    order: float = 0.0
    received_by: datetime | None = None


@dataclass(frozen=True)
class UnitSession:
    """A session as the unit recorded it: its sequence number, its start by the unit's clock, how long, and
    when the server first received its record (it had ended by then; ``None``: now)."""

    seq: int
    device_start: datetime
    duration: timedelta
    received_by: datetime | None = None


@dataclass(frozen=True)
class SessionTime:
    """Where a session's start was placed: the best estimate, the bounds, the quality and why."""

    seq: int
    start: datetime
    earliest: datetime | None
    latest: datetime | None
    quality: TimeQuality
    basis: str
    offset: timedelta | None = None

    @property
    def width(self) -> timedelta | None:
        """How wide the bounds are (``None`` when a side is unbounded)."""
        if self.earliest is None or self.latest is None:
            return None
        return self.latest - self.earliest


# --- intervals with open ends -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Span:
    """A closed range of instants (or of offsets, as timedeltas); ``None`` is an open end."""

    lo: object | None
    hi: object | None

    def shifted(self, by) -> _Span:
        return _Span(None if self.lo is None else self.lo + by, None if self.hi is None else self.hi + by)

    def widened(self, by: timedelta) -> _Span:
        return _Span(None if self.lo is None else self.lo - by, None if self.hi is None else self.hi + by)

    def meet(self, other: _Span) -> _Span | None:
        lo = _max(self.lo, other.lo)
        hi = _min(self.hi, other.hi)
        if lo is not None and hi is not None and lo > hi:
            return None
        return _Span(lo, hi)

    def hull(self, other: _Span) -> _Span:
        lo = None if self.lo is None or other.lo is None else min(self.lo, other.lo)
        hi = None if self.hi is None or other.hi is None else max(self.hi, other.hi)
        return _Span(lo, hi)


def _max(a, b):
    if a is None:
        return b
    return a if b is None else max(a, b)


def _min(a, b):
    if a is None:
        return b
    return a if b is None else min(a, b)


def _reading_minus(reading: datetime, when: _Span) -> _Span:
    """The offset ``reading - real time`` when the real time lies in ``when``."""
    return _Span(None if when.hi is None else reading - when.hi, None if when.lo is None else reading - when.lo)


def _gap(a: _Span, b: _Span) -> timedelta | None:
    """How far apart two offset ranges are (0 when they overlap); None when either is unbounded."""
    if None in (a.lo, a.hi, b.lo, b.hi):
        return None
    return max(timedelta(0), b.lo - a.hi, a.lo - b.hi)


# --- syncs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Point:
    """A sync as the placement uses it. Its ``index`` numbers the clock's regimes: ``2 * index`` is the
    offset the clock read at this sync, ``2 * index + 1`` the one it had right after (a set clock)."""

    index: int
    highest_seq: int
    when: _Span
    offset: _Span | None  # the unit's offset at the reading
    offset_after: _Span | None  # ... and right after it (a set clock)

    @property
    def set_clock(self) -> bool:
        return self.offset_after is not self.offset

    def reading(self) -> tuple[_Span | None, tuple[int, int]]:
        """The offset it read, and the regimes that offset may belong to."""
        return self.offset, (2 * self.index, 2 * self.index if self.set_clock else 2 * self.index + 1)

    def after(self) -> tuple[_Span | None, tuple[int, int]]:
        """The offset right after it, and its regimes."""
        return self.offset_after, (2 * self.index + 1 if self.set_clock else 2 * self.index, 2 * self.index + 1)


def _in_order(syncs: Iterable[SyncPoint], received_at: datetime) -> list[SyncPoint]:
    """By highest sequence, then by real time; syncs of one source keep their own order among themselves
    (two syncs seconds apart may swap within their error, and which came first matters after a set)."""
    ordered = sorted(syncs, key=lambda s: (s.highest_seq, s.at or _min(s.received_by, received_at)))
    slots: dict[tuple[int, str], list[int]] = {}
    for n, sync in enumerate(ordered):
        slots.setdefault((sync.highest_seq, sync.source), []).append(n)
    result = list(ordered)
    for positions in slots.values():
        for position, sync in zip(positions, sorted((ordered[n] for n in positions), key=lambda s: s.order),
                                  strict=True):
            result[position] = sync
    return result


def _earlier(a: SyncPoint, b: SyncPoint) -> bool:
    """Whether ``a`` surely came before ``b``."""
    return a.highest_seq < b.highest_seq or (a.source == b.source and a.order < b.order)


def _points(syncs: Iterable[SyncPoint], received_at: datetime) -> list[_Point]:
    ordered = _in_order(syncs, received_at)
    anchored = [_Span(s.at - s.error, s.at + s.error) if s.at is not None else None for s in ordered]
    points = []
    for n, sync in enumerate(ordered):
        when = anchored[n]
        if when is None:
            # Surely earlier: syncs that saw fewer records, and the same source's earlier syncs; surely later:
            # those that saw more, and the same source's later ones.
            before = [a.lo for m, a in enumerate(anchored) if a is not None and _earlier(ordered[m], sync)]
            after = [a.hi for m, a in enumerate(anchored) if a is not None and _earlier(sync, ordered[m])]
            when = _Span(max(before) if before else None, min(after) if after else None)
        when = _Span(when.lo, _min(when.hi, _min(sync.received_by, received_at)))
        offset = _bounded(_reading_minus(sync.unit_clock, when)) if sync.unit_clock is not None else None
        after_set = _bounded(_reading_minus(sync.clock_set_to, when)) if sync.clock_set_to is not None else offset
        points.append(_Point(n, sync.highest_seq, when, offset, after_set))
    return points


def _bounded(offset: _Span) -> _Span | None:
    """An offset is known only when the time of its reading is bounded on both sides."""
    return None if offset.lo is None or offset.hi is None else offset


def _drift(lower: _Point | None, upper: _Point | None) -> timedelta:
    if lower is None or upper is None or lower.when.lo is None or upper.when.hi is None:
        return JUMP_FLOOR
    span = max(timedelta(0), upper.when.hi - lower.when.lo)
    return JUMP_FLOOR + span * DRIFT_PPM / 1_000_000


# --- placing the sessions of one interval ----------------------------------------------------------------
#
# A session is placed by the offsets it may have been recorded with: each an *option* (the offset, where the
# session's start may lie under it, and which of the clock's regimes the offset belongs to). Every option the
# reading fits is kept; the unit's order (one session at a time, regimes only ever move forward) then drops
# those that would contradict a neighbour.

@dataclass(frozen=True)
class _Option:
    offset: _Span | None
    window: _Span
    regimes: tuple[int, int]


@dataclass(frozen=True)
class _Fit:
    """One way a session fits: where its start lies if it was recorded with ``offset``."""

    start: _Span
    offset: _Span
    regimes: tuple[int, int]


Placement = tuple[_Fit, ...]  # every way a session fits (empty: none)


def _window(session: UnitSession, lower: _Point | None, upper: _Point | None, received_at: datetime) -> _Span:
    """Where the session's start may lie: it ended after the earlier sync and by the later one."""
    end_lo = lower.when.lo if lower is not None else None
    end_hi = _min(upper.when.hi if upper is not None else received_at, session.received_by)
    return _Span(end_lo, end_hi).shifted(-session.duration)


def _place(session: UnitSession, options: Sequence[_Option]) -> Placement:
    """Every option under which the session's reading falls inside the option's window."""
    fits = []
    for option in options:
        offset = option.offset
        if offset is None or offset.lo is None or offset.hi is None:
            continue
        start = _Span(session.device_start - offset.hi, session.device_start - offset.lo).meet(option.window)
        if start is not None:
            fits.append(_Fit(start, offset, option.regimes))
    return tuple(dict.fromkeys(fits))


def _options(main: _Option, earlier: Sequence[_Point], agreeing: _Span | None = None) -> tuple[list[_Option], str | None]:
    """The options of a session of an interval (``main``: the interval's own offset; ``earlier``: the syncs
    before the interval, the one that opens it last), and the assumption that takes, if any (``first_sync``
    or ``unmeasured``, see the module docstring). ``agreeing``: the offsets an earlier one must meet to be
    taken as the main one (default: ``main``'s own); a main offset widened for a jump it cannot rule out
    would otherwise swallow an earlier offset it merely touches, and lose that offset's own bounds.

    A session can start before the sync that opens its interval (it ended after it): then it was recorded
    with an offset the clock had before that sync, before a set, or before a jump in an earlier interval, as
    long as that was still during the session. When one of those offsets was never measured (before the first
    sync, or around a sync nothing ties to real time), the measured ones are assumed to cover it."""
    if not earlier:
        return [main], None
    lower = earlier[-1]
    before = main.window.meet(_Span(None, lower.when.hi))
    if before is None:
        return [main], None
    during = [p for p in earlier if before.lo is None or p.when.hi is None or p.when.hi >= before.lo]
    reaching = earlier[len(earlier) - len(during) - 1] if len(during) < len(earlier) else None
    candidates = [p.reading() for p in during] + [p.after() for p in during[:-1]]
    candidates.append(reaching.after() if reaching is not None else (None, (0, 0)))
    known = [(offset, regimes) for offset, regimes in candidates if offset is not None]
    assumed = None
    if any(offset is None for offset, _ in candidates[:-1]) or (reaching is not None and candidates[-1][0] is None):
        assumed = "unmeasured"
    elif reaching is None:
        assumed = "first_sync"  # the session may have begun before the unit's first sync
    agreeing = agreeing or main.offset
    if agreeing is not None and all(_gap(offset, agreeing) == timedelta(0) for offset, _ in known):
        return [main], assumed
    options = []
    after = main.window.meet(_Span(lower.when.lo, None))
    if after is not None:
        options.append(_Option(main.offset, after, main.regimes))
    options += [_Option(offset.widened(JUMP_FLOOR), before, regimes) for offset, regimes in dict.fromkeys(known)]
    return options, assumed


def _earliest_end(session: UnitSession, placement: Placement) -> datetime:
    return min(f.start.lo for f in placement) + session.duration


def _latest_start(placement: Placement) -> datetime:
    return max(f.start.hi for f in placement)


def _order_breaks(sessions: Sequence[UnitSession], placed: Sequence[Placement]) -> list[bool]:
    """For each session, whether it (placed) would have to start before the placed one before it ended."""
    breaks, previous = [False] * len(sessions), None
    for n, (session, placement) in enumerate(zip(sessions, placed, strict=True)):
        if not placement:
            continue
        if previous is not None and _latest_start(placement) < _earliest_end(*previous) - ORDER_SLACK:
            breaks[n] = True
        previous = (session, placement)
    return breaks


def _best_splits(sessions: Sequence[UnitSession], early: Sequence[Placement], late: Sequence[Placement]) -> list[int]:
    """Where a clock jump may lie among one interval's sessions (rule 3): every split ``s`` (the sessions before
    ``s`` take ``early``, the rest ``late``) that breaks the unit's order least and, among those, places the
    most sessions. The same as counting the order's breaks over ``early[:s] + late[s:]`` for each split, in
    linear time: the breaks within each side are counted once, and only the pair across the split is judged
    per split."""
    count = len(sessions)
    early_breaks, late_breaks = _order_breaks(sessions, early), _order_breaks(sessions, late)
    # Per split: the last placed early session before it, and the first placed late session at or after it.
    last_early: list[int | None] = [None] * (count + 1)
    for n in range(count):
        last_early[n + 1] = n if early[n] else last_early[n]
    first_late: list[int | None] = [None] * (count + 1)
    for n in range(count - 1, -1, -1):
        first_late[n] = n if late[n] else first_late[n + 1]
    early_before = [0] * (count + 1)  # breaks and placed sessions among early[:s]
    early_placed = [0] * (count + 1)
    for n in range(count):
        early_before[n + 1] = early_before[n] + early_breaks[n]
        early_placed[n + 1] = early_placed[n] + bool(early[n])
    late_from = [0] * (count + 1)  # breaks (judged against the placed late session before) and placed among late[s:]
    late_placed = [0] * (count + 1)
    for n in range(count - 1, -1, -1):
        late_from[n] = late_from[n + 1] + late_breaks[n]
        late_placed[n] = late_placed[n + 1] + bool(late[n])
    scores = []
    for split in range(count + 1):
        first, last = first_late[split], last_early[split]
        breaks = early_before[split] + late_from[split] - (late_breaks[first] if first is not None else 0)
        if first is not None and last is not None and \
                _latest_start(late[first]) < _earliest_end(sessions[last], early[last]) - ORDER_SLACK:
            breaks += 1
        scores.append((breaks, -(early_placed[split] + late_placed[split])))
    best = min(scores)
    return [split for split, score in enumerate(scores) if score == best]


def _place_interval(group: Sequence[UnitSession], earlier: Sequence[_Point], upper: _Point | None,
                    received_at: datetime) -> list[tuple[Placement, str]]:
    lower = earlier[-1] if earlier else None
    windows = [_window(s, lower, upper, received_at) for s in group]
    drift = _drift(lower, upper)
    start_offset, start_regimes = lower.after() if lower is not None else (None, (0, 0))
    end_offset, end_regimes = upper.reading() if upper is not None else (None, (0, 0))
    gap = _gap(start_offset, end_offset) if start_offset is not None and end_offset is not None else None
    if gap is not None and gap <= drift:
        # No jump seen: a clock drifts steadily, so between two readings that agree its offset stayed between
        # them; but a jump may hide behind a loosely bounded reading (an unanchored sync), and the sessions
        # before it kept the earlier offset, drifting up to `drift` (as in the jump branch below).
        between = start_offset.hull(end_offset)
        steady = between.widened(drift)
        regimes = (start_regimes[0], end_regimes[1])
        out = []
        for session, window in zip(group, windows, strict=True):
            options, assumed = _options(_Option(steady, window, regimes), earlier, between.widened(JUMP_FLOOR))
            fits = _place(session, options)
            out.append((fits, _basis(fits, assumed, "offset_known", lower)))
        return out
    early = start_offset.widened(drift) if start_offset is not None else None
    late = end_offset.widened(drift) if end_offset is not None else None
    early_options = [_options(_Option(early, w, start_regimes), earlier) for w in windows]
    early_fits = [_place(s, options) for s, (options, _) in zip(group, early_options, strict=True)]
    late_fits = [_place(s, [_Option(late, w, end_regimes)]) for s, w in zip(group, windows, strict=True)]
    winners = _best_splits(group, early_fits, late_fits)
    lowest, highest = winners[0], winners[-1]
    out = []
    for n in range(len(group)):
        # The winning splits at or before n place it late, those after it early (in the order of the splits).
        choices = ([late_fits[n]] if lowest <= n else []) + ([early_fits[n]] if highest > n else [])
        fits = tuple(dict.fromkeys(f for choice in choices for f in choice)) if all(choices) else ()
        if early is None:
            basis = "first_sync" if lower is None else "unmeasured"
        else:
            basis = _basis(fits, early_options[n][1], "clock_jumped", lower)
        out.append((fits, basis))
    if lower is None and late is not None:
        # Before the unit's first sync nothing measured its clock. A session that the offset at that sync would
        # start after the sync (or after its record reached the server) had another offset: the clock jumped after
        # it, and every session before it had that unmeasured offset too (one jump between two syncs). One of those
        # whose reading the later offset happens to place (a clock set back a day, a session three days old) would
        # be counted on a wrong day, sure to seconds: each is placed by sequence instead.
        jumped_after = max((n for n, (s, w) in enumerate(zip(group, windows, strict=True))
                            if s.device_start - late.hi > w.hi + s.duration), default=-1)
        out = [((), basis) if n < jumped_after else (fits, basis) for n, (fits, basis) in enumerate(out)]
    return out


def _basis(fits: Placement, assumed: str | None, plain: str, lower: _Point | None) -> str:
    """The basis of a placement: an assumption about the offset before ``lower`` mattered only if the session
    may have begun before it (or could not be placed at all)."""
    if assumed is None or lower is None or lower.when.hi is None:
        return assumed or plain
    if fits and all(f.start.lo >= lower.when.hi for f in fits):
        return plain
    return assumed


def _prune(sessions: Sequence[UnitSession], placed: dict[int, Placement]) -> None:
    """Drop the ways of fitting that contradict the unit's order: a later session (by sequence) never starts
    before an earlier one ended, and never has an offset from a regime before an earlier one's. Forwards then
    backwards, twice; a session left with no way keeps the ones it had."""
    order = [s for s in sessions if placed.get(s.seq)]

    def keep(seq: int, test) -> None:
        kept = tuple(f for f in placed[seq] if test(f))
        placed[seq] = kept or placed[seq]

    for _ in range(2):
        floor_regime = None
        for before, session in zip(order, order[1:], strict=False):
            ended = _earliest_end(before, placed[before.seq]) - ORDER_SLACK
            low = min(f.regimes[0] for f in placed[before.seq])
            floor_regime = low if floor_regime is None else max(floor_regime, low)
            keep(session.seq, lambda f, e=ended, r=floor_regime: f.start.hi >= e and f.regimes[1] >= r)
        ceiling_regime = None
        for session, after in reversed(list(zip(order, order[1:], strict=False))):
            latest = _latest_start(placed[after.seq]) + ORDER_SLACK
            high = max(f.regimes[1] for f in placed[after.seq])
            ceiling_regime = high if ceiling_regime is None else min(ceiling_regime, high)
            keep(session.seq, lambda f, lt=latest, d=session.duration, r=ceiling_regime:
                 f.start.lo + d <= lt and f.regimes[0] <= r)


# --- quality, and placing what no offset placed ------------------------------------------------------------

def _middle(span: _Span) -> datetime | None:
    if span.lo is None or span.hi is None:
        return None
    return span.lo + (span.hi - span.lo) / 2


def _quality(width: timedelta | None, offset: timedelta | None) -> TimeQuality:
    if width is None:
        return TimeQuality.ESTIMATED
    if offset is not None and width <= EXACT_WIDTH and abs(offset) <= EXACT_OFFSET:
        return TimeQuality.EXACT
    if width <= CORRECTED_WIDTH:
        return TimeQuality.CORRECTED
    return TimeQuality.ESTIMATED


def _from_fits(session: UnitSession, fits: Placement, basis: str) -> SessionTime:
    start = fits[0].start
    for fit in fits[1:]:
        start = start.hull(fit.start)
    offsets = {(f.offset.lo, f.offset.hi) for f in fits}
    offset = _middle(fits[0].offset) if len(offsets) == 1 else None
    estimate = session.device_start - offset if offset is not None else _middle(start)
    estimate = min(max(estimate, start.lo), start.hi)
    if len(offsets) > 1:
        basis = "clock_jumped_ambiguous"
    return SessionTime(session.seq, estimate, start.lo, start.hi, _quality(start.hi - start.lo, offset), basis, offset)


def _by_sequence(session: UnitSession, window: _Span, before: SessionTime | None, after: SessionTime | None,
                 before_session: UnitSession | None, basis: str) -> SessionTime:
    bounds = window
    if before is not None and before.earliest is not None and before_session is not None:
        bounds = _Span(_max(bounds.lo, before.earliest + before_session.duration - ORDER_SLACK), bounds.hi)
    if after is not None and after.latest is not None:
        bounds = _Span(bounds.lo, _min(bounds.hi, after.latest - session.duration + ORDER_SLACK))
    if bounds.lo is not None and bounds.hi is not None and bounds.lo > bounds.hi:
        bounds = window  # the neighbours contradict each other (a clock fault): say only what the syncs say
    raw = session.device_start
    fits_raw = (bounds.lo is None or raw >= bounds.lo) and (bounds.hi is None or raw <= bounds.hi)
    estimate = raw if fits_raw else (_middle(bounds) or bounds.hi or bounds.lo or raw)
    return SessionTime(session.seq, estimate, bounds.lo, bounds.hi, TimeQuality.ESTIMATED, basis)


def reconstruct(syncs: Iterable[SyncPoint], sessions: Iterable[UnitSession], *,
                received_at: datetime) -> dict[int, SessionTime]:
    """Place every session of one unit in real time by the module's rules; returns them by sequence number.

    ``syncs`` are every sync known for the unit (any gateway); ``received_at`` (the server's clock) bounds
    everything from above. Sessions later than every sync are bounded by ``received_at`` alone.
    """
    points = _points(syncs, received_at)
    ordered = sorted(sessions, key=lambda s: s.seq)
    groups: dict[int | None, list[UnitSession]] = {}
    for session in ordered:
        upper = next((n for n, p in enumerate(points) if p.highest_seq >= session.seq), None)
        groups.setdefault(upper, []).append(session)
    fitted: dict[int, Placement] = {}
    bases: dict[int, str] = {}
    windows: dict[int, _Span] = {}
    for upper_index, group in groups.items():
        upper = points[upper_index] if upper_index is not None else None
        below = [p for p in (points if upper_index is None else points[:upper_index]) if p.highest_seq < group[0].seq]
        lower = below[-1] if below else None
        for session, (fits, basis) in zip(group, _place_interval(group, below, upper, received_at), strict=True):
            fitted[session.seq], bases[session.seq] = fits, basis
            windows[session.seq] = _window(session, lower, upper, received_at)
    _prune(ordered, fitted)
    placed = {s.seq: _from_fits(s, fitted[s.seq], bases[s.seq]) for s in ordered if fitted[s.seq]}
    known = sorted(placed)
    by_seq = {s.seq: s for s in ordered}
    for session in ordered:
        if session.seq in placed:
            continue
        before_seq = max((q for q in known if q < session.seq), default=None)
        after_seq = min((q for q in known if q > session.seq), default=None)
        basis = bases[session.seq]
        placed[session.seq] = _by_sequence(
            session, windows[session.seq], placed.get(before_seq) if before_seq is not None else None,
            placed.get(after_seq) if after_seq is not None else None,
            by_seq.get(before_seq) if before_seq is not None else None,
            "sequence" if basis in ("offset_known", "clock_jumped") else basis)
    return placed
