"""Reminders and their occurrences.

An occurrence's id is derived from the reminder id + local date + local time
(companion.domain.schedules.occurrence_id_for), and (reminder_id, local_date,
local_time) is unique, so materializing the same window twice, or from two workers at once,
stores each occurrence once.

Both are synced to the app (companion.store.feeds): every change the app can see carries the patient's
next change number in ``seq`` (a reminder's version). An occurrence its schedule no longer has is not
deleted but *cancelled*: a tombstone (``status: cancelled``, ``deleted: true``) that the feed hands to
the app, and that comes back to life if the schedule has the slot again; but not one *settled* by another
slot's answer (``settled_by``: companion.domain.answers). The scheduler's own bookkeeping (``nudges_sent``,
``missed_summary``) is not a change the app sees and takes no number.

What answers read beside the moment: ``moved_from`` (the windows a slot was moved later from), ``called_off_at``
(when it was cancelled, kept once an answer brings it back), ``called_off_by`` (the change that cancelled it),
``made_at`` (when it was made or brought back) and ``made_by`` (the change that made it new; None when brought back).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from datetime import datetime, timedelta

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import to_millis
from companion.domain.errors import Conflict
from companion.domain.schedules import MAX_COMPLETION_WINDOW_MINUTES
from companion.store import feeds
from companion.store.batches import already_stored, chunks, find_among_patients, insert_new, oldest_first

INDEXES = {
    "reminders": [IndexModel([("patient_id", ASCENDING), ("active", ASCENDING)], name="patient_active"),
                  feeds.feed_index()],
    "reminder_occurrences": [
        IndexModel([("reminder_id", ASCENDING), ("local_date", ASCENDING), ("local_time", ASCENDING)],
                   unique=True, name="reminder_local_unique"),
        IndexModel([("patient_id", ASCENDING), ("due_at", ASCENDING)], name="patient_due"),
        feeds.feed_index(),
        feeds.tombstone_index(),
        IndexModel([("status", ASCENDING), ("window_ends_at", ASCENDING)], name="status_window"),
        IndexModel([("local_date", ASCENDING), ("kind", ASCENDING)], name="day_kind"),  # the adherence job's doses
        IndexModel([("missed_summary", ASCENDING)], name="missed_summary"),  # summaries still to queue
    ],
}
MAX_REMINDERS = 50  # active ones read per patient; keeps materialization bounded
MAX_OCCURRENCES = 5000
CANCELLED = "cancelled"
DUE, QUEUED = "due", "queued"  # an occurrence's missed_summary: its summary push still to queue, or queued
LIVE = {"deleted": {"$ne": True}}


class Reminders(feeds.SyncedCollection):
    def __init__(self, db: Database):
        self.col = db.reminders

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def stop_all(self, patient_id: str, at: datetime) -> int:
        """Stop every reminder of the patient (a closed account: kept with the record, nothing more planned)."""
        return self.col.update_many({"patient_id": patient_id, "active": True},
                                    {"$set": {"active": False, "updated_at": at}}).modified_count

    def create(self, patient_id: str, fields: dict, at: datetime, seq: int, reminder_id: str | None = None) -> dict:
        """Insert a reminder (numbered ``seq``); with a ``reminder_id`` derived from a request, a repeat of that
        request gets back the reminder the first attempt stored. Conflict when that id is another patient's
        reminder or one of another kind: what is answered is always what is stored."""
        at = to_millis(at)  # as stored: the answer is what later reads show
        doc = {"_id": reminder_id or str(ObjectId()), "patient_id": patient_id, **fields, "active": True,
               "created_at": at, "updated_at": at, "seq": seq}
        try:
            self.col.insert_one(doc)
        except DuplicateKeyError:
            if reminder_id is None:
                raise
            stored = already_stored(self.col, {"_id": reminder_id})
            if (stored["patient_id"], stored.get("kind")) != (patient_id, fields.get("kind")):
                raise Conflict("this Idempotency-Key made another reminder; send this one with a new key") from None
            return stored
        return doc

    def get(self, patient_id: str, reminder_id: str) -> dict | None:
        return self.col.find_one({"_id": reminder_id, "patient_id": patient_id})

    def active_of(self, patient_id: str) -> list[dict]:
        """The patient's active reminders, oldest first: at most ``MAX_REMINDERS`` (creating or restarting one
        beyond companion.services.reminders.MAX_ACTIVE is refused), which bounds materialization. Stopped
        reminders are under no cap (stopping keeps a reminder with its history): see :meth:`listed`."""
        return list(self.col.find({"patient_id": patient_id, "active": True})
                    .sort([("created_at", ASCENDING), ("_id", ASCENDING)]).limit(MAX_REMINDERS))

    def listed(self, patient_id: str, limit: int, after: tuple[str, datetime, str] | None = None) -> list[dict]:
        """At most ``limit`` of the patient's reminders in the order their list shows them: the active ones,
        oldest first (by ``created_at``, then ``_id``), then the stopped ones, the most recently stopped (or
        changed) first (by ``updated_at``, then ``_id``, both descending). From the start, or after the place a
        previous page ended on, ``after`` = (its part, ``active`` or ``stopped``; its sort key; its id): a keyset in
        each part, so that a reminder stopped between two pages (which leaves the active part for the stopped
        one's head) shifts none of those still to come."""
        part, at, reminder_id = after or ("active", None, None)
        found: list[dict] = []
        if part == "active":
            query: dict = {"patient_id": patient_id, "active": True}
            if at is not None:
                query |= {"created_at": {"$gte": at},
                          "$or": [{"created_at": {"$gt": at}}, {"_id": {"$gt": reminder_id}}]}
            found = list(self.col.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))
            if len(found) >= limit:
                return found
            at = None  # the stopped part from its start
        query = {"patient_id": patient_id, "active": False}
        if at is not None:
            query |= {"updated_at": {"$lte": at}, "$or": [{"updated_at": {"$lt": at}}, {"_id": {"$lt": reminder_id}}]}
        return found + list(self.col.find(query).sort([("updated_at", DESCENDING), ("_id", DESCENDING)])
                            .limit(limit - len(found)))

    def every_one_of(self, patient_id: str, limit: int) -> list[dict]:
        """Up to ``limit`` of the patient's reminders, active and stopped, oldest first (the patient's download)."""
        return list(self.col.find({"patient_id": patient_id}).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
                    .limit(limit))

    def count_active(self, patient_id: str) -> int:
        return self.col.count_documents({"patient_id": patient_id, "active": True})

    def by_ids(self, reminder_ids: Iterable[str]) -> dict[str, dict]:
        """The reminders named, by id (only the fields the scheduler needs)."""
        found: dict[str, dict] = {}
        for part in chunks(sorted(set(reminder_ids))):
            for doc in self.col.find({"_id": {"$in": part}}, {"repeat": 1, "kind": 1, "completion_window_min": 1,
                                                              "active": 1, "updated_at": 1}):
                found[doc["_id"]] = doc
        return found

    def titles(self, patient_id: str) -> dict[str, dict]:
        """Each of the patient's reminders' kind, title and state, by id."""
        return {r["_id"]: r for r in self.col.find({"patient_id": patient_id}, {"kind": 1, "title": 1, "active": 1})
                .limit(200)}

    def patients_with_active(self, changed_since: datetime | None = None) -> list[str]:
        """Every patient with at least one active reminder (and, with ``changed_since``, every patient with a
        reminder changed or stopped since then)."""
        match = {"active": True} if changed_since is None else {
            "$or": [{"active": True}, {"updated_at": {"$gte": changed_since}}]}
        rows = self.col.aggregate([{"$match": match}, {"$group": {"_id": "$patient_id"}}])
        return [row["_id"] for row in rows]

    def update(self, patient_id: str, reminder_id: str, changes: dict, at: datetime, *, seq: int,
               version: int) -> dict | None:
        """Apply ``changes`` if the reminder is still at ``version``; None otherwise."""
        return self.col.find_one_and_update({"_id": reminder_id, "patient_id": patient_id,
                                             **feeds.at_version(version)},
                                            {"$set": {**changes, "updated_at": at, "seq": seq}},
                                            return_document=ReturnDocument.AFTER)


