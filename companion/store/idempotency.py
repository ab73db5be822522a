"""Remembered answers to POSTs sent with an Idempotency-Key, per caller, for 24 hours."""

from __future__ import annotations

from datetime import timedelta

from pymongo import ASCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.store.accounts import now

INDEXES = {"idempotency_keys": [IndexModel([("created_at", ASCENDING)], name="created")]}
KEEP_FOR = timedelta(hours=24)


class IdempotencyKeys:
    def __init__(self, db: Database):
        self.col = db.idempotency_keys

    def claim(self, caller_id: str, key: str, request_hash: str) -> dict | None:
        """Claim the key for this request (None), or return what is already stored under it."""
        _id = f"{caller_id}:{key}"
        try:
            self.col.insert_one({"_id": _id, "request_hash": request_hash, "state": "in_flight",
                                 "created_at": now()})
            return None
        except DuplicateKeyError:
            existing = self.col.find_one({"_id": _id})
            if existing and existing["created_at"] < now() - KEEP_FOR:
                self.col.delete_one({"_id": _id, "created_at": existing["created_at"]})
                return self.claim(caller_id, key, request_hash)
            return existing

    def complete(self, caller_id: str, key: str, status: int, body: bytes, mimetype: str) -> None:
        self.col.update_one({"_id": f"{caller_id}:{key}"}, {"$set": {
            "state": "done", "status": status, "body": body, "mimetype": mimetype}})

    def release(self, caller_id: str, key: str) -> None:
        self.col.delete_one({"_id": f"{caller_id}:{key}", "state": "in_flight"})

    def delete_expired(self) -> int:
        return self.col.delete_many({"created_at": {"$lt": now() - KEEP_FOR}}).deleted_count
