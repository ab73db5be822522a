"""Self-service sign-ups waiting for their code (companion.domain.signup): the codes mailed to an email, and each
request's pending sign-up.

- ``signup_codes``: one document per mail sent with a code, ``<email>:<code hash>``. Several live at once (every
  mail's code is good until it expires); using one is a conditional delete, so of two concurrent uses exactly one
  gets it.
- ``pending_signups``: one document per request, ``<email>:<password key>`` (a keyed digest of the email and the
  password, so that a confirmation finds its own in one read), with the network it came from. A request with the
  same email and password replaces its own; a network keeps only its newest few for one email.

Emails, passwords and networks are named by keyed digests the caller makes (companion.services.accounts); the
pending sign-up's payload holds the email as typed (the account is made from it) and the password's argon2 hash.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

INDEXES = {
    "signup_codes": [IndexModel([("expires_at", ASCENDING)], name="expires"),
                     IndexModel([("email", ASCENDING)], name="email")],
    "pending_signups": [IndexModel([("expires_at", ASCENDING)], name="expires"),
                        IndexModel([("email", ASCENDING), ("network", ASCENDING), ("created_at", DESCENDING)],
                                   name="email_network_created")],
}


class SignUps:
    def __init__(self, db: Database):
        self.codes = db.signup_codes
        self.pending = db.pending_signups

    def keep_pending(self, email: str, key: str, *, network: str, payload: dict, at: datetime,
                     expires_at: datetime, per_network: int) -> None:
        """Store a request's pending sign-up (replacing one with the same ``email`` and ``key``), then forget the
        network's oldest for this email past ``per_network``."""
        doc_id = f"{email}:{key}"
        self.pending.replace_one({"_id": doc_id}, {"_id": doc_id, "email": email, "network": network,
                                                   "created_at": at, "expires_at": expires_at, "payload": payload},
                                 upsert=True)
        surplus = [d["_id"] for d in self.pending.find({"email": email, "network": network}, {"_id": 1})
                   .sort([("created_at", DESCENDING), ("_id", DESCENDING)]).skip(per_network)]
        if surplus:
            self.pending.delete_many({"_id": {"$in": surplus}})

    def live_pending(self, email: str, key: str, at: datetime) -> dict | None:
        """The pending sign-up of ``email`` with ``key`` if it has not expired."""
        doc = self.pending.find_one({"_id": f"{email}:{key}"})
        return doc if doc is not None and doc["expires_at"] > at else None

    def note_code(self, email: str, code_hash: str, *, at: datetime, expires_at: datetime) -> None:
        """A code mailed to ``email``."""
        doc_id = f"{email}:{code_hash}"
        self.codes.replace_one({"_id": doc_id}, {"_id": doc_id, "email": email, "created_at": at,
                                                 "expires_at": expires_at}, upsert=True)

    def is_live_code(self, email: str, code_hash: str, at: datetime) -> bool:
        doc = self.codes.find_one({"_id": f"{email}:{code_hash}"})
        return doc is not None and doc["expires_at"] > at

    def use_code(self, email: str, code_hash: str, at: datetime) -> bool:
        """Take a live code: True for the one use that gets it."""
        return self.codes.find_one_and_delete({"_id": f"{email}:{code_hash}", "expires_at": {"$gt": at}}) is not None

    def forget(self, email: str) -> None:
        """Every code and pending sign-up of ``email`` (its account is made)."""
        self.codes.delete_many({"email": email})
        self.pending.delete_many({"email": email})

    def delete_expired(self, before: datetime) -> int:
        return (self.codes.delete_many({"expires_at": {"$lt": before}}).deleted_count
                + self.pending.delete_many({"expires_at": {"$lt": before}}).deleted_count)
