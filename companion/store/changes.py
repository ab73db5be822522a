"""Each patient's change sequence: the numbers that order every change an app syncs, and which of them
may still be being written.

One document per patient (``_id`` = patient id):
``{issued: 41, pending: {"40": <reserved at>, "41": <reserved at>}, purged_through: 12}``.

A writer **reserves** numbers before it writes (one conditional update that raises ``issued`` and records
the first new number under ``pending``, retried when another writer moved ``issued`` first), writes its
documents with those numbers as their ``seq``, then **settles** the reservation (removes it from
``pending``). A reader asks for the **horizon**: every number below the lowest reservation still pending
(or up to ``issued`` when none is) belongs to a write that has finished, so a feed that never reads past
the horizon cannot skip a write that commits late. A reservation left pending longer than the settle
time (its writer died) is given up by the reader, one conditional update; a writer that finds its own
reservation given up re-stamps what it wrote with new numbers (companion.store.feeds.SyncedCollection.restamp).

``purged_through``: the highest number of a deleted object whose tombstone the housekeeping job has
purged; a cursor below it may have missed that deletion.

Single-document conditional updates only: no transactions, no change streams (FerretDB has neither).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

INDEXES: dict[str, list] = {"change_sequences": []}  # read by _id only
ATTEMPTS = 200
NUMBERED = "~numbered"  # not a patient id (those are ObjectId hex): marks the one-off upgrade step as done


@dataclass(frozen=True)
class Horizon:
    """Where a patient's sequence stands: ``settled`` (every number up to it is written), ``issued`` (the
    highest number handed out) and ``purged_through`` (deletions up to it are forgotten)."""

    settled: int
    issued: int
    purged_through: int


class SequenceBusy(Exception):
    """Too many writers for one patient at once: no number could be reserved."""


class ChangeSequences:
    def __init__(self, db: Database):
        self.col = db.change_sequences

    def delete_for_patient(self, patient_id: str) -> int:
        return self.col.delete_many({"_id": patient_id}).deleted_count

    def reserve(self, patient_id: str, count: int, at: datetime) -> int:
        """Reserve ``count`` consecutive numbers for one write; returns the first. Pending until settled."""
        if count < 1:
            raise ValueError("reserve at least one number")
        for attempt in range(ATTEMPTS):
            doc = self.col.find_one({"_id": patient_id}, {"issued": 1})
            if doc is None:
                try:
                    self.col.insert_one({"_id": patient_id, "issued": count, "pending": {"1": at},
                                         "purged_through": 0})
                    return 1
                except DuplicateKeyError:
                    continue
            first = doc["issued"] + 1
            taken = self.col.update_one({"_id": patient_id, "issued": doc["issued"]},
                                        {"$set": {"issued": doc["issued"] + count, f"pending.{first}": at}})
            if taken.modified_count == 1:
                return first
            if attempt >= 3:  # many writers for this patient right now: let them through
                time.sleep(random.uniform(0, 0.002 * min(attempt, 20)))
        raise SequenceBusy(patient_id)

    def settle(self, patient_id: str, first: int) -> bool:
        """The write that reserved ``first`` is done. False: a reader gave the reservation up meanwhile
        (its writer took longer than the settle time), so what it wrote must be stamped again."""
        key = f"pending.{first}"
        return self.col.update_one({"_id": patient_id, key: {"$exists": True}},
                                   {"$unset": {key: ""}}).modified_count == 1

    def horizon(self, patient_id: str, lapsed_before: datetime) -> Horizon:
        """Where the patient's sequence stands, giving up reservations made before ``lapsed_before``."""
        doc = self.col.find_one({"_id": patient_id})
        if doc is None:
            return Horizon(0, 0, 0)
        pending = doc.get("pending") or {}
        alive = []
        for first, reserved_at in pending.items():
            if reserved_at < lapsed_before:
                # Only if it is still the same reservation: the writer may be settling it right now.
                self.col.update_one({"_id": patient_id, f"pending.{first}": reserved_at},
                                    {"$unset": {f"pending.{first}": ""}})
            else:
                alive.append(int(first))
        settled = min(alive) - 1 if alive else doc["issued"]
        return Horizon(settled, doc["issued"], doc.get("purged_through", 0))

    def purged_through(self, patient_id: str) -> int:
        """Only ``purged_through`` (a feed asks again after reading its rows): the one field, by ``_id``."""
        doc = self.col.find_one({"_id": patient_id}, {"purged_through": 1})
        return (doc or {}).get("purged_through", 0)

    def numbering_done(self) -> bool:
        """Whether the documents written before change feeds existed have been numbered (an upgrade step)."""
        return self.col.find_one({"_id": NUMBERED}, {"_id": 1}) is not None

    def note_numbering_done(self, at: datetime) -> None:
        self.col.update_one({"_id": NUMBERED}, {"$setOnInsert": {"at": at}}, upsert=True)

    def forget_ownerless(self) -> int:
        """Delete the sequence of a null patient, which an upgrade step numbering ownerless held sessions left:
        no feed reads it (every feed is a patient's)."""
        return self.col.delete_one({"_id": None}).deleted_count

    def skip_ahead(self, jump: int, progress=None) -> int:
        """Move every patient's sequence ``jump`` numbers on, and mark everything before the new start as
        purged, so that no cursor issued so far is taken as current (after a restore from a backup). Returns
        how many patients' sequences moved; ``progress(done, total)`` after each."""
        patients = [doc["_id"] for doc in self.col.find({"_id": {"$ne": NUMBERED}}, {"_id": 1})]
        for done, patient_id in enumerate(patients, start=1):
            for _ in range(ATTEMPTS):
                doc = self.col.find_one({"_id": patient_id}, {"issued": 1})
                if doc is None:
                    break
                start = doc["issued"] + jump
                if self.col.update_one({"_id": patient_id, "issued": doc["issued"]},
                                       {"$set": {"issued": start, "pending": {}},
                                        "$max": {"purged_through": start}}).modified_count:
                    break
            else:
                raise SequenceBusy(f"the change sequence of {patient_id} kept moving")
            if progress:
                progress(done, len(patients))
        return len(patients)

    def note_purged(self, patient_id: str, through: int) -> None:
        """Tombstones up to ``through`` are about to be purged: older cursors must resync."""
        self.col.update_one({"_id": patient_id}, {"$max": {"purged_through": through}})
