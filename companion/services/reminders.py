"""Reminder use cases: creating and changing reminders, materializing their occurrences (for the API and
the scheduler), recording what the patient did, snoozing, and following the patient when they travel.

Everything here is idempotent and safe to run from several processes at once: occurrences are
inserted under a unique (reminder_id, local_date, local_time) key with duplicates ignored, moves
and deletions only touch occurrences that are still pending, and only in the future. A reminder and
its occurrences are two writes; the second is derived from the first on every call, so a request
retried after a crash between them finishes the job (and the hourly materialization does too).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from companion.clock import Clock, now
from companion.domain.access import Grant, sees_free_text, without_free_text
from companion.domain.errors import Conflict, Invalid, NotFound
from companion.domain.localtime import local_date_of
from companion.domain.people import Account
from companion.domain.quiet_hours import next_allowed
from companion.domain.schedules import ReminderOccurrence, snoozed_until
from companion.services.reminder_schedules import check_reminder, slots_for
from companion.services.touched_days import TouchedDays
from companion.store.stores import Stores

HORIZON = timedelta(days=2)  # how far ahead a change re-materializes at once; the scheduler keeps ahead
MAX_WINDOW = timedelta(days=31)
EARLY_MARK = timedelta(hours=1)  # an occurrence can be ticked off at most this long before it is due
MAX_ACTIVE = 50


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


def as_slot(occurrence: dict) -> ReminderOccurrence:
    """A stored occurrence as the schedules domain's ``ReminderOccurrence``."""
    return ReminderOccurrence(
        reminder_id=occurrence["reminder_id"], local_date=date.fromisoformat(occurrence["local_date"]),
        local_time=time.fromisoformat(occurrence["local_time"]), due_at_utc=occurrence["due_at"],
        window_ends_at_utc=occurrence["window_ends_at"], occurrence_id=occurrence["_id"])


