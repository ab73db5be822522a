"""Reminder use cases: creating and changing reminders, materializing their occurrences (for the API and
the scheduler), recording what the patient did, snoozing, and following the patient when they travel.

Everything here is idempotent and safe to run from several processes at once: occurrences are
inserted under a unique (reminder_id, local_date, local_time) key with duplicates ignored, moves
and cancellations only touch occurrences that are still pending, and only in the future (and a slot a zone
change kept, missed because of the move, when a move undone brings it due again). A reminder and
its occurrences are two writes; the second is derived from the first on every call, so a request
retried after a crash between them finishes the job (and the hourly materialization does too).

Every change the app syncs takes the patient's next change number (companion.services.sync): a reminder's
number is its version, which a change or stop may name (If-Match); occurrences the schedule no longer has
are cancelled (tombstones), not deleted.

Edges, decided here:

- **Done against missed.** The worker marks an occurrence missed when its window closes; the patient may
  still record it (done or skipped) afterwards, saying when they did it (``at``, default now). Whichever
  reaches the database first, the result is the patient's outcome, with ``on_time`` true when ``at`` lies
  inside the completion window. Two outcomes that differ (done, then skipped), or two skips with different
  reasons, are a conflict (see ``_same_outcome`` below).
- **Answered on an out-of-date copy.** An answer is judged against every window the slot was shown with (a move
  west keeps the window it leaves), and one on a slot called off settles the day's replacement
  (companion.domain.answers, companion.services.reminder_answers).
- **Snooze before the due time** counts from the due time (companion.domain.schedules.snoozed_until), and
  the pushes planned before the snooze time are held back (companion.services.reminder_dispatch).
- **Travel east.** A slot the zone change jumped over (companion.domain.schedules.slots_skipped_by_moves)
  is kept at its place on the new clock. If its completion window is still open at the change, and still will
  be when the push may go (at the change, or at the end of the quiet hours landed in), it stays pending and is
  pushed then; if not, it is marked ``missed`` with ``missed_reason: time_zone_change`` at the change (no
  missed-session alert, no missed summary). Either way it can be recorded. A move undone the same day (a
  phone flipping zones near a border, a wrong zone corrected) brings such a slot due again on the restored
  clock: due now or later there, it is moved back, pending (``_restorable``), unless the patient answered it.
  Its first push goes once: one already sent at the move is not sent again at the restored time (the
  outbox's key is the occurrence's), its nudges follow the restored time, all of them: they are counted
  afresh (``nudges_sent``) and keyed by the restored due instant (``restored_at`` set), so a nudge sent while
  it sat on the other clock does not take the place of the one of the same rank. What was queued for it on the
  clock it leaves and has not gone yet (a nudge or re-send FCM asked to have sent later) is withdrawn
  (``reminder_called_off``), and a first push not gone yet is moved to the restored time.
- **DST gap.** Slots that fall due at the same instant share one push (``push_with``), keyed by the first: it and
  its nudges and re-send remind of all of them, withdrawn once none is open (answered or called off), and a
  snooze's push is its own slot's alone (``reminding_keys_of(..., shared=False)``).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.clock import Clock, now
from companion.domain.access import (
    REMINDER_ANSWERED,
    REMINDER_CALLED_OFF,
    REMINDER_SNOOZED,
    Grant,
    sees_free_text,
    without_free_text,
)
from companion.domain.answers import EARLY_MARK, in_time, taken_after_call_off, too_early
from companion.domain.errors import Conflict, Contended, Invalid, NotFound, PreconditionFailed
from companion.domain.localtime import TimeZoneHistory, local_date_of, resolve_local
from companion.domain.notifications import initial_key, left_on_the_other_clock, reminding_keys_of, ttl_for
from companion.domain.people import Account
from companion.domain.quiet_hours import next_allowed
from companion.domain.schedules import ReminderOccurrence, changed_schedule_starts, snoozed_until
from companion.services.derived_ids import derived_id
from companion.services.item_failures import ItemFailures
from companion.services.reminder_answers import (
    ANSWERED,
    called_off_at,
    left_behind,
    settle_replacement,
    windows_of,
)
from companion.services.reminder_schedules import (
    check_reminder,
    schedule_kept_until,
    silenced_times,
    skipped_slots_for,
    slots_for,
)
from companion.services.sync import Changes, feed_view
from companion.services.touched_days import TouchedDays
from companion.store.outbox import SCHEDULED, SENT
from companion.store.reminders import CANCELLED
from companion.store.stores import Stores

logger = logging.getLogger(__name__)

HORIZON = timedelta(days=2)  # how far ahead a change re-materializes at once; the scheduler keeps ahead
MATERIALIZE_JOB = "reminders-materialize"
MAX_WINDOW = timedelta(days=31)
# No occurrence is stored due further ahead: a stop, or a change of schedule, zone or quiet hours, re-plans those
# stored within it (refresh_future), and one stored beyond would outlive them (pushed, then counted missed, for a
# reminder the patient had stopped). A range read further ahead shows the slots planned there (occurrences_between).
STORED_AHEAD = timedelta(days=31)
MAX_ACTIVE = 50
MOVES_LOOKBACK = timedelta(days=1)  # zone changes this long before a window are checked for skipped slots
TIME_ZONE_CHANGE = "time_zone_change"
MOMENT = ("due_at", "window_ends_at", "notify_at", "zone", "push_with")
KEPT = (*MOMENT, "skipped_by_move_at", "status", "status_at", "missed_reason")
# A kept slot the clock it is due on again brings back (a move east undone): pending, no longer kept, its nudges
# counted and keyed afresh (``restored_at``: companion.domain.notifications.nudge_key).
RESTORED = {"status": "pending", "status_at": None, "missed_reason": None, "skipped_by_move_at": None,
            "nudges_sent": 0}
ATTEMPTS = 20
# A reminder's times the patient's quiet hours keep from ever being pushed (their window ends inside them): stored with
# it, kept as the quiet hours are now (_note_silenced), so that the app shows the patient which.
SILENCED = "silenced_by_quiet_hours"
RUNS = 3  # materialize runs again (at most this often in all) when what it was computed from changed meanwhile
# Where a page of the reminders list ended: its part ("active" or "stopped"), its sort key in that part (created_at,
# updated_at) and its id.
ListPlace = tuple[str, datetime, str]


def _occurrence_doc(reminder: dict, slot: ReminderOccurrence, zone, quiet) -> dict:
    return {
        "_id": slot.occurrence_id, "patient_id": reminder["patient_id"], "reminder_id": reminder["_id"],
        "kind": reminder["kind"], "local_date": slot.local_date.isoformat(),
        "local_time": slot.local_time.strftime("%H:%M"), "zone": zone.key, "due_at": slot.due_at_utc,
        "window_ends_at": slot.window_ends_at_utc,
        # Quiet hours hold back the push, never the task: the occurrence is still due at due_at.
        "notify_at": next_allowed(slot.due_at_utc, zone, quiet), "push_with": slot.push_with,
        "status": "pending", "status_at": None, "skip_reason": None, "missed_reason": None, "snoozed_until": None,
        "nudges_sent": 0,
    }


def _kept_doc(reminder: dict, slot: ReminderOccurrence, zone, quiet, current: datetime) -> dict:
    """A slot a zone change jumped over, kept on the new clock: still open, it is pushed at the change (or when
    the quiet hours of the clock landed on end); closed already, or closing before that push could go (landed in
    the night), it is missed because of the move: never left pending unreminded, to be marked an ordinary miss."""
    doc = _occurrence_doc(reminder, slot, zone, quiet)
    moved_at = slot.skipped_by_move_at
    doc["skipped_by_move_at"] = moved_at
    notify_at = next_allowed(moved_at, zone, quiet)
    if slot.window_ends_at_utc > max(moved_at, current, notify_at):
        doc["notify_at"] = notify_at
    else:
        doc.update(status="missed", status_at=moved_at, missed_reason=TIME_ZONE_CHANGE)
    return doc


def _planned(reminders: list[dict], history: TimeZoneHistory, quiet, start_utc: datetime, end_utc: datetime,
             current: datetime) -> tuple[dict[str, dict], dict[str, dict]]:
    """The occurrences these (active) reminders plan in [start_utc, end_utc), by id, the slots a zone change
    jumped over among them; and those slots apart (module docstring)."""
    wanted: dict[str, dict] = {}
    kept: dict[str, dict] = {}
    for reminder in reminders:
        for slot in slots_for(reminder, history, start_utc, end_utc):  # (each schedule's from when it was set)
            doc = _occurrence_doc(reminder, slot, history.zone_at(slot.due_at_utc), quiet)
            wanted.setdefault(doc["_id"], doc)
        for slot in skipped_slots_for(reminder, history, start_utc - MOVES_LOOKBACK, end_utc):
            zone = history.zone_at(slot.skipped_by_move_at)
            kept.setdefault(slot.occurrence_id, _kept_doc(reminder, slot, zone, quiet, current))
    wanted.update(kept)
    return wanted, kept


def as_slot(occurrence: dict) -> ReminderOccurrence:
    """A stored occurrence as the schedules domain's ``ReminderOccurrence``."""
    return ReminderOccurrence(
        reminder_id=occurrence["reminder_id"], local_date=date.fromisoformat(occurrence["local_date"]),
        local_time=time.fromisoformat(occurrence["local_time"]), due_at_utc=occurrence["due_at"],
        window_ends_at_utc=occurrence["window_ends_at"], occurrence_id=occurrence["_id"])


