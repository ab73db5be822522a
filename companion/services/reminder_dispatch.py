"""From due reminder occurrences to push notifications in the outbox, and missed occurrences.

Every push a reminder occurrence may cause has a planned time and a stable source key:

- the reminder itself at ``notify_at`` (``due_at`` moved past quiet hours) (``reminder:<occurrence>``);
- the n-th nudge at ``due_at + n * repeat.every_min`` while it is still not done (``...:repeat:<n>``; for a slot a
  move undone brought back, ``...:repeat:<n>@<due_at epoch>``: its nudges follow the restored time, whatever went
  while it sat on the other clock, ``companion.domain.notifications.nudge_key``);
- a snoozed reminder at ``snoozed_until`` (``...:snooze:<time>``); a snooze holds back every push planned
  before it that has not gone yet (snoozed before it was due: nothing comes until the snooze time);
- one re-send, ``reminder_resend_after`` after the reminder went out, when the app never confirmed
  receiving it, the reminder has no nudges of its own and the patient has not snoozed it (a snooze shows the
  reminder arrived, and reminds again itself) (``...:resend``).

A push is created in the outbox only while ``planned <= now < planned + grace`` and the completion
window is open, under the outbox's unique (source key, recipient): running the dispatch twice, on two
workers at once, or again after a restart creates nothing new; after an outage shorter than the grace
the push goes out late, once; after a longer one it does not go out at all, and the occurrence is
later marked missed with at most one summary per patient and day. So is one whose pushes were queued but
reached no phone (the sender or FCM down until its window closed: they expire unsent).

Slots of one reminder due at the same instant (the DST gap) share the push of the earliest: the others
carry ``push_with`` and plan none of their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from companion.clock import Clock, now
from companion.domain.notifications import (
    initial_key,
    nudge_key,
    outside_quiet_hours,
    reminder_kind,
    reminding_keys_of,
    send_offset,
    snooze_key,
    ttl_for,
)
from companion.domain.people import Account
from companion.domain.schedules import ReminderOccurrence, Repeats, nudge_times
from companion.services.item_failures import ItemFailures
from companion.services.reminders import call_off, mark_closed_missed, unplanned
from companion.services.sync import Changes
from companion.settings import Settings
from companion.store.outbox import EXPIRED, SCHEDULED, SENT, NotificationRequest, Outbox
from companion.store.stores import Stores

logger = logging.getLogger(__name__)

MISSED_SUMMARY_KIND = "generic_update"
MISSED_BATCH = 5000


@dataclass(frozen=True)
class PlannedPush:
    """One push an occurrence should cause: what, when, and until when it is worth anything."""

    source_key: str
    kind: str
    send_at: datetime
    window_ends_at: datetime
    nudge: int = 0


def _leader(occurrence: dict) -> str:
    """The occurrence whose pushes this one's are: itself, or the one whose push it shares."""
    return occurrence.get("push_with") or occurrence["_id"]


def planned_pushes(occurrence: dict, reminder: dict | None) -> list[PlannedPush]:
    """Every push ``occurrence`` may cause apart from the re-send (which depends on a receipt).

    The first push goes at ``notify_at`` (the due time, or the end of the patient's quiet hours);
    nudges that would come before it are dropped, since the first push has not even gone yet. A snooze
    holds back what was planned before it. An occurrence sharing another's push (``push_with``, a DST gap)
    plans that one's pushes, under its keys: whichever of the two is still open when they are due causes
    them, once.
    """
    key = initial_key(_leader(occurrence))
    ends = occurrence["window_ends_at"]
    times = nudge_times(as_domain_occurrence(occurrence), repeats_of(reminder))
    first = max(times[0], occurrence.get("notify_at") or times[0])
    kind, repeat_kind = reminder_kind(occurrence.get("kind")), reminder_kind(occurrence.get("kind"), nudge=True)
    plans = [PlannedPush(key, kind, first, ends)]
    plans += [PlannedPush(nudge_key(occurrence, n), repeat_kind, at, ends, n)
              for n, at in enumerate(times[1:], 1) if at > first]
    snoozed = snooze_push(occurrence)
    if snoozed is not None:  # a nudge planned at its very minute gives way to it
        plans = [p for p in plans if p.send_at > snoozed.send_at] + [snoozed]
    return [p for p in plans if p.send_at < ends]


