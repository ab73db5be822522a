"""Scheduler workers' heartbeats: one document per worker process (``_id`` = its holder name, host:pid),
replaced by that worker alone every few seconds, so no two writers ever touch one document."""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

INDEXES = {
    "worker_heartbeats": [IndexModel([("beat_at", ASCENDING)], name="beat_at")],
}


class WorkerHeartbeats:
    def __init__(self, db: Database):
        self.col = db.worker_heartbeats

    def beat(self, holder: str, state: dict) -> None:
        """Record that ``holder`` is alive, with what it reports about itself."""
        self.col.replace_one({"_id": holder}, {"_id": holder, **state}, upsert=True)

    def latest(self, limit: int = 20) -> list[dict]:
        """The most recent heartbeats, newest first."""
        return list(self.col.find({}).sort("beat_at", DESCENDING).limit(limit))

    def forget_before(self, cutoff: datetime) -> int:
        """Drop heartbeats of workers silent since before ``cutoff`` (stopped or restarted long ago)."""
        return self.col.delete_many({"beat_at": {"$lt": cutoff}}).deleted_count