class ReminderService:
    def __init__(self, stores: Stores, clock: Clock = now, *, touched: TouchedDays | None = None):
        self.users = stores.users
        self.reminders = stores.reminders
        self.occurrences = stores.occurrences
        self.touched = touched
        self.clock = clock

    def _patient(self, patient_id: str) -> Account:
        patient = self.users.by_id(patient_id)
        if not patient:
            raise NotFound("no such patient")
        return patient

    # Reminders
    def list(self, patient_id: str) -> list[dict]:
        """The patient's reminders, active and stopped."""
        return self.reminders.for_patient(patient_id)

    def get(self, patient_id: str, reminder_id: str) -> dict:
        reminder = self.reminders.get(patient_id, reminder_id)
        if not reminder:
            raise NotFound("no such reminder")
        return reminder

    def create(self, patient_id: str, fields: dict, *, created_at: datetime | None = None) -> dict:
        """Create a reminder and its occurrences for the next two days. Without a start date the schedule
        starts today on the patient's clock. ``created_at`` backdates it when importing history (no
        occurrence is ever made for a time before the reminder existed)."""
        current = self.clock()
        if not fields["schedule"].get("start_date"):
            zone = self._patient(patient_id).zone_history().zone_at(current)
            fields = {**fields, "schedule": {**fields["schedule"],
                                             "start_date": local_date_of(current, zone).isoformat()}}
        check_reminder(fields)
        if self.reminders.count_active(patient_id) >= MAX_ACTIVE:
            raise Invalid(f"a patient can have at most {MAX_ACTIVE} active reminders")
        reminder = self.reminders.create(patient_id, fields, created_at or current)
        self.refresh_future(patient_id)
        return reminder

    def update(self, patient_id: str, reminder_id: str, changes: dict) -> dict:
        """Change a reminder; its pending future occurrences follow the new settings."""
        current = self.get(patient_id, reminder_id)
        check_reminder({**current, **changes})
        updated = self.reminders.update(patient_id, reminder_id, changes, self.clock())
        if not updated:
            raise NotFound("no such reminder")
        self.occurrences.delete_for_reminder_from(reminder_id, self.clock())
        self.refresh_future(patient_id)
        return updated

    def stop(self, patient_id: str, reminder_id: str) -> None:
        """Stop a reminder: it becomes inactive, its future pending occurrences go, its history stays."""
        if not self.reminders.update(patient_id, reminder_id, {"active": False}, self.clock()):
            raise NotFound("no such reminder")
        self.occurrences.delete_for_reminder_from(reminder_id, self.clock())

    # Occurrences
    def materialize(self, patient_id: str, start_utc: datetime, end_utc: datetime) -> int:
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
        patient = self._patient(patient_id)
        history, quiet = patient.zone_history(), patient.quiet_hours
        wanted: dict[str, dict] = {}
        for reminder in self.reminders.for_patient(patient_id, active_only=True):
            begin = max(start_utc, reminder["created_at"])
            if begin >= end_utc:
                continue
            for slot in slots_for(reminder, history, begin, end_utc):
                doc = _occurrence_doc(reminder, slot, history.zone_at(slot.due_at_utc), quiet)
                wanted.setdefault(doc["_id"], doc)
        existing = self.occurrences.by_ids(list(wanted))
        current = self.clock()
        for key, doc in wanted.items():
            stored = existing.get(key)
            if stored and stored["status"] == "pending" and stored["due_at"] >= current \
                    and (stored["due_at"], stored.get("notify_at")) != (doc["due_at"], doc["notify_at"]):
                self.occurrences.move_pending(key, {k: doc[k] for k in ("due_at", "window_ends_at", "notify_at", "zone")})
        stale = [o["_id"] for o in self.occurrences.pending_from(patient_id, max(start_utc, current), end_utc)
                 if o["_id"] not in wanted]
        self.occurrences.delete_pending(stale)
        return self.occurrences.insert_new([doc for key, doc in wanted.items() if key not in existing])

    def refresh_future(self, patient_id: str) -> int:
        """Recompute the patient's pending future occurrences (after a schedule or time-zone change)."""
        current = self.clock()
        pending = self.occurrences.pending_from(patient_id, current)
        latest = max((o["due_at"] for o in pending), default=current)
        end = min(max(current + HORIZON, latest + timedelta(minutes=1)), current + MAX_WINDOW)
        return self.materialize(patient_id, current, end)

    def materialize_ahead(self, grace: timedelta, horizon: timedelta) -> int:
        """The scheduler's hourly pass: every patient's occurrences kept ``horizon`` ahead."""
        current = self.clock()
        return sum(self.materialize(patient_id, current - grace, current + horizon)
                   for patient_id in self.reminders.patients_with_active())

    def occurrences_between(self, grant: Grant, start_utc: datetime, end_utc: datetime) -> list[dict]:
        """The occurrences in a range (at most 31 days), materialized first so the app sees every one; a
        caregiver not allowed the patient's own words does not see the reasons for skipping."""
        self.materialize(grant.patient_id, start_utc, end_utc)
        items = self.occurrences.between(grant.patient_id, start_utc, end_utc)
        if sees_free_text(grant):
            return items
        return [without_free_text(o, ("skip_reason",)) for o in items]

    def _open_occurrence(self, patient_id: str, key: str) -> dict:
        occurrence = self.occurrences.get(patient_id, key)
        if not occurrence:
            raise NotFound("no such reminder occurrence")
        if occurrence["due_at"] - EARLY_MARK > self.clock():
            raise Invalid("this reminder is not due yet", errors={"status": ["not due yet"]})
        return occurrence

    def record_outcome(self, patient_id: str, key: str, status: str, reason: str | None) -> dict:
        """Record an occurrence as done or skipped. A missed one can still be recorded late; recording the
        same outcome again is harmless; changing a recorded outcome is a conflict."""
        occurrence = self._open_occurrence(patient_id, key)
        if occurrence["status"] == status:
            return occurrence
        changes = {"status": status, "status_at": self.clock(), "skip_reason": reason if status == "skipped" else None}
        updated = self.occurrences.record(patient_id, key, ("pending", "missed"), changes)
        if not updated:
            again = self.occurrences.get(patient_id, key) or occurrence
            if again["status"] == status:
                return again
            raise Conflict(f"this reminder was already recorded as {again['status']}")
        if self.touched is not None:  # a dose taken (or a session ticked off) changes that day's figures
            self.touched.dates(patient_id, {date.fromisoformat(updated["local_date"])}, "reminder_outcome")
        return updated

    def snooze(self, patient_id: str, key: str, minutes: int) -> dict:
        """Remind again in `minutes` (never past the end of the completion window)."""
        occurrence = self._open_occurrence(patient_id, key)
        until = snoozed_until(as_slot(occurrence), self.clock(), minutes)
        if until is None:
            raise Conflict("the time for this reminder has passed; record it as done or skipped instead")
        updated = self.occurrences.record(patient_id, key, ("pending",), {"snoozed_until": until})
        if not updated:
            raise Conflict(f"this reminder was already recorded as {occurrence['status']}")
        return updated

    def mark_missed(self, now_utc: datetime) -> int:
        """Every pending occurrence whose completion window has closed is now missed; returns how many."""
        return self.occurrences.mark_missed(now_utc)
