"""Event counters shared by every worker process (throttling of credential steps, rate limits).

One document per event. Two ways of counting them: per fixed window (:meth:`Counters.hit`, the gateways'
upload rate) and by the instants of the events in a sliding window (:meth:`Counters.record` and
:meth:`Counters.instants`, the credential steps' attempts and failures, see companion.domain.throttling).
Inserts, not `$inc` on a counter: an insert is exact on every server, and a request counts itself before
it looks, so concurrent requests can only over-count, never let an extra one through.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now

INDEXES = {
    "rate_events": [
        IndexModel([("key", ASCENDING), ("window", ASCENDING)], name="key_window"),
        IndexModel([("expires_at", ASCENDING)], name="expires"),
        IndexModel([("key", ASCENDING), ("at", ASCENDING)], name="key_at"),
    ]
}


class Counters:
    def __init__(self, db: Database):
        self.col = db.rate_events

    @staticmethod
    def _window(window_s: int, at: datetime) -> tuple[int, datetime]:
        start = int(at.timestamp()) // window_s * window_s
        return start, datetime.fromtimestamp(start + window_s, tz=at.tzinfo)

    @staticmethod
    def _wait(ends: datetime, at: datetime) -> int:
        return max(1, int((ends - at).total_seconds()) + 1)

    def hit(self, key: str, window_s: int) -> tuple[int, int]:
        """Count one event for key in the current window; returns (count including this one, seconds left)."""
        at = now()
        start, ends = self._window(window_s, at)
        self.col.insert_one({"_id": str(ObjectId()), "key": key, "window": start, "expires_at": ends})
        return self.col.count_documents({"key": key, "window": start}), self._wait(ends, at)

    def peek(self, key: str, window_s: int) -> tuple[int, int]:
        at = now()
        start, ends = self._window(window_s, at)
        return self.col.count_documents({"key": key, "window": start}), self._wait(ends, at)

    def reset(self, key: str, window_s: int) -> None:
        start, _ = self._window(window_s, now())
        self.col.delete_many({"key": key, "window": start})

    def delete_expired(self) -> int:
        return self.col.delete_many({"expires_at": {"$lt": now() - timedelta(minutes=1)}}).deleted_count

    # Sliding windows: each event keeps its instant, and is kept until ``keep_for`` after it.
    def record(self, key: str, at: datetime, keep_for: timedelta) -> str:
        """Note one event for ``key`` at ``at``; returns its id (to take it back with :meth:`forget`)."""
        event_id = str(ObjectId())
        self.col.insert_one({"_id": event_id, "key": key, "at": at, "expires_at": at + keep_for})
        return event_id

    def instants(self, key: str, since: datetime, *, excluding: str | None = None,
                 limit: int = 1000) -> list[datetime]:
        """When the events of ``key`` after ``since`` happened (at most ``limit``, the latest)."""
        docs = self.col.find({"key": key, "at": {"$gt": since}}, {"at": 1}).sort("at", -1).limit(limit)
        return [d["at"] for d in docs if d["_id"] != excluding]

    def take_place(self, key: str, places: int, window: timedelta, at: datetime) -> str | None:
        """Take one of ``places`` places of ``key``, each holding one event per ``window``: the event's id (to
        :meth:`forget` if what it was for did not happen), or None when every place has held one in the last
        ``window``. That is a sliding-window limit of ``places`` events (fewer in the window leaves a place free),
        exact under concurrency: a place's next holder is an insert under a unique id (its number after the
        holder before), so of concurrent requests for one place exactly one gets it, and the others try the next."""
        for place in range(places):
            place_key = f"{key}#{place}"
            latest = self.col.find_one({"key": place_key}, sort=[("seq", DESCENDING)])
            if latest is not None and latest["at"] > at - window:
                continue
            seq = latest["seq"] + 1 if latest is not None else 0
            event_id = f"{place_key}:{seq}"
            try:
                # Kept a day past its window: a place's number starts again only once its holders are all gone.
                self.col.insert_one({"_id": event_id, "key": place_key, "seq": seq, "at": at,
                                     "expires_at": at + window + timedelta(days=1)})
            except DuplicateKeyError:
                continue
            return event_id
        return None

    def forget(self, event_id: str) -> None:
        self.col.delete_one({"_id": event_id})

    def forget_key(self, key: str) -> None:
        """Forget every event of ``key`` (e.g. an address's failures once it signs in)."""
        self.col.delete_many({"key": key})
