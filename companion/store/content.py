"""The mindfulness library (shared by everyone), each patient's favourites, and their practice log.

Favourites and practice are synced to the app (companion.store.feeds): each change carries the patient's
change number in ``seq``; a removed favourite stays as a tombstone (``deleted: true``) until purged, and
choosing it again brings it back (at the end of the list).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import to_millis
from companion.domain.errors import Conflict
from companion.store import feeds
from companion.store.batches import already_stored, find_among_patients, oldest_first

INDEXES = {
    "content_items": [IndexModel([("category", ASCENDING), ("duration_min", ASCENDING)], name="category_duration")],
    "content_favourites": [IndexModel([("patient_id", ASCENDING), ("created_at", ASCENDING)], name="patient"),
                           feeds.feed_index(), feeds.tombstone_index()],
    "practice_log": [IndexModel([("patient_id", ASCENDING), ("started_at", ASCENDING)], name="patient_started"),
                     IndexModel([("started_at", ASCENDING)], name="started"),  # the adherence job's window
                     feeds.feed_index()],
}
REMOVED, ALREADY_REMOVED, NEVER_CHOSEN = "removed", "already_removed", "never_chosen"
LIBRARY_LIMIT = 1000  # the library is small and shipped with the project; filters run over at most this many


class ContentItems:
    def __init__(self, db: Database):
        self.col = db.content_items

    def upsert(self, item: dict, at: datetime) -> bool:
        """Insert or replace an item by slug; True when it was new. Concurrent loaders retry once."""
        doc = {"_id": item["slug"], **item, "loaded_at": at}
        for attempt in (1, 2):
            try:
                result = self.col.replace_one({"_id": item["slug"]}, doc, upsert=True)
                return result.upserted_id is not None
            except DuplicateKeyError:
                if attempt == 2:
                    raise
        return False

    def get(self, slug: str) -> dict | None:
        return self.col.find_one({"_id": slug})

    def matching(self, *, category: str | None = None, level: str | None = None, tag: str | None = None,
             max_minutes: float | None = None, text: str | None = None, limit: int = 50) -> list[dict]:
        query: dict = {}
        if category:
            query["category"] = category
        if level:
            query["level"] = level
        if tag:
            query["tags"] = tag
        if max_minutes is not None:
            query["duration_min"] = {"$lte": max_minutes}
        if text:
            pattern = {"$regex": re.escape(text), "$options": "i"}
            query["$or"] = [{"title": pattern}, {"summary": pattern}, {"tags": pattern}]
        return list(self.col.find(query).sort([("duration_min", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def by_slugs(self, slugs: list[str]) -> dict[str, dict]:
        return {d["_id"]: d for d in self.col.find({"_id": {"$in": slugs}}).limit(LIBRARY_LIMIT)}

    def all(self) -> list[dict]:
        return list(self.col.find({}).limit(LIBRARY_LIMIT))

    def slugs_up_to(self, max_minutes: float) -> list[str]:
        """The slugs of items lasting at most ``max_minutes``."""
        return [i["_id"] for i in self.col.find({"duration_min": {"$lte": max_minutes}}, {"_id": 1})
                .limit(LIBRARY_LIMIT)]


class Favourites(feeds.SyncedCollection):
    def __init__(self, db: Database):
        self.col = db.content_favourites

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def add(self, patient_id: str, slug: str, at: datetime, seq: int) -> dict:
        """Choose an item (numbered ``seq``); choosing it again changes nothing, choosing a removed one
        brings it back."""
        key = f"{patient_id}:{slug}"
        try:
            doc = {"_id": key, "patient_id": patient_id, "item_slug": slug, "created_at": at, "deleted": False,
                   "seq": seq}
            self.col.insert_one(doc)
            return doc
        except DuplicateKeyError:
            return self.col.find_one_and_update(
                {"_id": key, "deleted": True},
                {"$set": {"deleted": False, "deleted_at": None, "created_at": at, "seq": seq}},
                return_document=ReturnDocument.AFTER) or self.col.find_one({"_id": key})

    def remove(self, patient_id: str, slug: str, at: datetime, seq: int) -> str:
        """Remove a favourite (a tombstone numbered ``seq``): removed, already_removed or never_chosen."""
        key = f"{patient_id}:{slug}"
        done = self.col.update_one({"_id": key, "patient_id": patient_id, "deleted": {"$ne": True}},
                                   {"$set": {"deleted": True, "deleted_at": at, "seq": seq}})
        if done.modified_count:
            return REMOVED
        return ALREADY_REMOVED if self.col.find_one({"_id": key, "patient_id": patient_id}, {"_id": 1}) \
            else NEVER_CHOSEN

    def slugs(self, patient_id: str, limit: int = LIBRARY_LIMIT) -> list[str]:
        return [d["item_slug"] for d in self.col.find({"patient_id": patient_id, "deleted": {"$ne": True}})
                .sort("created_at", ASCENDING).limit(limit)]


class PracticeLog(feeds.SyncedCollection):
    def __init__(self, db: Database):
        self.col = db.practice_log

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def start(self, patient_id: str, slug: str, started_at: datetime, seq: int,
              practice_id: str | None = None) -> dict:
        """Log a started practice (numbered ``seq``); with a ``practice_id`` derived from a request, a repeat of
        that request gets back the practice the first attempt stored. Conflict when that id is another patient's
        practice or another item's: what is answered is always what is stored."""
        doc = {"_id": practice_id or str(ObjectId()), "patient_id": patient_id, "item_slug": slug,
               "started_at": to_millis(started_at), "completed_at": None, "minutes": 0.0, "seq": seq}  # as stored
        try:
            self.col.insert_one(doc)
        except DuplicateKeyError:
            if practice_id is None:
                raise
            stored = already_stored(self.col, {"_id": practice_id})
            if (stored["patient_id"], stored["item_slug"]) != (patient_id, slug):
                raise Conflict("this Idempotency-Key made another practice; send this one with a new key") from None
            return stored
        return doc

    def get(self, patient_id: str, practice_id: str) -> dict | None:
        return self.col.find_one({"_id": practice_id, "patient_id": patient_id})

    def complete(self, patient_id: str, practice_id: str, completed_at: datetime, minutes: float,
                 seq: int) -> dict | None:
        """Complete a started practice once; a second completion finds nothing to change."""
        return self.col.find_one_and_update(
            {"_id": practice_id, "patient_id": patient_id, "completed_at": None},
            {"$set": {"completed_at": completed_at, "minutes": minutes, "seq": seq}},
            return_document=ReturnDocument.AFTER)

    def page_between(self, patient_id: str, start: datetime, end: datetime, limit: int,
                     after: tuple[datetime, str] | None = None) -> list[dict]:
        """At most ``limit`` of the patient's practice started in [start, end), in (started_at, _id) order: the
        first, or those after the (started_at, _id) a previous page ended on (a keyset: nothing written between
        two pages shifts the next, and two practices of the same millisecond are both answered)."""
        query: dict = {"patient_id": patient_id, "started_at": {"$gte": start, "$lt": end}}
        if after is not None:
            at, practice_id = after
            query["started_at"]["$gte"] = max(start, at)
            query["$or"] = [{"started_at": {"$gt": at}}, {"_id": {"$gt": practice_id}}]
        return list(self.col.find(query).sort([("started_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def started_since(self, patient_id: str, since: datetime, limit: int = 500, *,
                      until: datetime | None = None) -> list[dict]:
        """The patient's practice started since ``since`` (and before ``until``), newest first."""
        started = {"$gte": since, **({"$lt": until} if until is not None else {})}
        return list(self.col.find({"patient_id": patient_id, "started_at": started})
                    .sort("started_at", DESCENDING).limit(limit))

    def started_in_order(self, patient_id: str, start: datetime, end: datetime) -> Iterator[dict]:
        """Every practice of the patient started in [start, end], oldest first, read a page at a time on
        ``patient_started``."""
        return oldest_first(self.col, {"patient_id": patient_id}, "started_at", start, end)

    def completed_between(self, patient_id: str, start: datetime, end: datetime) -> list[dict]:
        """Every completed practice of the patient started in [start, end), oldest first, however many: the
        window bounds the read (a page at a time on ``patient_started``), never a count."""
        return [p for p in oldest_first(self.col, {"patient_id": patient_id, "completed_at": {"$ne": None}},
                                        "started_at", start, end) if p["started_at"] < end]

    def completed_in_window(self, start: datetime, end: datetime, patient_ids: Iterable[str] | None = None):
        """Completed practice started in [start, end), of every patient or of ``patient_ids`` (a bounded
        ``$in`` at a time)."""
        return find_among_patients(self.col, {"started_at": {"$gte": start, "$lt": end}, "completed_at": {"$ne": None}},
                                   {"patient_id": 1, "started_at": 1, "completed_at": 1, "minutes": 1}, patient_ids)

    def recent(self, patient_id: str, limit: int = 50) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id}).sort("started_at", DESCENDING).limit(limit))
