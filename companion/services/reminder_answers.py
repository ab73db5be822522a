"""The stored side of companion.domain.answers: the windows an occurrence was shown with, and settling the
replacement of a slot called off that the patient answered all the same (a phone that had not synced the change).

An occurrence keeps the windows it was moved later from (``moved_from``: a move of time zone westward, a slot a move
east kept that a move undone brought back, a slot called off and made again later), and a cancelled one the moment
it was called off (``called_off_at``, kept once an answer brings it back) and by which change (``called_off_by``:
one id per run of materializing). Occurrences are made with ``made_at``, and those a run made new with its id
(``made_by``), which tells a replacement (made by the change that called the slot off) from the slots of the day
the reminder had already (kept, or brought back: a reminder stopped and started again).
"""

from __future__ import annotations

from datetime import datetime

from companion.domain.answers import DaySlot, Window, replacement
from companion.services.sync import Changes
from companion.store.reminders import CANCELLED
from companion.store.stores import Stores

ANSWERED = ("done", "skipped")  # the patient's outcomes: recorded once, never changed


def windows_of(occurrence: dict) -> list[Window]:
    """Every window the occurrence was shown with: its own, and those it was moved from."""
    return [Window(occurrence["due_at"], occurrence["window_ends_at"])] + [
        Window(left["due_at"], left["window_ends_at"]) for left in occurrence.get("moved_from") or ()]


def called_off_at(occurrence: dict) -> datetime | None:
    """When a cancelled occurrence (or one answered after it was cancelled) was called off; None if never (a
    cancellation stored before ``called_off_at`` was noted: its ``status_at``, while it is cancelled)."""
    if occurrence.get("called_off_at") is not None:
        return occurrence["called_off_at"]
    return occurrence.get("status_at") if occurrence["status"] == CANCELLED else None


def left_behind(stored: dict, moved_to: dict) -> dict | None:
    """The window a stored occurrence leaves when it becomes ``moved_to``, if it is moved later (a move of time
    zone westward, say): a phone that did not sync reminds there, before the slot is due now, and the answer given
    then would be refused as early. None when it is not moved later: a stale phone's answer to a slot moved earlier
    (a move east) comes after its time now, is taken anyway, and is judged on its window now, as it always was."""
    if stored["due_at"] >= moved_to["due_at"]:
        return None
    return {"due_at": stored["due_at"], "window_ends_at": stored["window_ends_at"]}


def _state(occurrence: dict) -> str:
    if occurrence["status"] in ANSWERED:
        return "answered"
    return "called_off" if occurrence["status"] == CANCELLED else "open"


def settle_replacement(stores: Stores, changes: Changes, answered: dict, at: datetime) -> dict | None:
    """Settle the replacement of ``answered`` (an occurrence answered after, or just before, it was called off) if
    it has one still open (companion.domain.answers.replacement): returns it as stored now (settled, by this call or
    by an earlier one for the same answer), or None. Nothing for an answer on a slot never called off."""
    off = called_off_at(answered)
    if off is None or answered["status"] not in ANSWERED:
        return None
    day = stores.occurrences.of_reminder_on(answered["reminder_id"], answered["local_date"])
    found = replacement(answered["_id"], answered["due_at"], answered.get("called_off_by"), [
        DaySlot(o["_id"], o["due_at"], o.get("made_at"), _state(o), o.get("settled_by"), o.get("made_by"))
        for o in day])
    if found is None:
        return None
    stored = next(o for o in day if o["_id"] == found.occurrence_id)
    if found.settled_by == answered["_id"]:
        return stored
    with changes.reservation(answered["patient_id"], stores.occurrences) as held:
        settled = stores.occurrences.settle(found.occurrence_id, answered["_id"], held.first, at)
    return held.as_stored(settled)
