"""What every collection an app syncs shares: each document carries the ``seq`` of its latest change (from
the patient's change sequence, companion.store.changes), read in that order; deletions stay as tombstones
(``deleted: true``, ``deleted_at``) until the housekeeping job purges them.

:class:`SyncedCollection` is the part of a store that reads and keeps a synced collection's change numbers;
the store that owns the collection inherits it (its ``col``), so every query on the collection stays with
its owner while the feed rules live in one place.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, IndexModel
from pymongo.collection import Collection

BATCH = 5000


def feed_index() -> IndexModel:
    """The index a synced collection's change feed reads by."""
    return IndexModel([("patient_id", ASCENDING), ("seq", ASCENDING)], name="patient_seq")


def tombstone_index() -> IndexModel:
    """The index the housekeeping job finds old tombstones by."""
    return IndexModel([("deleted_at", ASCENDING)], name="deleted_at")


def at_version(version: int) -> dict:
    """The filter that holds a document at ``version`` (0: one written before versions, or never changed)."""
    return {"seq": version} if version else {"seq": {"$in": [0, None]}}


class SyncedCollection:
    """Change-feed reads and upkeep of a store's collection ``col`` (documents with ``patient_id``)."""

    col: Collection

    def changed_between(self, patient_id: str, after: int, upto: int, limit: int) -> list[dict]:
        """The patient's documents whose latest change is numbered in (after, upto], in that order
        (tombstones included)."""
        if upto <= after:
            return []
        return list(self.col.find({"patient_id": patient_id, "seq": {"$gt": after, "$lte": upto}})
                    .sort("seq", ASCENDING).limit(limit))

    def restamp(self, patient_id: str, first: int, count: int, new_first: int) -> int:
        """Move the documents stamped with [first, first + count) to [new_first, new_first + count), each only
        if no later write has stamped it since; returns how many moved."""
        moved = 0
        for doc in self.col.find({"patient_id": patient_id, "seq": {"$gte": first, "$lt": first + count}},
                                 {"seq": 1}):
            moved += self.col.update_one({"_id": doc["_id"], "seq": doc["seq"]},
                                         {"$set": {"seq": new_first + doc["seq"] - first}}).modified_count
        return moved

    def tombstones_before(self, cutoff: datetime) -> list[dict]:
        """Tombstones older than ``cutoff`` (id, patient, seq), at most a batch at a time."""
        return list(self.col.find({"deleted": True, "deleted_at": {"$lt": cutoff}}, {"patient_id": 1, "seq": 1})
                    .limit(BATCH))

    def purge(self, ids: list, cutoff: datetime) -> int:
        """Delete these tombstones (only while they are still tombstones older than ``cutoff``)."""
        if not ids:
            return 0
        return self.col.delete_many({"_id": {"$in": ids}, "deleted": True,
                                     "deleted_at": {"$lt": cutoff}}).deleted_count

    def unnumbered(self) -> list[dict]:
        """Documents written before change numbers existed (id, patient), at most a batch at a time. A document
        nobody owns (a held session whose unit had changed hands) is in no feed and is numbered when it is
        given an owner: it is not one of them."""
        return list(self.col.find({"seq": {"$exists": False}, "patient_id": {"$ne": None}}, {"patient_id": 1})
                    .limit(BATCH))

    def number(self, ids: list, first_seq: int) -> int:
        """Give these unnumbered documents the numbers from ``first_seq`` on (those still unnumbered)."""
        return sum(self.col.update_one({"_id": key, "seq": {"$exists": False}},
                                       {"$set": {"seq": first_seq + n}}).modified_count
                   for n, key in enumerate(ids))
