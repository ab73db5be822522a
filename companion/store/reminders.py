"""Reminders and their occurrences.

An occurrence's id is derived from the reminder id + local date + local time
(companion.domain.schedules.occurrence_id_for), and (reminder_id, local_date,
local_time) is unique, so materializing the same window twice, or from two workers at once,
stores each occurrence once.
"""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError

INDEXES = {
    "reminders": [IndexModel([("patient_id", ASCENDING), ("active", ASCENDING)], name="patient_active")],
    "reminder_occurrences": [
        IndexModel([("reminder_id", ASCENDING), ("local_date", ASCENDING), ("local_time", ASCENDING)],
                   unique=True, name="reminder_local_unique"),
        IndexModel([("patient_id", ASCENDING), ("due_at", ASCENDING)], name="patient_due"),
        IndexModel([("status", ASCENDING), ("window_ends_at", ASCENDING)], name="status_window"),
        IndexModel([("local_date", ASCENDING), ("kind", ASCENDING)], name="day_kind"),  # the adherence job's doses
    ],
}
DUPLICATE_KEY = 11000
MAX_REMINDERS = 50  # per patient; keeps materialization bounded


class Reminders:
    def __init__(self, db: Database):
        self.col = db.reminders

    def create(self, patient_id: str, fields: dict, at: datetime) -> dict:
        doc = {"_id": str(ObjectId()), "patient_id": patient_id, **fields, "active": True,
               "created_at": at, "updated_at": at}
        self.col.insert_one(doc)
        return doc

    def get(self, patient_id: str, reminder_id: str) -> dict | None:
        return self.col.find_one({"_id": reminder_id, "patient_id": patient_id})

    def for_patient(self, patient_id: str, *, active_only: bool = False) -> list[dict]:
        query: dict = {"patient_id": patient_id}
        if active_only:
            query["active"] = True
        return list(self.col.find(query).sort("created_at", ASCENDING).limit(MAX_REMINDERS))

    def count_active(self, patient_id: str) -> int:
        return self.col.count_documents({"patient_id": patient_id, "active": True})

    def update(self, patient_id: str, reminder_id: str, changes: dict, at: datetime) -> dict | None:
        return self.col.find_one_and_update({"_id": reminder_id, "patient_id": patient_id},
                                            {"$set": {**changes, "updated_at": at}},
                                            return_document=ReturnDocument.AFTER)


class Occurrences:
    def __init__(self, db: Database):
        self.col = db.reminder_occurrences

    def insert_new(self, docs: list[dict]) -> int:
        """Insert occurrences, ignoring those already stored; returns how many were new."""
        if not docs:
            return 0
        try:
            return len(self.col.insert_many(docs, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return len(docs) - len(errors)

    def pending_from(self, patient_id: str, start: datetime, end: datetime | None = None) -> list[dict]:
        due: dict = {"$gte": start}
        if end is not None:
            due["$lt"] = end
        return list(self.col.find({"patient_id": patient_id, "status": "pending", "due_at": due}).limit(5000))

    def by_ids(self, ids: list[str]) -> dict[str, dict]:
        return {d["_id"]: d for d in self.col.find({"_id": {"$in": ids}}).limit(len(ids) or 1)}

    def move_pending(self, occurrence: str, moment: dict) -> None:
        """Move a still-pending occurrence to a new moment (due_at, window_ends_at, notify_at, zone)."""
        self.col.update_one({"_id": occurrence, "status": "pending"}, {"$set": moment})

    def delete_pending(self, ids: list[str]) -> int:
        if not ids:
            return 0
        return self.col.delete_many({"_id": {"$in": ids}, "status": "pending"}).deleted_count

    def between(self, patient_id: str, start: datetime, end: datetime, limit: int = 5000) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id, "due_at": {"$gte": start, "$lt": end}})
                    .sort([("due_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def get(self, patient_id: str, occurrence: str) -> dict | None:
        return self.col.find_one({"_id": occurrence, "patient_id": patient_id})

    def record(self, patient_id: str, occurrence: str, allowed_from: tuple[str, ...], changes: dict) -> dict | None:
        """Change an occurrence only if it is still in one of the allowed statuses (a conditional update)."""
        return self.col.find_one_and_update(
            {"_id": occurrence, "patient_id": patient_id, "status": {"$in": list(allowed_from)}},
            {"$set": changes}, return_document=ReturnDocument.AFTER)

    def mark_missed(self, now_utc: datetime) -> int:
        """Every pending occurrence whose completion window (and any snooze) has closed becomes missed."""
        result = self.col.update_many(
            {"status": "pending", "window_ends_at": {"$lt": now_utc}},
            {"$set": {"status": "missed", "status_at": now_utc}})
        return result.modified_count

    def delete_for_reminder_from(self, reminder_id: str, start: datetime) -> int:
        return self.col.delete_many({"reminder_id": reminder_id, "status": "pending",
                                     "due_at": {"$gte": start}}).deleted_count
