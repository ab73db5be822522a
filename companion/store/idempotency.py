"""Remembered answers to POSTs sent with an Idempotency-Key, per caller, for 24 hours.

A request claims its key by **inserting** it (the unique ``_id`` lets one request have it) with a lease;
the answer is stored when the request ends. A claim whose lease ran out without an answer (the process
serving it died) is taken over by one conditional update on the lease, which exactly one retry wins. A
request that failed releases its claim for a retry, in one of two ways:

- **released** (refused, a 4xx: nothing was written): the key is free again, for its retry or for another
  request (the same key with a corrected body);
- **interrupted** (a 5xx, an error: it may have written part of its work before it stopped): the key stays bound
  to the request it was used for. Its retry (the same body) takes the claim over and runs the use case again,
  which finishes what the first attempt began; another request with the key is refused as a mismatch, as when
  an answer is stored, since as a new claim it would make a second object beside the first attempt's. So is a
  claim taken over from a request that died; and once bound so, a claim stays bound whatever its retries meet.

Each claim has its own ``claim_id``. What a request creates is named from its key *and* the request itself (its
hash: companion.services.idempotency.IdempotencyClaims.request_key, companion.services.derived_ids): a retry of
the same request (the same body) finds what the first attempt made, whether it takes a dead request's claim over,
finds the claim released or interrupted by a failure, or comes after the 24 hours as a new claim (a phone offline
for days); another request with the key (once the first was refused, or after the 24 hours) makes a new thing.

A request's answer is kept, and its failure frees the key, only while the key is still under its claim
(``complete`` and ``release`` name it): a request whose lease ran out can finish after its retry took the key
over, failed and released it, and another request claimed it anew; written by ``_id`` alone, its answer would be
kept under that request's claim (whose retries would replay it), or its failure would free that request's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now

INDEXES = {"idempotency_keys": [IndexModel([("created_at", ASCENDING)], name="created")]}
KEEP_FOR = timedelta(hours=24)
IN_FLIGHT, DONE, RELEASED, INTERRUPTED = "in_flight", "done", "released", "interrupted"


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


@dataclass(frozen=True)
class HeldKey:
    """This request holds the key and does the work, as the claim ``claim_id`` ("" for a claim stored before
    claims had ids, which its retries go on using)."""

    claim_id: str


def _under(held: HeldKey) -> dict:
    """The filter on a key still under the claim ``held`` (one stored before claims had ids has none, or "")."""
    if held.claim_id:
        return {"claim_id": held.claim_id}
    return {"$or": [{"claim_id": ""}, {"claim_id": {"$exists": False}}]}


def _stored(doc: dict) -> StoredKey:
    return StoredKey(doc["request_hash"], doc["state"], doc.get("lease_until"), doc.get("status"), doc.get("body"),
                     doc.get("mimetype"), doc.get("headers"))


class IdempotencyKeys:
    def __init__(self, db: Database):
        self.col = db.idempotency_keys

    def claim(self, caller_id: str, key: str, request_hash: str, lease: timedelta) -> HeldKey | StoredKey:
        """Claim the key for this request (a HeldKey), or return what is already stored under it.

        An expired key (older than 24 hours) is forgotten and claimed afresh, as a new claim; an in-flight
        claim whose lease has run out, or a released one, is taken over by exactly one of the requests that find
        it so: as the same claim by the same request, as a new claim (a released one) by another. An interrupted
        claim is taken over by the same request only: to another one it is returned as stored."""
        _id, at, claim_id = f"{caller_id}:{key}", now(), str(ObjectId())
        try:
            self.col.insert_one({"_id": _id, "claim_id": claim_id, "request_hash": request_hash,
                                 "state": IN_FLIGHT, "created_at": at, "lease_until": at + lease})
            return HeldKey(claim_id)
        except DuplicateKeyError:
            existing = self.col.find_one({"_id": _id})
        if existing is None:
            return self.claim(caller_id, key, request_hash, lease)
        if existing["created_at"] < at - KEEP_FOR:
            self.col.delete_one({"_id": _id, "created_at": existing["created_at"]})
            return self.claim(caller_id, key, request_hash, lease)
        if existing["state"] in (RELEASED, INTERRUPTED):
            again = existing["request_hash"] == request_hash
            if not again and existing["state"] == INTERRUPTED:
                return _stored(existing)
            claim = {"claim_id": existing.get("claim_id", "")} if again else {
                "claim_id": claim_id, "request_hash": request_hash, "created_at": at}
            taken = self.col.find_one_and_update(
                {"_id": _id, "state": existing["state"], "created_at": existing["created_at"],
                 "request_hash": existing["request_hash"]},
                {"$set": {**claim, "state": IN_FLIGHT, "lease_until": at + lease, "taken_over_at": at}},
                return_document=ReturnDocument.AFTER)
            if taken is None:  # another request took it first: see what it is now
                return self.claim(caller_id, key, request_hash, lease)
            return HeldKey(taken.get("claim_id", ""))
        lapsed = existing.get("lease_until") or existing["created_at"]
        if existing["state"] == IN_FLIGHT and existing["request_hash"] == request_hash and lapsed <= at:
            taken = self.col.find_one_and_update(
                {"_id": _id, "state": IN_FLIGHT, "lease_until": existing.get("lease_until")},
                {"$set": {"lease_until": at + lease, "taken_over_at": at, "bound": True}},  # (it may have written)
                return_document=ReturnDocument.AFTER)
            if taken is not None:
                return HeldKey(taken.get("claim_id", ""))
            existing = self.col.find_one({"_id": _id}) or existing
        return _stored(existing)

    def complete(self, caller_id: str, key: str, held: HeldKey, status: int, body: bytes, mimetype: str,
                 headers: dict[str, str] | None = None) -> bool:
        """Keep the answer of the request holding the key as ``held``; whether it was kept (not when the key is
        under another claim by now)."""
        return self.col.update_one({"_id": f"{caller_id}:{key}", **_under(held)}, {"$set": {
            "state": DONE, "status": status, "body": body, "mimetype": mimetype, "headers": headers or {},
            "lease_until": None}}).modified_count == 1

    def release(self, caller_id: str, key: str, held: HeldKey, *, interrupted: bool = False) -> bool:
        """Let a retry of a request that failed have the key, keeping its claim for it (claim): ``interrupted``
        (it may have written part of its work), for that request's retry only; otherwise free for any request.
        Whether it was let go (not when the key is under another claim by now, or answered).

        A claim once interrupted, or taken over from a request that died (``bound``: an attempt under it may have
        written part of its work), stays for that request alone whatever its later attempts meet: a retry refused
        (a 409 while the earlier write is not yet readable, a date check that moved past midnight) does not free it
        for another body, which as a new claim would make a second object beside the first attempt's."""
        under = {"_id": f"{caller_id}:{key}", "state": IN_FLIGHT, **_under(held)}
        let_go = {"state": INTERRUPTED, "lease_until": None, "bound": True}
        if interrupted:
            return self.col.update_one(under, {"$set": let_go}).modified_count == 1
        if self.col.update_one({**under, "bound": True}, {"$set": let_go}).modified_count == 1:
            return True
        return self.col.update_one({**under, "bound": {"$ne": True}},
                                   {"$set": {"state": RELEASED, "lease_until": None}}).modified_count == 1

    def delete_expired(self) -> int:
        return self.col.delete_many({"created_at": {"$lt": now() - KEEP_FOR}}).deleted_count
