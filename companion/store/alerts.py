"""Alerts about a patient: raised once per condition and period, acknowledged by the care team.

An alert is created by **insert** under its unique ``dedup_key`` (e.g. ``missed_tens_session:<patient>:<occurrence>``
or ``electrode_off:<serial>:<patient>:<day>``), so evaluating the same condition again, or on two workers,
raises it once. An alert whose condition no longer holds (late data showed otherwise) is **resolved**:
``resolved_at`` and ``resolved_reason`` are set, once; it is no longer open, and everyone who saw it sees why.

``changed_at``: when what an alert says last changed (raised, told again from another first day, made urgent or
not, acknowledged, resolved, reopened), stamped with the time of the write itself (not the time a pass began), so
that an app listing what changed since its last look sees an escalation or a resolution of an alert raised before
it. Alerts stored before the field existed have none: their ``raised_at`` stands for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now
from companion.store.batches import chunks, newest_first

INDEXES = {
    "alerts": [
        IndexModel([("dedup_key", ASCENDING)], unique=True, name="dedup_unique"),
        IndexModel([("patient_id", ASCENDING), ("raised_at", DESCENDING)], name="patient_raised"),
        # An app asking what changed since its last look (``since``): raised, told again, made urgent,
        # acknowledged, resolved or reopened since.
        IndexModel([("patient_id", ASCENDING), ("changed_at", DESCENDING)], name="patient_changed"),
    ],
    "device_alerts_owed": [],  # read whole (the few events passes could not raise) and by _id
}

LIST_LIMIT = 500
OWED_LIMIT = 5_000  # owed device events a pass reads again (the rest wait for the passes after it)


class Alerts:
    def __init__(self, db: Database, clock: Callable[[], datetime] = now):
        self.col = db.alerts
        self.clock = clock

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def raise_once(self, *, patient_id: str, kind: str, severity: str, text: str, dedup_key: str,
                   shared_with_caregivers: bool, urgent: bool, share_kind: str, period_key: str | None = None,
                   occurred_at: datetime | None = None, device_serial: str | None = None,
                   details: dict | None = None) -> tuple[dict, bool]:
        """Create the alert for ``dedup_key`` unless it exists; returns (alert, created). ``occurred_at``,
        ``device_serial`` and ``details`` are the alert's structured fields (see AlertCandidate)."""
        doc = {"_id": str(ObjectId()), "patient_id": patient_id, "kind": kind, "severity": severity,
               "text": text, "dedup_key": dedup_key, "period_key": period_key, "raised_at": self.clock(),
               "acknowledged_at": None, "acknowledged_by": None, "shared_with_caregivers": shared_with_caregivers,
               "urgent": urgent, "share_kind": share_kind, "notified_at": None, "resolved_at": None,
               "resolved_reason": None, "resolution": None, "occurred_at": occurred_at, "device_serial": device_serial,
               "details": dict(details or {})}
        doc["changed_at"] = doc["raised_at"]
        try:
            self.col.insert_one(doc)
            return doc, True
        except DuplicateKeyError:
            return self.col.find_one({"dedup_key": dedup_key}), False

    def notified_among(self, dedup_keys: list[str]) -> dict[str, dict]:
        """The alerts among ``dedup_keys`` whose notifications are queued, by key: whether each is urgent, resolved
        (and why), escalated (and its escalation's pushes queued), and reopened (and what follows done)."""
        found: dict[str, dict] = {}
        fields = {"dedup_key": 1, "urgent": 1, "resolved_at": 1, "resolution": 1, "escalated_at": 1,
                  "escalation_notified_at": 1, "reopened_at": 1, "reopen_notified_at": 1}
        for part in chunks(sorted(set(dedup_keys))):
            found.update((d["dedup_key"], d) for d in self.col.find({"dedup_key": {"$in": part},
                                                                     "notified_at": {"$ne": None}}, fields))
        return found

    def get(self, patient_id: str, alert_id: str) -> dict | None:
        return self.col.find_one({"_id": alert_id, "patient_id": patient_id})

    def share_kinds_of(self, alert_ids: Iterable[str]) -> dict[str, str | None]:
        """Each alert's share kind (the consent a caregiver needs to hear of it), by id."""
        return {d["_id"]: d.get("share_kind") for d in self.col.find({"_id": {"$in": sorted(set(alert_ids))}},
                                                                     {"share_kind": 1})}

    def settled_among(self, alert_ids: Iterable[str]) -> tuple[set[str], set[str]]:
        """Those of ``alert_ids`` whose alert is resolved, and those whose alert is acknowledged (looked up by
        ``_id``)."""
        resolved: set[str] = set()
        acknowledged: set[str] = set()
        for part in chunks(sorted(set(alert_ids))):
            for doc in self.col.find({"_id": {"$in": part}}, {"resolved_at": 1, "acknowledged_at": 1}):
                if doc.get("resolved_at") is not None:
                    resolved.add(doc["_id"])
                if doc.get("acknowledged_at") is not None:
                    acknowledged.add(doc["_id"])
        return resolved, acknowledged

    def mark_notified(self, alert_id: str) -> None:
        """Note that the alert's notifications are in the outbox (so they are not fanned out again)."""
        self.col.update_one({"_id": alert_id}, {"$set": {"notified_at": self.clock()}})

    def escalate(self, alert: dict, *, severity: str, text: str, occurred_at: datetime | None, details: dict,
                 at: datetime) -> dict | None:
        """Make an open alert not urgent (``alert``, as read) urgent, told from the event that made it so (its
        ``text``, ``occurred_at`` and ``details``), open again for the care team if they had acknowledged it (the
        acknowledgement was of what it said before): ``escalated_at`` says when, ``escalated_from`` what it was, and
        ``escalation_notified_at`` stays None until its pushes are queued. One conditional update on the alert as
        read: None, and nothing written, when it was resolved, made urgent or acknowledged since (read it again)."""
        before = {"severity": alert.get("severity"), "occurred_at": alert.get("occurred_at"), "text": alert.get("text"),
                  "acknowledged_at": alert.get("acknowledged_at"), "acknowledged_by": alert.get("acknowledged_by")}
        return self.col.find_one_and_update(
            {"_id": alert["_id"], "resolved_at": None, "urgent": {"$ne": True},
             "acknowledged_at": alert.get("acknowledged_at")},
            {"$set": {"severity": severity, "urgent": True, "text": text, "occurred_at": occurred_at,
                      "details": dict(details), "acknowledged_at": None, "acknowledged_by": None, "escalated_at": at,
                      "escalated_from": before, "escalation_notified_at": None, "changed_at": self.clock()}},
            return_document=ReturnDocument.AFTER)

    def judge_urgency(self, alert_id: str, severity: str, urgent: bool) -> None:
        """Give an alert the severity and urgency it is told with now (an overload is urgent only while fresh)."""
        self.col.update_one({"_id": alert_id, "$or": [{"severity": {"$ne": severity}}, {"urgent": {"$ne": urgent}}]},
                            {"$set": {"severity": severity, "urgent": urgent, "changed_at": self.clock()}})

    def mark_escalation_notified(self, alert_id: str) -> None:
        """Note that the pushes of an alert's escalation are in the outbox (so they are not fanned out again)."""
        self.col.update_one({"_id": alert_id}, {"$set": {"escalation_notified_at": self.clock()}})

    def for_patient(self, patient_id: str, *, share_kinds: list[str] | None = None, shared_only: bool = False,
                    since: datetime | None = None, unacknowledged: bool = False,
                    limit: int = LIST_LIMIT, after: tuple[datetime, str] | None = None) -> list[dict]:
        """At most ``limit`` (and ``LIST_LIMIT`` + 1) of the patient's alerts, newest first in (raised_at, _id) order;
        ``share_kinds`` limits them to what a caregiver may see; ``after``: those after the (raised_at, _id) a
        previous page ended on (a keyset: a page goes on however many came before, and an alert raised between two
        pages shifts nothing); ``since``: those raised or changed since (``changed_at``)."""
        query: dict = {"patient_id": patient_id}
        both: list[dict] = []
        if after is not None:
            at, alert_id = after
            both.append({"$or": [{"raised_at": {"$lt": at}}, {"raised_at": at, "_id": {"$lt": alert_id}}]})
        if share_kinds is not None:
            query["share_kind"] = {"$in": share_kinds}
        if shared_only:
            query["shared_with_caregivers"] = True
        if since is not None:
            both.append({"$or": [{"raised_at": {"$gte": since}}, {"changed_at": {"$gte": since}}]})
        if both:
            query["$and"] = both
        if unacknowledged:
            query["acknowledged_at"] = None
            query["resolved_at"] = None
        return list(self.col.find(query).sort([("raised_at", DESCENDING), ("_id", DESCENDING)])
                    .limit(min(limit, LIST_LIMIT + 1)))  # a page of LIST_LIMIT and the one that says more follow

    def newest(self, patient_id: str, *, open_only: bool, limit: int = 200) -> list[dict]:
        """The patient's alerts, newest first (only open ones, neither acknowledged nor resolved, if
        ``open_only``)."""
        query: dict = {"patient_id": patient_id}
        if open_only:
            query["acknowledged_at"] = None
            query["resolved_at"] = None
        return list(self.col.find(query).sort("raised_at", DESCENDING).limit(min(limit, LIST_LIMIT)))

    def every_one_of(self, patient_id: str, limit: int) -> list[dict]:
        """The patient's alerts, newest first, up to ``limit`` and under no other cap (the patient's download: ten
        years of daily alerts are thousands): a keyset read on ``patient_raised``, a page at a time."""
        return newest_first(self.col, {"patient_id": patient_id}, "raised_at", limit)

    def open_counts(self, patient_ids: Iterable[str]) -> dict[str, int]:
        """How many open alerts (neither acknowledged nor resolved) each patient has (patients without any are
        absent)."""
        counts: dict[str, int] = {}
        for part in chunks(sorted(set(patient_ids))):
            for alert in self.col.find({"patient_id": {"$in": part}, "acknowledged_at": None, "resolved_at": None},
                                       {"patient_id": 1}):
                counts[alert["patient_id"]] = counts.get(alert["patient_id"], 0) + 1
        return counts

    def unresolved(self, patient_ids: Iterable[str], kinds: Iterable[str]) -> list[dict]:
        """The patients' alerts of these kinds that are not resolved (acknowledged or not)."""
        found = []
        for part in chunks(sorted(set(patient_ids))):
            found += self.col.find({"patient_id": {"$in": part}, "kind": {"$in": sorted(set(kinds))},
                                    "resolved_at": None})
        return found

    def unresolved_of_kind(self, kind: str) -> list[dict]:
        """Every patient's alerts of one kind that are not resolved (the silence alerts the job may end), all of
        them (the cursor pages through them)."""
        return list(self.col.find({"kind": kind, "resolved_at": None}))

    def resolve(self, alert_id: str, reason: str, at: datetime, resolution: dict | None = None) -> bool:
        """Resolve an alert whose condition no longer holds, with the reason (English, for the care team) and
        its structured ``resolution`` (``{"code", "at"}``); the first resolution stands."""
        return self.col.update_one({"_id": alert_id, "resolved_at": None},
                                   {"$set": {"resolved_at": at, "resolved_reason": reason,
                                             "resolution": resolution, "changed_at": self.clock()}}).modified_count == 1

    def redate(self, alert_id: str, period_key: str, text: str, details: dict) -> None:
        """An open alert's run told from another first day (later data moved its start): its period, text and
        details; its key, and whom it was sent to, stay."""
        self.col.update_one({"_id": alert_id, "resolved_at": None},
                            {"$set": {"period_key": period_key, "text": text, "details": dict(details),
                                      "changed_at": self.clock()}})

    def resolved_as(self, dedup_keys: list[str], code: str) -> list[dict]:
        """The alerts among ``dedup_keys`` resolved with ``code``."""
        found: list[dict] = []
        for part in chunks(dedup_keys):
            found += self.col.find({"dedup_key": {"$in": part}, "resolved_at": {"$ne": None}, "resolution.code": code})
        return found

    def reopen(self, alert_id: str, at: datetime, told_from: dict | None = None) -> bool:
        """The condition of a resolved alert holds again (later data said so): it is open again (``reopened_at``
        says it was, and ``reopen_notified_at`` None until what follows it for its people is done), told from
        ``told_from`` if given (the ``text``, ``occurred_at`` and ``details`` of what holds now). Whether this
        reopened it (not when it was open already: another reopened it meanwhile)."""
        return self.col.update_one({"_id": alert_id, "resolved_at": {"$ne": None}}, {"$set": {
            "resolved_at": None, "resolved_reason": None, "resolution": None, "reopened_at": at,
            "reopen_notified_at": None, "changed_at": self.clock(), **(told_from or {})}}).modified_count == 1

    def mark_reopen_notified(self, alert_id: str) -> None:
        """Note that what follows an alert's reopening for its people is done (its withdrawn pushes revived, or left
        to its escalation's), so that no later pass does it again."""
        self.col.update_one({"_id": alert_id}, {"$set": {"reopen_notified_at": self.clock()}})

    def acknowledge(self, patient_id: str, alert_id: str, clinician_id: str, at: datetime) -> dict | None:
        """Mark an alert of this patient acknowledged; the first acknowledgement stands. None: no such alert.

        One conditional update, then a read of what stands: two clinicians acknowledging at once both see
        the one acknowledgement that won."""
        updated = self.col.find_one_and_update(
            {"_id": alert_id, "patient_id": patient_id, "acknowledged_at": None},
            {"$set": {"acknowledged_at": at, "acknowledged_by": clinician_id, "changed_at": self.clock()}},
            return_document=ReturnDocument.AFTER)
        return updated or self.get(patient_id, alert_id)


