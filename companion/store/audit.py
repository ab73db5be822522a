"""The audit trail: insert-only, hash-chained events.

Each writer process keeps its own chain (chain_id, seq 0..n) so writers never contend for a
global "last hash"; the unique (chain_id, seq) index makes a forked or replayed chain impossible.
"""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel
from pymongo.database import Database

INDEXES = {
    "audit_events": [
        IndexModel([("chain_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="chain_seq"),
        IndexModel([("patient_ids", ASCENDING), ("at", ASCENDING)], name="patient_time"),
        IndexModel([("request_id", ASCENDING)], name="request"),
    ],
}


class AuditEvents:
    def __init__(self, db: Database):
        self.col = db.audit_events

    def append(self, events: list[dict]) -> None:
        if events:
            self.col.insert_many(events, ordered=True)

    def chain_ids(self) -> list[str]:
        # not distinct(): FerretDB v1 refuses the maxTimeMS that the client's timeoutMS adds to it
        return sorted(doc["_id"] for doc in self.col.aggregate([{"$group": {"_id": "$chain_id"}}]))

    def chain(self, chain_id: str):
        return self.col.find({"chain_id": chain_id}).sort("seq", ASCENDING)

    def for_patient(self, patient_id: str, limit: int = 100) -> list[dict]:
        return list(self.col.find({"patient_ids": patient_id}).sort("at", -1).limit(limit))