class Occurrences(feeds.SyncedCollection):
    def __init__(self, db: Database):
        self.col = db.reminder_occurrences

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def delete_unanswered(self, patient_id: str, *, still_open_at: datetime) -> int:
        """Delete the patient's occurrences still pending whose window was still open at ``still_open_at`` (a
        closed account: what was answered or missed is its dose history, kept with the record)."""
        return self.col.delete_many({"patient_id": patient_id, "status": "pending",
                                     "window_ends_at": {"$gt": still_open_at}}).deleted_count

    def pending_closed_by(self, patient_id: str, at: datetime) -> list[dict]:
        """The patient's occurrences still pending whose completion window had closed by ``at``, all of them."""
        return list(self.col.find({"patient_id": patient_id, "status": "pending", "window_ends_at": {"$lte": at}}))

    def insert_new(self, docs: list[dict]) -> int:
        """Insert occurrences, ignoring those already stored; returns how many were new."""
        return len(docs) - len(insert_new(self.col, docs))

    def pending_from(self, patient_id: str, start: datetime, end: datetime | None = None) -> list[dict]:
        due: dict = {"$gte": start}
        if end is not None:
            due["$lt"] = end
        return list(self.col.find({"patient_id": patient_id, "status": "pending", "due_at": due}).limit(5000))

    def by_ids(self, ids: list[str]) -> dict[str, dict]:
        return {d["_id"]: d for d in self.col.find({"_id": {"$in": ids}}).limit(len(ids) or 1)}

    def move_pending(self, occurrence: str, fields: dict, seq: int, left: dict | None = None) -> bool:
        """Change a still-pending occurrence (its moment: due_at, window_ends_at, notify_at, zone, push_with;
        or its status, for a slot a zone change jumped over). ``left``: the window it is moved from (due_at,
        window_ends_at), kept in ``moved_from`` (phones that did not sync may still show it there)."""
        return self.col.update_one({"_id": occurrence, "status": "pending"},
                                   {"$set": {**fields, "seq": seq}, **_keeping(left)}).modified_count == 1

    def restore_kept(self, occurrence: str, fields: dict, seq: int, missed_reason: str,
                     left: dict | None = None) -> bool:
        """Change a slot a zone change jumped over and kept (``skipped_by_move_at`` set) that is still pending, or
        still missed for ``missed_reason`` (the move), to ``fields`` (a conditional update: never one the patient
        has answered meanwhile, nor one missed as any other is); ``left`` as for ``move_pending``."""
        return self.col.update_one({"_id": occurrence, "skipped_by_move_at": {"$ne": None},
                                    "$or": [{"status": "pending"},
                                            {"status": "missed", "missed_reason": missed_reason}]},
                                   {"$set": {**fields, "seq": seq}, **_keeping(left)}).modified_count == 1

    def cancel_pending(self, ids: list[str], first_seq: int, at: datetime, *, by: str | None = None) -> int:
        """Cancel these occurrences where still pending (tombstones numbered from ``first_seq``). ``called_off_at``
        keeps the moment once an answer has brought one back (``status_at`` is then the answer's), and
        ``called_off_by`` the change (``by``) that called them off: its new slots are their replacements."""
        return sum(self.col.update_one({"_id": key, "status": "pending"}, {"$set": {
            "status": CANCELLED, "deleted": True, "deleted_at": at, "status_at": at, "called_off_at": at,
            "called_off_by": by, "seq": first_seq + n}}
        ).modified_count for n, key in enumerate(ids))

    def revive(self, doc: dict, seq: int, left: dict | None = None) -> bool:
        """Bring a cancelled occurrence back as ``doc`` (its schedule has the slot again); ``left`` as for
        ``move_pending``. Never one an answer to another slot settled (``settle``): that dose was answered."""
        fields = {k: v for k, v in doc.items() if k != "_id"}
        return self.col.update_one({"_id": doc["_id"], "status": CANCELLED, "settled_by": None},
                                   {"$set": {**fields, "deleted": False, "deleted_at": None, "called_off_at": None,
                                             "called_off_by": None, "seq": seq}, **_keeping(left)}).modified_count == 1

    def settle(self, occurrence: str, by: str, seq: int, at: datetime) -> dict | None:
        """Call off a slot still pending or missed because the answer to ``by`` (the same reminder's slot of the same
        day, called off when its time changed) stands for it: a tombstone naming ``by`` in ``settled_by``, which
        materializing never brings back (companion.domain.answers). None if it was answered meanwhile."""
        return self.col.find_one_and_update(
            {"_id": occurrence, "status": {"$in": ["pending", "missed"]}},
            {"$set": {"status": CANCELLED, "deleted": True, "deleted_at": at, "status_at": at, "settled_by": by,
                      "seq": seq}}, return_document=ReturnDocument.AFTER)

    def of_reminder_on(self, reminder_id: str, local_date: str) -> list[dict]:
        """Every occurrence of a reminder on a local date, cancelled ones too (a handful: its times that day)."""
        return list(self.col.find({"reminder_id": reminder_id, "local_date": local_date}).limit(MAX_OCCURRENCES))

    def between(self, patient_id: str, start: datetime, end: datetime, limit: int = 5000) -> list[dict]:
        """The patient's occurrences due in [start, end), cancelled ones left out, in time order."""
        return list(self.col.find({"patient_id": patient_id, "due_at": {"$gte": start, "$lt": end}, **LIVE})
                    .sort([("due_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def get(self, patient_id: str, occurrence: str) -> dict | None:
        return self.col.find_one({"_id": occurrence, "patient_id": patient_id})

    def record(self, patient_id: str, occurrence: str, allowed_from: tuple[str, ...], changes: dict,
               seq: int) -> dict | None:
        """Change an occurrence only if it is still in one of the allowed statuses (a conditional update), and not
        settled by another slot's answer (``settle``)."""
        return self.col.find_one_and_update(
            {"_id": occurrence, "patient_id": patient_id, "status": {"$in": list(allowed_from)}, "settled_by": None},
            {"$set": {**changes, "seq": seq}}, return_document=ReturnDocument.AFTER)

    def answered_earlier(self, patient_id: str, occurrence: str, status: str, at: datetime, on_time: bool,
                         seq: int) -> dict | None:
        """The same outcome answered from another phone, at an earlier moment than the one recorded: that moment
        stands (a conditional update: only while the recorded one is later)."""
        return self.col.find_one_and_update(
            {"_id": occurrence, "patient_id": patient_id, "status": status, "status_at": {"$gt": at}},
            {"$set": {"status_at": at, "on_time": on_time, "seq": seq}}, return_document=ReturnDocument.AFTER)

    def newest_between(self, patient_id: str, since: datetime, until: datetime, limit: int = 1000) -> list[dict]:
        """The patient's occurrences due in [since, until), newest first (cancelled ones left out)."""
        return list(self.col.find({"patient_id": patient_id, "due_at": {"$gte": since, "$lt": until}, **LIVE})
                    .sort("due_at", DESCENDING).limit(limit))

    def due_in_order(self, patient_id: str, start: datetime, end: datetime, kind: str | None = None) -> Iterator[dict]:
        """Every occurrence of the patient (of one ``kind``, if given) due in [start, end], oldest first, read a
        page at a time on ``patient_due`` (cancelled ones left out)."""
        query = {"patient_id": patient_id, **LIVE, **({"kind": kind} if kind is not None else {})}
        return oldest_first(self.col, query, "due_at", start, end)

    def doses_taken(self, patient_id: str, local_date: str) -> list[dict]:
        """The patient's medication occurrences of a local date marked done."""
        return list(self.col.find({"patient_id": patient_id, "kind": "medication", "status": "done",
                                   "local_date": local_date}).limit(MAX_OCCURRENCES))

    def doses_taken_on(self, local_dates: list[str], patient_ids: Iterable[str] | None = None) -> Iterator[dict]:
        """Medication occurrences marked done on these local dates, of every patient or of ``patient_ids`` (a
        bounded ``$in`` at a time)."""
        return find_among_patients(self.col, {"kind": "medication", "status": "done", "local_date": {"$in": local_dates}},
                                   {"patient_id": 1, "local_date": 1, "due_at": 1}, patient_ids)

    # The scheduler's view: what is due now, and what has been missed.
    def open_at(self, at: datetime) -> Iterator[dict]:
        """Pending occurrences already due whose completion window is still open at ``at``."""
        return self.col.find({"status": "pending", "window_ends_at": {"$gt": at}, "due_at": {"$lte": at}}
                             ).sort("due_at", ASCENDING)

    def held_pushes(self, leaders: Iterable[str], at: datetime) -> dict[str, dict]:
        """Of these occurrences (each named by a reminder push's source key), those whose pushes must not go at
        ``at``: answered or called off, or snoozed to a later time, none of whose push group is still pending
        without them (a DST gap). ``{occurrence: {_id, status, snoozed_until, ...}}``: one query for all, and one
        more for the push groups of those it finds."""
        found = list(self.held_alone(leaders, at).values())
        pending = self._pending_in_groups(found)
        held: dict[str, dict] = {}
        for doc in found:
            group = pending.get((doc["reminder_id"], doc["local_date"], doc.get("push_with") or doc["_id"]), [])
            if not any(other["_id"] != doc["_id"] for other in group):
                held[doc["_id"]] = doc
        return held

    def held_alone(self, ids: Iterable[str], at: datetime) -> dict[str, dict]:
        """Of these occurrences, those answered or called off, or snoozed to a later time, whatever the rest of their
        push group (for the pushes that are theirs alone: a snooze's), by id; one query."""
        found: dict[str, dict] = {}
        for part in chunks(sorted(set(ids))):
            found.update((doc["_id"], doc) for doc in self.col.find(
                {"_id": {"$in": part}, "$or": [{"status": {"$in": ["done", "skipped", CANCELLED]}},
                                               {"status": "pending", "snoozed_until": {"$gt": at}}]},
                {"status": 1, "reminder_id": 1, "local_date": 1, "snoozed_until": 1, "push_with": 1}))
        return found

    def _pending_in_groups(self, members: list[dict]) -> dict[tuple, list[dict]]:
        """The pending occurrences of these occurrences' push groups (the same reminder and local date, sharing the
        leader), by (reminder, local date, leader)."""
        pending: dict[tuple, list[dict]] = {}
        for part in chunks(members):
            groups = sorted({doc.get("push_with") or doc["_id"] for doc in part})
            for other in self.col.find({"reminder_id": {"$in": sorted({doc["reminder_id"] for doc in part})},
                                        "local_date": {"$in": sorted({doc["local_date"] for doc in part})},
                                        "status": "pending",
                                        "$or": [{"_id": {"$in": groups}}, {"push_with": {"$in": groups}}]},
                                       {"reminder_id": 1, "local_date": 1, "push_with": 1}):
                group = other.get("push_with") or other["_id"]
                pending.setdefault((other["reminder_id"], other["local_date"], group), []).append(other)
        return pending

    def push_groups_open_besides(self, occurrences: list[dict], besides: Collection[str]) -> set[str]:
        """The leaders of these occurrences' push groups (a DST gap) that still have a pending occurrence other
        than those named in ``besides`` (the ones being called off together); one query per thousand."""
        pending = self._pending_in_groups(occurrences)
        return {leader for (_, _, leader), group in pending.items() if any(o["_id"] not in besides for o in group)}

    def others_open_in_push_group(self, occurrence: dict) -> bool:
        """Whether another occurrence sharing ``occurrence``'s push (a DST gap: the same reminder and local date,
        ``push_with`` naming the first) is still pending."""
        leader = occurrence.get("push_with") or occurrence["_id"]
        return self.col.find_one({"reminder_id": occurrence["reminder_id"], "local_date": occurrence["local_date"],
                                  "status": "pending", "$and": [{"_id": {"$ne": occurrence["_id"]}},
                                                               {"$or": [{"_id": leader}, {"push_with": leader}]}]},
                                 {"_id": 1}) is not None

    def open_for(self, patient_id: str, at: datetime) -> list[dict]:
        """The patient's pending occurrences already due whose completion window is still open at ``at``."""
        return list(self.col.find({"patient_id": patient_id, "status": "pending", "window_ends_at": {"$gt": at},
                                   "due_at": {"$lte": at}}).limit(MAX_OCCURRENCES))

    def closed_at(self, at: datetime, limit: int) -> list[dict]:
        """Pending occurrences whose completion window had closed by ``at``."""
        return list(self.col.find({"status": "pending", "window_ends_at": {"$lte": at}})
                    .sort("window_ends_at", ASCENDING).limit(limit))

    def note_nudge(self, occurrence_id: str, count: int) -> None:
        """Record that ``count`` nudges have gone out for an occurrence."""
        self.col.update_one({"_id": occurrence_id}, {"$max": {"nudges_sent": count}})

    def mark_one_missed(self, occurrence_id: str, at: datetime, seq: int, summary_due: bool = False) -> bool:
        """Turn a still-pending occurrence into `missed`; False when the patient recorded it meanwhile. With
        ``summary_due``, the same write notes that a summary push is still to be queued for it
        (``missed_summary: "due"``), so that a pass stopped before queuing it leaves the note for the next."""
        fields = {"status": "missed", "status_at": at, "seq": seq, **({"missed_summary": DUE} if summary_due else {})}
        result = self.col.update_one({"_id": occurrence_id, "status": "pending"}, {"$set": fields})
        return result.modified_count == 1

    def summaries_due(self, limit: int) -> list[dict]:
        """Missed occurrences whose summary push is still to be queued (``mark_one_missed``)."""
        return list(self.col.find({"missed_summary": DUE}).limit(limit))

    def note_summarised(self, occurrence_ids: list[str]) -> None:
        """The summary push of these occurrences is queued (scheduler bookkeeping: takes no change number)."""
        for part in chunks(occurrence_ids):
            self.col.update_many({"_id": {"$in": part}, "missed_summary": DUE}, {"$set": {"missed_summary": QUEUED}})

    def due_and_ended_since(self, kind: str, ended_since: datetime, due_before: datetime,
                            statuses: tuple[str, ...]) -> list[dict]:
        """Occurrences of ``kind`` due before ``due_before`` whose completion window ended at ``ended_since`` or
        later (or is still open) and whose status is one of ``statuses``, all of them (the cursor pages through
        them). Read on the status_window index within bounds at both ends (a window ends at most the longest
        completion window after its occurrence was due): never every missed occurrence ever kept."""
        longest = timedelta(minutes=MAX_COMPLETION_WINDOW_MINUTES)
        return list(self.col.find({"status": {"$in": list(statuses)},
                                   "window_ends_at": {"$gte": ended_since, "$lt": due_before + longest},
                                   "kind": kind, "due_at": {"$lt": due_before}}))


def _keeping(left: dict | None) -> dict:
    """The part of an update that keeps the window a slot leaves among those it was shown with (``moved_from``)."""
    return {"$addToSet": {"moved_from": left}} if left else {}