def version_of(doc: dict) -> int:
    """A synced object's version (its latest change number; 0 before any)."""
    return doc.get("seq") or 0


def unplanned(occurrence: dict, reminder: dict | None) -> bool:
    """Whether a pending occurrence is one no reminder plans any more: its reminder is gone, or was stopped before
    the occurrence's window closed (``updated_at``: when it was stopped, or changed since). A stop or an account
    closure stopped between its two writes leaves such occurrences pending, as do those stored further ahead than
    a stop re-planned (by earlier versions). Nothing may remind of them, nor count them as missed doses."""
    return reminder is None or (not reminder["active"] and occurrence["window_ends_at"] > reminder["updated_at"])


def mark_closed_missed(stores: Stores, changes: Changes, closed: list[dict], at: datetime,
                       summary_due: Collection[str] = ()) -> list[dict]:
    """Mark these occurrences (whose windows have closed) missed where still pending, each patient's under
    one reservation of change numbers (and their today changed); returns those marked (the patient may have
    recorded one meanwhile). Those in ``summary_due`` (ids) are marked with their summary push still to queue.
    Those :func:`unplanned` are cancelled instead."""
    occurrences, today = stores.occurrences, stores.today_rows
    reminders = stores.reminders.by_ids(o["reminder_id"] for o in closed)
    orphans = {o["_id"]: o for o in closed if unplanned(o, reminders.get(o["reminder_id"]))}
    if orphans:
        call_off(stores, changes, list(orphans.values()), at)
        closed = [o for o in closed if o["_id"] not in orphans]
    by_patient: dict[str, list[dict]] = defaultdict(list)
    for occurrence in closed:
        by_patient[occurrence["patient_id"]].append(occurrence)
    marked = []
    for patient_id, items in by_patient.items():
        # Their today is touched before the marks as well as after: a pass stopped between the marks and the touch
        # after them would leave their today showing these reminders pending until the next write or day.
        today.touch([patient_id])
        with changes.stamp(patient_id, occurrences, len(items)) as first:
            marked += [o for n, o in enumerate(items)
                       if occurrences.mark_one_missed(o["_id"], at, first + n, o["_id"] in summary_due)]
    today.touch({o["patient_id"] for o in marked})
    return marked


def call_off(stores: Stores, changes: Changes, stale: list[dict], at: datetime) -> int:
    """Cancel these occurrences where still pending (tombstones), each patient's under one reservation of change
    numbers; returns how many. What was queued to remind of them is withdrawn, and their today changes, before
    the cancel as well as after it (as in materialize: a retry finds nothing left to cancel)."""
    occurrences, today = stores.occurrences, stores.today_rows
    by_patient: dict[str, list[dict]] = defaultdict(list)
    for occurrence in stale:
        by_patient[occurrence["patient_id"]].append(occurrence)
    cancelled = 0
    for patient_id, items in by_patient.items():
        withdraw_called_off(stores, patient_id, items)
        today.touch([patient_id])
        with changes.stamp(patient_id, occurrences, len(items)) as first:
            cancelled += occurrences.cancel_pending([o["_id"] for o in items], first, at)
        withdraw_called_off(stores, patient_id, items)
        today.touch([patient_id])
    return cancelled


