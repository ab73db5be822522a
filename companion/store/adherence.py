"""Daily adherence snapshots, one document per patient and local date (`_id = "<patient>:<date>"`), each with the
version of the rules it was computed by (``rules``; none before versions were written: version 1), the instant its
data began to be read (``computed_at``, by the clock of the process that computed it) and, when the adherence job or
the rules upgrade wrote it, the number that run took before it read its data (``run``:
companion.store.recompute.DaysToRecompute.start, one counter in the database); a job run's snapshots also carry the
id of the write that stored them (``write``, an ObjectId unique to one `AdherenceDays.save_many`).

The job writes a day only over a snapshot written before it began (`AdherenceDays.save_many`): one numbered by an
earlier run; without a number (written by a version before numbered runs), one computed no later by the clocks. Two
runs that overlap (an old leader still finishing a slow run while the next leader runs the job) leave the later
one's figures, whichever writes last; no clock orders two numbered runs, so a snapshot stamped ahead by a fast clock
(a VM resumed, a bad NTP step) holds nothing back. A snapshot that refuses a run is numbered then, if it has no
number yet, and the counter is moved on past the number it has, if it is behind it (a database restored from a
backup older than some of its snapshots): the next run replaces it (`AdherenceDays.number`,
companion.services.adherence_batch). A refused snapshot is told from the run's own by the write's id, not by the
run's number: a counter restored one behind a stored day hands the next run that day's number, and the day
standing with it is still one that refused the run.

``adherence_upgrades`` holds one document per version of the rules (``_id`` = the version) once every snapshot of
an earlier one has been computed again (companion.services.adherence_upgrade), but those of the patients whose
computation failed (``failed``, their ids): later runs of that step read it, and try those patients alone again."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReplaceOne, UpdateOne
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.store.batches import chunks, insert_new

INDEXES = {
    "adherence_days": [IndexModel([("patient_id", ASCENDING), ("date", ASCENDING)], name="patient_date")],
    "adherence_upgrades": [],  # read by _id only
}
# What a snapshot holds besides its figures: what tells one computation of the day from another. Two computations
# of a day whose other fields are equal have the same figures (`same_figures`).
BOOKKEEPING = ("_id", "computed_at", "run", "rules", "write")
# What stands in place of a refused snapshot.
STANDING_FIELDS = {"run": 1, "computed_at": 1, "write": 1}

MAX_DAYS = 400
ID_BATCH = 5_000  # ids per `_id $in` read (the patched FerretDB serves up to 10,000 from the _id index)
REPLACE_BATCH = 500  # conditional replaces per ordered bulk write


def snapshot_id(patient_id: str, local_date: date) -> str:
    """The id of one patient's snapshot for one local date."""
    return f"{patient_id}:{local_date.isoformat()}"


@dataclass(frozen=True)
class Refused:
    """What `AdherenceDays.save_many` did not write: the run's snapshots (``docs``) and the ones stored in their
    place (``standing``: ``_id``, ``run``, ``computed_at``, ``write``; none for a day deleted meanwhile)."""

    docs: list[dict]
    standing: list[dict]


