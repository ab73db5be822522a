from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from companion.domain.pain import PainEntry
from companion.domain.suggestions import (
    ContentItem,
    PracticeCompletion,
    pain_change_after_practice,
    suggest_after_flare,
)

T0 = datetime(2025, 5, 1, 12, tzinfo=UTC)

BREATH = ContentItem("breath", "Box breathing", "breathing", 5)
SCAN = ContentItem("scan", "Short body scan", "body_scan", 8)
YOGA = ContentItem("yoga", "Gentle stretch", "gentle_movement", 6)
EDU = ContentItem("edu", "Why pain flares", "pain_education", 10)
LONG = ContentItem("long", "Long meditation", "meditation", 25)
ITEMS = [YOGA, EDU, LONG, SCAN, BREATH]


def practice(item_id: str, hours: float, minutes: int = 8) -> PracticeCompletion:
    start = T0 + timedelta(hours=hours)
    return PracticeCompletion(item_id, start, start + timedelta(minutes=minutes))


def pain(hours: float, score: int) -> PainEntry:
    return PainEntry(f"p{hours}", T0 + timedelta(hours=hours), score)


def test_change_pairs_last_entry_before_with_first_entry_after():
    entries = [pain(-2, 8), pain(-0.5, 7), pain(1, 4), pain(2, 3)]
    assert pain_change_after_practice([practice("yoga", 0)], entries) == {"yoga": [-3]}


def test_practice_without_both_ratings_gives_no_pair():
    assert pain_change_after_practice([practice("yoga", 0)], [pain(-0.5, 7), pain(5, 4)]) == {}


def test_without_evidence_items_rank_by_category_fit_and_skip_long_ones():
    ranked = suggest_after_flare(ITEMS, [], [], limit=5)
    assert [s.item.item_id for s in ranked] == ["breath", "scan", "edu", "yoga"]


def test_items_followed_by_lower_pain_rank_first():
    completions = [practice("yoga", 0), practice("yoga", 24), practice("edu", 48), practice("scan", 72)]
    entries = [
        pain(-0.5, 7),
        pain(1, 4),  # yoga -3
        pain(23.5, 6),
        pain(25, 5),  # yoga -1
        pain(47.5, 6),
        pain(49, 5),  # edu -1
        pain(71.5, 5),
        pain(73, 6),  # scan +1: not hidden, ranks by fit
    ]
    ranked = suggest_after_flare(ITEMS, completions, entries, limit=5)
    assert [(s.item.item_id, s.mean_pain_change) for s in ranked] == [
        ("yoga", -2.0),
        ("edu", -1.0),
        ("breath", None),
        ("scan", 1.0),
    ]


@given(st.lists(st.sampled_from(["breath", "scan", "yoga", "edu", "long"]), max_size=6), st.integers(0, 5))
def test_property_suggestions_are_short_unique_and_bounded(done, limit):
    completions = [practice(item_id, 24 * i) for i, item_id in enumerate(done)]
    ranked = suggest_after_flare(ITEMS, completions, [], limit=limit)
    ids = [s.item.item_id for s in ranked]
    assert len(ids) == len(set(ids)) <= limit
    assert all(s.item.duration_minutes <= 10 for s in ranked)
