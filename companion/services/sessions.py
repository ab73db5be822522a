"""A patient's TENS sessions as their units recorded them (a read)."""

from __future__ import annotations

from datetime import datetime, timedelta

from companion.clock import Clock, now
from companion.services.sync import Changes
from companion.store.stores import Stores

DEFAULT_DAYS = 30
FUTURE_MARGIN = timedelta(minutes=5)


class TensSessions:
    def __init__(self, stores: Stores, changes: Changes, clock: Clock = now):
        self.records = stores.session_records
        self.changes = changes
        self.clock = clock

    def between(self, patient_id: str, start: datetime | None, end: datetime | None, limit: int) -> list[dict]:
        """Sessions newest first, between ``start`` and ``end`` (default: the last 30 days)."""
        end = end or self.clock() + FUTURE_MARGIN
        start = start or end - timedelta(days=DEFAULT_DAYS)
        return self.records.for_patient(patient_id, start, end, limit)

    def changes_since(self, patient_id: str, cursor: str | None, limit: int) -> dict:
        """Session records stored after the cursor, in the order they were stored (companion.services.sync)."""
        page = self.changes.page(patient_id, self.records, cursor, limit)
        return page.with_items(page.items)
