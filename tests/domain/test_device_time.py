"""Rebuilding sessions' real times from a unit's clock readings, its sequence numbers and the syncs.

The property tests simulate a unit's clock over weeks: an initial skew, drift, battery changes that
restart it at its epoch (1970 or 2000) or at a plausible wrong date, and gateways that set it (or not)
at some syncs. Whatever the clock did, the bounds given for a session contain its real start; when the
evidence allows it (a sync before every session, at most one reset between two syncs, every sync tied to
the server's clock), every session is placed to within its bounds as exact or corrected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from companion.domain.device_time import (
    CORRECTED_WIDTH,
    ORDER_SLACK,
    SessionTime,
    SyncPoint,
    TimeQuality,
    UnitSession,
    _best_splits,
    _Fit,
    _Span,
    reconstruct,
)

BASE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
EPOCH_1970 = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def seconds(value: datetime) -> datetime:
    """A unit stores whole seconds."""
    return value.replace(microsecond=0)


@dataclass
class World:
    sessions: list[tuple[datetime, timedelta]]  # real start, duration, in sequence order
    syncs: list[SyncPoint]
    received_at: datetime
    one_jump_per_interval: bool
    paired: bool  # a sync tied to real time came before the first session (as when a unit is paired)

    def unit_sessions(self, readings: list[datetime]) -> list[UnitSession]:
        return [UnitSession(n + 1, readings[n], duration) for n, (_, duration) in enumerate(self.sessions)]


@st.composite
def worlds(draw, *, clean: bool):
    """A unit's weeks: sessions, syncs, clock events; returns (world, unit sessions)."""
    count = draw(st.integers(1, 14))
    starts, t = [], BASE + timedelta(minutes=draw(st.integers(5, 600)))
    for _ in range(count):
        duration = timedelta(minutes=draw(st.integers(30, 60)))
        starts.append((t, duration))
        t += duration + timedelta(minutes=draw(st.integers(5, 26 * 60)))
    end = t
    total = (end - BASE).total_seconds()
    # Syncs: one at pairing (before any session) when clean, then some at random moments, and the upload.
    inner = sorted(draw(st.lists(st.floats(0.01, 0.99), max_size=6)))
    sync_times = ([BASE] if clean or draw(st.booleans()) else []) + [BASE + timedelta(seconds=f * total) for f in inner]
    sync_times.append(end + timedelta(minutes=draw(st.integers(1, 120))))
    # Clock events between syncs: resets to an epoch or to a plausible wrong date.
    reset_after = draw(st.lists(st.floats(0.0, 1.0), max_size=3 if not clean else 2))
    resets = []
    for fraction in reset_after:
        at = BASE + timedelta(seconds=fraction * total)
        kind = draw(st.sampled_from(["1970", "2000", "wrong_date"]))
        if kind == "wrong_date":
            shift = timedelta(days=draw(st.integers(40, 900)) * draw(st.sampled_from([-1, 1])))
            resets.append((at, at + shift))
        else:
            resets.append((at, (EPOCH_1970 if kind == "1970" else EPOCH_2000) + timedelta(seconds=draw(
                st.integers(0, 120)))))
    resets.sort()
    if clean:
        # No reset during a session that a sync then interrupts: its reading would fit either side of the
        # sync, which nothing can tell apart. And at most one reset between two consecutive syncs.
        resets = [(at, value) for at, value in resets
                  if not any(timedelta(0) <= s - at <= timedelta(hours=2) for s in sync_times)]
        kept, intervals = [], set()
        for at, value in resets:
            interval = sum(1 for s in sync_times if s < at)
            if interval not in intervals:
                intervals.add(interval)
                kept.append((at, value))
        resets = kept
    initial = timedelta(seconds=draw(st.sampled_from([0, 3, -40, 3 * 3600, -2 * 86400, 400 * 86400])))
    ppm = draw(st.integers(-50, 50)) / 1_000_000
    sets = [draw(st.booleans()) for _ in sync_times]
    errors = [timedelta(seconds=draw(st.integers(0, 5))) for _ in sync_times]
    anchored = [True if clean else draw(st.booleans()) for _ in sync_times]

    # Walk through time: the unit's offset (reading minus real time) between events drifts at `ppm`.
    events = sorted([(s, "sync", n) for n, s in enumerate(sync_times)] + [(r, "reset", v) for r, v in resets],
                    key=lambda e: (e[0], e[1] == "sync"))
    offset_at_anchor, anchor = initial, BASE - timedelta(days=1)

    def offset(at: datetime) -> timedelta:
        return offset_at_anchor + (at - anchor) * ppm

    session_readings: list[datetime | None] = [None] * count
    syncs = []
    resets_since_sync, one_jump = 0, True
    timeline = sorted([(start, "session", n) for n, (start, _) in enumerate(starts)] + events,
                      key=lambda e: (e[0], {"reset": 0, "session": 1, "sync": 2}[e[1]]))
    for at, kind, value in timeline:
        if kind == "session":
            session_readings[value] = seconds(at + offset(at))
        elif kind == "reset":
            # Clean worlds: every reset moves the clock far (more than any interval lasts), as a reset to an
            # epoch or to a wrong date from a clock that was right does; a reset can then be told apart.
            assume(not clean or abs((value - at) - offset(at)) >= timedelta(days=40))
            offset_at_anchor, anchor = value - at, at
            resets_since_sync += 1
            one_jump = one_jump and resets_since_sync < 2
        else:
            n = value
            resets_since_sync = 0
            highest = sum(1 for s, d in starts if s + d <= at)
            reading = at + offset(at)
            skew = timedelta(seconds=draw(st.integers(-errors[n].seconds, errors[n].seconds))) if errors[n] else \
                timedelta(0)
            set_to = seconds(at + skew) if sets[n] else None
            syncs.append(SyncPoint(highest, reading, (at + skew) if anchored[n] else None, errors[n], set_to, f"s{n}",
                                   "gateway", float(n)))
            if set_to is not None:
                offset_at_anchor, anchor = set_to - at, at
    paired = sync_times[0] <= starts[0][0] and anchored[0]
    world = World(starts, syncs, sync_times[-1] + timedelta(seconds=5), one_jump, paired)
    return world, world.unit_sessions(session_readings)


