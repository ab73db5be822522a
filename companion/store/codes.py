"""One-time codes: a password reset an admin issued (sign-up codes are companion.store.signups').

One document per purpose and subject (``reset:<user id>``): issuing again replaces the earlier code. Only the code's hash is kept. Using a code is one conditional delete, so of two
concurrent uses exactly one gets it.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, IndexModel
from pymongo.database import Database

INDEXES = {"one_time_codes": [IndexModel([("expires_at", ASCENDING)], name="expires")]}


class OneTimeCodes:
    def __init__(self, db: Database):
        self.col = db.one_time_codes

    def issue(self, purpose: str, subject: str, code_hash: str, *, at: datetime, expires_at: datetime,
              payload: dict | None = None) -> None:
        """Store (or replace) the code for ``purpose`` and ``subject``."""
        doc_id = f"{purpose}:{subject}"
        self.col.replace_one({"_id": doc_id}, {"_id": doc_id, "purpose": purpose, "subject": subject,
                                               "code_hash": code_hash, "created_at": at, "expires_at": expires_at,
                                               "payload": payload or {}}, upsert=True)

    def live(self, purpose: str, subject: str, at: datetime) -> dict | None:
        """The code document if it has not expired."""
        doc = self.col.find_one({"_id": f"{purpose}:{subject}"})
        return doc if doc is not None and doc["expires_at"] > at else None

    def use(self, purpose: str, subject: str, code_hash: str) -> dict | None:
        """Take the code if ``code_hash`` is its hash: the document (None if another use took it first)."""
        return self.col.find_one_and_delete({"_id": f"{purpose}:{subject}", "code_hash": code_hash})

    def withdraw(self, purpose: str, subject: str) -> None:
        self.col.delete_one({"_id": f"{purpose}:{subject}"})

    def delete_expired(self, before: datetime) -> int:
        return self.col.delete_many({"expires_at": {"$lt": before}}).deleted_count
