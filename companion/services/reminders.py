"""Reminder use cases: materializing occurrences (called by the API and the scheduler), recording
what the patient did, snoozing, marking missed, and following the patient when they travel.

Everything here is idempotent and safe to run from several processes at once: occurrences are
inserted under a unique (reminder_id, local_date, local_time) key with duplicates ignored, moves
and deletions only touch occurrences that are still pending, and only in the future.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from pymongo.database import Database

from companion.domain.errors import Conflict, Invalid, NotFound
from companion.domain.localtime import local_date_of
from companion.domain.quiet_hours import next_allowed
from companion.domain.schedules import ReminderOccurrence, snoozed_until
from companion.services.reminder_schedules import check_reminder, quiet_hours_of, slots_for, zone_history_of
from companion.store.accounts import Users, now
from companion.store.reminders import Occurrences, Reminders

HORIZON = timedelta(days=2)  # how far ahead a change re-materializes at once; the scheduler keeps ahead
MAX_WINDOW = timedelta(days=31)
EARLY_MARK = timedelta(hours=1)  # an occurrence can be ticked off at most this long before it is due


def _patient(db: Database, patient_id: str) -> dict:
    patient = Users(db).by_id(patient_id)
    if not patient:
        raise NotFound("no such patient")
    return patient


def _occurrence_doc(reminder: dict, slot: ReminderOccurrence, zone, quiet) -> dict:
    return {
        "_id": slot.occurrence_id, "patient_id": reminder["patient_id"], "reminder_id": reminder["_id"],
        "kind": reminder["kind"], "local_date": slot.local_date.isoformat(),
        "local_time": slot.local_time.strftime("%H:%M"), "zone": zone.key, "due_at": slot.due_at_utc,
        "window_ends_at": slot.window_ends_at_utc,
        # Quiet hours hold back the push, never the task: the occurrence is still due at due_at.
        "notify_at": next_allowed(slot.due_at_utc, zone, quiet),
        "status": "pending", "status_at": None, "skip_reason": None, "snoozed_until": None, "nudges_sent": 0,
    }


def materialize_occurrences(db: Database, patient_id: str, start_utc: datetime, end_utc: datetime) -> int:
    """Make the stored occurrences of [start_utc, end_utc) match the patient's reminders; returns how
    many were added.

    New occurrences are inserted (a concurrent run inserting the same ones is harmless); pending
    future occurrences that the schedules no longer produce (a changed schedule, a new time zone) are
    deleted, and pending future ones whose moment changed are moved. Occurrences already done,
    skipped or missed, and anything in the past, are history and stay as they are.
    """
    if end_utc <= start_utc:
        return 0
    if end_utc - start_utc > MAX_WINDOW:
        raise ValueError("materialize at most 31 days at a time")
    patient = _patient(db, patient_id)
    history, quiet = zone_history_of(patient), quiet_hours_of(patient)
    wanted: dict[str, dict] = {}
    for reminder in Reminders(db).for_patient(patient_id, active_only=True):
        begin = max(start_utc, reminder["created_at"])
        if begin >= end_utc:
            continue
        for slot in slots_for(reminder, history, begin, end_utc):
            doc = _occurrence_doc(reminder, slot, history.zone_at(slot.due_at_utc), quiet)
            wanted.setdefault(doc["_id"], doc)
    occurrences = Occurrences(db)
    existing = occurrences.by_ids(list(wanted))
    current = now()
    for key, doc in wanted.items():
        stored = existing.get(key)
        if stored and stored["status"] == "pending" and stored["due_at"] >= current \
                and (stored["due_at"], stored.get("notify_at")) != (doc["due_at"], doc["notify_at"]):
            occurrences.move_pending(key, {k: doc[k] for k in ("due_at", "window_ends_at", "notify_at", "zone")})
    stale = [o["_id"] for o in occurrences.pending_from(patient_id, max(start_utc, current), end_utc)
             if o["_id"] not in wanted]
    occurrences.delete_pending(stale)
    return occurrences.insert_new([doc for key, doc in wanted.items() if key not in existing])


def refresh_future(db: Database, patient_id: str) -> int:
    """Recompute the patient's pending future occurrences (after a schedule or time-zone change)."""
    current = now()
    pending = Occurrences(db).pending_from(patient_id, current)
    latest = max((o["due_at"] for o in pending), default=current)
    end = min(max(current + HORIZON, latest + timedelta(minutes=1)), current + MAX_WINDOW)
    return materialize_occurrences(db, patient_id, current, end)


