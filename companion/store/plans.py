"""Therapy plans: one document per version; the current plan is the highest version. Each document carries
the patient's change number of its latest change (``seq``, companion.store.feeds): its creation, then the
closing of its ``active_to`` when the next version comes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import to_millis
from companion.store import feeds
from companion.store.batches import find_among_patients

INDEXES = {
    "therapy_plans": [
        IndexModel([("patient_id", ASCENDING), ("version", ASCENDING)], unique=True, name="patient_version_unique"),
        feeds.feed_index(),
    ],
}


class VersionTaken(Exception):
    """Another writer created this version first."""


class TherapyPlans(feeds.SyncedCollection):
    def __init__(self, db: Database):
        self.col = db.therapy_plans

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def current(self, patient_id: str) -> dict | None:
        return self.col.find_one({"patient_id": patient_id}, sort=[("version", DESCENDING)])

    def history(self, patient_id: str, limit: int | None = None) -> list[dict]:
        """The patient's versions, newest first: every one, or the newest ``limit``."""
        found = self.col.find({"patient_id": patient_id}).sort("version", DESCENDING)
        return list(found.limit(limit) if limit else found)

    def written_before(self, patient_id: str, before: datetime) -> list[dict]:
        """Every version of the patient written (``active_from``) before ``before``, newest first: all those that
        can set what a local day ending by then asks (companion.domain.plans.day_plan looks back past the
        version in force), however many came after."""
        return list(self.col.find({"patient_id": patient_id, "active_from": {"$lt": before}})
                    .sort("version", DESCENDING))

    def page(self, patient_id: str, below: int | None, limit: int) -> list[dict]:
        """At most ``limit`` of the patient's versions, newest first, those numbered below ``below`` (the last a
        previous page answered; a keyset: a version written between two pages shifts nothing)."""
        query: dict = {"patient_id": patient_id}
        if below is not None:
            query["version"] = {"$lt": below}
        return list(self.col.find(query).sort("version", DESCENDING).limit(limit))

    def first(self, patient_id: str) -> dict | None:
        """The patient's first plan version (when therapy started)."""
        return self.col.find_one({"patient_id": patient_id}, sort=[("version", ASCENDING)])

    def every_version(self, fields: dict | None = None):
        """Every plan version of every patient (a job pass reads the small collection once)."""
        return self.col.find({}, fields)

    def versions_of(self, patient_ids: Iterable[str], fields: dict | None = None) -> Iterator[dict]:
        """Every plan version of these patients, a bounded ``$in`` at a time."""
        return find_among_patients(self.col, {}, fields, patient_ids)

    def version(self, patient_id: str, version: int) -> dict | None:
        return self.col.find_one({"patient_id": patient_id, "version": version})

    def insert_version(self, patient_id: str, version: int, plan: dict, *, created_by: str,
                       at: datetime, seq: int) -> dict:
        """Insert exactly this version; the unique (patient_id, version) index lets one writer win."""
        at = to_millis(at)  # as stored: the answer is what later reads show
        doc = {"_id": str(ObjectId()), "patient_id": patient_id, "version": version, "created_at": at,
               "created_by": created_by, "active_from": at, "active_to": None, **plan, "seq": seq}
        try:
            self.col.insert_one(doc)
        except DuplicateKeyError as exc:
            raise VersionTaken(str(version)) from exc
        return doc

    def open_before(self, patient_id: str, version: int) -> list[str]:
        """The ids of earlier versions still open (normally the previous one; more after a crash between a
        version's two writes, which the next version then finishes)."""
        return [d["_id"] for d in self.col.find({"patient_id": patient_id, "version": {"$lt": version},
                                                 "active_to": None}, {"_id": 1}).limit(100)]

    def close(self, ids: list[str], at: datetime, first_seq: int) -> int:
        """End these versions at ``at`` where still open (numbered from ``first_seq``)."""
        return sum(self.col.update_one({"_id": key, "active_to": None},
                                       {"$set": {"active_to": at, "seq": first_seq + n}}).modified_count
                   for n, key in enumerate(ids))


