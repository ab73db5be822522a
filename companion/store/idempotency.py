"""Remembered answers to POSTs sent with an Idempotency-Key, per caller, for 24 hours.

A request claims its key by **inserting** it (the unique ``_id`` lets one request have it) with a lease;
the answer is stored when the request ends. A claim whose lease ran out without an answer (the process
serving it died) is taken over by one conditional update on the lease, which exactly one retry wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now

INDEXES = {"idempotency_keys": [IndexModel([("created_at", ASCENDING)], name="created")]}
KEEP_FOR = timedelta(hours=24)
IN_FLIGHT, DONE = "in_flight", "done"


@dataclass(frozen=True)
class StoredKey:
    """What an Idempotency-Key holds: the request it was first used for, and its answer once there is one."""

    request_hash: str
    state: str
    lease_until: datetime | None
    status: int | None = None
    body: bytes | None = None
    mimetype: str | None = None
    headers: dict[str, str] | None = None


def _stored(doc: dict) -> StoredKey:
    return StoredKey(doc["request_hash"], doc["state"], doc.get("lease_until"), doc.get("status"), doc.get("body"),
                     doc.get("mimetype"), doc.get("headers"))


class IdempotencyKeys:
    def __init__(self, db: Database):
        self.col = db.idempotency_keys

    def claim(self, caller_id: str, key: str, request_hash: str, lease: timedelta) -> StoredKey | None:
        """Claim the key for this request (None), or return what is already stored under it.

        An expired key (older than 24 hours) is forgotten and claimed afresh; an in-flight claim whose
        lease has run out is taken over (None) by exactly one of the requests that find it so."""
        _id, at = f"{caller_id}:{key}", now()
        try:
            self.col.insert_one({"_id": _id, "request_hash": request_hash, "state": IN_FLIGHT, "created_at": at,
                                 "lease_until": at + lease})
            return None
        except DuplicateKeyError:
            existing = self.col.find_one({"_id": _id})
        if existing is None:
            return self.claim(caller_id, key, request_hash, lease)
        if existing["created_at"] < at - KEEP_FOR:
            self.col.delete_one({"_id": _id, "created_at": existing["created_at"]})
            return self.claim(caller_id, key, request_hash, lease)
        lapsed = existing.get("lease_until") or existing["created_at"]
        if existing["state"] == IN_FLIGHT and existing["request_hash"] == request_hash and lapsed <= at:
            taken = self.col.find_one_and_update(
                {"_id": _id, "state": IN_FLIGHT, "lease_until": existing.get("lease_until")},
                {"$set": {"lease_until": at + lease, "taken_over_at": at}}, return_document=ReturnDocument.AFTER)
            if taken is not None:
                return None
            existing = self.col.find_one({"_id": _id}) or existing
        return _stored(existing)

    def complete(self, caller_id: str, key: str, status: int, body: bytes, mimetype: str,
                 headers: dict[str, str] | None = None) -> None:
        self.col.update_one({"_id": f"{caller_id}:{key}"}, {"$set": {
            "state": DONE, "status": status, "body": body, "mimetype": mimetype, "headers": headers or {},
            "lease_until": None}})

    def release(self, caller_id: str, key: str) -> None:
        self.col.delete_one({"_id": f"{caller_id}:{key}", "state": IN_FLIGHT})

    def delete_expired(self) -> int:
        return self.col.delete_many({"created_at": {"$lt": now() - KEEP_FOR}}).deleted_count
