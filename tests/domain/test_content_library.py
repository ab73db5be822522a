"""The mindfulness library shipped with Companion, and the rules that keep a library file usable."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

from companion.domain.content_library import (
    CATEGORIES,
    ITEM_FIELDS,
    ContentItem,
    LibraryError,
    default_library_path,
    load_library,
    validate_item,
    validate_library,
)

GOOD_ITEM = {
    "slug": "test-breath",
    "title": "Test breath",
    "category": "breathing",
    "duration_min": 3,
    "level": "beginner",
    "language": "en",
    "summary": "A breath used only by these tests.",
    "steps": ["Sit.", "Breathe in.", "Breathe out.", "Rest."],
    "tags": ["quick", "seated"],
    "audio_url": None,
    "suitable_during_tens": True,
    "contraindications": [],
}


def item(**changes) -> dict:
    raw = copy.deepcopy(GOOD_ITEM)
    raw.update(changes)
    return raw


def item_without(name: str) -> dict:
    raw = copy.deepcopy(GOOD_ITEM)
    del raw[name]
    return raw


@pytest.fixture(scope="module")
def shipped() -> list[ContentItem]:
    return load_library(default_library_path())


# ---- the shipped library ----


def test_shipped_library_has_no_problems():
    document = json.loads(default_library_path().read_text(encoding="utf-8"))
    assert validate_library(document) == []


def test_shipped_library_has_at_least_36_items(shipped):
    assert len(shipped) >= 36


def test_shipped_library_has_at_least_five_items_in_every_category(shipped):
    counts = Counter(entry.category for entry in shipped)
    thin = {category: counts[category] for category in CATEGORIES if counts[category] < 5}
    assert thin == {}


def test_shipped_slugs_are_unique(shipped):
    slugs = [entry.slug for entry in shipped]
    assert len(slugs) == len(set(slugs))


def test_shipped_library_offers_several_items_of_five_minutes_or_less_for_flares(shipped):
    short = [entry for entry in shipped if entry.duration_min <= 5]
    assert len(short) >= 5
    assert len({entry.category for entry in short}) >= 3


def test_shipped_gentle_movement_is_never_marked_suitable_during_tens(shipped):
    movement = [entry for entry in shipped if entry.category == "gentle_movement"]
    assert [entry.slug for entry in movement if entry.suitable_during_tens] == []


def test_shipped_items_carry_no_audio_yet(shipped):
    assert {entry.audio_url for entry in shipped} == {None}


def test_loaded_items_are_frozen_with_tuples(shipped):
    first = shipped[0]
    assert isinstance(first.steps, tuple) and isinstance(first.tags, tuple)
    with pytest.raises(AttributeError):
        first.title = "changed"


# ---- one item ----


def test_a_well_formed_item_has_no_problems():
    assert validate_item(GOOD_ITEM) == []


def test_an_item_that_is_not_an_object_is_rejected():
    assert validate_item(["slug"]) == ["item must be an object, got array"]


def test_unknown_field_is_rejected():
    assert validate_item(item(video_url="https://example.org/v")) == ["unknown field 'video_url'"]


@pytest.mark.parametrize("name", ITEM_FIELDS)
def test_each_missing_field_is_rejected(name):
    assert validate_item(item_without(name)) == [f"missing field {name!r}"]


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("title", 7, "title must be a string, got integer"),
        ("summary", None, "summary must be a string, got null"),
        ("slug", ["a"], "slug must be a string, got array"),
        ("category", 1, "category must be a string, got integer"),
        ("level", True, "level must be a string, got boolean"),
        ("language", {}, "language must be a string, got object"),
        ("duration_min", "5", "duration_min must be an integer, got string"),
        ("duration_min", 5.0, "duration_min must be an integer, got number"),
        ("duration_min", True, "duration_min must be an integer, got boolean"),
        ("steps", "Sit. Breathe.", "steps must be an array of strings, got string"),
        ("tags", "quick", "tags must be an array of strings, got string"),
        ("audio_url", 3, "audio_url must be null or a string, got integer"),
        ("suitable_during_tens", "yes", "suitable_during_tens must be true or false, got string"),
        ("contraindications", None, "contraindications must be an array of strings, got null"),
    ],
)
def test_wrong_type_is_rejected(name, value, problem):
    assert validate_item(item(**{name: value})) == [problem]


def test_blank_title_is_rejected():
    assert validate_item(item(title="   ")) == ["title must not be empty"]


def test_slug_that_is_not_kebab_case_is_rejected():
    assert validate_item(item(slug="Box_Breathing")) == [
        "slug 'Box_Breathing' must be kebab-case (lowercase letters and digits joined by single hyphens)"
    ]


def test_unknown_category_is_rejected():
    assert validate_item(item(category="yoga")) == [
        "category 'yoga' is not one of: breathing, body_scan, meditation, gentle_movement, pain_education, sleep"
    ]


def test_unknown_level_is_rejected():
    assert validate_item(item(level="expert")) == [
        "level 'expert' is not one of: beginner, intermediate, advanced"
    ]


@pytest.mark.parametrize("minutes", [1, 31, 0, -5])
def test_duration_outside_two_to_thirty_minutes_is_rejected(minutes):
    assert validate_item(item(duration_min=minutes)) == [f"duration_min {minutes} is outside 2-30 minutes"]


@pytest.mark.parametrize("minutes", [2, 30])
def test_duration_at_the_limits_is_accepted(minutes):
    assert validate_item(item(duration_min=minutes)) == []


def test_language_that_is_not_a_two_letter_code_is_rejected():
    assert validate_item(item(language="English")) == [
        "language 'English' must be a two-letter lowercase ISO 639-1 code such as 'en'"
    ]


def test_empty_steps_are_rejected():
    assert validate_item(item(steps=[])) == ["steps must not be empty"]


def test_too_few_steps_are_rejected():
    assert validate_item(item(steps=["Sit.", "Breathe."])) == ["steps has 2 entries; an item needs 4-12"]


def test_too_many_steps_are_rejected():
    assert validate_item(item(steps=["Breathe."] * 13)) == ["steps has 13 entries; an item needs 4-12"]


def test_blank_or_non_text_step_is_rejected():
    assert validate_item(item(steps=["Sit.", "", "Breathe out.", 4])) == [
        "steps[1] must be a non-empty string",
        "steps[3] must be a non-empty string",
    ]


def test_tag_that_is_not_a_lowercase_word_is_rejected():
    assert validate_item(item(tags=["quick", "Lying Down"])) == [
        "tags[1] 'Lying Down' must be a lowercase word (hyphens allowed)"
    ]


def test_repeated_tag_is_rejected():
    assert validate_item(item(tags=["quick", "flare", "quick"])) == ["tag 'quick' appears more than once"]


def test_audio_url_that_is_not_https_is_rejected():
    assert validate_item(item(audio_url="http://example.org/a.mp3")) == [
        "audio_url 'http://example.org/a.mp3' must be null or an https:// URL"
    ]


def test_https_audio_url_is_accepted():
    assert validate_item(item(audio_url="https://example.org/a.mp3")) == []


def test_blank_contraindication_is_rejected():
    assert validate_item(item(contraindications=["Stop if dizzy", " "])) == [
        "contraindications[1] must be a non-empty string"
    ]


def test_every_problem_of_one_item_is_reported_together():
    raw = item(category="yoga", duration_min=45, steps=[])
    del raw["title"]
    assert len(validate_item(raw)) == 4


# ---- the whole file ----


def test_duplicate_slugs_across_the_file_are_rejected():
    document = {"version": 1, "items": [item(), item(title="Another"), item(slug="other-breath")]}
    assert validate_library(document) == [
        "items[1] (test-breath): duplicate slug 'test-breath' (first used by items[0])"
    ]


def test_item_problems_are_labelled_with_position_and_slug():
    document = {"version": 1, "items": [item(), item(slug="slow-breath", level="expert")]}
    assert validate_library(document) == [
        "items[1] (slow-breath): level 'expert' is not one of: beginner, intermediate, advanced"
    ]


def test_wrong_version_is_rejected():
    assert validate_library({"version": 2, "items": [item()]}) == ["version must be 1, got 2"]


def test_unknown_and_missing_top_level_fields_are_rejected():
    assert validate_library({"items": [item()], "authors": []}) == [
        "unknown top-level field 'authors'",
        "missing top-level field 'version'",
    ]


def test_items_that_are_not_an_array_are_rejected():
    assert validate_library({"version": 1, "items": {"slug": "x"}}) == ["items must be an array, got object"]


def test_a_document_that_is_not_an_object_is_rejected():
    assert validate_library([item()]) == [
        "the library must be an object with 'version' and 'items', got array"
    ]


# ---- loading ----


def test_load_returns_items_in_file_order(tmp_path):
    path = tmp_path / "library.json"
    path.write_text(
        json.dumps({"version": 1, "items": [item(), item(slug="second-breath")]}), encoding="utf-8"
    )
    assert [entry.slug for entry in load_library(path)] == ["test-breath", "second-breath"]


def test_load_raises_listing_every_problem(tmp_path):
    path = tmp_path / "library.json"
    bad = {"version": 1, "items": [item(level="expert"), item(duration_min=99), item()]}
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(LibraryError) as caught:
        load_library(path)
    assert caught.value.problems == (
        "items[0] (test-breath): level 'expert' is not one of: beginner, intermediate, advanced",
        "items[1] (test-breath): duration_min 99 is outside 2-30 minutes",
        "items[1] (test-breath): duplicate slug 'test-breath' (first used by items[0])",
        "items[2] (test-breath): duplicate slug 'test-breath' (first used by items[0])",
    )
    assert "4 problem(s)" in str(caught.value)


def test_load_rejects_invalid_json_with_its_position(tmp_path):
    path = tmp_path / "library.json"
    path.write_text('{"version": 1,\n "items": [}', encoding="utf-8")
    with pytest.raises(LibraryError) as caught:
        load_library(path)
    assert caught.value.problems[0].startswith("invalid JSON at line 2, column 12")


def test_load_rejects_a_missing_file(tmp_path):
    with pytest.raises(LibraryError) as caught:
        load_library(tmp_path / "absent.json")
    assert caught.value.problems[0].startswith("cannot read the file")
