"""The scheduler's view of reminder occurrences: what is due now, and what has been missed.

The `reminders` and `reminder_occurrences` collections belong to the patient's-day area (see the
data contract); this module only reads them and makes the two changes the scheduler owns: counting
the nudges sent and turning an occurrence whose window closed into `missed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from pymongo import ASCENDING
from pymongo.database import Database

from companion.store.batches import chunks


class DueReminders:
    def __init__(self, db: Database):
        self.occurrences = db.reminder_occurrences
        self.reminders = db.reminders

    def open_at(self, at: datetime) -> Iterator[dict]:
        """Pending occurrences already due whose completion window is still open at ``at``."""
        return self.occurrences.find(
            {"status": "pending", "window_ends_at": {"$gt": at}, "due_at": {"$lte": at}}
        ).sort("due_at", ASCENDING)

    def closed_at(self, at: datetime, limit: int) -> list[dict]:
        """Pending occurrences whose completion window had closed by ``at``."""
        return list(self.occurrences.find({"status": "pending", "window_ends_at": {"$lte": at}})
                    .sort("window_ends_at", ASCENDING).limit(limit))

    def reminders_by_id(self, reminder_ids: Iterable[str]) -> dict[str, dict]:
        """The reminders named, by id (only the fields the scheduler needs)."""
        found: dict[str, dict] = {}
        for part in chunks(sorted(set(reminder_ids))):
            for doc in self.reminders.find({"_id": {"$in": part}}, {"repeat": 1, "kind": 1,
                                                                      "completion_window_min": 1}):
                found[doc["_id"]] = doc
        return found

    def note_nudge(self, occurrence_id: str, count: int) -> None:
        """Record that ``count`` nudges have gone out for an occurrence."""
        self.occurrences.update_one({"_id": occurrence_id}, {"$max": {"nudges_sent": count}})

    def mark_missed(self, occurrence_id: str, at: datetime) -> bool:
        """Turn a still-pending occurrence into `missed`; False when the patient recorded it meanwhile."""
        result = self.occurrences.update_one({"_id": occurrence_id, "status": "pending"},
                                             {"$set": {"status": "missed", "status_at": at}})
        return result.modified_count == 1

    def recent_of_kind(self, kind: str, since: datetime, until: datetime, statuses: tuple[str, ...]) -> list[dict]:
        """Occurrences of ``kind`` due in [since, until) whose status is one of ``statuses``."""
        return list(self.occurrences.find({"kind": kind, "status": {"$in": list(statuses)},
                                           "due_at": {"$gte": since, "$lt": until}}).limit(100_000))