def withdraw_called_off(stores: Stores, patient_id: str, called_off: list[dict]) -> None:
    """Withdraw what was queued to remind of these occurrences of the patient's (called off): all of it, but the
    push shared with a slot of the same DST gap that stays (not among them, still pending), which still reminds of
    that one (their snoozes' pushes, theirs alone, go)."""
    if not called_off:
        return
    staying = stores.occurrences.push_groups_open_besides(called_off, {o["_id"] for o in called_off})
    stores.outbox.withdraw_sources(patient_id, [
        key for o in called_off
        for key in reminding_keys_of(o, shared=(o.get("push_with") or o["_id"]) not in staying)],
        REMINDER_CALLED_OFF)


class ReminderService:
    def __init__(self, stores: Stores, clock: Clock = now, *, changes: Changes | None = None,
                 touched: TouchedDays | None = None, on_outcome: Callable[[str, dict], None] | None = None):
        self.stores = stores  # (for call_off and mark_closed_missed, which the worker shares)
        self.users = stores.users
        self.reminders = stores.reminders
        self.occurrences = stores.occurrences
        self.today = stores.today_rows  # every write to the patient's reminders or occurrences changes it
        self.outbox = stores.outbox
        self.runs = stores.days_to_recompute  # (its recompute_runs: when each job's last complete pass began)
        self.clock = clock
        self.changes = changes or Changes(stores, clock)
        self.touched = touched
        self.on_outcome = on_outcome  # told of every outcome recorded (the alerts it settles: AlertService)

    def _patient(self, patient_id: str) -> Account:
        patient = self.users.by_id(patient_id)
        if not patient:
            raise NotFound("no such patient")
        return patient

    # Reminders
    def list(self, patient_id: str, limit: int, after: ListPlace | None = None) -> tuple[list[dict], ListPlace | None]:
        """A page of at most ``limit`` of the patient's reminders: every active one (at most ``MAX_ACTIVE``),
        oldest first, then the stopped ones, the most recently stopped first (stopping keeps a reminder, so these
        pile up over the years and are under no cap); after the place the previous page ended on. With it, the
        place the following page starts after (its part, ``active`` or ``stopped``, its sort key and id), or None
        on the last page."""
        found = self.reminders.listed(patient_id, limit + 1, after)
        page = found[:limit]
        if len(found) <= limit:
            return page, None
        last = page[-1]
        return page, (("active", last["created_at"], last["_id"]) if last["active"]
                      else ("stopped", last["updated_at"], last["_id"]))

    def get(self, patient_id: str, reminder_id: str) -> dict:
        reminder = self.reminders.get(patient_id, reminder_id)
        if not reminder:
            raise NotFound("no such reminder")
        return reminder

    def create(self, patient_id: str, fields: dict, *, created_at: datetime | None = None,
               request_key: str | None = None) -> dict:
        """Create a reminder and its occurrences for the next two days. Without a start date the schedule
        starts today on the patient's clock. ``created_at`` backdates it when importing history (no
        occurrence is ever made for a time before the reminder existed).

        Two writes: the reminder, then its occurrences, which are derived from the stored reminders on every
        call. With a ``request_key`` (the request's Idempotency-Key) the reminder's id is derived from it, so
        a retry after a crash between the writes finds the reminder and finishes its occurrences."""
        current = self.clock()
        patient = self._patient(patient_id)
        if not fields["schedule"].get("start_date"):
            zone = patient.zone_history().zone_at(current)
            fields = {**fields, "schedule": {**fields["schedule"],
                                             "start_date": local_date_of(current, zone).isoformat()}}
        check_reminder(fields)
        fields = {**fields, SILENCED: silenced_times(fields, patient.quiet_hours)}
        if self.reminders.count_active(patient_id) >= MAX_ACTIVE and not (
                request_key and self.reminders.get(patient_id, derived_id("reminder", request_key))):
            raise Invalid(f"a patient can have at most {MAX_ACTIVE} active reminders")
        reminder_id = derived_id("reminder", request_key) if request_key else None
        with self.changes.reservation(patient_id, self.reminders) as held:
            reminder = self.reminders.create(patient_id, fields, created_at or current, held.first, reminder_id)
        reminder = held.as_stored(reminder)
        self.refresh_future(patient_id)
        return reminder

    def update(self, patient_id: str, reminder_id: str, changes: dict, *,
               if_versions: frozenset[int] | None = None) -> dict:
        """Change a reminder (the version named, or the current one); its pending future occurrences follow
        the new settings. A change that changes nothing writes nothing."""
        for _ in range(ATTEMPTS):
            current = self.get(patient_id, reminder_id)
            wanted = dict(changes)
            if "schedule" in wanted and not wanted["schedule"].get("start_date"):
                wanted["schedule"] = {**wanted["schedule"], "start_date": current["schedule"]["start_date"]}
            if all(current.get(key) == value for key, value in wanted.items()):
                self.refresh_future(patient_id)  # finishes a change interrupted between its two writes
                return self.get(patient_id, reminder_id)  # (as refresh_future left it: _note_silenced)
            self._check_version(current, if_versions)
            check_reminder({**current, **wanted}, repeats=any(
                key in wanted and wanted[key] != current.get(key) for key in ("repeat", "completion_window_min")))
            silenced = silenced_times({**current, **wanted}, self._patient(patient_id).quiet_hours)
            if silenced != current.get(SILENCED):
                wanted[SILENCED] = silenced
            reactivated = wanted.get("active") is True and not current["active"]
            if reactivated and self.reminders.count_active(patient_id) >= MAX_ACTIVE:
                raise Invalid(f"a patient can have at most {MAX_ACTIVE} active reminders",
                              errors={"active": [f"{MAX_ACTIVE} reminders are active already"]})
            rescheduled = wanted.get("schedule", current["schedule"]) != current["schedule"]
            if reactivated or rescheduled:
                wanted.update(self._plan_from_now(patient_id, current, wanted, rescheduled, self.clock()))
            with self.changes.reservation(patient_id, self.reminders) as held:
                updated = self.reminders.update(patient_id, reminder_id, wanted, self.clock(), seq=held.first,
                                                version=version_of(current))
            updated = held.as_stored(updated)
            if updated:
                self.refresh_future(patient_id)
                return updated
        raise Contended("the reminder is being changed by someone else right now; try again")

    def _plan_from_now(self, patient_id: str, current: dict, wanted: dict, rescheduled: bool, at: datetime) -> dict:
        """What a reminder whose schedule changed (``rescheduled``), or that was started again, at ``at`` plans by from
        then on. Its schedule plans from the change (``schedule_since``), past the times of that day on the patient's
        clock that its doses answered or reminded of stand for (companion.domain.schedules.changed_schedule_starts):
        a dose taken, then moved later, is not reminded of twice in a day. A new schedule dated from a later day
        leaves the days before it as they were planned (``earlier_schedules``: the 20:00 dose moved to 08:00 from
        tomorrow still reminds at 20:00 today); nothing before the change is planned again by those either."""
        history = self._patient(patient_id).zone_history()
        zone = history.zone_at(at)
        day = local_date_of(at, zone)
        changed = {**current, **wanted, "earlier_schedules": None}
        # One dose per answer chain: a slot called off (settled by another's answer, or by an earlier change) is
        # none. A time the new schedule keeps is its own slot, and stands for no other (removing 08:00 of 08:00 and
        # 20:00 once 08:00 was reminded of leaves 20:00); the rest stand for the changed times, in order.
        had = [o for o in self.occurrences.of_reminder_on(current["_id"], day.isoformat()) if o["status"] != CANCELLED]
        starts, ends = resolve_local(day, time(0), zone), resolve_local(day + timedelta(days=1), time(0), zone)
        slots = [slot for slot in slots_for(changed, history, starts, ends, as_planned=False) if slot.local_date == day]
        same = frozenset(slot.occurrence_id for slot in slots) & {o["_id"] for o in had}
        reminded = self._reminded_of(patient_id, had)
        seen = [o for o in had if o["_id"] not in same and (o["status"] in ANSWERED or o["_id"] in reminded)]
        since = changed_schedule_starts(at, slots, len(seen), ends, same)
        if rescheduled:
            kept = schedule_kept_until(current, date.fromisoformat(changed["schedule"]["start_date"]), day, at)
        else:  # started again: what it kept plans from now too
            kept = [{**k, "since": max(k["since"], at)} for k in current.get("earlier_schedules") or ()]
        return {"schedule_since": since, "earlier_schedules": kept}

    def _reminded_of(self, patient_id: str, occurrences: list[dict]) -> set[str]:
        """Those of ``occurrences`` (by id) that a push reached a phone for (the first, a nudge, a re-send, a snooze's;
        one shared by a DST gap's slots reminded of each)."""
        owners: dict[str, list[str]] = defaultdict(list)
        for occurrence in occurrences:
            for key in reminding_keys_of(occurrence):
                owners[key].append(occurrence["_id"])
        found = self.outbox.existing((key, patient_id) for key in owners) if owners else {}
        return {owner for (key, _), doc in found.items() if doc["state"] == SENT or doc.get("sent_at") is not None
                for owner in owners[key]}

    def stop(self, patient_id: str, reminder_id: str, *, if_versions: frozenset[int] | None = None) -> dict:
        """Stop a reminder: it becomes inactive, its future pending occurrences are cancelled, its history
        stays. Stopping a stopped reminder changes nothing (a retried stop succeeds as the first did)."""
        for _ in range(ATTEMPTS):
            current = self.get(patient_id, reminder_id)
            if not current["active"]:
                self.refresh_future(patient_id)  # finishes a stop interrupted between its two writes
                return current
            self._check_version(current, if_versions)
            with self.changes.reservation(patient_id, self.reminders) as held:
                stopped = self.reminders.update(patient_id, reminder_id, {"active": False}, self.clock(),
                                                seq=held.first, version=version_of(current))
            stopped = held.as_stored(stopped)
            if stopped:
                self.refresh_future(patient_id)
                return stopped
        raise Contended("the reminder is being changed by someone else right now; try again")

    @staticmethod
    def _check_version(current: dict, if_versions: frozenset[int] | None) -> None:
        if if_versions is not None and version_of(current) not in if_versions:
            raise PreconditionFailed("the reminder changed since that version; see current", current=current,
                                     version=version_of(current))

    def changes_since(self, grant: Grant, cursor: str | None, limit: int) -> dict:
        """Reminders created or changed after the cursor (companion.services.sync)."""
        page = self.changes.page(grant.patient_id, self.reminders, cursor, limit)
        return page.with_items(page.items)

    # Occurrences
    def materialize(self, patient_id: str, start_utc: datetime, end_utc: datetime, *,
                    patient: Account | None = None) -> int:
        """Make the stored occurrences of [start_utc, end_utc) match the patient's reminders; returns how
        many were added.

        New occurrences are inserted (a concurrent run inserting the same ones is harmless); pending
        future occurrences that the schedules no longer produce (a changed schedule, a stopped reminder)
        are cancelled, cancelled future ones the schedules produce again come back, and pending future
        ones whose moment changed are moved. Slots a zone change jumped over are kept, and moved back when a
        move undone brings them due again (module docstring).
        Occurrences already done, skipped or missed, and anything in the past, are history and stay.
        Nothing due ``STORED_AHEAD`` or more from now is stored: the range ends there at the latest.
        ``patient``: their account, when the caller has just read it.
        """
        if end_utc - start_utc > MAX_WINDOW:
            raise ValueError("materialize at most 31 days at a time")
        end_utc = min(end_utc, self.clock() + STORED_AHEAD)
        if end_utc <= start_utc:
            return 0
        added = 0
        for _ in range(RUNS):
            written, basis = self._materialize_once(patient_id, start_utc, end_utc, patient)
            added += written
            # Computed from reminders (or a profile) that changed while it ran? Its writes may have undone those
            # of the run the change made (revived the old slots, cancelled the new ones): again, from what is
            # stored now.
            if basis is None or basis == _basis(self._patient(patient_id),
                                                self.reminders.active_of(patient_id)):
                break
            patient = None
        return added

    def _materialize_once(self, patient_id: str, start_utc: datetime, end_utc: datetime,
                          patient: Account | None) -> tuple[int, tuple | None]:
        """One run of materialize: how many it added, and what it was computed from (None: it wrote nothing)."""
        patient = patient or self._patient(patient_id)
        history = patient.zone_history()
        current = self.clock()
        reminders = self.reminders.active_of(patient_id)
        wanted, kept = _planned(reminders, history, patient.quiet_hours, start_utc, end_utc, current)
        existing = self.occurrences.by_ids(list(wanted))
        # Each with the window the slot leaves (None: the same), which it keeps among those it was shown with: a
        # phone that has not synced reminds there, and the patient's answer given there is taken (record_outcome).
        moves: list[tuple[str, dict, dict | None]] = []
        restores: list[tuple[str, dict, dict | None]] = []
        revivals: list[tuple[dict, dict | None]] = []
        for key, doc in wanted.items():
            stored = existing.get(key)
            if stored is None:
                continue
            if key in kept:
                if stored["status"] == "pending" and stored["due_at"] != doc["due_at"]:
                    moves.append((key, {k: doc[k] for k in KEPT}, left_behind(stored, doc)))
            elif _restorable(stored, doc, current):
                restores.append((key, {**{k: doc[k] for k in MOMENT}, **RESTORED, "restored_at": current},
                                 left_behind(stored, doc)))
            elif stored["status"] == "pending" and stored["due_at"] >= current \
                    and any(stored.get(k) != doc[k] for k in MOMENT):
                moves.append((key, {k: doc[k] for k in MOMENT}, left_behind(stored, doc)))
            elif stored["status"] == CANCELLED and doc["due_at"] >= current and not stored.get("settled_by"):
                revivals.append(({**doc, "made_at": current, "made_by": None}, left_behind(stored, doc)))
        stale = [o["_id"] for o in self.occurrences.pending_from(patient_id, max(start_utc, current), end_utc)
                 if o["_id"] not in wanted]
        stale = list(dict.fromkeys(stale + self._open_unwanted(patient_id, reminders, history,
                                                              set(kept) | {key for key, _, _ in restores}, current)))
        # One id for this change, on the slots it calls off and on those it makes new: an answer from a stale copy
        # to a slot called off settles only a slot made by the same change (companion.domain.answers).
        change = uuid.uuid4().hex
        new = [{**doc, "made_at": current, "made_by": change} for key, doc in wanted.items() if key not in existing]
        writes = len(moves) + len(restores) + len(revivals) + len(stale) + len(new)
        if not writes:
            return 0, None
        called_off = list(self.occurrences.by_ids(stale).values()) if stale else []
        # What was queued to remind of them never goes out: withdrawn before they are cancelled as well as after (a
        # retry finds nothing left to cancel, so a process stopped between the two would leave it queued). So for the
        # slots moved back: what was queued on the clock they leave (a retry finds nothing left to restore).
        withdraw_called_off(self.stores, patient_id, called_off)
        brought_back = [(existing[key], {**existing[key], **fields}) for key, fields, _ in restores]
        self._leave_the_other_clock(patient_id, brought_back, current)
        # The patient's today changes before the writes as well as after: a pass stopped between the two finds
        # nothing left to write when it runs again, and would leave a today computed before it as current.
        self.today.touch([patient_id])
        with self.changes.stamp(patient_id, self.occurrences, writes) as seq:
            for key, fields, left in moves:
                self.occurrences.move_pending(key, fields, seq, left)
                seq += 1
            for key, fields, left in restores:
                self.occurrences.restore_kept(key, fields, seq, TIME_ZONE_CHANGE, left)
                seq += 1
            for doc, left in revivals:
                self.occurrences.revive(doc, seq, left)
                seq += 1
            self.occurrences.cancel_pending(stale, seq, current, by=change)
            seq += len(stale)
            added = self.occurrences.insert_new([{**doc, "seq": seq + n} for n, doc in enumerate(new)])
        withdraw_called_off(self.stores, patient_id, called_off)  # (one queued while they were being cancelled)
        self._leave_the_other_clock(patient_id, brought_back, current)  # (or while they were being moved back)
        self.today.touch([patient_id])
        return added, _basis(patient, reminders)

    def _leave_the_other_clock(self, patient_id: str, brought_back: list[tuple[dict, dict]],
                               current: datetime) -> None:
        """The pushes queued for slots a move undone brings back (each as it stood, and as it stands restored), not
        sent yet: those planned on the clock they leave withdrawn (their nudges and re-send, keyed or timed by that
        clock: ``left_on_the_other_clock``), and the first push moved to the restored time (one push on either
        clock, under the occurrence's key: withdrawn, it would stand in for the restored one, never sent)."""
        if not brought_back:
            return
        self.outbox.withdraw_sources(patient_id, [key for before, after in brought_back
                                                  for key in left_on_the_other_clock(before, after)],
                                     REMINDER_CALLED_OFF)
        firsts = {initial_key(after.get("push_with") or after["_id"]): after for _, after in brought_back}
        for (key, _), doc in self.outbox.existing((key, patient_id) for key in firsts).items():
            after = firsts[key]
            send_at = max(after["notify_at"], current)
            if doc["state"] != SCHEDULED or doc["not_before"] == send_at:
                continue
            if send_at >= after["window_ends_at"]:  # (its restored push would have none of its window left)
                self.outbox.withdraw_sources(patient_id, [key], REMINDER_CALLED_OFF)
                continue
            self.outbox.retime(doc, send_at, send_at + ttl_for(doc["kind"], after["window_ends_at"] - send_at),
                               planned_at=after["due_at"], planned_zone=after["zone"],
                               intended_at=after.get("skipped_by_move_at") or after["due_at"])

    def _open_unwanted(self, patient_id: str, reminders: list[dict], history, wanted: set[str], current: datetime
                       ) -> list[str]:
        """The patient's occurrences open now (due, their completion window not closed) that their reminders no
        longer produce (a reminder stopped, or its time changed, while its occurrence was open): cancelled with
        the future ones, so that no nudge follows and no missed-session alert is raised for what the patient or
        their care team called off. ``wanted``: ids still wanted whatever they are due now (the slots kept by a
        move, and those a move undone brings due again later, moved there rather than cancelled)."""
        open_now = list(self.occurrences.open_for(patient_id, current))
        if not open_now:
            return []
        first = min(o["due_at"] for o in open_now)
        after_now = current + timedelta(microseconds=1)
        # Slots a move jumped over, kept while open: looked for around the open ones (the range being read may
        # lie days away from them).
        kept_open = {slot.occurrence_id for reminder in reminders
                     for slot in skipped_slots_for(reminder, history, first - MOVES_LOOKBACK, after_now,
                                                   new_schedule_too=True)}
        still = wanted | kept_open | {slot.occurrence_id for reminder in reminders
                                      for slot in slots_for(reminder, history, max(first, reminder["created_at"]),
                                                            after_now, as_planned=False)}
        return [o["_id"] for o in open_now if o["_id"] not in still]

    def refresh_future(self, patient_id: str) -> int:
        """Recompute the patient's pending future occurrences (after a schedule or time-zone change)."""
        current = self.clock()
        reach = current + STORED_AHEAD
        pending = self.occurrences.pending_from(patient_id, current, reach)
        latest = max((o["due_at"] for o in pending), default=current)
        end = min(max(current + HORIZON, latest + timedelta(minutes=1)), reach)
        added = self.materialize(patient_id, current, end)
        self._call_off_beyond(patient_id, reach, current)
        self._hold_first_pushes_again(patient_id, current)
        self._note_silenced(patient_id)
        self.today.touch([patient_id])  # a reminder (or the zone) changed, whether or not an occurrence did
        return added

    def _note_silenced(self, patient_id: str, patient: Account | None = None) -> None:
        """Each active reminder's times that the patient's quiet hours keep from being pushed (``SILENCED``), as
        the quiet hours are now: a change of them makes a reminder's stale, and it changes (a new version, in the
        feed) so that the app shows it. One changed meanwhile is left to that change, which comes here after its
        own write. ``patient``: their account, when the caller has just read it."""
        quiet = (patient or self._patient(patient_id)).quiet_hours
        for reminder in self.reminders.active_of(patient_id):
            silenced = silenced_times(reminder, quiet)
            if reminder.get(SILENCED) == silenced:
                continue
            with self.changes.reservation(patient_id, self.reminders) as held:
                self.reminders.update(patient_id, reminder["_id"], {SILENCED: silenced}, self.clock(),
                                      seq=held.first, version=version_of(reminder))

    def _call_off_beyond(self, patient_id: str, reach: datetime, current: datetime) -> None:
        """Cancel the patient's occurrences pending due at ``reach`` or later, all of them (a page at a time, on
        the patient_due index). None is stored there any more (materialize): these were stored by earlier
        versions, computed from a reminder since stopped, or from a schedule, zone or quiet hours since changed.
        The slots the reminders still plan there are shown by range reads, and made again under the same ids
        (revived) once in reach."""
        while stale := self.occurrences.pending_from(patient_id, reach):
            call_off(self.stores, self.changes, stale, current)

    def _hold_first_pushes_again(self, patient_id: str, current: datetime) -> None:
        """Occurrences due already whose first push quiet hours still hold back: held by the quiet hours as they
        are now (extended while the push waited, it waits for their new end; shortened, it goes sooner), on the
        clock the patient lives by now (landed in another zone, their night is where they are; the slot keeps
        the zone it was due in)."""
        waiting = [o for o in self.occurrences.open_for(patient_id, current)
                   if (o.get("notify_at") or o["due_at"]) > current]
        if not waiting:
            return
        patient = self._patient(patient_id)
        quiet, zone = patient.quiet_hours, patient.zone_history().zone_at(current) if patient.time_zone else None
        moves = [(o["_id"], at) for o in waiting
                 if (at := max(current, next_allowed(o.get("skipped_by_move_at") or o["due_at"],
                                                     zone or ZoneInfo(o["zone"]), quiet))) != o["notify_at"]]
        if not moves:
            return
        with self.changes.stamp(patient_id, self.occurrences, len(moves)) as seq:
            for n, (key, at) in enumerate(moves):
                self.occurrences.move_pending(key, {"notify_at": at}, seq + n)

    def materialize_ahead(self, grace: timedelta, horizon: timedelta) -> int:
        """The scheduler's hourly pass: every patient's occurrences kept ``horizon`` ahead (a patient whose
        reminders cannot be materialized is logged and skipped; the others are not held up).

        A pass begins where the last complete one left off when that is earlier than the grace (the worker was
        stopped for longer than the horizon), as far back as one 31-day window allows: the days of the outage get their
        occurrences too, and the next missed pass marks them missed (one summary per patient; dispatch sends
        nothing for them, being past the grace), so they count in the figures like any other dose; an answer
        the patient gives late is recorded as for any missed one."""
        current = self.clock()
        start = current - grace
        last = self.runs.last_run(MATERIALIZE_JOB)
        if last is not None and last + horizon < start:
            start = max(last + horizon, current + horizon - MAX_WINDOW)
            logger.warning("reminders: the last complete materializing pass began %s ago; making the slots "
                           "since %s", current - last, start.isoformat())
        failures = ItemFailures(MATERIALIZE_JOB)
        # With the patients whose reminders changed since the last pass (an hour's margin for the clocks of other
        # processes): a stop interrupted between its two writes, and never retried, left the stopped reminder's
        # occurrences pending, and a patient whose last reminder it was has no active one to be visited for.
        changed_since = (last or current) - timedelta(hours=1)
        added = [failures.attempt(patient_id, lambda p=patient_id: self._ahead(p, start, current + horizon))
                 for patient_id in self.reminders.patients_with_active(changed_since)]
        if not failures:  # a pass that left a patient out is not complete: the next begins where this one did
            self.runs.ran(MATERIALIZE_JOB, current)
        return sum(n or 0 for n in added)

    def _ahead(self, patient_id: str, start_utc: datetime, end_utc: datetime) -> int:
        """One patient's part of the hourly pass: their occurrences, and their reminders' silenced times (a change of
        quiet hours stopped before it re-planned them, a reminder stored before they were kept)."""
        patient = self._patient(patient_id)
        added = self.materialize(patient_id, start_utc, end_utc, patient=patient)
        self._note_silenced(patient_id, patient)
        return added

    def occurrences_between(self, grant: Grant, start_utc: datetime, end_utc: datetime) -> list[dict]:
        """The occurrences in a range (at most 31 days), materialized first so the app sees every one; a
        caregiver not allowed the patient's own words does not see the reasons for skipping.

        Those due ``STORED_AHEAD`` or more from now are not stored: the slots the reminders plan there are shown
        as they will be stored once in reach, under the same ids (derived from the reminder, local date and
        local time), at version 0 (never changed)."""
        patient_id, beyond = grant.patient_id, self.clock() + STORED_AHEAD
        self.materialize(patient_id, start_utc, end_utc)
        items = self.occurrences.between(patient_id, start_utc, end_utc)
        if max(start_utc, beyond) < end_utc:
            patient = self._patient(patient_id)
            wanted, _ = _planned(self.reminders.active_of(patient_id), patient.zone_history(),
                                 patient.quiet_hours, max(start_utc, beyond), end_utc, self.clock())
            stored = {o["_id"] for o in items}
            items = sorted(items + [doc for key, doc in wanted.items() if key not in stored],
                           key=lambda o: (o["due_at"], o["_id"]))
        return _visible(grant, items)

    def occurrence_changes_since(self, grant: Grant, cursor: str | None, limit: int) -> dict:
        """Occurrences created, changed or cancelled after the cursor (companion.services.sync): the reasons for
        skipping withheld from a caregiver not allowed the patient's own words, whose cursor issued before they
        were granted or withdrawn is answered ResyncRequired."""
        page = self.changes.page(grant.patient_id, self.occurrences, cursor, limit, view=feed_view(grant))
        return page.with_items(_visible(grant, page.items))

    def _open_occurrence(self, patient_id: str, key: str) -> dict:
        """The occurrence a snooze is for: not cancelled, due within the hour or already."""
        occurrence = self.occurrences.get(patient_id, key)
        if not occurrence or occurrence["status"] == CANCELLED:
            raise NotFound("no such reminder occurrence")
        if occurrence["due_at"] - EARLY_MARK > self.clock():
            raise Invalid("this reminder is not due yet", errors={"status": ["not due yet"]})
        return occurrence

    def _answered_occurrence(self, patient_id: str, key: str, at: datetime | None) -> dict:
        """The occurrence an answer given at ``at`` (None: now) is for, judged against every window it was shown
        with (companion.domain.answers: a phone that did not sync a move or a change reminds at the time it
        knows). A cancelled one is found for an answer given before it was called off or inside such a window,
        and one settled by another slot's answer always (record_outcome answers it as that answer)."""
        occurrence = self.occurrences.get(patient_id, key)
        if not occurrence:
            raise NotFound("no such reminder occurrence")
        if occurrence.get("settled_by"):
            return occurrence
        current, windows = self.clock(), windows_of(occurrence)
        off = called_off_at(occurrence)
        if occurrence["status"] == CANCELLED and (off is None or not taken_after_call_off(at or current, windows, off)):
            raise NotFound("no such reminder occurrence")
        if too_early(current, windows):
            raise Invalid("this reminder is not due yet", errors={"status": ["not due yet"]})
        return occurrence

    def record_outcome(self, grant: Grant, key: str, status: str, reason: str | None, *,
                       at: datetime | None = None, by: str | None = None) -> dict:
        """Record an occurrence as done or skipped, at ``at`` (when the patient did it; default now), by the
        account ``by`` (kept, so that it can send its own skip again). A missed one can still be recorded late:
        the patient's outcome replaces ``missed`` whichever of the two reached the database first, ``on_time``
        saying whether ``at`` was inside the window. Recording the same outcome again is harmless (see
        :func:`_same_outcome`); anything else on a recorded outcome is a Conflict with the occurrence as the
        caller may see it, nothing written. The answer is the occurrence as the caller may see it (a caregiver
        not allowed the patient's own words does not see the reason a skip already recorded gave). ``at`` is
        judged against every window the occurrence was shown with (companion.domain.answers); an answer to one
        settled by another slot's answer is that answer's (:meth:`_answer_to_settled`)."""
        patient_id = grant.patient_id
        occurrence = self._answered_occurrence(patient_id, key, at)
        if occurrence.get("settled_by"):
            return self._answer_to_settled(grant, occurrence, status, reason, by)
        if occurrence["status"] in ANSWERED and not _same_outcome(grant, occurrence, status, reason, by):
            raise _other_outcome(grant, occurrence)
        windows = windows_of(occurrence)
        if occurrence["status"] == status:
            if at is not None and occurrence.get("status_at") and at < occurrence["status_at"] \
                    and not too_early(at, windows):
                # Another phone's copy of the same answer, given earlier (offline meanwhile): the moment it was
                # done is the earlier one, and it may have been in time.
                with self.changes.reservation(patient_id, self.occurrences) as held:
                    earlier = self.occurrences.answered_earlier(patient_id, key, status, at, in_time(at, windows),
                                                                held.first)
                occurrence = held.as_stored(earlier) or self.occurrences.get(patient_id, key) or occurrence
            self._outcome_recorded(patient_id, occurrence)  # a retry finishes what the first left undone
            return _visible(grant, [occurrence])[0]
        current = self.clock()
        when = at or current
        if too_early(when, windows):
            raise Invalid("that is more than an hour before this reminder was due", errors={"at": ["too early"]})
        # Answered before it was called off (or in a window a phone that never heard of the call-off reminded in),
        # it stands, as answered: not a tombstone, whether it was cancelled when read or between that read and this
        # write (the write takes it pending, missed or cancelled; never settled by another slot's answer).
        changes = {"status": status, "status_at": when, "recorded_at": current, "on_time": in_time(when, windows),
                   "skip_reason": reason if status == "skipped" else None, "recorded_by": by, "deleted": False,
                   "deleted_at": None}
        with self.changes.reservation(patient_id, self.occurrences) as held:
            updated = self.occurrences.record(patient_id, key, ("pending", "missed", CANCELLED), changes,
                                              held.first)
        updated = held.as_stored(updated)
        if not updated:  # answered meanwhile, from another phone (or settled by another slot's answer)
            again = self.occurrences.get(patient_id, key) or occurrence
            if again.get("settled_by"):
                return self._answer_to_settled(grant, again, status, reason, by)
            if _same_outcome(grant, again, status, reason, by):
                return _visible(grant, [again])[0]
            raise _other_outcome(grant, again)
        self._outcome_recorded(patient_id, updated)
        return _visible(grant, [updated])[0]

    def _answer_to_settled(self, grant: Grant, settled: dict, status: str, reason: str | None,
                           by: str | None) -> dict:
        """An answer to a slot another slot's answer settled (its reminder re-timed, a phone that had not synced
        answered the old slot): the same outcome as that answer is the same dose, answered 200 with the slot as it
        stands (settled); another is a Conflict. Nothing is written either way: the dose is counted once."""
        settling = self.occurrences.get(grant.patient_id, settled["settled_by"])
        if settling is not None and _same_outcome(grant, settling, status, reason, by):
            return _visible(grant, [settled])[0]
        answered = f"recorded as {settling['status']}" if settling is not None else "answered"
        raise Conflict(f"this reminder was settled by the answer to the same day's reminder before its time "
                       f"changed, {answered}; see current", current=_visible(grant, [settled])[0],
                       version=version_of(settled))

    def _stop_reminding(self, occurrence: dict, reason: str) -> None:
        """Withdraw the pushes queued for an occurrence the patient has answered or snoozed (a nudge waiting for
        its place in the spread, a push waiting to be retried): none may reach the phone after it. Not the push it
        shares with a slot still open (a DST gap), which still reminds of that one: only its own then (its snooze's)."""
        shared = not self.occurrences.others_open_in_push_group(occurrence)
        keys = reminding_keys_of(occurrence, shared=shared)
        if keys:
            self.outbox.withdraw_sources(occurrence["patient_id"], keys, reason)

    def _outcome_recorded(self, patient_id: str, occurrence: dict) -> None:
        """What follows an outcome: a dose taken (or a session ticked off) changes that day's figures, the pushes
        still queued for it are withdrawn, and an alert raised for the occurrence meanwhile may no longer hold.
        An answer on a slot called off settles its replacement (companion.domain.answers), which the same follows:
        its pushes withdrawn, and an alert raised for it (missed meanwhile) judged as answered."""
        replacement = settle_replacement(self.stores, self.changes, occurrence, self.clock())
        self._stop_reminding(occurrence, REMINDER_ANSWERED)
        if replacement is not None:
            self._stop_reminding(replacement, REMINDER_ANSWERED)
        if self.touched is not None:
            self.touched.dates(patient_id, {date.fromisoformat(occurrence["local_date"])}, "reminder_outcome",
                               reach_back=True)
        else:  # (TouchedDays changes the patient's today itself)
            self.today.touch([patient_id])
        if self.on_outcome is not None:
            self.on_outcome(patient_id, occurrence)
            if replacement is not None:
                self.on_outcome(patient_id, {**replacement, "status": occurrence["status"],
                                             "status_at": occurrence["status_at"]})

    def snooze(self, grant: Grant, key: str, minutes: int) -> dict:
        """Remind again in `minutes`, counted from the due time if it has not come yet (never past the end
        of the completion window); the answer as the caller may see it."""
        patient_id = grant.patient_id
        occurrence = self._open_occurrence(patient_id, key)
        until = snoozed_until(as_slot(occurrence), self.clock(), minutes)
        if until is None:
            raise Conflict("the time for this reminder has passed; record it as done or skipped instead")
        with self.changes.reservation(patient_id, self.occurrences) as held:
            updated = self.occurrences.record(patient_id, key, ("pending",), {"snoozed_until": until}, held.first)
        updated = held.as_stored(updated)
        if not updated:  # answered (or missed, or called off) since it was read: as it stands now
            again = self.occurrences.get(patient_id, key)
            if again is None or again["status"] == CANCELLED:
                raise NotFound("no such reminder occurrence")
            if again["status"] == "pending":  # (brought back meanwhile: a move undone, a revival)
                raise Contended("this reminder changed just now; try again")
            raise _other_outcome(grant, again)
        self._stop_reminding(occurrence, REMINDER_SNOOZED)  # a snooze holds back every push planned before it
        self.today.touch([patient_id])
        return _visible(grant, [updated])[0]

    def mark_missed(self, now_utc: datetime) -> int:
        """Every pending occurrence whose completion window has closed is now missed; returns how many."""
        closed = self.occurrences.closed_at(now_utc, limit=100_000)
        return len(mark_closed_missed(self.stores, self.changes, closed, now_utc))


