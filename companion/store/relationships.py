"""Who is related to which patient: caregiver consent, care teams, break-glass grants, gateways."""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database

from companion.store.accounts import now

INDEXES = {
    "care_links": [
        IndexModel([("patient_id", ASCENDING), ("caregiver_id", ASCENDING)], unique=True, name="pair_unique"),
        IndexModel([("caregiver_id", ASCENDING), ("status", ASCENDING)], name="caregiver_status"),
    ],
    "care_teams": [IndexModel([("clinician_ids", ASCENDING)], name="clinicians")],
    "team_enrolments": [
        IndexModel([("patient_id", ASCENDING), ("team_id", ASCENDING)], unique=True, name="enrolment_unique"),
        IndexModel([("team_id", ASCENDING)], name="team"),
    ],
    "emergency_grants": [IndexModel([("clinician_id", ASCENDING), ("patient_id", ASCENDING)], name="pair")],
    "gateways": [IndexModel([("patient_id", ASCENDING)], name="patient")],
}


def new_id() -> str:
    return str(ObjectId())


class CareLinks:
    def __init__(self, db: Database):
        self.col = db.care_links

    def grant(self, patient_id: str, caregiver_id: str, permissions: dict) -> dict:
        return self.col.find_one_and_update(
            {"patient_id": patient_id, "caregiver_id": caregiver_id},
            {"$set": {"status": "active", "permissions": permissions, "granted_at": now(), "revoked_at": None},
             "$setOnInsert": {"_id": new_id()}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )

    def revoke(self, patient_id: str, link_id: str) -> dict | None:
        return self.col.find_one_and_update(
            {"_id": link_id, "patient_id": patient_id, "status": "active"},
            {"$set": {"status": "revoked", "revoked_at": now()}},
            return_document=ReturnDocument.AFTER,
        )

    def active(self, patient_id: str, caregiver_id: str) -> dict | None:
        return self.col.find_one({"patient_id": patient_id, "caregiver_id": caregiver_id, "status": "active"})

    def for_patient(self, patient_id: str) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id}).sort("granted_at", ASCENDING).limit(100))

    def for_caregiver(self, caregiver_id: str) -> list[dict]:
        return list(self.col.find({"caregiver_id": caregiver_id, "status": "active"}).limit(200))


class CareTeams:
    def __init__(self, db: Database):
        self.teams = db.care_teams
        self.enrolments = db.team_enrolments

    def create(self, name: str) -> dict:
        doc = {"_id": new_id(), "name": name, "clinician_ids": [], "created_at": now()}
        self.teams.insert_one(doc)
        return doc

    def get(self, team_id: str) -> dict | None:
        return self.teams.find_one({"_id": team_id})

    def add_clinician(self, team_id: str, clinician_id: str) -> dict | None:
        return self.teams.find_one_and_update(
            {"_id": team_id}, {"$addToSet": {"clinician_ids": clinician_id}}, return_document=ReturnDocument.AFTER
        )

    def remove_clinician(self, team_id: str, clinician_id: str) -> dict | None:
        return self.teams.find_one_and_update(
            {"_id": team_id}, {"$pull": {"clinician_ids": clinician_id}}, return_document=ReturnDocument.AFTER
        )

    def team_ids_of(self, clinician_id: str) -> list[str]:
        return [t["_id"] for t in self.teams.find({"clinician_ids": clinician_id}, {"_id": 1})]

    def enrol(self, team_id: str, patient_id: str) -> None:
        self.enrolments.update_one(
            {"team_id": team_id, "patient_id": patient_id},
            {"$setOnInsert": {"_id": new_id(), "enrolled_at": now()}},
            upsert=True,
        )

    def unenrol(self, team_id: str, patient_id: str) -> int:
        return self.enrolments.delete_one({"team_id": team_id, "patient_id": patient_id}).deleted_count

    def is_on_team_of(self, clinician_id: str, patient_id: str) -> bool:
        team_ids = self.team_ids_of(clinician_id)
        return bool(team_ids) and self.enrolments.find_one(
            {"patient_id": patient_id, "team_id": {"$in": team_ids}}, {"_id": 1}
        ) is not None

    def patient_ids_for(self, clinician_id: str) -> list[str]:
        team_ids = self.team_ids_of(clinician_id)
        if not team_ids:
            return []
        return sorted({e["patient_id"] for e in self.enrolments.find({"team_id": {"$in": team_ids}}, {"patient_id": 1})})


class EmergencyGrants:
    def __init__(self, db: Database):
        self.col = db.emergency_grants

    def grant(self, clinician_id: str, patient_id: str, reason: str, expires_at: datetime) -> dict:
        doc = {"_id": new_id(), "clinician_id": clinician_id, "patient_id": patient_id,
               "reason": reason, "granted_at": now(), "expires_at": expires_at}
        self.col.insert_one(doc)
        return doc

    def active(self, clinician_id: str, patient_id: str) -> dict | None:
        return self.col.find_one(
            {"clinician_id": clinician_id, "patient_id": patient_id, "expires_at": {"$gt": now()}}
        )


class Gateways:
    def __init__(self, db: Database):
        self.col = db.gateways

    def create(self, *, patient_id: str, secret_hash: str, name: str) -> dict:
        doc = {"_id": new_id(), "patient_id": patient_id, "secret_hash": secret_hash, "name": name,
               "revoked": False, "created_at": now()}
        self.col.insert_one(doc)
        return doc

    def get(self, gateway_id: str) -> dict | None:
        return self.col.find_one({"_id": gateway_id})

    def revoke(self, gateway_id: str) -> None:
        self.col.update_one({"_id": gateway_id}, {"$set": {"revoked": True, "revoked_at": now()}})
