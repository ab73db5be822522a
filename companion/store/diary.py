"""The pain diary: entries keyed by the app's own id, so an offline upload is stored exactly once.

Every change carries the patient's change number (``seq``, companion.store.feeds), which is also the
entry's version: edits and deletions are conditional on it. A deleted entry stays as a tombstone for the sync
window; then it is purged down to a stub that holds nothing the patient wrote (its ids, ``purged``), so that a
phone re-sending the entry's original creation is told it was deleted instead of bringing it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.store import feeds
from companion.store.batches import already_stored, chunks, insert_new, oldest_first

INDEXES = {
    "pain_entries": [
        IndexModel([("patient_id", ASCENDING), ("client_entry_id", ASCENDING)], unique=True,
                   name="patient_client_entry_unique"),
        feeds.feed_index(),
        feeds.tombstone_index(),
        IndexModel([("patient_id", ASCENDING), ("recorded_at", ASCENDING)], name="patient_recorded"),
    ],
}
MAX_ROWS = 5000
# What a purged tombstone keeps: who it belongs to and the app's id, nothing the patient wrote or when.
STUB_FIELDS = ("_id", "patient_id", "client_entry_id", "deleted", "purged", "seq")
SCORE_FIELDS = {"patient_id": 1, "recorded_at": 1, "nrs": 1, "bpi": 1, "deleted": 1}


# Every field an entry may hold besides the stub's (companion.services.diary writes them): unset on purge.
_CONTENT_FIELDS = ("recorded_at", "nrs", "context", "bpi", "session_record_id", "phase", "server_received_at",
                   "updated_at", "deleted_at", "moved_from", "created_hash", "created_hash_shared")


class PainEntries(feeds.SyncedCollection):
    def __init__(self, db: Database):
        self.col = db.pain_entries

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    @staticmethod
    def _new(patient_id: str, entry: dict, at: datetime, seq: int) -> dict:
        return {"_id": str(ObjectId()), "patient_id": patient_id, **entry, "server_received_at": at,
                "updated_at": at, "deleted": False, "seq": seq}

    def add(self, patient_id: str, entry: dict, at: datetime, seq: int) -> tuple[dict, bool]:
        """Store one entry; returns (entry, created). A repeated client_entry_id returns the original."""
        doc = self._new(patient_id, entry, at, seq)
        try:
            self.col.insert_one(doc)
            return doc, True
        except DuplicateKeyError:
            return already_stored(self.col, {"patient_id": patient_id, "client_entry_id": entry["client_entry_id"]}), False

    def add_many(self, patient_id: str, entries: list[dict], at: datetime, first_seq: int) -> list[tuple[dict, bool]]:
        """Store a batch; each entry independently and idempotently (numbered from ``first_seq``). Returns
        (entry, created) in order."""
        docs = [self._new(patient_id, entry, at, first_seq + n) for n, entry in enumerate(entries)]
        failed = insert_new(self.col, docs)
        originals = {}
        if failed:
            wanted = [docs[i]["client_entry_id"] for i in failed]
            originals = {d["client_entry_id"]: d for d in
                         self.col.find({"patient_id": patient_id, "client_entry_id": {"$in": wanted}})}
        return [(originals[doc["client_entry_id"]], False) if i in failed else (doc, True)
                for i, doc in enumerate(docs)]

    def by_client_id(self, patient_id: str, client_entry_id: str) -> dict | None:
        return self.col.find_one({"patient_id": patient_id, "client_entry_id": client_entry_id})

    def get(self, patient_id: str, entry_id: str) -> dict | None:
        """The entry, live or a tombstone (None once purged)."""
        return self.col.find_one({"_id": entry_id, "patient_id": patient_id, "purged": {"$ne": True}})

    def purge(self, ids: list, cutoff: datetime) -> int:
        """Strip these tombstones (still tombstones older than ``cutoff``) down to stubs: everything the patient
        wrote, and when, goes; the stub keeps the app's id taken (a re-sent creation finds it) and leaves the
        feeds (no change number) and the purge's reach (no ``deleted_at``)."""
        if not ids:
            return 0
        content = dict.fromkeys(_CONTENT_FIELDS, "")
        return self.col.update_many({"_id": {"$in": ids}, "deleted": True, "deleted_at": {"$lt": cutoff}},
                                    {"$set": {"purged": True, "seq": None}, "$unset": content}).modified_count

    def update(self, patient_id: str, entry_id: str, changes: dict, at: datetime, *, seq: int,
               version: int) -> dict | None:
        """Apply ``changes`` if the entry is live and still at ``version``; None otherwise."""
        return self.col.find_one_and_update(
            {"_id": entry_id, "patient_id": patient_id, "deleted": False, **feeds.at_version(version)},
            {"$set": {**changes, "updated_at": at, "seq": seq}}, return_document=ReturnDocument.AFTER)

    def soft_delete(self, patient_id: str, entry_id: str, at: datetime, *, seq: int, version: int) -> dict | None:
        """Mark deleted if the entry is live and still at ``version`` (a tombstone the feed hands to other
        devices, purged after the sync window); None otherwise."""
        return self.col.find_one_and_update(
            {"_id": entry_id, "patient_id": patient_id, "deleted": False, **feeds.at_version(version)},
            {"$set": {"deleted": True, "deleted_at": at, "updated_at": at, "seq": seq}},
            return_document=ReturnDocument.AFTER)

    def deleted_not_purged(self, patient_id: str, limit: int = MAX_ROWS) -> list[dict]:
        """The patient's deleted entries still held as tombstones (their content too, for the sync window)."""
        return list(self.col.find({"patient_id": patient_id, "deleted": True, "purged": {"$ne": True}})
                    .sort("deleted_at", ASCENDING).limit(limit))

    def recorded_between(self, patient_id: str, start: datetime, end: datetime, limit: int = 2000) -> list[dict]:
        """Live entries recorded in [start, end), oldest first, ties by id: one order every time, which the range
        listing's offset pages rely on (MongoDB leaves the order of ties unspecified)."""
        return list(self.col.find({"patient_id": patient_id, "deleted": False,
                                   "recorded_at": {"$gte": start, "$lt": end}})
                    .sort([("recorded_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def newest_recorded_between(self, patient_id: str, start: datetime, end: datetime, limit: int) -> list[dict]:
        """The newest ``limit`` live entries recorded in [start, end), newest first, ties by id (descending)."""
        return list(self.col.find({"patient_id": patient_id, "deleted": False,
                                   "recorded_at": {"$gte": start, "$lt": end}})
                    .sort([("recorded_at", DESCENDING), ("_id", DESCENDING)]).limit(limit))

    def ratings_between(self, patient_id: str, start: datetime, end: datetime) -> Iterator[dict]:
        """The score (``nrs``) and ``recorded_at`` of every live entry recorded in [start, end), in no order,
        however many: a figure over a window reads it whole, in one pass of the cursor."""
        return self.col.find({"patient_id": patient_id, "deleted": False, "recorded_at": {"$gte": start, "$lt": end}},
                             {"_id": 0, "recorded_at": 1, "nrs": 1})

    def recorded_in_order(self, patient_id: str, start: datetime, end: datetime) -> Iterator[dict]:
        """Every live entry of the patient recorded in [start, end], oldest first, read a page at a time on
        ``patient_recorded``."""
        return oldest_first(self.col, {"patient_id": patient_id, "deleted": False}, "recorded_at", start, end)

    def deleted_recorded_in_order(self, patient_id: str, start: datetime, end: datetime) -> Iterator[dict]:
        """Every entry of the patient recorded in [start, end] and deleted since, still a tombstone (not purged),
        oldest first, read a page at a time on ``patient_recorded``."""
        return oldest_first(self.col, {"patient_id": patient_id, "deleted": True, "purged": {"$ne": True}},
                            "recorded_at", start, end)

    def scores_between(self, patient_id: str, start: datetime, end: datetime, limit: int = MAX_ROWS) -> list[dict]:
        """The patient's live entries recorded in [start, end]: when, NRS and BPI only."""
        return list(self.col.find({"patient_id": patient_id, "deleted": {"$ne": True},
                                   "recorded_at": {"$gte": start, "$lte": end}}, SCORE_FIELDS)
                    .sort("recorded_at", ASCENDING).limit(limit))

    def scores_of(self, patient_ids: Iterable[str], since: datetime, until: datetime | None = None) -> list[dict]:
        """Many patients' entries recorded since ``since`` (and up to ``until``, inclusive, if given; deleted ones
        included, flagged)."""
        recorded = {"$gte": since} if until is None else {"$gte": since, "$lte": until}
        found = []
        for part in chunks(sorted(set(patient_ids))):
            found += self.col.find({"patient_id": {"$in": part}, "recorded_at": recorded}, SCORE_FIELDS)
        return found

    def patients_recording_between(self, start: datetime, end: datetime) -> list[str]:
        """The patients with a live entry recorded in [start, end]."""
        rows = self.col.aggregate([
            {"$match": {"recorded_at": {"$gte": start, "$lte": end}, "deleted": {"$ne": True}}},
            {"$group": {"_id": "$patient_id"}}])
        return [row["_id"] for row in rows]
