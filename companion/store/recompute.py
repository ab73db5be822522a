"""Days to recompute: one document per patient and local date that new or changed data touched
(``_id = "<patient>:<date>"``), until the adherence job has recomputed that day.

Marking is idempotent (an upsert by ``_id``) and every mark carries a fresh token: the job clears a day only
if its token is still the one it read, so a day touched again while it was being recomputed stays marked for
the next run. No multi-document transaction is needed, and a crash anywhere leaves the marks to do again.

``recompute_runs`` holds one document per job (``_id`` = the job's name): the instant its last complete run
started, so the next run knows which local days began since (the day roll-over is the only change that
comes without data), and the last number taken (``runs``: each run of the adherence job, and each pass of the
rules upgrade, takes the next one before it reads its data; the adherence snapshots are written in the order of these
numbers, not of any process's clock: companion.store.adherence).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime

from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.database import Database

INDEXES = {
    "days_to_recompute": [IndexModel([("marked_at", ASCENDING)], name="marked")],
    "recompute_runs": [],  # read by _id only
}
PASS_LIMIT = 50_000
CLEAR_BATCH = 2000  # marks cleared per delete


def mark_id(patient_id: str, local_date: date) -> str:
    """The id of one patient's mark for one local date."""
    return f"{patient_id}:{local_date.isoformat()}"


class DaysToRecompute:
    def __init__(self, db: Database):
        self.col = db.days_to_recompute
        self.runs = db.recompute_runs

    def delete_for_patient(self, patient_id: str) -> int:
        """Forget the patient's marks (their record is being deleted)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def mark(self, patient_id: str, dates: Iterable[date], reason: str, at: datetime, *,
             decided: bool = False) -> None:
        """Note that these local dates of the patient need recomputing (again, if already marked). ``decided``:
        recomputed however old (a clinician's decision on a held session, a record placed again, a practice or a
        dose answer recorded late: companion.services.touched_days); ``decided: true`` stays on the mark, whatever
        marks it next, until the job clears it."""
        # One command for all the days (an ordered bulk of upserting updates by _id).
        writes = [UpdateOne({"_id": mark_id(patient_id, day)}, {"$set": {
            "patient_id": patient_id, "date": day.isoformat(), "token": uuid.uuid4().hex, "marked_at": at,
            "reason": reason, **({"decided": True} if decided else {})}}, upsert=True)
            for day in sorted(set(dates))]
        if writes:
            self.col.bulk_write(writes, ordered=True)

    def pending(self, limit: int = PASS_LIMIT) -> list[dict]:
        """The marks waiting, oldest first."""
        return list(self.col.find({}).sort("marked_at", ASCENDING).limit(limit))

    def done(self, marks: Iterable[dict]) -> int:
        """Clear marks the job has handled, each only if it was not marked again since it was read. One delete
        per batch: each token is a fresh uuid, so a mark matches ``token $in`` only with the token it was read
        with (marked again, it carries a token nobody read)."""
        marks = list(marks)
        cleared = 0
        for start in range(0, len(marks), CLEAR_BATCH):
            part = marks[start:start + CLEAR_BATCH]
            cleared += self.col.delete_many({"_id": {"$in": [m["_id"] for m in part]},
                                             "token": {"$in": [m["token"] for m in part]}}).deleted_count
        return cleared

    def last_run(self, job: str) -> datetime | None:
        """When the last complete run of ``job`` started (None before the first)."""
        doc = self.runs.find_one({"_id": job})
        return doc.get("started_at") if doc else None

    def start(self, job: str) -> int:
        """The number of a run of ``job`` that starts now: one more than any taken before (an atomic ``$inc``), so
        a run that takes a higher number than another took it later, whatever the clocks of their processes say."""
        # (No projection: FerretDB v1.24's findAndModify does not take one.)
        return self.runs.find_one_and_update({"_id": job}, {"$inc": {"runs": 1}}, upsert=True,
                                             return_document=ReturnDocument.AFTER)["runs"]

    def at_least(self, job: str, run: int) -> int:
        """Move ``job``'s last number taken on to ``run`` if it is behind (a database restored from a backup older
        than some of what it holds); returns the last number taken now: every run that starts from here on takes a
        higher one."""
        return self.runs.find_one_and_update({"_id": job}, {"$max": {"runs": run}}, upsert=True,
                                             return_document=ReturnDocument.AFTER)["runs"]

    def ran(self, job: str, started_at: datetime) -> None:
        """Note a complete run of ``job`` that started at ``started_at`` (never moving back)."""
        self.runs.update_one({"_id": job}, {"$max": {"started_at": started_at}}, upsert=True)