def snooze_push(occurrence: dict) -> PlannedPush | None:
    """The push a snooze asked for (None without one): once, at the snooze's time; a snooze capped at the
    window's end reminds in its last minute (at the end itself, nothing would go)."""
    snoozed = occurrence.get("snoozed_until")
    if snoozed is None:
        return None
    ends = occurrence["window_ends_at"]
    remind_at = max(min(snoozed, ends - LAST_MINUTE), occurrence["due_at"])
    return PlannedPush(snooze_key(occurrence), reminder_kind(occurrence.get("kind"), nudge=True), remind_at, ends)


LAST_MINUTE = timedelta(minutes=1)


def _in_their_quiet_hours(at: datetime, patient: Account | None) -> bool:
    """Whether ``at`` falls in the patient's quiet hours on the clock they live by then (after a move, the new
    one: an occurrence still open keeps the zone it was due in, the patient's night is where they are)."""
    return patient is not None and patient.quiet_at(at)


def repeats_of(reminder: dict | None) -> Repeats:
    """A stored reminder's ``repeat`` (``{count, every_min}`` or None) as the domain's ``Repeats``."""
    repeat = (reminder or {}).get("repeat") or {}
    return Repeats(int(repeat.get("count") or 0), int(repeat.get("every_min") or 0))


def as_domain_occurrence(occurrence: dict) -> ReminderOccurrence:
    """A stored occurrence (data contract) as the schedules domain's ``ReminderOccurrence``."""
    return ReminderOccurrence(
        reminder_id=occurrence["reminder_id"], local_date=date.fromisoformat(occurrence["local_date"]),
        local_time=time.fromisoformat(occurrence["local_time"]), due_at_utc=occurrence["due_at"],
        window_ends_at_utc=occurrence["window_ends_at"], occurrence_id=occurrence["_id"])


def _in_grace(plan: PlannedPush, now: datetime, grace: timedelta) -> bool:
    return plan.send_at <= now < plan.send_at + grace and now < plan.window_ends_at


@dataclass
class DispatchResult:
    """What one dispatch pass did (``failed``: occurrences that could not be handled, left for the next pass)."""

    examined: int = 0
    scheduled: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    called_off: int = 0  # occurrences of a reminder stopped or gone, cancelled


def _zone_at(patient: Account | None, occurrence: dict, at: datetime) -> ZoneInfo:
    """The patient's zone at ``at`` (from their zone history), or the occurrence's when they have none."""
    return patient.zone_history().zone_at(at) if patient and patient.time_zone else ZoneInfo(occurrence["zone"])


def _existing(outbox: Outbox, wanted: list[tuple[str, dict]]) -> dict[str, dict]:
    """The notifications already created for these (source key, occurrence) pairs, by source key (a
    reminder's pushes all go to the patient)."""
    found = outbox.existing((key, occurrence["patient_id"]) for key, occurrence in wanted)
    return {key: doc for (key, _), doc in found.items()}


def never_reminded(outbox: Outbox, occurrences: list[dict]) -> set[str]:
    """Those of ``occurrences`` (by id) that no reminder reached: no push of any kind got to a phone of the patient,
    the first, one shared, a nudge (after a short outage the latest due one goes instead of the first), a re-send or
    a snooze's. A push reached a phone when it was ``sent``, or when one phone has it and others are still owed it
    (``sent_at``); one queued and never sent reminded nobody: ``expired``, or still ``scheduled`` when its window
    closed (the sender or FCM down while it lasted), ``failed`` (no phone took it) or withdrawn. Not those whose
    first push quiet hours held past their window: they were meant to go unreminded, not missed."""
    return {key for key, pushes in _reminding_pushes(outbox, occurrences).items()
            if not any(doc["state"] == SENT or doc.get("sent_at") is not None for doc in pushes)}


def kept_from_reminding(outbox: Outbox, occurrences: list[dict], now: datetime) -> tuple[set[str], set[str]]:
    """Of ``occurrences``, those (by id) that no reminder reached because reminders were not going out: none queued
    (the worker down past the grace), or each queued one ``expired`` or still waiting, unsent, past its lifetime (the
    sender or FCM down until the window closed). Not one whose push ``failed`` for good: that tells of the patient's
    phones (none registered, FCM refusing them), not of an outage, and the reminder went out as far as it could.

    And, apart, those not known yet (``undecided``): none of their pushes has reached a phone, but one is still
    queued and valid at ``now`` (``scheduled``, unsent, its lifetime not over: the sender a little behind, FCM's
    "not now" to be tried again, a push held for the end of quiet hours). It may still go out: whether the patient
    was reminded is known once it is sent or expired, at the latest when its lifetime ends (by the end of the
    window). Returns (kept, undecided)."""
    kept, undecided = set(), set()
    for key, pushes in _reminding_pushes(outbox, occurrences).items():
        if any(doc["state"] not in (EXPIRED, SCHEDULED) or doc.get("sent_at") is not None for doc in pushes):
            continue
        if any(doc["state"] == SCHEDULED and doc["expires_at"] > now for doc in pushes):
            undecided.add(key)
        else:
            kept.add(key)
    return kept, undecided


