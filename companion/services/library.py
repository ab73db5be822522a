"""The mindfulness library: loading the shipped items, browsing them, a patient's favourites and practice."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

from companion.clock import Clock, now, to_millis
from companion.domain import content_library
from companion.domain.errors import Conflict, Invalid, NotFound
from companion.domain.localtime import REPORTED_AHEAD
from companion.services.derived_ids import derived_id
from companion.services.sync import Changes
from companion.services.touched_days import TouchedDays
from companion.store.content import NEVER_CHOSEN
from companion.store.stores import Stores


def _document(item: content_library.ContentItem) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(item).items()}


class Library:
    def __init__(self, stores: Stores, changes: Changes, clock: Clock = now, *, touched: TouchedDays | None = None):
        self.items = stores.content
        self.favourites = stores.favourites
        self.log = stores.practice
        self.changes = changes
        self.touched = touched
        self.clock = clock

    def load(self, path: Path | None = None) -> dict:
        """Check the library file (all of it, before anything is stored) and upsert every item by slug;
        loading the same file again creates nothing. Raises content_library.LibraryError for a bad file."""
        items = content_library.load_library(path or content_library.default_library_path())
        at = self.clock()
        created = sum(self.items.upsert(_document(item), at) for item in items)
        return {"items": len(items), "created": created, "updated": len(items) - created}

    def browse(self, **filters) -> list[dict]:
        """Items by category, level, tag, maximum duration and words (``text``), shortest first."""
        return self.items.matching(**filters)

    def item(self, slug: str) -> dict:
        item = self.items.get(slug)
        if not item:
            raise NotFound("no such library item")
        return item

    def short_items(self, max_minutes: float) -> list[str]:
        """The slugs of items that last at most ``max_minutes``."""
        return self.items.slugs_up_to(max_minutes)

    def favourite_items(self, patient_id: str) -> list[dict]:
        """The patient's favourite items, in the order they were chosen."""
        slugs = self.favourites.slugs(patient_id)
        found = self.items.by_slugs(slugs)
        return [found[s] for s in slugs if s in found]

    def add_favourite(self, patient_id: str, slug: str) -> dict:
        """Mark an item as a favourite (doing it twice is harmless)."""
        item = self.item(slug)
        with self.changes.stamp(patient_id, self.favourites) as seq:
            self.favourites.add(patient_id, slug, self.clock(), seq)
        return item

    def remove_favourite(self, patient_id: str, slug: str) -> None:
        """Remove a favourite; removing it again succeeds as the first removal did (until the tombstone is
        purged after the sync window). NotFound for an item that was never a favourite."""
        with self.changes.stamp(patient_id, self.favourites) as seq:
            outcome = self.favourites.remove(patient_id, slug, self.clock(), seq)
        if outcome == NEVER_CHOSEN:
            raise NotFound("this item is not a favourite")

    def favourite_changes_since(self, patient_id: str, cursor: str | None, limit: int) -> dict:
        """Favourites chosen or removed (tombstones) after the cursor (companion.services.sync)."""
        page = self.changes.page(patient_id, self.favourites, cursor, limit)
        return page.with_items(page.items)

    def practice_changes_since(self, patient_id: str, cursor: str | None, limit: int) -> dict:
        """Practice started or completed after the cursor (companion.services.sync)."""
        page = self.changes.page(patient_id, self.log, cursor, limit)
        return page.with_items(page.items)

    def practice_between(self, patient_id: str, start: datetime, end: datetime, limit: int,
                         after: tuple[datetime, str] | None = None) -> tuple[list[dict], tuple[datetime, str] | None]:
        """A page of the practice started in [start, end), oldest first (ties by id), after the (started_at, id)
        the previous page ended on; and where the following page starts after, or None on the last page."""
        found = self.log.page_between(patient_id, start, end, limit + 1, after)
        page = found[:limit]
        return page, ((page[-1]["started_at"], page[-1]["_id"]) if len(found) > limit else None)

    def start_practice(self, patient_id: str, slug: str, started_at: datetime | None, *,
                       request_key: str | None = None) -> dict:
        """Record that the patient began an item (now, or when the app says it began offline). With a
        ``request_key`` a retry of the same request finds the practice the first attempt stored."""
        self.item(slug)
        practice_id = derived_id("practice", request_key) if request_key else None
        with self.changes.reservation(patient_id, self.log) as held:
            started = self.log.start(patient_id, slug, started_at or self.clock(), held.first, practice_id)
        return held.as_stored(started)

    def complete_practice(self, patient_id: str, practice_id: str, completed_at: datetime | None,
                          minutes: float | None) -> dict:
        """Close a practice. The time recorded is what the patient reports, never more than the time that
        passed since they started nor more than the item lasts. The same completion again (a retry: no time
        or the same time, and the same minutes) is answered with the stored one and finishes what the first
        left undone; another completion of a completed practice is a conflict."""
        started = self.log.get(patient_id, practice_id)
        if not started:
            raise NotFound("no such practice")
        item = self.item(started["item_slug"])
        now_here = completed_at is None and started["completed_at"] is None
        completed_at = to_millis(completed_at or started["completed_at"] or self.clock())  # as it is stored
        lead = started["started_at"] - completed_at
        if now_here and timedelta(0) < lead <= REPORTED_AHEAD:
            # Completed now, by the server's clock, before the start the phone reported: that phone's clock was
            # ahead (accepted up to REPORTED_AHEAD), so the patient practised at most REPORTED_AHEAD - lead. The
            # completion is recorded that long (or the minutes reported, or the item's length) after the start.
            most = min((REPORTED_AHEAD - lead).total_seconds() / 60, float(item["duration_min"]),
                       minutes if minutes is not None else float("inf"))
            completed_at = to_millis(started["started_at"] + timedelta(minutes=round(most, 1)))
        if completed_at < started["started_at"]:
            raise Invalid("a practice cannot end before it started",
                          errors={"completed_at": ["must not be before started_at"]})
        elapsed = (completed_at - started["started_at"]).total_seconds() / 60
        practised = round(min(elapsed, float(item["duration_min"]), minutes if minutes is not None else elapsed), 1)
        done = None
        if started["completed_at"] is None:
            with self.changes.reservation(patient_id, self.log) as held:
                done = self.log.complete(patient_id, practice_id, completed_at, practised, held.first)
            done = held.as_stored(done)
        if done is None:  # completed already (or just now, by a concurrent request)
            done = self.log.get(patient_id, practice_id)
            if (done["completed_at"], done.get("minutes")) != (completed_at, practised):
                raise Conflict("this practice was already completed with another time or other minutes; see current",
                               current=done, version=done.get("seq") or 0)
        if self.touched is not None:
            # A practice completed counts on the day it began; it can change what the practices begun before its
            # end count (companion.domain.practice), which may be on the next day.
            ends = started["started_at"] + timedelta(minutes=done.get("minutes") or 0.0)
            self.touched.instants(patient_id, [started["started_at"], ends], "practice", reach_back=True)
        return done