def _contains(placed: SessionTime, real: datetime) -> bool:
    slack = timedelta(seconds=2)
    return ((placed.earliest is None or placed.earliest - slack <= real)
            and (placed.latest is None or real <= placed.latest + slack))


@settings(max_examples=300, deadline=None)
@given(worlds(clean=False))
def test_the_bounds_always_contain_the_real_start_whatever_the_clock_did(case):
    world, sessions = case
    placed = reconstruct(world.syncs, sessions, received_at=world.received_at)
    assert set(placed) == {s.seq for s in sessions}
    for session in sessions:
        real, _ = world.sessions[session.seq - 1]
        result = placed[session.seq]
        if world.paired and world.one_jump_per_interval and result.basis != "unmeasured":
            # With a sync before the first session and at most one reset between two syncs, the bounds are
            # honest however the clock was skewed, set, drifted or reset, and whether or not the syncs were
            # tied to the server's clock, except where the module says it assumes (`unmeasured`: an offset
            # around a sync nothing ties to real time). Two resets between two syncs can pass for one when
            # the readings fit either way: the module docstring says so.
            assert _contains(result, real), (result, real, world.syncs, sessions)
        if result.quality is not TimeQuality.ESTIMATED:
            assert result.width is not None and result.width <= CORRECTED_WIDTH


def _could_straddle_a_sync(session: UnitSession, syncs: list[SyncPoint]) -> bool:
    """Whether the session's reading would also fit a start just before some sync under an offset the clock
    had earlier (read or set at an earlier sync): then nothing tells the two stories apart, since nothing
    says when between two syncs the clock last changed (the module docstring's ambiguity)."""
    for n, sync in enumerate(syncs):
        if sync.at is None:
            continue
        for earlier in syncs[:n + 1]:
            if earlier.at is None or earlier.unit_clock is None:
                continue
            for value in (earlier.unit_clock, earlier.clock_set_to):
                if value is None:
                    continue
                start = session.device_start - (value - earlier.at)
                if sync.at - session.duration - MINUTE <= start <= sync.at + MINUTE:
                    return True
    return False


@settings(max_examples=300, deadline=None)
@given(worlds(clean=True))
def test_with_a_sync_before_every_reset_every_session_is_placed_exactly_or_corrected(case):
    world, sessions = case
    placed = reconstruct(world.syncs, sessions, received_at=world.received_at)
    for session in sessions:
        real, _ = world.sessions[session.seq - 1]
        result = placed[session.seq]
        assert _contains(result, real), (result, real)
        if not _could_straddle_a_sync(session, world.syncs):
            assert result.quality in (TimeQuality.EXACT, TimeQuality.CORRECTED), result
            assert abs(result.start - real) <= CORRECTED_WIDTH