def held_past_window(occurrence: dict) -> bool:
    """Whether the patient's quiet hours held an occurrence's first push past the end of its window: no reminder of
    it was planned (its nudges would come before that push, inside the quiet hours too). Only a snooze, which the
    patient asks for in the app, pushes it then."""
    return (occurrence.get("notify_at") or occurrence["due_at"]) >= occurrence["window_ends_at"]


def quiet_through_window(outbox: Outbox, occurrences: list[dict]) -> set[str]:
    """Those of ``occurrences`` (by id) of which no reminder was sent because the patient's quiet hours lasted past
    their window (``held_past_window``), and no snooze's push reached a phone either: the patient was never
    reminded, by their own settings, not by an outage (no summary for them)."""
    held = [o for o in occurrences if held_past_window(o)]
    snoozed = [o for o in held if snooze_key(o)]
    queued = _existing(outbox, [(snooze_key(o), o) for o in snoozed]) if snoozed else {}
    return {o["_id"] for o in held
            if not ((doc := queued.get(snooze_key(o) or "")) and (doc["state"] == SENT or doc.get("sent_at")))}


def _reminding_pushes(outbox: Outbox, occurrences: list[dict]) -> dict[str, list[dict]]:
    """The pushes queued to remind of each of ``occurrences`` (by id), of those a reminder was due for inside their
    window (not those whose first push quiet hours held past it)."""
    queued = _existing(outbox, [(key, o) for o in occurrences for key in reminding_keys_of(o)])
    return {o["_id"]: [queued[key] for key in reminding_keys_of(o) if key in queued] for o in occurrences
            if not held_past_window(o)}


def _resends(candidates: list[dict], reminders: dict[str, dict], sources: dict[str, dict],
             settings: Settings, now: datetime) -> list[tuple[dict, PlannedPush]]:
    plans = []
    for occurrence in candidates:
        if repeats_of(reminders.get(occurrence["reminder_id"])).count > 0:
            continue  # its nudges already remind again
        first = sources.get(initial_key(_leader(occurrence)))
        # A phone has the first push (sent_at; one still owed to another phone that answered "not now" too): its
        # re-send is due, as for one sent to every phone.
        if first is None or first.get("sent_at") is None or first.get("delivered_at") or first.get("opened_at"):
            continue
        plan = PlannedPush(f"{initial_key(_leader(occurrence))}:resend", reminder_kind(occurrence.get("kind"), nudge=True),
                           first["sent_at"] + settings.reminder_resend_after, occurrence["window_ends_at"])
        if occurrence.get("snoozed_until") is not None:
            continue  # snoozed: the push reached the patient (they answered it with a snooze), which reminds again
        if _in_grace(plan, now, settings.reminder_grace):
            plans.append((occurrence, plan))
    return plans


@dataclass
class MissedResult:
    """What one missed-marking pass did."""

    marked: int = 0
    summaries: int = 0
    failed: int = 0


