"""Refresh-token families: each login starts a family; every refresh rotates within it."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now

INDEXES = {
    "refresh_tokens": [
        IndexModel([("family_id", ASCENDING)], name="family"),
        IndexModel([("expires_at", ASCENDING)], name="expires"),
    ],
    "token_families": [IndexModel([("user_id", ASCENDING)], name="user"),
                       IndexModel([("created_at", ASCENDING)], name="started")],
}


class TokenFamilies:
    def __init__(self, db: Database):
        self.families = db.token_families
        self.tokens = db.refresh_tokens

    def start(self, family_id: str, user_id: str, role: str, *, started_at: datetime | None = None) -> None:
        self.families.insert_one(
            {"_id": family_id, "user_id": user_id, "role": role, "revoked": False,
             "created_at": started_at or now()}
        )

    def revoke(self, family_id: str, reason: str) -> None:
        self.families.update_one(
            {"_id": family_id}, {"$set": {"revoked": True, "revoked_reason": reason, "revoked_at": now()}}
        )

    def revoke_all_for_user(self, user_id: str, reason: str) -> None:
        self.families.update_many(
            {"user_id": user_id, "revoked": False},
            {"$set": {"revoked": True, "revoked_reason": reason, "revoked_at": now()}},
        )

    def add_token(self, token_hash: str, family_id: str, user_id: str, expires_at: datetime) -> None:
        """Store a new refresh token (by its hash). Storing the same one twice is harmless: a retried refresh
        derives the same successor as the first attempt did."""
        with contextlib.suppress(DuplicateKeyError):
            self.tokens.insert_one(
                {"_id": token_hash, "family_id": family_id, "user_id": user_id,
                 "issued_at": now(), "expires_at": expires_at, "used_at": None}
            )

    def family(self, family_id: str) -> dict | None:
        return self.families.find_one({"_id": family_id})

    def token(self, token_hash: str) -> dict | None:
        return self.tokens.find_one({"_id": token_hash})

    def use_token(self, token_hash: str, at: datetime) -> tuple[str, dict | None]:
        """Mark a refresh token used at ``at``. Returns ("ok", doc), ("reused", doc) or ("unknown", None); the
        doc is as it stands after the call (its ``used_at`` is when it was first used).

        One conditional single-document update: of two concurrent refreshes with the same token exactly
        one gets "ok" (on MongoDB, and on the project's FerretDB build, which keeps that guarantee).
        """
        doc = self.tokens.find_one_and_update({"_id": token_hash, "used_at": None}, {"$set": {"used_at": at}},
                                              return_document=ReturnDocument.AFTER)
        if doc is not None:
            return "ok", doc
        doc = self.tokens.find_one({"_id": token_hash})
        return ("reused", doc) if doc else ("unknown", None)

    def delete_for_user(self, user_id: str) -> int:
        """Forget a person's sign-in history (their record's retention ended)."""
        self.tokens.delete_many({"user_id": user_id})
        return self.families.delete_many({"user_id": user_id}).deleted_count

    def delete_dead(self, *, started_before: datetime, gateways_started_before: datetime) -> int:
        """Forget the sessions that can no longer be alive: every one started before ``started_before``, and
        gateways' started before ``gateways_started_before``."""
        gone = self.families.delete_many({"role": "gateway", "created_at": {"$lt": gateways_started_before}})
        return gone.deleted_count + self.families.delete_many(
            {"created_at": {"$lt": started_before}}).deleted_count

    def delete_expired(self, older_than: timedelta = timedelta(0)) -> int:
        return self.tokens.delete_many({"expires_at": {"$lt": now() - older_than}}).deleted_count
