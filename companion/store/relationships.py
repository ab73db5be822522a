"""Who is related to which patient: caregiver consent, care teams, break-glass grants, gateways."""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now
from companion.domain.access import CaregiverPermissions
from companion.domain.people import CareLink, CareTeam, EmergencyAccess, Gateway

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


def permissions_of(doc: dict | None) -> CaregiverPermissions:
    doc = doc or {}
    return CaregiverPermissions(write=bool(doc.get("write")), alerts=frozenset(doc.get("alerts") or ()),
                                diary_notes=bool(doc.get("diary_notes")))


def permissions_doc(permissions: CaregiverPermissions) -> dict:
    return {"write": permissions.write, "alerts": sorted(permissions.alerts), "diary_notes": permissions.diary_notes}


def _link(doc: dict | None) -> CareLink | None:
    if doc is None:
        return None
    return CareLink(id=doc["_id"], patient_id=doc["patient_id"], caregiver_id=doc["caregiver_id"],
                    status=doc["status"], permissions=permissions_of(doc.get("permissions")),
                    granted_at=doc["granted_at"], revoked_at=doc.get("revoked_at"))


def _team(doc: dict | None) -> CareTeam | None:
    if doc is None:
        return None
    return CareTeam(id=doc["_id"], name=doc["name"], clinician_ids=tuple(doc.get("clinician_ids") or ()),
                    created_at=doc.get("created_at"))


def _gateway(doc: dict | None) -> Gateway | None:
    if doc is None:
        return None
    return Gateway(id=doc["_id"], patient_id=doc["patient_id"], name=doc.get("name", ""),
                   secret_hash=doc["secret_hash"], revoked=bool(doc.get("revoked")), created_at=doc.get("created_at"))


