"""The mindfulness library as shipped with Companion: what an item is and the rules a library file meets.

The library is data (`companion/content/mindfulness.json`), loaded into the database by a command. This
module only reads and checks it: every problem in the file is collected and reported at once, so a person
adding an item sees everything to fix in one go rather than one error per run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

LIBRARY_VERSION = 1
CATEGORIES = ("breathing", "body_scan", "meditation", "gentle_movement", "pain_education", "sleep")
LEVELS = ("beginner", "intermediate", "advanced")
DURATION_MIN_RANGE = (2, 30)
STEPS_RANGE = (4, 12)
TOP_LEVEL_FIELDS = ("version", "items")

_KEBAB = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_LANGUAGE = re.compile(r"[a-z]{2}")
_JSON_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


class LibraryError(ValueError):
    """A library file that cannot be used; `problems` lists every reason found."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = tuple(problems)
        listed = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the mindfulness library:\n{listed}")


@dataclass(frozen=True)
class ContentItem:
    """One practice or reading in the library, as a patient would browse and follow it."""

    slug: str
    title: str
    category: str
    duration_min: int
    level: str
    language: str
    summary: str
    steps: tuple[str, ...]
    tags: tuple[str, ...]
    audio_url: str | None
    suitable_during_tens: bool
    contraindications: tuple[str, ...]


ITEM_FIELDS = tuple(field.name for field in fields(ContentItem))


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _wrong_type(name: str, expected: str, value: object) -> list[str]:
    return [f"{name} must be {expected}, got {_json_type(value)}"]


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_text(name: str) -> Callable[[object], list[str]]:
    def check(value: object) -> list[str]:
        if not isinstance(value, str):
            return _wrong_type(name, "a string", value)
        return [] if value.strip() else [f"{name} must not be empty"]

    return check


def _check_slug(value: object) -> list[str]:
    if not isinstance(value, str):
        return _wrong_type("slug", "a string", value)
    if not _KEBAB.fullmatch(value):
        return [f"slug {value!r} must be kebab-case (lowercase letters and digits joined by single hyphens)"]
    return []


def _check_choice(name: str, choices: tuple[str, ...]) -> Callable[[object], list[str]]:
    def check(value: object) -> list[str]:
        if not isinstance(value, str):
            return _wrong_type(name, "a string", value)
        return [] if value in choices else [f"{name} {value!r} is not one of: {', '.join(choices)}"]

    return check


def _check_duration(value: object) -> list[str]:
    # bool is a subclass of int in Python, but `true` is not a duration.
    if isinstance(value, bool) or not isinstance(value, int):
        return _wrong_type("duration_min", "an integer", value)
    low, high = DURATION_MIN_RANGE
    return [] if low <= value <= high else [f"duration_min {value} is outside {low}-{high} minutes"]


def _check_language(value: object) -> list[str]:
    if not isinstance(value, str):
        return _wrong_type("language", "a string", value)
    if not _LANGUAGE.fullmatch(value):
        return [f"language {value!r} must be a two-letter lowercase ISO 639-1 code such as 'en'"]
    return []


def _check_steps(value: object) -> list[str]:
    if not isinstance(value, list):
        return _wrong_type("steps", "an array of strings", value)
    if not value:
        return ["steps must not be empty"]
    problems = [
        f"steps[{i}] must be a non-empty string" for i, step in enumerate(value) if not _is_text(step)
    ]
    low, high = STEPS_RANGE
    if not low <= len(value) <= high:
        problems.append(f"steps has {len(value)} entries; an item needs {low}-{high}")
    return problems


def _check_tags(value: object) -> list[str]:
    if not isinstance(value, list):
        return _wrong_type("tags", "an array of strings", value)
    problems = []
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not _KEBAB.fullmatch(tag):
            problems.append(f"tags[{i}] {tag!r} must be a lowercase word (hyphens allowed)")
    problems.extend(f"tag {tag!r} appears more than once" for tag in sorted(_repeated(value)))
    return problems


def _repeated(values: list) -> set:
    seen: set = set()
    repeated: set = set()
    for value in values:
        if isinstance(value, str):
            (repeated if value in seen else seen).add(value)
    return repeated


