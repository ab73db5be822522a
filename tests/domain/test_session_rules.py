"""What holds a stored session back from the figures, whose it is, and how much of it counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from companion.domain.localtime import TimeZoneHistory
from companion.domain.sessions import (
    Binding,
    Flag,
    Timed,
    clinical_findings,
    counted_minutes,
    counting,
    counts_as_session,
    handover_problem,
    identity_problem,
    overlaps,
    owner_at,
    relay_vouched,
    time_findings,
)

T = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
LONDON = TimeZoneHistory.fixed("Europe/London")


def record(**changes) -> dict:
    base = {"record_id": "CT-1:4", "device_serial": "CT-1", "device_seq": 4, "duration_s": 1800,
            "frequency_hz": 100, "pulse_width_us": 200, "intensity_mean_ma": 15.0, "intensity_peak_ma": 25.0}
    return {**base, **changes}


def test_only_a_record_without_an_identity_is_refused():
    assert identity_problem(record()) is None
    assert "record_id" in identity_problem(record(record_id="CT-1:5"))


def test_clinical_rules_are_findings_not_refusals():
    assert clinical_findings(record()) == []
    found = clinical_findings(record(duration_s=0, frequency_hz=5000))
    assert [f.flag for f in found] == [Flag.CLINICAL, Flag.CLINICAL]
    assert "duration" in found[0].reason and "frequency" in found[1].reason


def test_time_findings_future_window_and_uncertain_day():
    assert time_findings(T - HOUR, T - HOUR, T - HOUR, T, LONDON) == []
    assert [f.flag for f in time_findings(T + HOUR, T + HOUR, T + HOUR, T, LONDON)] == [Flag.FUTURE]
    assert [f.flag for f in time_findings(T - timedelta(days=31), T - timedelta(days=31), T - timedelta(days=31), T,
                                          LONDON)] == [Flag.OUTSIDE_WINDOW]
    across_midnight = time_findings(T - 13 * HOUR, T - 14 * HOUR, T - 10 * HOUR, T, LONDON)
    assert [f.flag for f in across_midnight] == [Flag.TIME_UNCERTAIN]
    assert [f.flag for f in time_findings(T - HOUR, None, T - HOUR, T, LONDON)] == [Flag.TIME_UNCERTAIN]
    # An estimate whose bounds stay within one local day is not held.
    assert time_findings(T - HOUR, T - 3 * HOUR, T - HOUR, T, LONDON) == []


def test_a_start_known_to_minutes_counts_on_its_days_even_at_midnight():
    midnight = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # London is on UTC in March before the clocks change
    minute = timedelta(minutes=1)
    # An exact clock's bedtime session: 30 seconds before midnight, known to a minute either side.
    assert time_findings(midnight - minute / 2, midnight - 3 * minute / 2, midnight + minute / 2, T, LONDON) == []
    # Ten minutes wide is still known well enough; anything wider across midnight is held.
    assert time_findings(midnight, midnight - 5 * minute, midnight + 5 * minute, T, LONDON) == []
    wider = time_findings(midnight, midnight - 6 * minute, midnight + 5 * minute, T, LONDON)
    assert [f.flag for f in wider] == [Flag.TIME_UNCERTAIN]


def test_a_session_belongs_to_whoever_wore_the_unit_then():
    moved = T - timedelta(days=2)
    bindings = [Binding("maria", T - timedelta(days=30), moved), Binding("james", moved)]
    assert owner_at(bindings, T - timedelta(days=3), T - timedelta(days=3)).patient_id == "maria"
    assert owner_at(bindings, T - HOUR, T - HOUR).patient_id == "james"
    # Before its first binding, a unit is its first patient's.
    assert owner_at(bindings, T - timedelta(days=40), T - timedelta(days=40)).patient_id == "maria"
    straddling = owner_at(bindings, moved - HOUR, moved + HOUR)
    assert not straddling.certain and straddling.candidates == ("maria", "james")
    assert owner_at(bindings, None, T).candidates == ("maria", "james")


def test_a_gap_between_bindings_leaves_the_owner_to_a_clinician():
    bindings = [Binding("maria", T - timedelta(days=30), T - timedelta(days=5)), Binding("james", T - timedelta(days=2))]
    gap = owner_at(bindings, T - timedelta(days=3), T - timedelta(days=3))
    assert not gap.certain and set(gap.candidates) == {"maria", "james"}
    released = owner_at([Binding("maria", T - timedelta(days=30), T - timedelta(days=5))], T - HOUR, T - HOUR)
    assert not released.certain and released.candidates == ("maria",)
    assert owner_at([], T, T).candidates == ()


def test_an_overlap_counts_once():
    sessions = [Timed("a", 1, T, 30 * timedelta(minutes=1)), Timed("b", 2, T + timedelta(minutes=20), 40 * timedelta(minutes=1)),
                Timed("c", 3, T + 2 * HOUR, 30 * timedelta(minutes=1))]
    found = overlaps(sessions)
    assert found == {"b": ("a", timedelta(minutes=30))}
    assert overlaps([Timed("a", 1, T, HOUR), Timed("dup", 2, T, HOUR)]) == {"dup": ("a", timedelta(0))}


def test_counting():
    thirty = timedelta(minutes=30)
    plain = counting([], thirty, None, None)
    assert (plain.held, plain.counts, plain.minutes) == (False, True, 30.0)
    held = counting([Flag.TIME_UNCERTAIN], thirty, None, None)
    assert (held.held, held.counts, held.minutes) == (True, False, 0.0)
    resolved = counting([Flag.TIME_UNCERTAIN], thirty, None, "count")
    assert (resolved.held, resolved.counts, resolved.minutes) == (False, True, 30.0)
    excluded = counting([], thirty, None, "exclude")
    assert (excluded.held, excluded.counts) == (True, False)
    overlapping = counting([Flag.OVERLAP], thirty, timedelta(minutes=10), None)
    assert (overlapping.held, overlapping.counts, overlapping.minutes) == (False, False, 10.0)


def test_records_stored_before_these_rules_count_whole():
    assert counted_minutes({"duration_s": 1800}) == 30.0 and counts_as_session({"duration_s": 1800})
    assert counted_minutes({"duration_s": 1800, "counted_minutes": 0, "held": True}) == 0.0
    assert not counts_as_session({"held": True})


def _overlaps_by_every_pair(sessions: list[Timed]) -> dict[str, tuple[str, timedelta]]:
    """The overlap rule read literally, every pair compared: what ``overlaps``'s sweep must agree with."""
    by_key = {s.key: s for s in sessions}
    ordered = sorted(by_key.values(), key=lambda s: (s.start, s.seq))
    covering: dict[str, list] = {}
    for i, first in enumerate(ordered):
        for second in ordered[i + 1:]:
            lo, hi = second.start, min(first.start + first.duration, second.start + second.duration)
            if hi - lo > timedelta(minutes=1):
                later, earlier = (second, first) if second.seq > first.seq else (first, second)
                covering.setdefault(later.key, []).append((lo, hi, earlier.key))
    found = {}
    for key, covered in covering.items():
        session, outside = by_key[key], timedelta(0)
        covered.sort()
        cursor = session.start
        for lo, hi, _ in covered:
            outside += max(lo - cursor, timedelta(0))
            cursor = max(cursor, hi)
        outside += max(timedelta(0), session.start + session.duration - cursor)
        found[key] = (covered[0][2], outside)
    return found


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 12), st.integers(0, 6)), max_size=25))
def test_the_overlap_sweep_agrees_with_comparing_every_pair(spec):
    """Starts and durations in steps of 30 s (so some overlaps are exactly the one-minute slack)."""
    sessions = [Timed(f"r{key}", seq, T + timedelta(seconds=30 * start), timedelta(seconds=30 * length))
                for seq, (start, length, key) in enumerate(spec)]
    assert overlaps(sessions) == _overlaps_by_every_pair(sessions)


