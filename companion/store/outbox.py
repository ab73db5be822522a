"""The push outbox: one document per notification per recipient, and the claims that send it.

A notification is created by **insert** under the unique key ``(source_key, recipient_user_id)``, so
a job that runs twice (or on two workers) creates it once. Its life: ``scheduled`` → ``sending`` (under
a lease) → ``sent`` / ``failed`` / ``expired``; the app's receipts add ``delivered_at`` and
``opened_at``.

A dispatcher claims a notification by **inserting** a claim document ``{outbox_id}:{round}``: the unique
``_id`` lets exactly one dispatcher have each round. Conditional updates cannot be the claim here:
FerretDB v1 evaluates an update's filter apart from the write, and two dispatchers racing
``find_one_and_update({"state": "scheduled"}, ...)`` were seen to take the same document hundreds of
times in 300. Every later write to the notification only sets fixed values (never ``$inc``), so a
repeated write is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.notify.templates import collapse_key_for, template_for, ttl_for
from companion.store.accounts import now

INDEXES = {
    "push_outbox": [
        IndexModel([("source_key", ASCENDING), ("recipient_user_id", ASCENDING)], unique=True,
                   name="source_recipient_unique"),
        IndexModel([("state", ASCENDING), ("not_before", ASCENDING)], name="due"),
        IndexModel([("state", ASCENDING), ("lease_until", ASCENDING)], name="lease"),
        IndexModel([("patient_id", ASCENDING), ("created_at", DESCENDING)], name="patient_history"),
    ],
    "push_claims": [IndexModel([("outbox_id", ASCENDING)], name="outbox")],
}

SCHEDULED, SENDING, SENT, FAILED, EXPIRED = "scheduled", "sending", "sent", "failed", "expired"
FINAL_STATES = (SENT, FAILED, EXPIRED)


class Outbox:
    def __init__(self, db: Database, clock: Callable[[], datetime] = now):
        self.col = db.push_outbox
        self.claims = db.push_claims
        self.clock = clock

    def schedule(self, *, source_key: str, recipient_user_id: str, patient_id: str, kind: str,
                 send_at: datetime, completion_window: timedelta | None = None) -> tuple[dict, bool]:
        """Create the notification for (``source_key``, recipient) once; returns (document, created).

        ``source_key`` names what caused it (e.g. ``reminder:<id>:<occurrence>``); the TTL, collapse
        key and expiry come from the kind's template and the completion window.
        """
        doc = {
            "_id": str(ObjectId()), "source_key": source_key, "recipient_user_id": recipient_user_id,
            "patient_id": patient_id, "kind": template_for(kind).kind,
            "collapse_key": collapse_key_for(kind, patient_id),
            "expires_at": send_at + ttl_for(kind, completion_window), "not_before": send_at, "state": SCHEDULED,
            "attempts": 0, "round": 0, "lease_until": None, "owner": None, "phones": [],
            "created_at": self.clock(), "sent_at": None, "delivered_at": None, "opened_at": None,
            "error_codes": [],
        }
        try:
            self.col.insert_one(doc)
            return doc, True
        except DuplicateKeyError:
            return self.col.find_one({"source_key": source_key, "recipient_user_id": recipient_user_id}), False

    def get(self, outbox_id: str) -> dict | None:
        return self.col.find_one({"_id": outbox_id})

    def due(self, limit: int) -> list[dict]:
        """Notifications ready to go: scheduled and due, or sending under a lease that ran out."""
        at = self.clock()
        query = {"$or": [{"state": SCHEDULED, "not_before": {"$lte": at}},
                         {"state": SENDING, "lease_until": {"$lt": at}}]}
        return list(self.col.find(query).sort("not_before", ASCENDING).limit(limit))

    def claim(self, doc: dict, owner: str, lease: timedelta) -> dict | None:
        """Take ``doc`` for sending under a lease; None if another dispatcher has this round."""
        at = self.clock()
        this_round = doc["round"]
        try:
            self.claims.insert_one({"_id": f"{doc['_id']}:{this_round}", "outbox_id": doc["_id"],
                                    "owner": owner, "claimed_at": at, "lease_until": at + lease})
        except DuplicateKeyError:
            self._release_abandoned_round(doc, at)
            return None
        fields = {"state": SENDING, "owner": owner, "lease_until": at + lease, "round": this_round + 1}
        self.col.update_one({"_id": doc["_id"], "round": this_round}, {"$set": fields})
        return {**doc, **fields}

    def _release_abandoned_round(self, doc: dict, at: datetime) -> None:
        # A dispatcher that died between its claim insert and its state update leaves the round taken
        # while the notification still reads "scheduled"; once that claim's lease is over, move on.
        claim = self.claims.find_one({"_id": f"{doc['_id']}:{doc['round']}"})
        if doc["state"] == SCHEDULED and claim is not None and claim["lease_until"] < at:
            self.col.update_one({"_id": doc["_id"], "round": doc["round"]},
                                {"$set": {"round": doc["round"] + 1}})

    def settle(self, doc: dict, fields: dict) -> None:
        """Write the outcome of the round ``doc`` was claimed in; final states drop the claims."""
        self.col.update_one({"_id": doc["_id"], "round": doc["round"]},
                            {"$set": {**fields, "owner": None, "lease_until": None}})
        if fields.get("state") in FINAL_STATES:
            self.claims.delete_many({"outbox_id": doc["_id"]})

    def record_receipt(self, outbox_id: str, recipient_user_id: str, receipt: str) -> bool:
        """Note that the recipient's app got (``delivered``) or opened (``opened``) the notification.

        The first receipt of each kind counts; False when there is no such notification for them.
        """
        if receipt not in ("delivered", "opened"):
            raise ValueError(f"unknown receipt {receipt!r}")
        field = f"{receipt}_at"
        doc = self.col.find_one({"_id": outbox_id, "recipient_user_id": recipient_user_id}, {field: 1})
        if doc is None:
            return False
        if doc.get(field) is None:
            self.col.update_one({"_id": outbox_id, field: None}, {"$set": {field: self.clock()}})
        return True

    def count_unfinished(self) -> int:
        return self.col.count_documents({"state": {"$in": [SCHEDULED, SENDING]}})
