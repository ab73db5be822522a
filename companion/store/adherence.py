"""Daily adherence snapshots, one document per patient and local date (`_id = "<patient>:<date>"`), each with the
version of the rules it was computed by (``rules``; none before versions were written: version 1).

``adherence_upgrades`` holds one document per version of the rules (``_id`` = the version) once every snapshot of
an earlier one has been computed again (companion.services.adherence_upgrade): later runs of that step read it
alone."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from pymongo import ASCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.store.batches import chunks, insert_new

INDEXES = {
    "adherence_days": [IndexModel([("patient_id", ASCENDING), ("date", ASCENDING)], name="patient_date")],
    "adherence_upgrades": [],  # read by _id only
}
# What the upgrade reads of a snapshot computed under other rules: the instant it stands on, what a panel row keeps.
STALE_FIELDS = {"patient_id": 1, "date": 1, "computed_at": 1, "state": 1, "covered": 1, "tens_fraction": 1}

MAX_DAYS = 400
ID_BATCH = 5_000  # ids per `_id $in` read (the patched FerretDB serves up to 10,000 from the _id index)


def snapshot_id(patient_id: str, local_date: date) -> str:
    """The id of one patient's snapshot for one local date."""
    return f"{patient_id}:{local_date.isoformat()}"


class AdherenceDays:
    def __init__(self, db: Database):
        self.col = db.adherence_days
        self.upgrades = db.adherence_upgrades

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

    # Snapshots computed under earlier rules (an upgrade step of `companion migrate`)
    def computed_under_other_rules(self, patient_id: str, rules: int) -> list[dict]:
        """The patient's snapshots computed under a version of the rules other than ``rules`` (or none), with
        ``STALE_FIELDS``: an equality on the patient (the patient_date index), the version compared per document."""
        return list(self.col.find({"patient_id": patient_id, "rules": {"$ne": rules}}, STALE_FIELDS))

    def replace_computed(self, doc: dict, computed_at: datetime | None) -> bool:
        """Replace a snapshot computed under other rules by ``doc``, only while it is still the one computed at
        ``computed_at`` (nothing wrote the day since it was read): a computation from data read later is never
        replaced by one from data read earlier. False when it was written again meanwhile, or is gone."""
        return self.col.replace_one({"_id": doc["_id"], "computed_at": computed_at, "rules": {"$ne": doc["rules"]}},
                                    doc).matched_count == 1

    def upgraded_to(self, rules: int) -> bool:
        """Whether every snapshot of an earlier version than ``rules`` has been computed again (noted once)."""
        return self.upgrades.find_one({"_id": rules}, {"_id": 1}) is not None

    def note_upgraded(self, rules: int, at: datetime) -> None:
        self.upgrades.update_one({"_id": rules}, {"$setOnInsert": {"at": at}}, upsert=True)