# --- the situations one by one ------------------------------------------------------------------------

def sync(highest: int, at: datetime, offset: timedelta, set_to: datetime | None = None) -> SyncPoint:
    return SyncPoint(highest, seconds(at + offset), at, timedelta(seconds=2), set_to)


def session(seq: int, real: datetime, offset: timedelta, minutes: int = 30) -> UnitSession:
    return UnitSession(seq, seconds(real + offset), timedelta(minutes=minutes))


def test_a_right_clock_gives_exact_times():
    syncs = [sync(0, BASE, timedelta(0)), sync(3, BASE + timedelta(days=1), timedelta(seconds=2))]
    sessions = [session(n, BASE + timedelta(hours=4 * n), timedelta(seconds=1)) for n in (1, 2, 3)]
    placed = reconstruct(syncs, sessions, received_at=BASE + timedelta(days=1, minutes=1))
    for n in (1, 2, 3):
        assert placed[n].quality is TimeQuality.EXACT
        assert abs(placed[n].start - (BASE + timedelta(hours=4 * n))) < timedelta(seconds=10)


def test_a_skewed_clock_is_corrected_by_the_offset_the_syncs_measured():
    skew = timedelta(hours=-3)
    syncs = [sync(0, BASE, skew), sync(2, BASE + timedelta(hours=10), skew)]
    sessions = [session(1, BASE + timedelta(hours=2), skew), session(2, BASE + timedelta(hours=6), skew)]
    placed = reconstruct(syncs, sessions, received_at=BASE + timedelta(hours=11))
    assert placed[1].quality is TimeQuality.CORRECTED
    assert abs(placed[1].start - (BASE + timedelta(hours=2))) < timedelta(seconds=15)
    assert placed[2].offset is not None and abs(placed[2].offset - skew) < timedelta(seconds=15)


def test_a_reset_to_1970_between_two_syncs_splits_the_sessions_at_the_reset():
    reset_at = BASE + timedelta(hours=30)
    after_reset = EPOCH_1970 + timedelta(minutes=1) - reset_at
    syncs = [sync(0, BASE, timedelta(0)), sync(4, BASE + timedelta(days=3), after_reset)]
    reals = [BASE + timedelta(hours=h) for h in (3, 20, 40, 60)]
    sessions = [session(1, reals[0], timedelta(0)), session(2, reals[1], timedelta(0)),
                session(3, reals[2], after_reset), session(4, reals[3], after_reset)]
    placed = reconstruct(syncs, sessions, received_at=BASE + timedelta(days=3, minutes=1))
    assert [placed[n].quality for n in (1, 2, 3, 4)] == [TimeQuality.EXACT, TimeQuality.EXACT,
                                                        TimeQuality.CORRECTED, TimeQuality.CORRECTED]
    for n, real in enumerate(reals, start=1):
        assert abs(placed[n].start - real) < timedelta(seconds=30)
        assert placed[n].earliest <= real <= placed[n].latest


def test_a_clock_the_gateway_set_wrong_is_still_read_right():
    wrong = timedelta(hours=5)  # a gateway whose own clock was 5 hours ahead set the unit's clock
    syncs = [sync(0, BASE, timedelta(0), set_to=seconds(BASE + wrong)), sync(1, BASE + timedelta(hours=8), wrong)]
    placed = reconstruct(syncs, [session(1, BASE + timedelta(hours=2), wrong)],
                         received_at=BASE + timedelta(hours=9))
    assert placed[1].quality is TimeQuality.CORRECTED
    assert abs(placed[1].start - (BASE + timedelta(hours=2))) < timedelta(seconds=15)


def test_first_contact_after_a_reset_places_the_older_sessions_by_sequence():
    # No sync before: the unit's readings from before its reset cannot be checked, so they are estimated,
    # bounded above by the first session after the reset.
    reset_at = BASE + timedelta(hours=30)
    after_reset = EPOCH_2000 - reset_at
    syncs = [sync(3, BASE + timedelta(days=2), after_reset)]
    sessions = [session(1, BASE + timedelta(hours=3), timedelta(0)), session(2, BASE + timedelta(hours=20), timedelta(0)),
                session(3, BASE + timedelta(hours=40), after_reset)]
    placed = reconstruct(syncs, sessions, received_at=BASE + timedelta(days=2, minutes=1))
    assert placed[3].quality is TimeQuality.CORRECTED
    for n in (1, 2):
        assert placed[n].quality is TimeQuality.ESTIMATED
        assert placed[n].earliest is None and placed[n].latest <= placed[3].start
        assert placed[n].start == sessions[n - 1].device_start  # the raw reading fits: the best guess