def _restorable(stored: dict, doc: dict, current: datetime) -> bool:
    """Whether a stored slot a zone change jumped over and kept (pending on the new clock, or missed because of the
    move) is due again, now or later, on the clock of a zone the patient is back in (the move undone the same day:
    a phone flipping zones near a border, a wrong zone corrected): it is moved there, pending, to be pushed and
    recorded at its time. Never one the patient answered, nor one that went missed as any other does."""
    return (stored.get("skipped_by_move_at") is not None and doc["due_at"] >= current
            and (stored["status"] == "pending"
                 or (stored["status"] == "missed" and stored.get("missed_reason") == TIME_ZONE_CHANGE)))


def _basis(patient: Account, reminders: list[dict]) -> tuple:
    """What a patient's occurrences are computed from, as versions: their profile's (zone, quiet hours) and each
    active reminder's."""
    return patient.profile_version, sorted((r["_id"], r.get("seq")) for r in reminders)


def _same_outcome(grant: Grant, stored: dict, status: str, reason: str | None, by: str | None) -> bool:
    """Whether ``status`` (with ``reason``, for a skip) is the outcome ``stored`` has: a retry, or another phone
    saying the same. Two reasons are the same when they differ only in spacing or case; any other reason would
    be dropped unseen. A caller who may not read the patient's own words is never compared with a reason
    someone else gave (the answer would tell them whether a guess at it was right): their skip of a skipped
    occurrence is the same only if they gave the reason recorded themselves (their retry)."""
    if stored["status"] != status:
        return False
    if status != "skipped":
        return True
    if not sees_free_text(grant) and (by is None or stored.get("recorded_by") != by):
        return False
    return _as_said(stored.get("skip_reason")) == _as_said(reason)


def _as_said(reason: str | None) -> str:
    return " ".join((reason or "").split()).casefold()


def _other_outcome(grant: Grant, stored: dict) -> Conflict:
    if stored["status"] != "skipped" or sees_free_text(grant):
        detail = (f"this reminder was already recorded as {stored['status']}"
                  + (", for another reason" if stored["status"] == "skipped" else "") + "; see current")
    else:
        detail = ("this reminder was already recorded as skipped, by someone else: the reason they gave is not "
                  "shown to you, and yours was not recorded; see current")
    return Conflict(detail, current=_visible(grant, [stored])[0], version=version_of(stored))


def _visible(grant: Grant, occurrences: list[dict]) -> list[dict]:
    if sees_free_text(grant):
        return occurrences
    return [without_free_text(o, ("skip_reason",)) for o in occurrences]
