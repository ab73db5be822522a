"""Clinical notes: what the care team wrote about a patient. Insert-only: a correction is a new note."""

from __future__ import annotations

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now, to_millis
from companion.store.batches import already_stored

INDEXES = {
    "clinical_notes": [IndexModel([("patient_id", ASCENDING), ("created_at", DESCENDING)], name="patient_time")],
}


class ClinicalNotes:
    def __init__(self, db: Database):
        self.col = db.clinical_notes

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def add(self, patient_id: str, author_id: str, text: str, note_id: str | None = None) -> dict:
        """Store a note. ``note_id``: an id derived from what made the note (a page's form, an API request's
        Idempotency-Key), so that making it twice stores it once: the `_id` index refuses the second, and the
        answer is the note stored the first time. (A unique key rather than a look before the insert: two
        submissions arrive together.)"""
        doc = {"_id": note_id or str(ObjectId()), "patient_id": patient_id, "author_id": author_id, "text": text,
               "created_at": to_millis(now())}  # as stored: the answer is what later reads show
        try:
            self.col.insert_one(doc)
        except DuplicateKeyError:
            if note_id is None:
                raise
            return already_stored(self.col, {"_id": note_id, "patient_id": patient_id})
        return doc

    def for_patient(self, patient_id: str, limit: int = 100) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id}).sort("created_at", DESCENDING).limit(limit))