@dataclass(frozen=True)
class Recomputed:
    """What `AdherenceDays.replace_computed` wrote: days whose figures changed, replaced whole (``replaced``), and
    days whose figures are the same, their version alone written (``marked``)."""

    replaced: int
    marked: int

    @property
    def written(self) -> int:
        return self.replaced + self.marked


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

    def save_many(self, docs: list[dict]) -> Refused:
        """Write many days' snapshots of one run of the adherence job (each with its ``computed_at`` and ``run``,
        the run's number): the new days in one unordered insert, the days stored already replaced only where the
        stored snapshot was written before this run began (`written_before`), in ordered bulk writes without upsert
        (an unordered bulk of upserting replaces hangs FerretDB v1.24; seen in bench/nightly.py). Returns what was
        not written: a run that took a later number wrote the day first, a snapshot without a number is stamped
        later than this run, or the day was deleted with its record meanwhile. What this call wrote is told by an id
        it stamps on each snapshot (``write``), not by the run's number: a snapshot stored with the same number (a
        counter restored behind the stored days hands it out again) refused the run, and is returned standing."""
        # Each snapshot of this write carries its id (``write``): the stored day this write left is told by it, not
        # by the run's number, which a day written before a restore may carry too (a counter restored behind it).
        write = ObjectId()
        docs = [{**doc, "write": write} for doc in docs]
        stored = [docs[index] for index in sorted(insert_new(self.col, docs))]
        matched = 0
        for part in chunks(stored, REPLACE_BATCH):
            matched += self.col.bulk_write([ReplaceOne(written_before(doc), doc) for doc in part],
                                           ordered=True).matched_count
        if matched == len(stored):
            return Refused([], [])
        # Which ones were refused: those that do not hold this write now (one read, only when some were).
        found = self.by_ids([d["_id"] for d in stored], STANDING_FIELDS)
        held = {d["_id"] for d in found if d.get("write") == write}
        return Refused([d for d in stored if d["_id"] not in held], [d for d in found if d["_id"] not in held])

    def number(self, standing: Iterable[dict], run: int) -> int:
        """Give the number ``run`` to the snapshots among ``standing`` (as `save_many` returned them) that have none,
        each only while it is still the one read; returns how many were numbered. ``run`` is taken after they were
        read (`DaysToRecompute.at_least`): every run numbered higher began after they were written, and replaces
        them."""
        writes = [UpdateOne({"_id": d["_id"], "run": None, "computed_at": d.get("computed_at")},
                            {"$set": {"run": run}}) for d in standing if d.get("run") is None]
        return self.col.bulk_write(writes, ordered=True).modified_count if writes else 0

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

    # Snapshots computed under earlier rules (an upgrade step of `companion migrate` and of the adherence job)
    def computed_under_other_rules(self, patient_id: str, rules: int) -> list[dict]:
        """The patient's snapshots computed under a version of the rules other than ``rules`` (or none), whole (the
        upgrade writes only the version of a day whose figures it finds the same): an equality on the patient (the
        patient_date index), the version compared per document."""
        return list(self.col.find({"patient_id": patient_id, "rules": {"$ne": rules}}))

    def patients_under_other_rules(self, rules: int) -> set[str]:
        """The patients with a snapshot stored under a version of the rules other than ``rules`` (or none): one
        aggregation over the snapshots (a collection scan: run until none is left, then no more;
        companion.services.adherence_upgrade.AdherenceUpgrade.catch_up)."""
        return {d["_id"] for d in self.col.aggregate([{"$match": {"rules": {"$ne": rules}}},
                                                     {"$group": {"_id": "$patient_id"}}])}

    def replace_computed(self, pairs: list[tuple[dict, dict]], batch: int = REPLACE_BATCH) -> Recomputed:
        """Write each day computed again under other rules (``doc``, of each pair) over the snapshot ``read`` (the
        other, whole), only while it is still the one read (its ``computed_at`` and ``run``, and a version other
        than ``doc``'s: nothing wrote the day since it was read, ``doc``'s data read after): a computation from data
        read later is never replaced by one from data read earlier. No upsert: a day deleted meanwhile stays so.
        Returns how many of each kind were written (not those written again meanwhile, or gone):

        - a day whose figures differ is replaced whole, in ordered bulk writes of ``batch``;
        - a day whose figures are the same (`same_figures`: most of them, a change of the rules changes few days)
          has only what tells the computation set (``computed_at``, ``run``, ``rules``; ``write`` removed, as a
          replace would), by ``update_many`` over the days read with the same ``computed_at`` and ``run`` (the days
          one run wrote), ``ID_BATCH`` ids at a time: the same filter as each day's own, applied to each day
          atomically, for about a seventh of the time of a replace each on FerretDB (one transaction a statement,
          where a bulk write's replaces are one each; README, "Migrations")."""
        replaced = [ReplaceOne(_still_read(doc, read), doc) for doc, read in pairs if not same_figures(doc, read)]
        by_read: dict[tuple, list[str]] = {}
        for doc, read in pairs:
            if same_figures(doc, read):
                key = (read.get("computed_at"), read.get("run"), doc["computed_at"], doc["run"], doc["rules"])
                by_read.setdefault(key, []).append(doc["_id"])
        marked = 0
        for (read_at, read_run, at, run, rules), ids in by_read.items():
            for part in chunks(ids, ID_BATCH):
                marked += self.col.update_many(
                    {"_id": {"$in": part}, "computed_at": read_at, "run": read_run, "rules": {"$ne": rules}},
                    {"$set": {"computed_at": at, "run": run, "rules": rules}, "$unset": {"write": ""}}).matched_count
        written = sum(self.col.bulk_write(part, ordered=True).matched_count for part in chunks(replaced, batch))
        return Recomputed(written, marked)

    def failed_after_upgrade(self, rules: int) -> list[str] | None:
        """The patients whose days could not be computed again when the upgrade to ``rules`` was last noted (or
        tried again), by id; None while it is not noted done."""
        doc = self.upgrades.find_one({"_id": rules}, {"failed": 1})
        return None if doc is None else list(doc.get("failed") or [])

    def note_upgraded(self, rules: int, at: datetime, failed: Iterable[str] = ()) -> None:
        """Note the upgrade to ``rules`` done (when first), but for the patients ``failed`` (ids alone), which
        replace those noted before."""
        self.upgrades.update_one({"_id": rules}, {"$setOnInsert": {"at": at}, "$set": {"failed": sorted(set(failed))}},
                                 upsert=True)


def same_figures(doc: dict, other: dict) -> bool:
    """Whether two snapshots of a day hold the same figures: equal but for what tells one computation from another
    (BOOKKEEPING)."""
    return ({k: v for k, v in doc.items() if k not in BOOKKEEPING}
            == {k: v for k, v in other.items() if k not in BOOKKEEPING})


def _still_read(doc: dict, read: dict) -> dict:
    """The filter of ``doc``'s day while it is the snapshot ``read``, of another version of the rules than ``doc``."""
    return {"_id": doc["_id"], "computed_at": read.get("computed_at"), "run": read.get("run"),
            "rules": {"$ne": doc["rules"]}}


def written_before(doc: dict) -> dict:
    """The filter of ``doc``'s day stored before the run that computed ``doc`` began: by a run that took a lower
    number, or, without a number (a version before numbered runs, or by hand), computed at an earlier instant or
    the same one (or at none). The numbers order the runs whatever their clocks: a snapshot written by a run that
    began later is never replaced by one from a run that began earlier."""
    return {"_id": doc["_id"], "$or": [{"run": {"$lt": doc["run"]}}, {"run": None, "computed_at": None},
                                       {"run": None, "computed_at": {"$lte": doc["computed_at"]}}]}