def test_an_unanchored_sync_gives_bounds_from_its_neighbours():
    syncs = [sync(0, BASE, timedelta(0)), SyncPoint(2, BASE + timedelta(days=1), None),
             sync(2, BASE + timedelta(days=2), timedelta(0))]
    sessions = [session(1, BASE + timedelta(hours=5), timedelta(0)), session(2, BASE + timedelta(hours=9), timedelta(0))]
    placed = reconstruct(syncs, sessions, received_at=BASE + timedelta(days=2, minutes=5))
    for n, hours in ((1, 5), (2, 9)):
        assert placed[n].earliest <= BASE + timedelta(hours=hours) <= placed[n].latest


def test_sessions_after_every_sync_are_bounded_by_the_receive_time_only():
    syncs = [sync(0, BASE, timedelta(0))]
    sessions = [session(1, BASE + timedelta(hours=2), timedelta(0))]
    received = BASE + timedelta(hours=5)
    placed = reconstruct(syncs, sessions, received_at=received)
    assert placed[1].latest <= received
    assert placed[1].earliest <= BASE + timedelta(hours=2) <= placed[1].latest


def test_what_the_server_received_earlier_stays_bounded_by_when_it_received_it():
    # Nothing ties the sync to real time (a gateway the server never measured): the sync happened, and the
    # session ended, before the server first received them, however much later the unit is placed again.
    first_received = BASE + timedelta(hours=6)
    syncs = [SyncPoint(1, BASE + timedelta(hours=5), None, received_by=first_received)]
    sessions = [UnitSession(1, BASE + timedelta(hours=2), timedelta(minutes=30), received_by=first_received)]
    now = reconstruct(syncs, sessions, received_at=first_received)
    later = reconstruct(syncs, sessions, received_at=first_received + timedelta(days=3))
    assert now == later
    assert later[1].latest <= first_received - timedelta(minutes=30)


@st.composite
def split_cases(draw):
    count = draw(st.integers(0, 12))
    sessions = [UnitSession(n + 1, BASE, timedelta(minutes=draw(st.integers(0, 90)))) for n in range(count)]

    def placement():
        if draw(st.booleans()) and draw(st.booleans()):
            return ()
        lo = BASE + timedelta(minutes=draw(st.integers(0, 24 * 60)))
        return (_Fit(_Span(lo, lo + timedelta(minutes=draw(st.integers(0, 120)))), _Span(MINUTE, MINUTE), (0, 0)),)

    return sessions, [placement() for _ in range(count)], [placement() for _ in range(count)]


def _brute_force_splits(sessions, early, late) -> list[int]:
    def breaks(placed) -> int:
        count, previous = 0, None
        for session, placement in zip(sessions, placed, strict=True):
            if not placement:
                continue
            if previous is not None and max(f.start.hi for f in placement) < (
                    min(f.start.lo for f in previous[1]) + previous[0].duration - ORDER_SLACK):
                count += 1
            previous = (session, placement)
        return count

    scores = [(breaks(list(early[:s]) + list(late[s:])), -sum(bool(p) for p in list(early[:s]) + list(late[s:])))
              for s in range(len(sessions) + 1)]
    return [s for s, score in enumerate(scores) if score == min(scores)]


@settings(max_examples=300, deadline=None)
@given(split_cases())
def test_the_jump_is_searched_in_linear_time_with_the_same_answer_as_scoring_every_split(case):
    sessions, early, late = case
    assert _best_splits(sessions, early, late) == _brute_force_splits(sessions, early, late)



def test_a_reset_hidden_by_a_sync_nothing_ties_to_real_time_leaves_the_drifting_offset_before_it_bounded():
    # The clock, reset to 1970 at the first sync, runs 50 ppm fast for three days (14 s ahead by the session),
    # then is reset to 1970 again just before a sync nothing ties to real time. That sync's reading fits the
    # first offset (its real time is known only between the first sync and the upload), so the two seem to
    # agree; the session still had the first offset plus its drift, which the bounds must cover.
    after_reset = EPOCH_1970 - BASE
    real = BASE + timedelta(hours=80)
    drifted = timedelta(hours=80) * 50 / 1_000_000
    syncs = [SyncPoint(0, EPOCH_1970, BASE), SyncPoint(1, EPOCH_1970, None)]
    placed = reconstruct(syncs, [session(1, real, after_reset + drifted)], received_at=BASE + timedelta(hours=90))
    assert placed[1].basis == "offset_known"
    assert placed[1].earliest <= real <= placed[1].latest