def test_another_patients_gateway_is_vouched_for_only_as_the_units_backlog_when_it_changed_hands():
    day = timedelta(days=1)
    bindings = [Binding("a", T - 60 * day, T), Binding("b", T)]
    assert relay_vouched(bindings, "a", "a", T - 50 * day)  # the wearer's own hub: always
    assert relay_vouched(bindings, "a", None, T - 50 * day)  # history imported without a hub
    assert relay_vouched(bindings, "a", "b", T - 14 * day)  # what the unit held when it moved
    assert not relay_vouched(bindings, "a", "b", T - 14 * day - timedelta(seconds=1))
    assert not relay_vouched(bindings, "b", "a", T + HOUR)  # after the unit left A's home: B's binding goes on
    assert not relay_vouched(bindings, "a", "b", None)  # a start with no bound


def test_a_release_with_no_time_vouches_for_another_hubs_backlog_only_up_to_the_wearers_own_hubs_last_contact():
    """Released with no time, the binding says only that the unit changed hands by then: what the new wearer's hub
    brings from after the old wearer's hub last saw the unit may be the new wearer's own therapy."""
    day = timedelta(days=1)
    told_late = [Binding("a", T - 60 * day, T, end_stated=False, last_seen=T - 3 * day), Binding("b", T)]
    assert relay_vouched(told_late, "a", "b", T - 3 * day)  # before A's hub last saw it: A's
    assert not relay_vouched(told_late, "a", "b", T - 3 * day + timedelta(seconds=1))  # after: perhaps B's
    assert relay_vouched(told_late, "a", "a", T - HOUR)  # A's own hub: always
    never_seen = [Binding("a", T - 60 * day, T, end_stated=False), Binding("b", T)]
    assert not relay_vouched(never_seen, "a", "b", T - day)
    stated = [Binding("a", T - 60 * day, T, end_stated=True, last_seen=T - 3 * day), Binding("b", T)]
    assert relay_vouched(stated, "a", "b", T - day)  # the hand-over time was said: the backlog up to it is A's


def test_a_unit_changes_hands_neither_in_the_future_nor_while_another_binding_holds_it():
    assert handover_problem(T, T, T - HOUR) is None
    assert handover_problem(T - HOUR, T, T - HOUR) is None
    assert handover_problem(T + timedelta(seconds=1), T, None) is not None
    assert handover_problem(T - 2 * HOUR, T, T - HOUR) is not None
