"""Seeding many due reminders fast (insert_many), in the data contract's shapes: one patient (an active account:
the sender checks the recipient's account before every push), one phone, one reminder and one occurrence due at
``due`` per person. Used by the worker fault test and the peak-minute benchmark."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

CHUNK = 5000


def seed_due_reminders(db, count: int, due: datetime, local_date: str = "2026-03-02") -> list[str]:
    """Seed ``count`` patients ``p<n>`` with a phone and one reminder due at ``due``; returns the tokens."""
    tokens = [f"tok-{uuid.uuid4().hex}" for _ in range(count)]
    for start in range(0, count, CHUNK):
        part = range(start, min(start + CHUNK, count))
        db.users.insert_many([{"_id": f"p{n}", "email": f"p{n}@example.org", "role": "patient", "password_hash": "-",
                               "display_name": f"P{n}", "time_zone": "UTC", "created_at": due,
                               "mfa": {"enabled": False}} for n in part])
        db.push_tokens.insert_many([{"_id": f"t{n}", "user_id": f"p{n}", "install_id": "phone-1", "token": tokens[n],
                                     "platform": "android", "address": "token", "updated_at": due} for n in part])
        db.reminders.insert_many([{"_id": f"r{n}", "patient_id": f"p{n}", "kind": "tens", "repeat": None,
                                   "completion_window_min": 60, "active": True} for n in part])
        db.reminder_occurrences.insert_many([{
            "_id": f"r{n}:{local_date}:08:00", "patient_id": f"p{n}", "reminder_id": f"r{n}", "kind": "tens",
            "local_date": local_date, "local_time": "08:00", "zone": "UTC", "due_at": due, "notify_at": due,
            "window_ends_at": due + timedelta(hours=1), "status": "pending", "status_at": None,
            "skip_reason": None, "snoozed_until": None, "nudges_sent": 0} for n in part])
    return tokens
