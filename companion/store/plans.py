"""Therapy plans: one document per version; the current plan is the highest version."""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

INDEXES = {
    "therapy_plans": [
        IndexModel([("patient_id", ASCENDING), ("version", ASCENDING)], unique=True, name="patient_version_unique"),
    ],
}


class VersionTaken(Exception):
    """Another writer created this version first."""


class TherapyPlans:
    def __init__(self, db: Database):
        self.col = db.therapy_plans

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def current(self, patient_id: str) -> dict | None:
        return self.col.find_one({"patient_id": patient_id}, sort=[("version", DESCENDING)])

    def history(self, patient_id: str, limit: int = 100) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id}).sort("version", DESCENDING).limit(limit))

    def first(self, patient_id: str) -> dict | None:
        """The patient's first plan version (when therapy started)."""
        return self.col.find_one({"patient_id": patient_id}, sort=[("version", ASCENDING)])

    def every_version(self, fields: dict | None = None):
        """Every plan version of every patient (a job pass reads the small collection once)."""
        return self.col.find({}, fields)

    def version(self, patient_id: str, version: int) -> dict | None:
        return self.col.find_one({"patient_id": patient_id, "version": version})

    def insert_version(self, patient_id: str, version: int, plan: dict, *, created_by: str,
                       at: datetime) -> dict:
        """Insert exactly this version; the unique (patient_id, version) index lets one writer win."""
        doc = {"_id": str(ObjectId()), "patient_id": patient_id, "version": version, "created_at": at,
               "created_by": created_by, "active_from": at, "active_to": None, **plan}
        try:
            self.col.insert_one(doc)
        except DuplicateKeyError as exc:
            raise VersionTaken(str(version)) from exc
        # Every earlier version still open ends now (not only the previous one: a crash between these two
        # writes leaves one open, and the next version closes it).
        self.col.update_many({"patient_id": patient_id, "version": {"$lt": version}, "active_to": None},
                             {"$set": {"active_to": at}})
        return doc
