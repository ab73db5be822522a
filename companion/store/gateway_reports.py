"""What gateways report about themselves beyond session records: their dead letters (bytes a unit sent that
could not be decoded, records the server once refused, records a buffer could no longer read), kept so that
nothing a unit handed over disappears without the server knowing."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

from companion.store.batches import insert_new

INDEXES = {
    "gateway_dead_letters": [IndexModel([("patient_id", ASCENDING), ("reported_at", DESCENDING)], name="patient"),
                             IndexModel([("gateway_id", ASCENDING)], name="gateway")],
}
LIST_LIMIT = 500


class GatewayDeadLetters:
    def __init__(self, db: Database):
        self.col = db.gateway_dead_letters

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete the dead letters the patient's gateways reported."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def keep(self, docs: list[dict]) -> int:
        """Store each report once (ids ``<gateway>:<the gateway's own id>``); returns how many were new."""
        return len(docs) - len(insert_new(self.col, docs))

    def for_patient(self, patient_id: str, limit: int = LIST_LIMIT) -> list[dict]:
        """The dead letters reported by the patient's gateways, newest first."""
        return list(self.col.find({"patient_id": patient_id}).sort("reported_at", DESCENDING).limit(limit))
