"""TENS units bound to patients (by serial), and gateway pairing codes."""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.store.accounts import now

INDEXES = {
    "devices": [IndexModel([("patient_id", ASCENDING)], name="patient")],
    "pairing_codes": [IndexModel([("expires_at", ASCENDING)], name="expires")],
}


class Devices:
    def __init__(self, db: Database):
        self.col = db.devices

    def bind(self, serial: str, patient_id: str, profile: str) -> tuple[dict, bool]:
        """Bind a unit to a patient. Returns (device, created); a unit bound to someone else is refused
        by the caller (the unique _id makes a double binding impossible)."""
        try:
            doc = {"_id": serial, "patient_id": patient_id, "profile": profile, "bound_at": now(),
                   "status": {}}
            self.col.insert_one(doc)
            return doc, True
        except DuplicateKeyError:
            return self.col.find_one({"_id": serial}), False

    def unbind(self, serial: str, patient_id: str) -> int:
        return self.col.delete_one({"_id": serial, "patient_id": patient_id}).deleted_count

    def get(self, serial: str) -> dict | None:
        return self.col.find_one({"_id": serial})

    def for_patient(self, patient_id: str) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id}).sort("_id", ASCENDING).limit(50))


class PairingCodes:
    def __init__(self, db: Database):
        self.col = db.pairing_codes
        self.uses = db.pairing_code_uses

    def create(self, code_hash: str, patient_id: str, expires_at: datetime) -> None:
        self.col.insert_one({"_id": code_hash, "patient_id": patient_id, "expires_at": expires_at,
                             "used_at": None, "created_at": now()})

    def claim(self, code_hash: str) -> dict | None:
        """Use a code once: the insert keyed by the code lets exactly one gateway have it."""
        code = self.col.find_one({"_id": code_hash, "expires_at": {"$gt": now()}})
        if not code:
            return None
        try:
            self.uses.insert_one({"_id": code_hash, "used_at": now()})
        except DuplicateKeyError:
            return None
        self.col.update_one({"_id": code_hash}, {"$set": {"used_at": now()}})
        return code
