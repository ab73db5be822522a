"""Practice as the figures count it: the union of a patient's completed practices, each once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from companion.domain.practice import REACH, PracticeCount, PracticeUnion, Practised

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def counted(*practices: tuple[str, float, float]) -> dict[str, PracticeCount]:
    union = PracticeUnion()
    return {key: union.add(Practised(key, T + timedelta(minutes=at), minutes)) for key, at, minutes in practices}


def test_the_same_practice_recorded_twice_counts_once_and_is_one_practice():
    assert counted(("a", 0, 20), ("b", 0, 20)) == {"a": PracticeCount(20, True), "b": PracticeCount(0, False)}


def test_a_practice_overlapping_an_earlier_one_adds_only_its_minutes_outside_it():
    assert counted(("a", 0, 20), ("b", 5, 20)) == {"a": PracticeCount(20, True), "b": PracticeCount(5, False)}


def test_practices_a_minute_apart_or_less_are_each_a_practice_of_their_own():
    assert counted(("a", 0, 10), ("b", 9, 10), ("c", 30, 5)) == {
        "a": PracticeCount(10, True), "b": PracticeCount(9, True), "c": PracticeCount(5, True)}


def test_a_practice_begun_within_the_rounding_of_the_one_before_s_stored_minutes_counts_all_its_minutes():
    """The first ended at 5:58, its minutes stored as 6.0 (to the tenth): the second, begun then, is not counted
    2 seconds short, nor is one 3 seconds in (half a tenth: what the rounding can make); one 4 seconds in is."""
    assert counted(("a", 0, 6.0), ("b", 5 + 58 / 60, 6.0)) == {
        "a": PracticeCount(6.0, True), "b": PracticeCount(6.0, True)}
    assert counted(("a", 0, 6.0), ("b", 5 + 57 / 60, 6.0))["b"] == PracticeCount(6.0, True)
    assert counted(("a", 0, 6.0), ("b", 5 + 56 / 60, 6.0))["b"] == PracticeCount(5.9, True)


def test_a_practice_counts_its_minutes_outside_earlier_ones_to_the_tenth_shown():
    assert counted(("a", 0, 20), ("b", 19 + 50 / 60, 10))["b"] == PracticeCount(9.8, True)  # 9 min 50 s


def test_a_practice_inside_a_union_of_several_earlier_ones_adds_nothing():
    assert counted(("a", 0, 10), ("b", 8, 10), ("c", 12, 4))["c"] == PracticeCount(0, False)


def test_no_practice_covers_more_than_the_longest_item_lasts():
    """A record longer than any item (stored before the library's limits) covers no more than REACH, so a view
    that reads from REACH before its first practice counts as one that reads from further back."""
    reach = REACH.total_seconds() / 60
    assert counted(("a", 0, reach + 10), ("b", reach + 5, 5))["b"] == PracticeCount(5, True)


def test_practices_out_of_order_are_refused():
    union = PracticeUnion()
    union.add(Practised("b", T, 5))
    with pytest.raises(ValueError):
        union.add(Practised("a", T, 5))
