"""Days to recompute: one document per patient and local date that new or changed data touched
(``_id = "<patient>:<date>"``), until the adherence job has recomputed that day.

Marking is idempotent (an upsert by ``_id``) and every mark carries a fresh token: the job clears a day only
if its token is still the one it read, so a day touched again while it was being recomputed stays marked for
the next run. No multi-document transaction is needed, and a crash anywhere leaves the marks to do again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime

from pymongo import ASCENDING, IndexModel
from pymongo.database import Database

INDEXES = {
    "days_to_recompute": [IndexModel([("marked_at", ASCENDING)], name="marked")],
}
PASS_LIMIT = 50_000


def mark_id(patient_id: str, local_date: date) -> str:
    """The id of one patient's mark for one local date."""
    return f"{patient_id}:{local_date.isoformat()}"


class DaysToRecompute:
    def __init__(self, db: Database):
        self.col = db.days_to_recompute

    def delete_for_patient(self, patient_id: str) -> int:
        """Forget the patient's marks (their record is being deleted)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def mark(self, patient_id: str, dates: Iterable[date], reason: str, at: datetime) -> None:
        """Note that these local dates of the patient need recomputing (again, if already marked)."""
        for day in sorted(set(dates)):
            self.col.update_one({"_id": mark_id(patient_id, day)}, {"$set": {
                "patient_id": patient_id, "date": day.isoformat(), "token": uuid.uuid4().hex, "marked_at": at,
                "reason": reason}}, upsert=True)

    def pending(self, limit: int = PASS_LIMIT) -> list[dict]:
        """The marks waiting, oldest first."""
        return list(self.col.find({}).sort("marked_at", ASCENDING).limit(limit))

    def done(self, marks: Iterable[dict]) -> int:
        """Clear marks the job has handled, each only if it was not marked again since it was read."""
        return sum(self.col.delete_one({"_id": m["_id"], "token": m["token"]}).deleted_count for m in marks)