def occurrences_between(db: Database, patient_id: str, start_utc: datetime, end_utc: datetime) -> list[dict]:
    """The occurrences in a range (at most 31 days), materialized first so the app sees every one."""
    materialize_occurrences(db, patient_id, start_utc, end_utc)
    return Occurrences(db).between(patient_id, start_utc, end_utc)


def mark_missed(db: Database, now_utc: datetime) -> int:
    """Every pending occurrence whose completion window has closed is now missed; returns how many."""
    return Occurrences(db).mark_missed(now_utc)


def _open_occurrence(db: Database, patient_id: str, key: str) -> dict:
    occurrence = Occurrences(db).get(patient_id, key)
    if not occurrence:
        raise NotFound("no such reminder occurrence")
    if occurrence["due_at"] - EARLY_MARK > now():
        raise Invalid("this reminder is not due yet", errors={"status": ["not due yet"]})
    return occurrence


def record_outcome(db: Database, patient_id: str, key: str, status: str, reason: str | None) -> dict:
    """Record an occurrence as done or skipped. A missed one can still be recorded late; recording the
    same outcome again is harmless; changing a recorded outcome is a conflict."""
    occurrence = _open_occurrence(db, patient_id, key)
    if occurrence["status"] == status:
        return occurrence
    changes = {"status": status, "status_at": now(), "skip_reason": reason if status == "skipped" else None}
    updated = Occurrences(db).record(patient_id, key, ("pending", "missed"), changes)
    if not updated:
        raise Conflict(f"this reminder was already recorded as {occurrence['status']}")
    return updated


def _as_slot(occurrence: dict) -> ReminderOccurrence:
    return ReminderOccurrence(
        reminder_id=occurrence["reminder_id"], local_date=date.fromisoformat(occurrence["local_date"]),
        local_time=time.fromisoformat(occurrence["local_time"]), due_at_utc=occurrence["due_at"],
        window_ends_at_utc=occurrence["window_ends_at"], occurrence_id=occurrence["_id"])


def snooze(db: Database, patient_id: str, key: str, minutes: int) -> dict:
    """Remind again in `minutes` (never past the end of the completion window)."""
    occurrence = _open_occurrence(db, patient_id, key)
    until = snoozed_until(_as_slot(occurrence), now(), minutes)
    if until is None:
        raise Conflict("the time for this reminder has passed; record it as done or skipped instead")
    updated = Occurrences(db).record(patient_id, key, ("pending",), {"snoozed_until": until})
    if not updated:
        raise Conflict(f"this reminder was already recorded as {occurrence['status']}")
    return updated


def create_reminder(db: Database, patient_id: str, fields: dict) -> dict:
    """Create a reminder and its occurrences for the next two days. Without a start date the schedule
    starts today on the patient's clock."""
    if not fields["schedule"].get("start_date"):
        zone = zone_history_of(_patient(db, patient_id)).zone_at(now())
        fields = {**fields, "schedule": {**fields["schedule"], "start_date": local_date_of(now(), zone).isoformat()}}
    check_reminder(fields)
    reminders = Reminders(db)
    if reminders.count_active(patient_id) >= 50:
        raise Invalid("a patient can have at most 50 active reminders")
    reminder = reminders.create(patient_id, fields, now())
    refresh_future(db, patient_id)
    return reminder


def update_reminder(db: Database, patient_id: str, reminder_id: str, changes: dict) -> dict:
    """Change a reminder; its pending future occurrences follow the new settings."""
    reminders = Reminders(db)
    current = reminders.get(patient_id, reminder_id)
    if not current:
        raise NotFound("no such reminder")
    check_reminder({**current, **changes})
    updated = reminders.update(patient_id, reminder_id, changes, now())
    if not updated:
        raise NotFound("no such reminder")
    Occurrences(db).delete_for_reminder_from(reminder_id, now())
    refresh_future(db, patient_id)
    return updated


def delete_reminder(db: Database, patient_id: str, reminder_id: str) -> None:
    """Stop a reminder: it becomes inactive, its future pending occurrences go, its history stays."""
    if not Reminders(db).update(patient_id, reminder_id, {"active": False}, now()):
        raise NotFound("no such reminder")
    Occurrences(db).delete_for_reminder_from(reminder_id, now())
