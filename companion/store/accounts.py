"""Accounts: every person or machine that can call the API."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

INDEXES = {
    "users": [
        IndexModel([("email", ASCENDING)], unique=True, name="email_unique"),
        IndexModel([("role", ASCENDING)], name="role"),
    ],
}


def now() -> datetime:
    return datetime.now(UTC)


class Users:
    def __init__(self, db: Database):
        self.col = db.users
        self.totp_uses = db.totp_uses

    def create(self, *, email: str, password_hash: str, role: str, display_name: str,
               time_zone: str = "UTC", extra: dict | None = None) -> dict:
        doc = {
            "_id": str(ObjectId()),
            "email": email,
            "password_hash": password_hash,
            "role": role,
            "display_name": display_name,
            "time_zone": time_zone,
            "created_at": now(),
            "mfa": {"enabled": False},
            **(extra or {}),
        }
        self.col.insert_one(doc)
        return doc

    def by_email(self, email: str) -> dict | None:
        return self.col.find_one({"email": email})

    def by_id(self, user_id: str) -> dict | None:
        return self.col.find_one({"_id": user_id})

    def update(self, user_id: str, fields: dict) -> dict | None:
        return self.col.find_one_and_update(
            {"_id": user_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
        )

    def claim_totp_step(self, user_id: str, step: int) -> bool:
        """Use a TOTP time step once; False if it, or a later step, was used already.

        The insert keyed by (user, step) is the atomic part; the last-step check refuses an older
        code after a newer one."""
        user = self.col.find_one({"_id": user_id}, {"mfa.last_step": 1}) or {}
        if user.get("mfa", {}).get("last_step", -1) >= step:
            return False
        try:
            self.totp_uses.insert_one({"_id": f"{user_id}:{step}", "used_at": now()})
        except DuplicateKeyError:
            return False
        self.col.update_one({"_id": user_id}, {"$max": {"mfa.last_step": step}})
        return True
