"""Daily adherence snapshots, one document per patient and local date (`_id = "<patient>:<date>"`), each with the
version of the rules it was computed by (``rules``; none before versions were written: version 1), the instant its
data began to be read (``computed_at``) and, when the adherence job wrote it, the number of that run (``run``:
companion.store.recompute.DaysToRecompute.start, which orders two runs that started at the same instant).

The job writes a day only over a snapshot computed earlier (`AdherenceDays.save_many`): two runs that overlap (an
old leader still finishing a slow run while the next leader runs the job) leave the later one's figures, whichever
writes last.

``adherence_upgrades`` holds one document per version of the rules (``_id`` = the version) once every snapshot of
an earlier one has been computed again (companion.services.adherence_upgrade): later runs of that step read it
alone."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from pymongo import ASCENDING, IndexModel, ReplaceOne
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
REPLACE_BATCH = 500  # conditional replaces per ordered bulk write


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

    def save_many(self, docs: list[dict]) -> list[dict]:
        """Write many days' snapshots of one run of the adherence job (each with its ``computed_at`` and ``run``,
        the run's number):
        the new days in one unordered insert, the days stored already replaced only where the stored snapshot
        was computed earlier (`computed_before`), in ordered bulk writes without upsert (an unordered bulk of
        upserting replaces hangs FerretDB v1.24; seen in bench/nightly.py). Returns the snapshots not written: a
        run that started later wrote the day first (or the day was deleted with its record meanwhile)."""
        stored = [docs[index] for index in sorted(insert_new(self.col, docs))]
        runs = {d["_id"]: d["run"] for d in stored}
        matched = 0
        for part in chunks(stored, REPLACE_BATCH):
            matched += self.col.bulk_write([ReplaceOne(computed_before(doc), doc) for doc in part],
                                           ordered=True).matched_count
        if matched == len(stored):
            return []
        # Which ones were refused: those that do not hold this run's write now (one read, only when some were).
        held = {d["_id"] for d in self.by_ids([d["_id"] for d in stored], {"run": 1})
                if d.get("run") == runs.get(d["_id"])}
        return [d for d in stored if d["_id"] not in held]

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


def computed_before(doc: dict) -> dict:
    """The filter of ``doc``'s day stored as computed before ``doc``: at an earlier instant (or at none: written
    before snapshots carried it), or at the same instant by an earlier run of the job (or not by the job). A
    snapshot computed later is never replaced by one computed earlier."""
    at, run = doc["computed_at"], doc.get("run")
    return {"_id": doc["_id"], "$or": [{"computed_at": None}, {"computed_at": {"$lt": at}},
                                       {"computed_at": at, "run": None},
                                       *([{"computed_at": at, "run": {"$lte": run}}] if run is not None else [])]}
