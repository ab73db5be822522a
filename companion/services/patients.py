"""A patient's profile: name, time zone (with its history, for travel), quiet hours and alert delay."""

from __future__ import annotations

from datetime import time

from companion.clock import Clock, now
from companion.domain.access import Role
from companion.domain.errors import Conflict, NotFound
from companion.domain.people import Account, ZoneMove
from companion.domain.quiet_hours import QuietHours
from companion.services.reminders import ReminderService
from companion.services.touched_days import TouchedDays
from companion.store.stores import Stores

NOT_FOUND = "no such patient, or no access to them"


class Profiles:
    def __init__(self, stores: Stores, reminders: ReminderService, clock: Clock = now, *,
                 touched: TouchedDays | None = None):
        self.users = stores.users
        self.reminders = reminders
        self.touched = touched
        self.clock = clock

    def patient(self, patient_id: str) -> Account:
        """The patient's account (NotFound for anyone who is not a patient)."""
        user = self.users.by_id(patient_id)
        if not user or user.role is not Role.PATIENT:
            raise NotFound(NOT_FOUND)
        return user

    def update(self, patient_id: str, changes: dict) -> Account:
        """Change one's own profile. A new time zone is recorded with when it took effect, in the same write
        as the zone itself, so reminders before the move keep their old local times and later ones follow
        the new zone; pending future reminders (and their quiet-hours pushes) are moved at once."""
        patient = self.patient(patient_id)
        zone = changes.get("time_zone")
        if zone is not None and zone != patient.time_zone:
            at = self.clock()
            moved = self.users.move_zone(patient_id, ZoneMove(zone, at, patient.time_zone))
            if moved is None:
                raise Conflict("the time zone changed meanwhile; reload the profile and try again")
            if self.touched is not None:  # the days from the move on fall on other local dates now
                self.touched.from_instant(patient_id, at, "time_zone")
        quiet = changes.get("quiet_hours", False)
        if quiet not in (None, False):
            quiet = QuietHours(time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"]))
        updated = self.users.update_profile(patient_id, display_name=changes.get("display_name"), quiet_hours=quiet,
                                            caregiver_alert_delay_min=changes.get("caregiver_alert_delay_min"))
        if (zone is not None and zone != patient.time_zone) or "quiet_hours" in changes:
            # Travel: pending future reminders move to the same wall-clock times in the new zone
            # (and new quiet hours move their pushes). Derived from the stored profile on every call,
            # so a retry after a crash here finishes the move.
            self.reminders.refresh_future(patient_id)
        return updated
