"""Daily adherence snapshots, one document per patient and local date (`_id = "<patient>:<date>"`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from pymongo import ASCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.store.batches import chunks, insert_new

INDEXES = {
    "adherence_days": [IndexModel([("patient_id", ASCENDING), ("date", ASCENDING)], name="patient_date")],
}

MAX_DAYS = 400
ID_BATCH = 5_000  # ids per `_id $in` read (the patched FerretDB serves up to 10,000 from the _id index)


def snapshot_id(patient_id: str, local_date: date) -> str:
    """The id of one patient's snapshot for one local date."""
    return f"{patient_id}:{local_date.isoformat()}"


class AdherenceDays:
    def __init__(self, db: Database):
        self.col = db.adherence_days

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def save(self, doc: dict) -> None:
        """Write a day's snapshot, replacing an earlier computation of the same day."""
        try:
            self.col.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        except DuplicateKeyError:
            # Two computations of a new day raced; the other inserted it, so replace theirs.
            self.col.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def save_many(self, docs: list[dict]) -> None:
        """Write many days' snapshots: the new days in one unordered insert, the days stored already replaced one
        by one (an unordered bulk of upserting replaces hangs FerretDB v1.24; seen in bench/nightly.py)."""
        for index in sorted(insert_new(self.col, docs)):
            self.save(docs[index])

    def between(self, patient_id: str, first: date, last: date) -> list[dict]:
        """Snapshots for local dates first..last (inclusive), oldest first."""
        return list(self.col.find({"patient_id": patient_id,
                                   "date": {"$gte": first.isoformat(), "$lte": last.isoformat()}})
                    .sort("date", ASCENDING).limit(MAX_DAYS))

    def by_ids(self, ids: Iterable[str], fields: dict | None = None, batch: int = ID_BATCH) -> list[dict]:
        """The stored snapshots among ``ids`` (see `snapshot_id`), read through the _id index, ``batch``
        ids per query (optionally only ``fields``)."""
        found = []
        for part in chunks(list(ids), batch):
            found += self.col.find({"_id": {"$in": part}}, fields)
        return found