class OwedDeviceAlerts:
    """The device events whose alert a pass of the alerts job could not judge or raise (a malformed event, a write
    that failed): one document per event (``_id`` the event's id, ``at`` its time, ``since`` the first pass that
    owed it). Each later pass reads them again by id, whatever its window, until it raises their alert or finds
    none to raise (the event gone, its patient's account closed), or gives them up (companion.services.alerts
    .DEVICE_CATCH_UP). Ids and times only: what the event was is read from the event."""

    def __init__(self, db: Database):
        self.col = db.device_alerts_owed

    def all(self, limit: int = OWED_LIMIT) -> list[dict]:
        return list(self.col.find({}, {"at": 1}).limit(limit))

    def owe(self, events: dict[str, datetime], at: datetime) -> None:
        """Owe these events' alerts (by event id, with each event's time), from ``at`` if not owed already."""
        writes = [UpdateOne({"_id": event_id}, {"$set": {"at": event_at}, "$setOnInsert": {"since": at}}, upsert=True)
                  for event_id, event_at in sorted(events.items())]
        if writes:  # (ordered: an unordered bulk of upserts has hung FerretDB v1.24)
            self.col.bulk_write(writes, ordered=True)

    def settle(self, event_ids: Iterable[str]) -> None:
        for part in chunks(sorted(set(event_ids))):
            self.col.delete_many({"_id": {"$in": part}})
