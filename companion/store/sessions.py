"""TENS session records (one document per record, keyed by device serial + sequence) and device events."""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import BulkWriteError

INDEXES = {
    "session_records": [
        IndexModel([("patient_id", ASCENDING), ("started_at", ASCENDING)], name="patient_time"),
        IndexModel([("device_serial", ASCENDING), ("device_seq", ASCENDING)], unique=True, name="serial_seq"),
        # the adherence job reads every patient's sessions of a time window in one query
        IndexModel([("started_at", ASCENDING)], name="started"),
    ],
    "device_events": [IndexModel([("patient_id", ASCENDING), ("at", ASCENDING)], name="patient_time")],
}
DUPLICATE_KEY = 11000


class SessionRecords:
    def __init__(self, db: Database):
        self.col = db.session_records
        self.events = db.device_events

    def insert_new(self, docs: list[dict]) -> tuple[set[str], set[str]]:
        """Insert what is new; returns (created ids, duplicate ids). Unordered, so one duplicate does not
        stop the rest; the unique _id makes a second copy impossible however often a batch is replayed."""
        if not docs:
            return set(), set()
        ids = [d["_id"] for d in docs]
        try:
            self.col.insert_many(docs, ordered=False)
            return set(ids), set()
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            duplicates = {ids[e["index"]] for e in errors}
            return set(ids) - duplicates, duplicates

    def existing(self, ids: list[str]) -> dict[str, dict]:
        return {d["_id"]: d for d in self.col.find({"_id": {"$in": ids}}, {"patient_id": 1, "content_hash": 1})}

    def record_events(self, events: list[dict]) -> None:
        if not events:
            return
        try:
            self.events.insert_many(events, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    def for_patient(self, patient_id: str, start: datetime, end: datetime, limit: int) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id, "started_at": {"$gte": start, "$lt": end}})
                    .sort("started_at", DESCENDING).limit(limit))