class CareLinks:
    def __init__(self, db: Database):
        self.col = db.care_links

    def grant(self, patient_id: str, caregiver_id: str, permissions: CaregiverPermissions) -> CareLink:
        """Make (or renew) the patient's consent for this caregiver, with these permissions."""
        update = {"$set": {"status": "active", "permissions": permissions_doc(permissions), "granted_at": now(),
                           "revoked_at": None},
                  "$setOnInsert": {"_id": new_id()}}
        query = {"patient_id": patient_id, "caregiver_id": caregiver_id}
        try:
            doc = self.col.find_one_and_update(query, update, upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            # Two first grants raced on the unique (patient, caregiver) pair; the other inserted it.
            doc = self.col.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
        return _link(doc)

    def revoke(self, patient_id: str, link_id: str) -> CareLink | None:
        return _link(self.col.find_one_and_update(
            {"_id": link_id, "patient_id": patient_id, "status": "active"},
            {"$set": {"status": "revoked", "revoked_at": now()}},
            return_document=ReturnDocument.AFTER,
        ))

    def active(self, patient_id: str, caregiver_id: str) -> CareLink | None:
        return _link(self.col.find_one({"patient_id": patient_id, "caregiver_id": caregiver_id, "status": "active"}))

    def for_patient(self, patient_id: str) -> list[CareLink]:
        return [_link(d) for d in self.col.find({"patient_id": patient_id}).sort("granted_at", ASCENDING).limit(100)]

    def for_caregiver(self, caregiver_id: str) -> list[CareLink]:
        return [_link(d) for d in self.col.find({"caregiver_id": caregiver_id, "status": "active"}).limit(200)]


class CareTeams:
    def __init__(self, db: Database):
        self.teams = db.care_teams
        self.enrolments = db.team_enrolments

    def create(self, name: str) -> CareTeam:
        doc = {"_id": new_id(), "name": name, "clinician_ids": [], "created_at": now()}
        self.teams.insert_one(doc)
        return _team(doc)

    def get(self, team_id: str) -> CareTeam | None:
        return _team(self.teams.find_one({"_id": team_id}))

    def add_clinician(self, team_id: str, clinician_id: str) -> CareTeam | None:
        return _team(self.teams.find_one_and_update(
            {"_id": team_id}, {"$addToSet": {"clinician_ids": clinician_id}}, return_document=ReturnDocument.AFTER))

    def remove_clinician(self, team_id: str, clinician_id: str) -> CareTeam | None:
        return _team(self.teams.find_one_and_update(
            {"_id": team_id}, {"$pull": {"clinician_ids": clinician_id}}, return_document=ReturnDocument.AFTER))

    def of_clinician(self, clinician_id: str, limit: int = 100) -> list[CareTeam]:
        return [_team(d) for d in self.teams.find({"clinician_ids": clinician_id}).limit(limit)]

    def team_ids_of(self, clinician_id: str) -> list[str]:
        return [t["_id"] for t in self.teams.find({"clinician_ids": clinician_id}, {"_id": 1})]

    def has_team(self, clinician_id: str) -> bool:
        return self.teams.find_one({"clinician_ids": clinician_id}, {"_id": 1}) is not None

    def enrol(self, team_id: str, patient_id: str, *, by: str | None = None, reason: str | None = None) -> bool:
        """Enrol a patient in a team; True when newly enrolled (enrolling twice, or concurrently, is harmless)."""
        fields = {"_id": f"{team_id}:{patient_id}", "enrolled_at": now()}
        if by is not None:
            fields.update({"enrolled_by": by, "reason": reason})
        try:
            result = self.enrolments.update_one({"team_id": team_id, "patient_id": patient_id},
                                                {"$setOnInsert": fields}, upsert=True)
        except DuplicateKeyError:
            return False  # enrolled by a concurrent request: the same outcome
        return result.upserted_id is not None

    def unenrol(self, team_id: str, patient_id: str) -> int:
        return self.enrolments.delete_one({"team_id": team_id, "patient_id": patient_id}).deleted_count

    def patient_count(self, team_id: str) -> int:
        return self.enrolments.count_documents({"team_id": team_id})

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

    def grant(self, clinician_id: str, patient_id: str, reason: str, expires_at: datetime) -> EmergencyAccess:
        doc = {"_id": new_id(), "clinician_id": clinician_id, "patient_id": patient_id,
               "reason": reason, "granted_at": now(), "expires_at": expires_at}
        self.col.insert_one(doc)
        return EmergencyAccess(doc["_id"], clinician_id, patient_id, reason, doc["granted_at"], expires_at)

    def active(self, clinician_id: str, patient_id: str) -> EmergencyAccess | None:
        doc = self.col.find_one({"clinician_id": clinician_id, "patient_id": patient_id, "expires_at": {"$gt": now()}})
        if doc is None:
            return None
        return EmergencyAccess(doc["_id"], doc["clinician_id"], doc["patient_id"], doc["reason"], doc["granted_at"],
                               doc["expires_at"])


class Gateways:
    def __init__(self, db: Database):
        self.col = db.gateways

    def create(self, *, patient_id: str, secret_hash: str, name: str) -> Gateway:
        doc = {"_id": new_id(), "patient_id": patient_id, "secret_hash": secret_hash, "name": name,
               "revoked": False, "created_at": now()}
        self.col.insert_one(doc)
        return _gateway(doc)

    def get(self, gateway_id: str) -> Gateway | None:
        return _gateway(self.col.find_one({"_id": gateway_id}))

    def revoke(self, gateway_id: str) -> None:
        self.col.update_one({"_id": gateway_id}, {"$set": {"revoked": True, "revoked_at": now()}})

    def note_clock(self, gateway_id: str, check: dict) -> None:
        """The server's last check of the gateway's clock (its offset, whether it vouched for it, when)."""
        self.col.update_one({"_id": gateway_id}, {"$set": {"clock": check}})

    def clocks_of(self, patient_id: str) -> list[dict]:
        """The last clock check of each of the patient's gateways (``_id``, ``name``, ``clock``)."""
        return list(self.col.find({"patient_id": patient_id}, {"name": 1, "clock": 1, "revoked": 1}).limit(50))
