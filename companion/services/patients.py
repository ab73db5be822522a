"""A patient's profile: name, time zone (with its history, for travel), quiet hours and alert delay; and anyone's
own preferences (time zone, quiet hours, language), a caregiver's and a clinician's too."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta

from companion.clock import Clock, now, to_millis
from companion.domain.access import Role
from companion.domain.errors import Contended, NotFound, PreconditionFailed
from companion.domain.notifications import requeued_for_quiet_hours
from companion.domain.people import Account, ZoneMove
from companion.domain.quiet_hours import QuietHours
from companion.services.reminders import ReminderService
from companion.services.touched_days import TouchedDays
from companion.store.stores import Stores

RETRIED_WITHIN = timedelta(days=1)  # a change this recent, sent again, may be a retry: what follows it is done again

NOT_FOUND = "no such patient, or no access to them"
NO_ACCOUNT = "no such account"
ATTEMPTS = 20


class Profiles:
    def __init__(self, stores: Stores, reminders: ReminderService, clock: Clock = now, *,
                 touched: TouchedDays | None = None):
        self.users = stores.users
        self.panel_rows = stores.panel_row_marks
        self.outbox = stores.outbox
        self.reminders = reminders
        self.touched = touched
        self.clock = clock

    def patient(self, patient_id: str) -> Account:
        """The patient's account (NotFound for anyone who is not a patient)."""
        user = self.users.by_id(patient_id)
        if not user or user.role is not Role.PATIENT:
            raise NotFound(NOT_FOUND)
        return user

    def account(self, user_id: str) -> Account:
        """Anyone's own account, for their preferences (NotFound once it is gone)."""
        user = self.users.by_id(user_id)
        if user is None:
            raise NotFound(NO_ACCOUNT)
        return user

    def _next_move_at(self, patient: Account) -> datetime:
        """When a move takes effect: now, to the millisecond the database keeps, and always after the last
        move (two moves at one instant would make the history ambiguous)."""
        at = to_millis(self.clock())
        latest = max((m.effective_from for m in patient.time_zone_history), default=None)
        return max(at, latest + timedelta(milliseconds=1)) if latest else at

    def update(self, patient_id: str, changes: dict, *, if_versions: frozenset[int] | None = None) -> Account:
        """Change one's own profile, at the version named (PreconditionFailed with the current profile if it
        moved on) or at the current one (only the fields given change). A new time zone is recorded with
        when it took effect, in the same write as the zone itself, so reminders before the move keep their
        old local times and later ones follow the new zone; pending future reminders (and their
        quiet-hours pushes) are moved at once, and slots the move jumped over are kept. A change that
        changes nothing writes nothing, unless the profile changed within the last day: it may be the retry
        of a change stopped after its write, so what follows the change is done again."""
        return self._update(self.patient, patient_id, changes, if_versions)

    def update_preferences(self, user_id: str, changes: dict, *,
                           if_versions: frozenset[int] | None = None) -> Account:
        """Change one's own preferences (``time_zone``, ``quiet_hours``, ``locale``), whoever one is. A patient's
        change is exactly :meth:`update`'s (their reminders follow). Anyone else's new zone is recorded in their
        history the same way, so their quiet hours are judged on the clock they lived by at each instant (a
        caregiver's alert pushes wait for their end); nothing else follows (no reminders, panel row or days of
        theirs). Their pushes already queued and not sent yet are re-timed to the new quiet hours (or clock)."""
        return self._update(self.account, user_id, changes, if_versions)

    def _update(self, read: Callable[[str], Account], user_id: str, changes: dict,
                if_versions: frozenset[int] | None) -> Account:
        quiet = changes.get("quiet_hours", False)
        if quiet not in (None, False):
            quiet = QuietHours(time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"]))
        for _ in range(ATTEMPTS):
            person = read(user_id)
            zone = changes.get("time_zone")
            moving = zone is not None and zone != person.time_zone
            if not moving and _unchanged(person, changes, quiet):
                self._finish_a_retry(person, changes)
                return person
            if if_versions is not None and person.profile_version not in if_versions:
                raise PreconditionFailed("the profile changed since that version; see current", current=person,
                                         version=person.profile_version)
            move = ZoneMove(zone, self._next_move_at(person), person.time_zone) if moving else None
            updated = self.users.update_profile(
                user_id, version=person.profile_version, display_name=changes.get("display_name"),
                quiet_hours=quiet, caregiver_alert_delay_min=changes.get("caregiver_alert_delay_min"),
                locale=changes.get("locale", False), move=move, at=self.clock())
            if updated is None:
                continue  # changed meanwhile: read it again (and answer 412 if the caller named a version)
            if moving or "quiet_hours" in changes:
                self._requeue_for_quiet_hours(updated)
            if not updated.is_patient:
                return updated  # a caregiver's or staff member's zone is theirs alone: no reminders, rows or days
            self._moved(updated, move.effective_from if move is not None else None)
            if moving or "quiet_hours" in changes:
                # Travel: pending future reminders move to the same wall-clock times in the new zone
                # (and new quiet hours move their pushes). Derived from the stored profile on every call,
                # so the hourly materialization finishes a move interrupted here.
                self.reminders.refresh_future(user_id)
            return updated
        raise Contended("the profile is being changed by someone else right now; try again")

    def _finish_a_retry(self, patient: Account, changes: dict) -> None:
        """A change that changes nothing may be the retry of one stopped after its write: within a day of the
        last change (or of a move, for a zone named again), what follows a change is done again (each step is
        idempotent), the reminders moved to the new zone, or their pushes to new quiet hours, included; for anyone
        else, only their queued pushes re-timed."""
        current = self.clock()
        latest = max((m.effective_from for m in patient.time_zone_history), default=None)
        moved = "time_zone" in changes and latest is not None and current - latest < RETRIED_WITHIN
        changed = patient.profile_changed_at is not None and current - patient.profile_changed_at < RETRIED_WITHIN
        if moved or (changed and "quiet_hours" in changes):
            self._requeue_for_quiet_hours(patient)
        if not patient.is_patient:
            return
        if moved or changed:
            self._moved(patient, latest if moved else None)
        if moved or (changed and "quiet_hours" in changes):
            self.reminders.refresh_future(patient.id)

    def _requeue_for_quiet_hours(self, person: Account) -> None:
        """The person's pushes queued and not sent yet, re-timed to their quiet hours as they are now, on the clock
        they live by now (companion.domain.notifications.requeued_for_quiet_hours): one held for the old quiet hours
        that the new ones allow goes now, one that falls inside the new ones waits for their end; those that go
        whatever the hour (an overload, a snooze) keep their time. A patient's reminders whose first push waits are
        re-planned with them (ReminderService.refresh_future); this is what is already in the outbox."""
        current = self.clock()
        zone = person.zone_history().zone_at(current)
        for doc in self.outbox.waiting_for(person.id, current):
            requeued = requeued_for_quiet_hours(doc, current, zone, person.quiet_hours)
            if requeued is not None:
                self.outbox.retime(doc, *requeued)

    def _moved(self, patient: Account, moved_at: datetime | None) -> None:
        """What follows a change of the profile: the panel row shows the name and zone; after a move of time
        zone (at ``moved_at``), the days from it on fall on other dates."""
        self.panel_rows.mark([patient.id], "profile", self.clock())
        if moved_at is not None and self.touched is not None:
            self.touched.from_instant(patient.id, moved_at, "time_zone")


def _unchanged(patient: Account, changes: dict, quiet) -> bool:
    same = [("display_name", patient.display_name), ("caregiver_alert_delay_min", patient.caregiver_alert_delay_min),
            ("locale", patient.locale)]
    if any(name in changes and changes[name] != value for name, value in same):
        return False
    return quiet is False or quiet == patient.quiet_hours
