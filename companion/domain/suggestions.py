"""What to suggest after a pain flare: short mindfulness items, those that helped this patient first.

Evidence per item comes from pairs around each completed practice: the latest pain entry in the
``within`` hours before the practice started, and the first pain entry in the ``within`` hours after it
was completed. Change = after - before (negative = less pain). Practices without both entries give no
pair.

Ranking of items no longer than ``max_minutes`` (default 10):

1. items whose mean change for this patient is below zero (followed by lower pain), biggest drop first;
2. then everything else, by category fit (``preferred_categories``, default breathing, body scan,
   meditation, sleep, pain education, gentle movement: calming practices first during a flare) and
   then shorter first. Items that were followed by no change or more pain are not hidden; they rank by
   fit like items without evidence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import fmean

from companion.domain.pain import PainEntry

DEFAULT_CATEGORIES = ("breathing", "body_scan", "meditation", "sleep", "pain_education", "gentle_movement")


@dataclass(frozen=True)
class ContentItem:
    """A mindfulness library item as far as suggestions need it."""

    item_id: str
    title: str
    category: str
    duration_minutes: float


@dataclass(frozen=True)
class PracticeCompletion:
    """The patient started and completed an item."""

    item_id: str
    started_at_utc: datetime
    completed_at_utc: datetime


@dataclass(frozen=True)
class Suggestion:
    """A suggested item, with this patient's mean pain change after it (``None`` without evidence)."""

    item: ContentItem
    mean_pain_change: float | None
    pairs: int


def pain_change_after_practice(
    completions: Sequence[PracticeCompletion],
    pain: Sequence[PainEntry],
    within: timedelta = timedelta(hours=3),
) -> dict[str, list[int]]:
    """Return, per item id, the pain changes (after - before) observed around each completed practice."""
    ordered = sorted(pain, key=lambda e: e.recorded_at_utc)
    changes: dict[str, list[int]] = defaultdict(list)
    for practice in completions:
        before = [
            e
            for e in ordered
            if practice.started_at_utc - within <= e.recorded_at_utc <= practice.started_at_utc
        ]
        after = [
            e
            for e in ordered
            if practice.completed_at_utc <= e.recorded_at_utc <= practice.completed_at_utc + within
        ]
        if before and after:
            changes[practice.item_id].append(after[0].score - before[-1].score)
    return dict(changes)


def suggest_after_flare(
    items: Sequence[ContentItem],
    completions: Sequence[PracticeCompletion],
    pain: Sequence[PainEntry],
    limit: int = 3,
    max_minutes: float = 10,
    preferred_categories: Sequence[str] = DEFAULT_CATEGORIES,
    within: timedelta = timedelta(hours=3),
) -> list[Suggestion]:
    """Rank short items to suggest after a flare (module docstring) and return the first ``limit``."""
    changes = pain_change_after_practice(completions, pain, within)
    fit = {category: rank for rank, category in enumerate(preferred_categories)}
    suggestions = []
    for item in items:
        if item.duration_minutes > max_minutes:
            continue
        observed = changes.get(item.item_id, [])
        suggestions.append(Suggestion(item, fmean(observed) if observed else None, len(observed)))

    def order(s: Suggestion) -> tuple:
        helped = s.mean_pain_change is not None and s.mean_pain_change < 0
        return (
            0 if helped else 1,
            s.mean_pain_change if helped else 0.0,
            fit.get(s.item.category, len(fit)),
            s.item.duration_minutes,
            s.item.item_id,
        )

    return sorted(suggestions, key=order)[:limit]
