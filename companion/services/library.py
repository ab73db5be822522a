"""The mindfulness library: loading the shipped items, and a patient's practice of them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from pymongo.database import Database

from companion.domain import content_library
from companion.domain.errors import Conflict, Invalid, NotFound
from companion.store.accounts import now
from companion.store.content import ContentItems, PracticeLog


def load_library(db: Database, path: Path | None = None) -> dict:
    """Check the library file (all of it, before anything is stored) and upsert every item by slug;
    loading the same file again creates nothing. Raises content_library.LibraryError for a bad file."""
    items = content_library.load_library(path or content_library.default_library_path())
    store = ContentItems(db)
    at = now()
    created = sum(store.upsert(_document(item), at) for item in items)
    return {"items": len(items), "created": created, "updated": len(items) - created}


def _document(item: content_library.ContentItem) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(item).items()}


def item_or_404(db: Database, slug: str) -> dict:
    item = ContentItems(db).get(slug)
    if not item:
        raise NotFound("no such library item")
    return item


def start_practice(db: Database, patient_id: str, slug: str, started_at: datetime | None) -> dict:
    """Record that the patient began an item (now, or when the app says it began offline)."""
    item_or_404(db, slug)
    return PracticeLog(db).start(patient_id, slug, started_at or now())


def complete_practice(db: Database, patient_id: str, practice_id: str, completed_at: datetime | None,
                      minutes: float | None) -> dict:
    """Close a practice. The time recorded is what the patient reports, never more than the time that
    passed since they started nor more than the item lasts."""
    log = PracticeLog(db)
    started = log.get(patient_id, practice_id)
    if not started:
        raise NotFound("no such practice")
    if started["completed_at"] is not None:
        raise Conflict("this practice was already completed")
    completed_at = completed_at or now()
    if completed_at < started["started_at"]:
        raise Invalid("a practice cannot end before it started",
                      errors={"completed_at": ["must not be before started_at"]})
    item = item_or_404(db, started["item_slug"])
    elapsed = (completed_at - started["started_at"]).total_seconds() / 60
    practised = min(elapsed, float(item["duration_min"]), minutes if minutes is not None else elapsed)
    done = log.complete(patient_id, practice_id, completed_at, round(practised, 1))
    if not done:
        raise Conflict("this practice was already completed")
    return done
