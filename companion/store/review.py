"""Read-only queries over the collections other areas own (sessions, diary, plans, reminders,
adherence snapshots, alerts, notifications), shaped for clinician review.

Panel queries take many patients at once (`$in`), so a panel of 500 costs a handful of round
trips, not 500. Every query is bounded by patient, by time and by a limit. The one write here is
acknowledging an alert, which the issue gives to the care team.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from companion.store.adherence import AdherenceDays

# The push branch stores notifications in `push_outbox` (see companion/store/outbox.py there).
NOTIFICATIONS = "push_outbox"
PANEL_PAIN_FIELDS = {"patient_id": 1, "recorded_at": 1, "nrs": 1, "deleted": 1}
PANEL_DAY_FIELDS = {"patient_id": 1, "date": 1, "state": 1, "covered": 1}
MAX_ROWS = 5000
# Ids per `_id $in`: FerretDB serves up to 10,000 from its _id index but re-checks every fetched document
# against the whole list, so 1,000 at a time is faster there (0.57 s against 0.78 s for 6,000 snapshots).
ID_CHUNK = 1000


class ReviewReads:
    def __init__(self, db: Database):
        self.db = db

    # Panel: many patients per query.
    def patients(self, patient_ids: list[str]) -> list[dict]:
        return list(self.db.users.find({"_id": {"$in": patient_ids}, "role": "patient"},
                                        {"display_name": 1, "time_zone": 1, "email": 1, "created_at": 1}))

    def adherence_days_by_id(self, snapshot_ids: list[str], fields: dict | None = None) -> list[dict]:
        """Snapshots by their computed ids (`<patient>:<date>`), a bounded `_id $in` per chunk: served from the
        _id index on MongoDB and on FerretDB alike, whatever the size of the collection."""
        return AdherenceDays(self.db).by_ids(snapshot_ids, fields, ID_CHUNK)

    def pain_of(self, patient_ids: list[str], since: datetime) -> list[dict]:
        return list(self.db.pain_entries.find({"patient_id": {"$in": patient_ids}, "recorded_at": {"$gte": since}},
                                              PANEL_PAIN_FIELDS))

    def devices_of(self, patient_ids: list[str]) -> list[dict]:
        return list(self.db.devices.find({"patient_id": {"$in": patient_ids}}, {"patient_id": 1, "status": 1}))

    def open_alerts_of(self, patient_ids: list[str]) -> list[dict]:
        return list(self.db.alerts.find({"patient_id": {"$in": patient_ids}, "acknowledged_at": None},
                                        {"patient_id": 1}))

    # One patient.
    def sessions(self, patient_id: str, since: datetime, until: datetime) -> list[dict]:
        return list(self.db.session_records.find({"patient_id": patient_id,
                                                  "started_at": {"$gte": since, "$lt": until}})
                    .sort("started_at", ASCENDING).limit(MAX_ROWS))

    def sessions_by_id(self, patient_id: str, ids: list[str]) -> dict[str, dict]:
        if not ids:
            return {}
        found = self.db.session_records.find({"patient_id": patient_id, "_id": {"$in": ids}})
        return {s["_id"]: s for s in found}

    def pain_entries(self, patient_id: str, since: datetime, until: datetime) -> list[dict]:
        return list(self.db.pain_entries.find({"patient_id": patient_id, "deleted": {"$ne": True},
                                               "recorded_at": {"$gte": since, "$lt": until}})
                    .sort("recorded_at", ASCENDING).limit(MAX_ROWS))

    def plans(self, patient_id: str) -> list[dict]:
        return list(self.db.therapy_plans.find({"patient_id": patient_id}).sort("version", DESCENDING).limit(200))

    def occurrences(self, patient_id: str, since: datetime, until: datetime) -> list[dict]:
        return list(self.db.reminder_occurrences.find({"patient_id": patient_id,
                                                       "due_at": {"$gte": since, "$lt": until}})
                    .sort("due_at", DESCENDING).limit(1000))

    def reminders(self, patient_id: str) -> list[dict]:
        return list(self.db.reminders.find({"patient_id": patient_id}, {"kind": 1, "title": 1, "active": 1})
                    .limit(200))

    def notifications(self, patient_id: str, since: datetime) -> list[dict]:
        return list(self.db[NOTIFICATIONS].find({"patient_id": patient_id, "created_at": {"$gte": since}})
                    .sort("created_at", DESCENDING).limit(1000))

    def devices(self, patient_id: str) -> list[dict]:
        return list(self.db.devices.find({"patient_id": patient_id}).sort("_id", ASCENDING).limit(50))

    def device_events(self, patient_id: str, since: datetime) -> list[dict]:
        return list(self.db.device_events.find({"patient_id": patient_id, "at": {"$gte": since}})
                    .sort("at", DESCENDING).limit(200))

    def practice(self, patient_id: str, since: datetime) -> list[dict]:
        return list(self.db.practice_log.find({"patient_id": patient_id, "started_at": {"$gte": since}})
                    .sort("started_at", DESCENDING).limit(500))

    def alerts(self, patient_id: str, *, open_only: bool, limit: int = 200) -> list[dict]:
        query: dict = {"patient_id": patient_id}
        if open_only:
            query["acknowledged_at"] = None
        return list(self.db.alerts.find(query).sort("raised_at", DESCENDING).limit(limit))

    def acknowledge_alert(self, patient_id: str, alert_id: str, clinician_id: str, at: datetime) -> dict | None:
        """Mark an alert of this patient acknowledged; the first acknowledgement stands. None: no such alert."""
        alert = self.db.alerts.find_one({"_id": alert_id, "patient_id": patient_id})
        if alert is None:
            return None
        if alert.get("acknowledged_at") is None:
            self.db.alerts.update_one({"_id": alert_id, "patient_id": patient_id, "acknowledged_at": None},
                                      {"$set": {"acknowledged_at": at, "acknowledged_by": clinician_id}})
            alert = self.db.alerts.find_one({"_id": alert_id, "patient_id": patient_id})
        return alert
