"""TENS session records (one document per record, keyed by device serial + sequence) and the device events
they raised (battery low, electrode off, overload)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

from companion.store import feeds
from companion.store.batches import chunks, insert_new

INDEXES = {
    "session_records": [
        IndexModel([("patient_id", ASCENDING), ("started_at", ASCENDING)], name="patient_time"),
        IndexModel([("device_serial", ASCENDING), ("device_seq", ASCENDING)], unique=True, name="serial_seq"),
        # the adherence job reads every patient's sessions of a time window in one query
        IndexModel([("started_at", ASCENDING)], name="started"),
        feeds.feed_index(),  # the app's change feed: records arrive late, in any order of started_at
    ],
    "device_events": [
        IndexModel([("patient_id", ASCENDING), ("at", ASCENDING)], name="patient_time"),
        IndexModel([("at", ASCENDING)], name="at"),  # the alerts job reads the last day's events of everyone
    ],
}
MAX_ROWS = 5000
EVENTS_PER_PASS = 100_000
WINDOW_FIELDS = {"patient_id": 1, "started_at": 1, "duration_s": 1}


class SessionRecords(feeds.SyncedCollection):
    def __init__(self, db: Database):
        self.col = db.session_records

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def insert_new(self, docs: list[dict]) -> tuple[set[str], set[str]]:
        """Insert what is new; returns (created ids, duplicate ids). Unordered, so one duplicate does not
        stop the rest; the unique _id makes a second copy impossible however often a batch is replayed."""
        if not docs:
            return set(), set()
        ids = [d["_id"] for d in docs]
        duplicates = {ids[n] for n in insert_new(self.col, docs)}
        return set(ids) - duplicates, duplicates

    def by_ids(self, ids: Iterable[str], fields: dict | None = None) -> dict[str, dict]:
        """The stored records among ``ids``, by id."""
        found: dict[str, dict] = {}
        for part in chunks(sorted(set(ids))):
            found.update({d["_id"]: d for d in self.col.find({"_id": {"$in": part}}, fields)})
        return found

    def of_patient_by_ids(self, patient_id: str, ids: Iterable[str]) -> dict[str, dict]:
        """The patient's records among ``ids``, by id."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        return {s["_id"]: s for s in self.col.find({"patient_id": patient_id, "_id": {"$in": wanted}})}

    def for_patient(self, patient_id: str, start: datetime, end: datetime, limit: int = MAX_ROWS, *,
                    newest_first: bool = True) -> list[dict]:
        """The patient's sessions starting in [start, end)."""
        order = DESCENDING if newest_first else ASCENDING
        return list(self.col.find({"patient_id": patient_id, "started_at": {"$gte": start, "$lt": end}})
                    .sort("started_at", order).limit(limit))

    def in_window(self, start: datetime, end: datetime) -> Iterator[dict]:
        """Every patient's sessions starting in [start, end), with the fields the adherence job needs
        (one read for the whole job pass)."""
        return self.col.find({"started_at": {"$gte": start, "$lt": end}}, WINDOW_FIELDS)

    def battery_of(self, record_id: str | None) -> int | None:
        doc = self.col.find_one({"_id": record_id}, {"battery_pct": 1}) if record_id else None
        return doc.get("battery_pct") if doc else None

    def last_received_from(self, serial: str) -> datetime | None:
        """When the server last received a record from this unit."""
        latest = self.col.find_one({"device_serial": serial}, {"server_received_at": 1},
                                   sort=[("server_received_at", DESCENDING)])
        return (latest or {}).get("server_received_at")


class DeviceEvents:
    def __init__(self, db: Database):
        self.col = db.device_events

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def record(self, events: list[dict]) -> None:
        """Store events under their derived ids; events already stored are left as they are."""
        insert_new(self.col, events)

    def between(self, since: datetime, until: datetime) -> list[dict]:
        """Every patient's events in [since, until]."""
        return list(self.col.find({"at": {"$gte": since, "$lte": until}}).limit(EVENTS_PER_PASS))

    def for_patient(self, patient_id: str, since: datetime, limit: int = 200) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id, "at": {"$gte": since}}).sort("at", DESCENDING)
                    .limit(limit))
