"""Fixed-window counters shared by every worker process (login throttling, rate limits)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database

from companion.store.accounts import now

INDEXES = {"rate_counters": [IndexModel([("expires_at", ASCENDING)], name="expires")]}


class Counters:
    def __init__(self, db: Database):
        self.col = db.rate_counters

    @staticmethod
    def _window(window_s: int, at: datetime) -> tuple[int, datetime]:
        start = int(at.timestamp()) // window_s * window_s
        return start, datetime.fromtimestamp(start + window_s, tz=at.tzinfo)

    def hit(self, key: str, window_s: int, amount: int = 1) -> tuple[int, int]:
        """Count one event for key in the current window; returns (count, seconds until the window ends)."""
        at = now()
        start, ends = self._window(window_s, at)
        doc = self.col.find_one_and_update(
            {"_id": f"{key}@{start}"},
            {"$inc": {"count": amount}, "$setOnInsert": {"expires_at": ends}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return doc["count"], max(1, int((ends - at).total_seconds()) + 1)

    def peek(self, key: str, window_s: int) -> tuple[int, int]:
        at = now()
        start, ends = self._window(window_s, at)
        doc = self.col.find_one({"_id": f"{key}@{start}"})
        return (doc["count"] if doc else 0), max(1, int((ends - at).total_seconds()) + 1)

    def reset(self, key: str, window_s: int) -> None:
        start, _ = self._window(window_s, now())
        self.col.delete_one({"_id": f"{key}@{start}"})

    def delete_expired(self) -> int:
        return self.col.delete_many({"expires_at": {"$lt": now() - timedelta(minutes=1)}}).deleted_count