def test_the_case_hypothesis_found_of_a_reset_hidden_by_unanchored_syncs():
    # Saved from the property test above: resets to 1970 at the pairing sync, just before the anchored sync
    # s3 and just before the unanchored s4; sessions 4 to 13 have s3's offset, drifting 12 s by session 13.
    def clock(hours=0, minutes=0, secs=0, micro=0) -> datetime:
        return EPOCH_1970 + timedelta(hours=hours, minutes=minutes, seconds=secs, microseconds=micro)

    syncs = [SyncPoint(0, clock(), BASE, order=0.0),
             SyncPoint(2, clock(1, 27, 53, 664258), None, order=1.0),
             SyncPoint(2, clock(1, 27, 53, 664258), None, order=2.0),
             SyncPoint(2, clock(), datetime(2026, 1, 5, 10, 32, 58, 249418, tzinfo=UTC), order=3.0),
             SyncPoint(13, clock(), None, order=4.0),
             SyncPoint(13, clock(11, 44, 9, 316643), None, order=5.0)]
    readings = [(0, 5, 0, 30), (0, 40, 0, 30), (1, 15, 0, 30), (0, 17, 1, 30), (5, 45, 2, 30), (6, 20, 2, 30),
                (6, 57, 2, 30), (9, 18, 3, 30), (11, 28, 3, 54), (27, 21, 5, 30), (31, 51, 6, 45), (52, 8, 9, 60),
                (79, 8, 14, 30)]
    sessions = [UnitSession(n, clock(h, m, s), timedelta(minutes=minutes))
                for n, (h, m, s, minutes) in enumerate(readings, start=1)]
    placed = reconstruct(syncs, sessions, received_at=datetime(2026, 1, 9, 6, 46, 5, tzinfo=UTC))
    real = datetime(2026, 1, 8, 17, 41, tzinfo=UTC)
    assert placed[13].basis == "offset_known"
    assert placed[13].earliest <= real <= placed[13].latest


def test_a_session_begun_before_a_sync_that_set_the_clock_keeps_the_offset_it_was_recorded_with():
    # Found at 5,000 examples while widening the interval's offset for a hidden jump: session 5 began 43 s
    # by the unit's old offset before the sync that set the clock right, and ended after it. The interval's
    # widened offset touches the old one without containing its drift; the old offset must stay an option.
    def at(day, hours, minutes, secs, micro=0) -> datetime:
        return datetime(2026, 1, day, hours, minutes, secs, micro, tzinfo=UTC)

    syncs = [SyncPoint(0, at(5, 8, 59, 19, 222400), at(5, 9, 0, 0), order=0.0),
             SyncPoint(4, at(6, 22, 19, 48, 12530), at(6, 22, 20, 30), order=1.0),
             SyncPoint(4, at(6, 22, 19, 48, 12530), at(6, 22, 20, 29), timedelta(seconds=1), order=2.0),
             SyncPoint(4, at(7, 0, 39, 49, 811913), at(7, 0, 40, 30, 875000), timedelta(seconds=1),
                       at(7, 0, 40, 30), order=3.0),
             SyncPoint(6, at(8, 10, 30, 56, 91055), at(8, 10, 31, 0, 62500), timedelta(seconds=2), order=4.0),
             SyncPoint(6, at(8, 11, 41, 56, 990207), at(8, 11, 42, 0), order=5.0)]
    readings = [(at(5, 9, 4, 19), 30), (at(5, 9, 39, 19), 30), (at(5, 10, 14, 19), 30), (at(5, 20, 40, 18), 60),
                (at(6, 23, 40, 17), 60), (at(7, 8, 40, 57), 60)]
    sessions = [UnitSession(n, reading, timedelta(minutes=minutes))
                for n, (reading, minutes) in enumerate(readings, start=1)]
    placed = reconstruct(syncs, sessions, received_at=at(8, 11, 42, 5))
    assert placed[5].earliest <= at(6, 23, 41, 0) <= placed[5].latest
