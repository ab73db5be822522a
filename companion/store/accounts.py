"""Accounts: every person or machine that can call the API."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database

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
        """Record that a TOTP time step was used; False if it (or a later one) was used already."""
        res = self.col.update_one(
            {"_id": user_id, "$or": [{"mfa.last_step": {"$exists": False}}, {"mfa.last_step": {"$lt": step}}]},
            {"$set": {"mfa.last_step": step}},
        )
        return res.modified_count == 1