def _check_audio_url(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        return _wrong_type("audio_url", "null or a string", value)
    return [] if value.startswith("https://") else [f"audio_url {value!r} must be null or an https:// URL"]


def _check_bool(name: str) -> Callable[[object], list[str]]:
    def check(value: object) -> list[str]:
        return [] if isinstance(value, bool) else _wrong_type(name, "true or false", value)

    return check


def _check_contraindications(value: object) -> list[str]:
    if not isinstance(value, list):
        return _wrong_type("contraindications", "an array of strings", value)
    return [
        f"contraindications[{i}] must be a non-empty string"
        for i, note in enumerate(value)
        if not _is_text(note)
    ]


_FIELD_CHECKS: dict[str, Callable[[object], list[str]]] = {
    "slug": _check_slug,
    "title": _check_text("title"),
    "category": _check_choice("category", CATEGORIES),
    "duration_min": _check_duration,
    "level": _check_choice("level", LEVELS),
    "language": _check_language,
    "summary": _check_text("summary"),
    "steps": _check_steps,
    "tags": _check_tags,
    "audio_url": _check_audio_url,
    "suitable_during_tens": _check_bool("suitable_during_tens"),
    "contraindications": _check_contraindications,
}


def validate_item(raw: object) -> list[str]:
    """Every problem with one item as read from JSON; an empty list means the item is acceptable.

    Checks unknown and missing fields, each field's type, the category and level against their fixed
    lists, the duration range and the step count. Uniqueness of slugs needs the whole file, so it is
    checked by `validate_library`.
    """
    if not isinstance(raw, dict):
        return [f"item must be an object, got {_json_type(raw)}"]
    problems = [f"unknown field {name!r}" for name in raw if name not in _FIELD_CHECKS]
    problems.extend(f"missing field {name!r}" for name in ITEM_FIELDS if name not in raw)
    for name, check in _FIELD_CHECKS.items():
        if name in raw:
            problems.extend(check(raw[name]))
    return problems


def validate_library(document: object) -> list[str]:
    """Every problem with a whole library document (the parsed JSON file); empty means it can be loaded.

    Item problems are prefixed with the item's position and slug, e.g. "items[3] (box-breathing): ...".
    """
    if not isinstance(document, dict):
        return [f"the library must be an object with 'version' and 'items', got {_json_type(document)}"]
    problems = [f"unknown top-level field {name!r}" for name in document if name not in TOP_LEVEL_FIELDS]
    problems.extend(f"missing top-level field {name!r}" for name in TOP_LEVEL_FIELDS if name not in document)
    if "version" in document and document["version"] != LIBRARY_VERSION:
        problems.append(f"version must be {LIBRARY_VERSION}, got {document['version']!r}")
    items = document.get("items", [])
    if not isinstance(items, list):
        return [*problems, f"items must be an array, got {_json_type(items)}"]
    first_position: dict[str, int] = {}
    for position, raw in enumerate(items):
        label = _item_label(position, raw)
        problems.extend(f"{label}: {problem}" for problem in validate_item(raw))
        slug = raw.get("slug") if isinstance(raw, dict) else None
        if not isinstance(slug, str):
            continue
        if slug in first_position:
            problems.append(f"{label}: duplicate slug {slug!r} (first used by items[{first_position[slug]}])")
        else:
            first_position[slug] = position
    return problems


def _item_label(position: int, raw: object) -> str:
    slug = raw.get("slug") if isinstance(raw, dict) else None
    return f"items[{position}] ({slug})" if isinstance(slug, str) else f"items[{position}]"


def _content_item(raw: dict) -> ContentItem:
    return ContentItem(
        slug=raw["slug"],
        title=raw["title"],
        category=raw["category"],
        duration_min=raw["duration_min"],
        level=raw["level"],
        language=raw["language"],
        summary=raw["summary"],
        steps=tuple(raw["steps"]),
        tags=tuple(raw["tags"]),
        audio_url=raw["audio_url"],
        suitable_during_tens=raw["suitable_during_tens"],
        contraindications=tuple(raw["contraindications"]),
    )


def load_library(path: str | Path) -> list[ContentItem]:
    """Read and check a library file, returning its items in file order.

    Raises LibraryError listing every problem found (unreadable file, invalid JSON, or any rule broken)
    so nothing is loaded from a file that is only partly right.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LibraryError(source, [f"cannot read the file: {exc}"]) from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LibraryError(
            source, [f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        ) from exc
    problems = validate_library(document)
    if problems:
        raise LibraryError(source, problems)
    return [_content_item(raw) for raw in document["items"]]


def default_library_path() -> Path:
    """Where the library shipped with Companion lives (inside the installed package)."""
    return Path(__file__).resolve().parent.parent / "content" / "mindfulness.json"