class ReminderDispatch:
    """The scheduler's reminder passes: queue the pushes that are due, mark what was missed."""

    def __init__(self, settings: Settings, stores: Stores, clock: Clock = now, *, changes: Changes | None = None):
        self.settings = settings
        self.stores = stores
        self.clock = clock
        self.changes = changes or Changes(stores, clock)

    def dispatch_due(self) -> DispatchResult:
        """Create the outbox notifications every open occurrence needs now (idempotent). An occurrence that
        cannot be planned (a malformed stored item) is logged, counted and skipped; the rest go out."""
        settings, now = self.settings, self.clock()
        due = self.stores.occurrences
        occurrences = list(due.open_at(now))
        result = DispatchResult(examined=len(occurrences))
        if not occurrences:
            return result
        reminders = self.stores.reminders.by_ids(o["reminder_id"] for o in occurrences)
        # Of a reminder stopped (or gone) with its occurrences left pending: cancelled, never pushed.
        stale = {o["_id"]: o for o in occurrences if unplanned(o, reminders.get(o["reminder_id"]))}
        if stale:
            result.called_off = call_off(self.stores, self.changes, list(stale.values()), now)
            occurrences = [o for o in occurrences if o["_id"] not in stale]
        failures = ItemFailures("reminders-dispatch")
        plans: list[tuple[dict, PlannedPush]] = []
        # A slot that shares another's push leaves it to that one while it is open (ticked off early, it is not;
        # snoozed, it holds back its own pushes, not the other's), all but the push its own snooze asked for.
        open_ids = {o.get("_id") for o in occurrences if not o.get("snoozed_until")}
        pushes_due: list[tuple[dict, list[PlannedPush]]] = []
        for o in occurrences:
            if o.get("push_with") in open_ids:
                planned = failures.attempt(o.get("_id"), lambda o=o: [p for p in [snooze_push(o)] if p])
            else:
                planned = failures.attempt(o.get("_id"),
                                           lambda o=o: planned_pushes(o, reminders.get(o["reminder_id"])))
            due_now = [p for p in planned or () if _in_grace(p, now, settings.reminder_grace)]
            if due_now:
                pushes_due.append((o, due_now))
        # Of the pushes due by now, the latest not held by quiet hours: after a worker outage the first push and
        # the nudges that fell due meanwhile are not sent in one burst (a later one supersedes them, on this pass
        # and the next), and a nudge that quiet hours hold back does not take the place of the push before it.
        for o, due_now in self._without_nudges_in_quiet_hours(pushes_due, now):
            plans.append((o, max(due_now, key=lambda p: p.send_at)))
        usable = [o for o in occurrences if str(o.get("_id")) not in failures.item_ids]
        outbox = self.stores.outbox
        resend_candidates = [o for o in usable if o["due_at"] + settings.reminder_resend_after <= now
                             and o.get("push_with") not in open_ids]
        sources = _existing(outbox, [(p.source_key, o) for o, p in plans]
                            + [(initial_key(_leader(o)), o) for o in resend_candidates])
        resends = _resends(resend_candidates, reminders, sources, settings, now)
        sources.update(_existing(outbox, [(p.source_key, o) for o, p in resends]))
        todo = self._outside_quiet_hours([(o, p) for o, p in plans + resends if p.source_key not in sources], now)
        spread = self._spread_outside_quiet_hours(todo)
        created = outbox.schedule_many([
            NotificationRequest(p.source_key, o["patient_id"], o["patient_id"], p.kind, p.send_at,
                                p.window_ends_at - p.send_at, planned_at=o["due_at"], spread=id(p) in spread,
                                planned_zone=o.get("zone"))
            for o, p in todo])
        for (occurrence, plan), was_created in zip(todo, created, strict=True):
            if was_created:
                result.scheduled += 1
                result.by_kind[plan.kind] = result.by_kind.get(plan.kind, 0) + 1
                if plan.nudge:
                    due.note_nudge(occurrence["_id"], plan.nudge)
        for occurrence, plan in plans:  # a pass stopped between a nudge's push and its note: noted now
            if plan.nudge > (occurrence.get("nudges_sent") or 0) and plan.source_key in sources:
                due.note_nudge(occurrence["_id"], plan.nudge)
        result.failed = len(failures)
        logger.info("reminder dispatch: examined %d, scheduled %s, failed %d, called off %d", result.examined,
                    result.by_kind, result.failed, result.called_off)
        return result

    def _spread_outside_quiet_hours(self, planned: list[tuple[dict, PlannedPush]]) -> set[int]:
        """The pushes (by ``id``) that may take their place in their kind's spread (a few minutes after their
        time, so that not every phone is pushed on the minute): those whose place does not fall in the
        patient's quiet hours. The others go at their time, which was judged against the quiet hours."""
        spread = {id(p): (o, p, send_offset(p.kind, o["patient_id"], ttl_for(p.kind, p.window_ends_at - p.send_at)))
                  for o, p in planned}
        late = {key: value for key, value in spread.items() if value[2] > timedelta(0)}
        if not late:
            return set(spread)
        people = {a.id: a for a in self.stores.users.by_ids({o["patient_id"] for o, _, _ in late.values()})}
        return set(spread) - {key for key, (o, p, offset) in late.items()
                              if _in_their_quiet_hours(p.send_at + offset, people.get(o["patient_id"]))}

    def _without_nudges_in_quiet_hours(self, due: list[tuple[dict, list[PlannedPush]]], now: datetime
                                       ) -> list[tuple[dict, list[PlannedPush]]]:
        """Each occurrence's pushes due now without the nudges that would go in the patient's quiet hours (those
        with none left are left out); the patients' accounts are read only when a nudge is among them."""
        nudging = {o["patient_id"] for o, pushes in due if any(":repeat:" in p.source_key for p in pushes)}
        if not nudging:
            return due
        people = {a.id: a for a in self.stores.users.by_ids(nudging)}
        kept = [(o, [p for p in pushes if ":repeat:" not in p.source_key
                     or not _in_their_quiet_hours(max(p.send_at, now), people.get(o["patient_id"]))])
                for o, pushes in due]
        return [(o, pushes) for o, pushes in kept if pushes]

    def _outside_quiet_hours(self, planned: list[tuple[dict, PlannedPush]], now: datetime
                             ) -> list[tuple[dict, PlannedPush]]:
        """Leave out the nudges and re-sends that would go in the patient's quiet hours: the first push already
        waited for their end (``notify_at``), and a snooze is the patient's own request, but reminding again
        is not worth waking them for (quiet hours hold back what is not urgent). Each is judged at the time it
        would go: its planned time, or now when it is late (a worker back from a short outage: one planned at
        21:58 and queued at 22:10 would go at 22:10)."""
        again = [(o, p) for o, p in planned if ":repeat:" in p.source_key or p.source_key.endswith(":resend")]
        if not again:
            return planned
        people = {a.id: a for a in self.stores.users.by_ids({o["patient_id"] for o, _ in again})}
        held = {id(p) for o, p in again if _in_their_quiet_hours(max(p.send_at, now), people.get(o["patient_id"]))}
        return [(o, p) for o, p in planned if id(p) not in held]

    def mark_missed(self) -> MissedResult:
        """Mark occurrences whose window closed as missed; one summary per patient and day for never-sent ones.

        A patient whose reminders could not go out (the worker was down for longer than the grace) or never reached
        a phone (the sender or FCM was down while their windows lasted: ``never_reminded``) gets one "you have an
        update" push instead of a burst of stale reminders. Whether an occurrence needs one is
        decided before it is marked and written with the mark (one write); the summaries are then queued for
        every occurrence so noted, this pass's and any a stopped pass left, under a key of the patient and their
        local day at the mark, so a pass stopped at any point is finished by the next, with one summary each.
        """
        now = self.clock()
        due = self.stores.occurrences
        closed = due.closed_at(now, MISSED_BATCH)
        newly_missed = mark_closed_missed(self.stores, self.changes, closed, now,
                                          summary_due=never_reminded(self.stores.outbox, closed))
        result = MissedResult(marked=len(newly_missed))
        waiting = due.summaries_due(MISSED_BATCH)
        if not waiting:
            return result
        patients = {a.id: a for a in self.stores.users.by_ids({o["patient_id"] for o in waiting})}
        by_key: dict[str, list[dict]] = {}
        for occurrence in waiting:
            by_key.setdefault(self._summary_key(occurrence, patients.get(occurrence["patient_id"])), []).append(occurrence)
        failures = ItemFailures("reminders-missed")
        for key, occurrences in by_key.items():
            created = failures.attempt(occurrences[0]["_id"], lambda k=key, o=occurrences: self._summary(
                k, o, patients.get(o[0]["patient_id"]), now))
            result.summaries += int(bool(created))
        result.failed = len(failures)
        logger.info("missed occurrences: marked %d, summaries %d, failed %d", result.marked, result.summaries,
                    result.failed)
        return result

    @staticmethod
    def _summary_key(occurrence: dict, patient: Account | None) -> str:
        """The summary an occurrence belongs to: its patient's, of the local day it was marked missed on (their
        clock then), from what is stored, so the pass that queues it derives the same key as any before it."""
        marked = occurrence["status_at"]
        zone = _zone_at(patient, occurrence, marked)
        return f"missed-summary:{occurrence['patient_id']}:{marked.astimezone(zone).date().isoformat()}"

    def _summary(self, key: str, occurrences: list[dict], patient: Account | None, now: datetime) -> bool:
        """Queue the summary ``key`` (once: its key is unique) for ``occurrences``, then note it on them."""
        patient_id = occurrences[0]["patient_id"]
        here = _zone_at(patient, occurrences[0], now)  # where they are now
        # Not in their quiet hours, nor its place in the summaries' spread (then at their end exactly).
        send_at, spread = outside_quiet_hours(MISSED_SUMMARY_KIND, patient_id, now, here,
                                              patient.quiet_hours if patient else None)
        _, created = self.stores.outbox.schedule(source_key=key, recipient_user_id=patient_id, patient_id=patient_id,
                                                 kind=MISSED_SUMMARY_KIND, send_at=send_at, spread=spread)
        self.stores.occurrences.note_summarised([o["_id"] for o in occurrences])
        return created
