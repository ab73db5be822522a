"""Reading the push outbox: a patient's (or a recipient's) notification history.

The outbox itself (creating, claiming, settling) is companion.store.outbox; this module only reads it.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import DESCENDING
from pymongo.database import Database

HISTORY_LIMIT = 500


class NotificationHistory:
    def __init__(self, db: Database):
        self.col = db.push_outbox

    def for_patient(self, patient_id: str, *, since: datetime | None = None, until: datetime | None = None,
                    recipient_user_id: str | None = None, limit: int = HISTORY_LIMIT) -> list[dict]:
        """Notifications about ``patient_id``, newest first (optionally only those sent to one person)."""
        query: dict = {"patient_id": patient_id}
        if recipient_user_id is not None:
            query["recipient_user_id"] = recipient_user_id
        created: dict = {}
        if since is not None:
            created["$gte"] = since
        if until is not None:
            created["$lt"] = until
        if created:
            query["created_at"] = created
        return list(self.col.find(query).sort("created_at", DESCENDING).limit(min(limit, HISTORY_LIMIT)))

    def for_recipient_all(self, recipient_user_id: str, limit: int = HISTORY_LIMIT) -> list[dict]:
        """The notifications addressed to one person, newest first."""
        return list(self.col.find({"recipient_user_id": recipient_user_id})
                    .sort("created_at", DESCENDING).limit(min(limit, HISTORY_LIMIT)))
