"""Clinician web sessions, kept server-side so that logging out, the idle limit and the absolute
limit all take effect at once. The cookie holds a random token; only its hash is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database

INDEXES = {
    "web_sessions": [
        IndexModel([("user_id", ASCENDING)], name="user"),
        IndexModel([("expires_at", ASCENDING)], name="expires"),
    ],
}
IDLE_LIMIT = timedelta(minutes=15)
ABSOLUTE_LIMIT = timedelta(hours=12)
MFA_STEP_LIMIT = timedelta(minutes=5)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WebSessions:
    def __init__(self, db: Database):
        self.col = db.web_sessions

    def start(self, user_id: str, role: str, *, stage: str, at: datetime) -> tuple[str, dict]:
        """A new session (`stage` "mfa": password checked, code pending; "full": signed in); (token, session)."""
        token = secrets.token_urlsafe(32)
        limit = MFA_STEP_LIMIT if stage == "mfa" else ABSOLUTE_LIMIT
        doc = {"_id": _hash(token), "user_id": user_id, "role": role, "stage": stage, "created_at": at,
               "last_seen_at": at, "expires_at": at + limit, "csrf_token": secrets.token_urlsafe(32)}
        self.col.insert_one(doc)
        return token, doc

    def live(self, token: str | None, at: datetime) -> dict | None:
        """The session behind a cookie if it is neither idle too long nor past its absolute limit."""
        if not token or len(token) > 100:
            return None
        doc = self.col.find_one({"_id": _hash(token)})
        if doc is None:
            return None
        if at >= doc["expires_at"] or at - doc["last_seen_at"] >= IDLE_LIMIT:
            self.col.delete_one({"_id": doc["_id"]})
            return None
        return doc

    def touch(self, session: dict, at: datetime) -> None:
        self.col.update_one({"_id": session["_id"]}, {"$set": {"last_seen_at": at}})

    def note_code_failure(self, session: dict) -> int | None:
        """Count one wrong code on this session; returns how many there have been, or None when the session
        has ended meanwhile (an atomic ``$inc``, so parallel guesses are each counted)."""
        doc = self.col.find_one_and_update({"_id": session["_id"]}, {"$inc": {"failures": 1}},
                                           return_document=ReturnDocument.AFTER)
        return int(doc["failures"]) if doc else None

    def end_for_user(self, user_id: str) -> int:
        """End every web session of an account (a password change, a deactivation)."""
        return self.col.delete_many({"user_id": user_id}).deleted_count

    def end_session(self, session: dict) -> None:
        self.col.delete_one({"_id": session["_id"]})

    def end(self, token: str | None) -> None:
        if token:
            self.col.delete_one({"_id": _hash(token)})

    def purge_expired(self, at: datetime) -> int:
        """Delete sessions past their absolute limit or idle for too long (a housekeeping step)."""
        return self.col.delete_many({"$or": [{"expires_at": {"$lte": at}},
                                             {"last_seen_at": {"$lte": at - IDLE_LIMIT}}]}).deleted_count
