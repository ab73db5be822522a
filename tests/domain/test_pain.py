from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion.domain.pain import (
    BriefPainInventory,
    FlareReason,
    PainEntry,
    Role,
    bpi_interference,
    bpi_severity,
    bpi_severity_problems,
    flare_at,
    flares,
    median_pain,
    pain_change_for_session,
    validate_bpi,
    validate_nrs,
)

T0 = datetime(2025, 5, 1, 12, tzinfo=UTC)


def entry(hours: float, score: int, entry_id: str | None = None, **kwargs) -> PainEntry:
    return PainEntry(entry_id or f"e{hours}", T0 + timedelta(hours=hours), score, **kwargs)


@pytest.mark.parametrize("score", [0, 5, 10])
def test_nrs_accepts_whole_numbers_0_to_10(score):
    assert validate_nrs(score) == score


@pytest.mark.parametrize("score", [-1, 11, 5.5, "5", True, None])
def test_nrs_rejects_out_of_range_or_non_integer(score):
    with pytest.raises(ValueError):
        validate_nrs(score)


def test_bpi_severity_is_mean_of_four_items():
    assert bpi_severity(BriefPainInventory(worst=8, least=2, average=5, now=5)) == 5.0


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ((4, 4, 6, 6, None, None, None), 5.0),
        ((4, 4, 6, None, None, None, None), None),
        ((1, 2, 3, 4, 5, 6, 7), 4.0),
        ((None,) * 7, None),
    ],
)
def test_bpi_interference_needs_four_answered_items(items, expected):
    assert bpi_interference(BriefPainInventory(5, 5, 5, 5, items)) == expected


def test_bpi_with_item_out_of_range_or_wrong_length_is_rejected():
    with pytest.raises(ValueError):
        validate_bpi(BriefPainInventory(11, 0, 0, 0))
    with pytest.raises(ValueError):
        validate_bpi(BriefPainInventory(1, 0, 0, 0, (1, 2, 3)))
    with pytest.raises(ValueError):
        validate_bpi(BriefPainInventory(1, 0, 0, 0, (1, 2, 3, 4, 5, 6, 12)))


def test_median_uses_only_the_14_days_before():
    entries = [entry(-24 * 15, 9), entry(-24 * 13, 2), entry(-24, 4), entry(-1, 6), entry(0, 10)]
    assert median_pain(entries, T0) == 4
    assert median_pain([], T0) is None


@pytest.mark.parametrize(
    ("history", "current", "reason"),
    [
        ([entry(-23, 7)], entry(0, 7), FlareReason.TWO_HIGH),
        ([entry(-24, 8)], entry(0, 7), FlareReason.TWO_HIGH),
        ([entry(-25, 8)], entry(0, 7), None),
        ([entry(-2, 6)], entry(0, 9), None),
        ([entry(-48, 2), entry(-30, 3), entry(-10, 3)], entry(0, 6), FlareReason.ABOVE_MEDIAN),
        ([entry(-48, 2), entry(-30, 3), entry(-10, 3)], entry(0, 5), None),
        ([entry(-30, 2), entry(-10, 2)], entry(0, 6), None),  # only 2 prior entries: no baseline
        ([entry(-24 * 15, 2), entry(-30, 2), entry(-10, 2)], entry(0, 6), None),  # one too old
    ],
)
def test_flare_rules(history, current, reason):
    flare = flare_at(current, [*history, current])
    assert (flare.reason if flare else None) == reason


def test_flares_lists_each_flaring_entry_in_order():
    entries = [entry(0, 7), entry(3, 8), entry(50, 2)]
    assert [f.entry.entry_id for f in flares(entries)] == ["e3"]


def test_session_pain_change_prefers_linked_entries():
    start, end = T0, T0 + timedelta(minutes=30)
    entries = [
        entry(-0.5, 7),
        entry(-3, 6, "linked-before", session_id="s1", role=Role.BEFORE),
        entry(1, 3, "linked-after", session_id="s1", role=Role.AFTER),
        entry(0.75, 5),
    ]
    change = pain_change_for_session("s1", start, end, entries)
    assert (change.before.entry_id, change.after.entry_id, change.change) == (
        "linked-before",
        "linked-after",
        -3,
    )


def test_session_pain_change_falls_back_to_nearest_entries_in_windows():
    start, end = T0, T0 + timedelta(minutes=30)
    entries = [entry(-2, 9), entry(-0.75, 7), entry(-0.25, 6), entry(1, 4), entry(2, 2), entry(3, 1)]
    change = pain_change_for_session("s1", start, end, entries)
    assert (change.before.score, change.after.score, change.change) == (6, 4, -2)
    assert pain_change_for_session("s1", start, end, [entry(-0.25, 6)]) is None


@given(st.lists(st.tuples(st.integers(0, 24 * 20), st.integers(0, 10)), max_size=30))
def test_property_flares_only_at_entries_that_meet_a_rule(pairs):
    entries = [PainEntry(f"e{i}", T0 + timedelta(hours=h), s) for i, (h, s) in enumerate(pairs)]
    for flare in flares(entries):
        assert flare.entry.score >= 7 or (flare.baseline_median is not None and flare.entry.score >= 3)


def test_one_high_reading_is_a_flare_for_suggestions_but_not_for_alerts():
    from datetime import UTC, datetime

    from companion.domain.pain import FlareReason, PainEntry, flare_at

    entry = PainEntry(entry_id="e1", recorded_at_utc=datetime(2025, 5, 1, 9, tzinfo=UTC), score=8)
    assert flare_at(entry, [entry]) is None
    assert flare_at(entry, [entry], high_readings=1).reason is FlareReason.ONE_HIGH


@pytest.mark.parametrize(
    ("worst", "least", "average", "now", "faulty"),
    [
        (8, 2, 5, 5, set()),
        (5, 5, 5, 5, set()),  # pain that did not vary
        (8, 2, 8, 2, set()),  # average and now may sit on either bound
        (3, 5, 4, 4, {"least", "average", "now"}),  # least above worst: nothing fits between them
        (6, 2, 7, 4, {"average"}),
        (6, 2, 1, 4, {"average"}),
        (6, 2, 4, 9, {"now"}),
        (6, 2, 4, 1, {"now"}),
    ],
)
def test_bpi_severity_items_must_agree_with_each_other(worst, least, average, now, faulty):
    assert set(bpi_severity_problems(worst, least, average, now)) == faulty
    if faulty:
        with pytest.raises(ValueError):
            validate_bpi(BriefPainInventory(worst, least, average, now))
    else:
        assert validate_bpi(BriefPainInventory(worst, least, average, now))


@given(st.integers(0, 10), st.integers(0, 10), st.integers(0, 10), st.integers(0, 10))
def test_property_bpi_is_consistent_exactly_when_least_average_now_and_worst_are_ordered(worst, least, average, now):
    consistent = least <= worst and least <= average <= worst and least <= now <= worst
    assert (bpi_severity_problems(worst, least, average, now) == {}) == consistent
