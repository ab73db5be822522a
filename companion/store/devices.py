"""TENS units bound to patients (by serial), the history of those bindings, and gateway pairing codes.

A unit's current binding is its ``devices`` document; when it is released, the interval it was bound for is
kept in ``unit_bindings`` (first), then the document goes. A session belongs to whoever wore the unit when it
happened, so the intervals are kept for good.

A change of a unit's bindings (a binding, a release, a hand-over's time told late) places the unit's stored records
again from some moment on. The binding it changes says so in the same write (``placement_due_from``: the records
from then on are still to be placed again; ``placement_noted_at``: when a change last said so) and loses it once
they are: a change whose placement was cut short (a process stopped between the two) is finished by the next
request about it, or else by the worker (companion.services.gateways.Gateways.finish_handovers, which finds them by
the index on ``placement_due_from``), and one that finished owes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now, to_millis
from companion.domain.people import TensUnit
from companion.domain.sessions import ERASED_WEARER, Binding
from companion.store.batches import already_stored, chunks, insert_new

INDEXES = {
    "devices": [IndexModel([("patient_id", ASCENDING)], name="patient"),
                IndexModel([("placement_due_from", ASCENDING)], name="placement_due")],
    "unit_bindings": [IndexModel([("serial", ASCENDING), ("bound_at", ASCENDING)], name="serial_bound"),
                      IndexModel([("patient_id", ASCENDING)], name="patient"),
                      IndexModel([("placement_due_from", ASCENDING)], name="placement_due")],
    "pairing_codes": [IndexModel([("expires_at", ASCENDING)], name="expires")],
}
MAX_BINDINGS = 1000
DUE = "placement_due_from"
NOTED = "placement_noted_at"
# The earliest placement_due_from the worker looks for: a range between two dates of 2001-09-09 to 2286 is what the
# development server serves from the index (scripts/ferretdb-v1.24.2-date-range.patch). Earlier is a hand-over said
# to have happened before there were such units; its placement is finished by sending it again, as before.
DUE_FLOOR = datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)
MAX_UNITS_PER_PATIENT = 50


def unit_of(doc: dict | None) -> TensUnit | None:
    if doc is None:
        return None
    return TensUnit(serial=doc["_id"], patient_id=doc.get("patient_id"), profile=doc.get("profile", ""),
                    bound_at=doc.get("bound_at"), status=dict(doc.get("status") or {}))


def _interval_id(serial: str, bound_at: datetime) -> str:
    return f"{serial}:{bound_at.isoformat()}"


class Devices:
    def __init__(self, db: Database):
        self.col = db.devices
        self.history = db.unit_bindings

    def delete_for_patient(self, patient_id: str) -> int:
        """Release the patient's units and keep their binding intervals as worn by nobody nameable
        (:data:`ERASED_WEARER`): the patient's record is deleted (a closed account; see
        companion.services.lifecycle), and the unit's next wearer must never be given what it recorded then."""
        released = 0
        for unit in self.col.find({"patient_id": patient_id}, {"_id": 1}):
            released += self.unbind(unit["_id"], patient_id, stated=False)
        self.history.update_many({"patient_id": patient_id}, {"$set": {"patient_id": ERASED_WEARER}})
        return released

    def bind(self, serial: str, patient_id: str, profile: str, bound_at: datetime | None = None) -> tuple[TensUnit, bool]:
        """Bind a unit to a patient (from ``bound_at``, default now), its records from then on due to be placed
        again. Returns (unit, created); a unit bound to someone else is refused by the caller (the unique _id
        makes a double binding impossible)."""
        start = to_millis(bound_at or now())  # dates as stored (milliseconds): the answer is what later reads show
        doc = {"_id": serial, "patient_id": patient_id, "profile": profile, "bound_at": start, "status": {},
               DUE: start, NOTED: now()}
        try:
            self.col.insert_one(doc)
            return unit_of(doc), True
        except DuplicateKeyError:
            return unit_of(already_stored(self.col, {"_id": serial})), False

    def unbind(self, serial: str, patient_id: str, at: datetime | None = None, *, stated: bool,
               due_from: datetime | None = None) -> int:
        """Release a unit: its binding interval is kept (inserted once, so a retry after a crash between the
        two writes finishes the release), then the binding goes. ``at`` (default now) ends the interval;
        ``stated``: whether it is when someone said the unit changed hands, rather than when the app was told.
        The interval keeps the patient's hub's last contact with the unit (see companion.domain.sessions
        .relay_vouched), and that the unit's records from ``due_from`` on (or from what the binding still owed,
        if earlier) are due to be placed again. Returns 1 if it was released now."""
        current = self.col.find_one({"_id": serial, "patient_id": patient_id})
        if current is None:
            return 0
        interval = {"_id": _interval_id(serial, current["bound_at"]), "serial": serial, "patient_id": patient_id,
                    "bound_at": current["bound_at"], "released_at": at or now(), "handover_stated": stated,
                    "last_seen_at": (current.get("status") or {}).get("last_seen_at")}
        due = [d for d in (current.get(DUE), due_from) if d is not None]
        if due:  # absent, not null, when nothing is owed: null would stand below any date a later $min offers
            interval[DUE], interval[NOTED] = min(due), now()
        insert_new(self.history, [interval])
        return self.col.delete_one({"_id": serial, "patient_id": patient_id}).deleted_count

    def start_earlier(self, serial: str, patient_id: str, bound_at: datetime) -> bool:
        """Move the start of a unit's current binding to the patient back to ``bound_at`` (the app was told late
        when they were given it), its records from then on due to be placed again; only ever earlier. Whether it
        moved."""
        start = to_millis(bound_at)
        return self.col.update_one({"_id": serial, "patient_id": patient_id, "bound_at": {"$gt": start}},
                                   {"$set": {"bound_at": start, NOTED: now()}, "$min": {DUE: start}}
                                   ).modified_count == 1

    def last_released(self, serial: str, patient_id: str) -> dict | None:
        """The patient's last ended binding of a unit (its ``_id``, ``bound_at`` and ``released_at``), or None."""
        found = self.history.find({"serial": serial, "patient_id": patient_id},
                                  {"bound_at": 1, "released_at": 1}).sort("bound_at", -1).limit(1)
        return next(iter(found), None)

    def end_earlier(self, interval_id: str, released_at: datetime, due_from: datetime) -> bool:
        """Move the end of a kept binding interval back to ``released_at``, as stated (the app was told late when
        the unit changed hands), the unit's records from ``due_from`` on due to be placed again; only ever
        earlier. Whether it moved (or its end, the same, is stated now)."""
        return self.history.update_one(
            {"_id": interval_id, "$or": [{"released_at": {"$gt": released_at}},
                                         {"released_at": released_at, "handover_stated": False}]},
            {"$set": {"released_at": released_at, "handover_stated": True, NOTED: now()}, "$min": {DUE: due_from}},
        ).modified_count == 1

    def placement_due(self, serial: str, patient_id: str | None = None) -> datetime | None:
        """From when the unit's stored records are still to be placed again after a change of its bindings (of
        ``patient_id``'s bindings only, if given): the earliest any of them owes, or None."""
        wanted = {"serial": serial, DUE: {"$ne": None}} | ({"patient_id": patient_id} if patient_id else {})
        current = {"_id": serial, DUE: {"$ne": None}} | ({"patient_id": patient_id} if patient_id else {})
        owed = [d[DUE] for d in self.history.find(wanted, {DUE: 1}).limit(MAX_BINDINGS)]
        owed += [d[DUE] for d in self.col.find(current, {DUE: 1})]
        return min(owed, default=None)

    def placement_owed_by(self, serial: str) -> dict[str, datetime]:
        """The patients named by the unit's bindings that still owe its records placing again, each with the
        earliest moment theirs owe it from."""
        owed: dict[str, datetime] = {}
        wanted, fields = {"serial": serial, DUE: {"$ne": None}}, {"patient_id": 1, DUE: 1}
        for doc in [*self.history.find(wanted, fields).limit(MAX_BINDINGS),
                    *self.col.find({"_id": serial, DUE: {"$ne": None}}, fields)]:
            owed[doc["patient_id"]] = min(doc[DUE], owed.get(doc["patient_id"], doc[DUE]))
        return owed

    def placement_done(self, serial: str, since: datetime) -> None:
        """The unit's records from ``since`` on are placed again: what its bindings owed from then on is settled
        (a change owing from earlier still does)."""
        settled = {DUE: {"$gte": since}}
        self.col.update_one({"_id": serial, **settled}, {"$unset": {DUE: "", NOTED: ""}})
        self.history.update_many({"serial": serial, **settled}, {"$unset": {DUE: "", NOTED: ""}})

    def placements_owed(self, noted_before: datetime, at: datetime, limit: int = MAX_BINDINGS) -> list[str]:
        """The units (serials, each once, those owing from earliest first) whose records a change of their bindings
        still owes placing again, the change noted before ``noted_before`` (one with no such note is from before
        the note was kept: old). Read by the index on ``placement_due_from``, from :data:`DUE_FLOOR` to ``at``."""
        due = {DUE: {"$gte": DUE_FLOOR, "$lte": at}}
        owing: dict[str, datetime] = {}
        for serial_field, col in (("_id", self.col), ("serial", self.history)):
            for doc in col.find(due, {serial_field: 1, DUE: 1, NOTED: 1}).limit(limit):
                if doc.get(NOTED) is None or doc[NOTED] < noted_before:
                    serial = doc[serial_field]
                    owing[serial] = min(doc[DUE], owing.get(serial, doc[DUE]))
        return sorted(owing, key=lambda serial: (owing[serial], serial))

    def bindings_of(self, serials: Iterable[str]) -> dict[str, list[Binding]]:
        """Every binding interval of each unit, oldest first: the released ones and the current one."""
        wanted = sorted(set(serials))
        found: dict[str, list[Binding]] = {serial: [] for serial in wanted}
        current = {d["_id"]: d for d in self.col.find({"_id": {"$in": wanted}}, {"patient_id": 1, "bound_at": 1})}
        open_ids = {_interval_id(serial, d["bound_at"]) for serial, d in current.items()}
        for part in chunks(wanted):
            for doc in self.history.find({"serial": {"$in": part}}).limit(MAX_BINDINGS):
                if doc["_id"] not in open_ids:  # a release that did not finish: the unit is still bound
                    # Intervals kept before releases said whether their end was stated: taken as stated, as
                    # they were read then.
                    found[doc["serial"]].append(Binding(doc["patient_id"], doc["bound_at"], doc["released_at"],
                                                        doc.get("handover_stated", True), doc.get("last_seen_at")))
        for serial, doc in current.items():
            found[serial].append(Binding(doc["patient_id"], doc["bound_at"]))
        return {serial: sorted(bindings, key=lambda b: b.start) for serial, bindings in found.items()}

    def released_by(self, patient_id: str, limit: int = MAX_BINDINGS) -> list[dict]:
        """The binding intervals of the units the patient wore and no longer does, oldest first (up to ``limit``)."""
        return [{k: d.get(k) for k in ("serial", "bound_at", "released_at")}
                for d in self.history.find({"patient_id": patient_id}).sort("bound_at", ASCENDING).limit(limit)]

    def get(self, serial: str) -> TensUnit | None:
        return unit_of(self.col.find_one({"_id": serial}))

    def for_patient(self, patient_id: str, limit: int = MAX_UNITS_PER_PATIENT) -> list[TensUnit]:
        return [unit_of(d) for d in self.col.find({"patient_id": patient_id}).sort("_id", ASCENDING).limit(limit)]

    def for_patients(self, patient_ids: Iterable[str]) -> list[TensUnit]:
        units = []
        for part in chunks(sorted(set(patient_ids))):
            units += [unit_of(d) for d in self.col.find({"patient_id": {"$in": part}})]
        return units

    def bound_among(self, serials: Iterable[str], patient_id: str) -> set[str]:
        """Which of ``serials`` are bound to ``patient_id``."""
        return {d["_id"] for d in self.col.find({"_id": {"$in": sorted(set(serials))}, "patient_id": patient_id},
                                                {"_id": 1})}

    def note_upload(self, serial: str, patient_id: str, *, received_at: datetime, battery_pct: int,
                    battery_at: datetime, last_record_seq: int, future_after: datetime) -> None:
        """What an upload tells about a unit still bound to ``patient_id``: it synced and was heard from at
        ``received_at`` (when its hub reached it, by the batch's sync, else the upload's arrival), the
        highest record seen, and the battery the newest record reported, as of when that record ended
        (``battery_at``), unless the unit's status was read later (a report, a later record): a second hub's
        backlog, or a record sent again, leaves a later reading standing. All only move forward; a last contact
        noted later than ``future_after`` is replaced (see ``note_status``)."""
        unit = {"_id": serial, "patient_id": patient_id}
        self._replace_future_contact(unit, received_at, future_after)
        self._note_read(unit, {"battery_pct": battery_pct}, battery_at)
        self.col.update_one(unit, {"$max": {"status.last_sync_at": received_at, "status.last_seen_at": received_at,
                                            "status.last_record_seq": last_record_seq}})

    def note_sync(self, serial: str, patient_id: str, *, synced_at: datetime, future_after: datetime) -> None:
        """An upload's sync of a unit still bound to ``patient_id`` that brought no new record (the hub reached the
        unit, which had nothing new): it synced and was heard from at ``synced_at``; only forward, a last contact
        noted later than ``future_after`` replaced."""
        unit = {"_id": serial, "patient_id": patient_id}
        self._replace_future_contact(unit, synced_at, future_after)
        self.col.update_one(unit, {"$max": {"status.last_sync_at": synced_at, "status.last_seen_at": synced_at}})

    def note_status(self, serial: str, patient_id: str, status: dict, *, last_seen_at: datetime,
                    future_after: datetime) -> None:
        """A gateway's report on a unit (battery, firmware, last error, as read at its last contact), and that last
        contact. Both only move forward: a report that saw the unit earlier than its status was read already (a
        second hub's stale report, a record since) changes neither, except a contact noted later than
        ``future_after``: one in the future (a gateway's clock ahead, before readings were clamped), which would
        keep the unit from ever counting as silent until then."""
        unit = {"_id": serial, "patient_id": patient_id}
        self._replace_future_contact(unit, last_seen_at, future_after)
        if status:
            self._note_read(unit, status, last_seen_at)
        self.col.update_one(unit, {"$max": {"status.last_seen_at": last_seen_at}})

    def _note_read(self, unit: dict, status: dict, as_of: datetime) -> None:
        """Set these fields of the unit's status as read at ``as_of``, unless it was read later already."""
        self.col.update_one({**unit, "status.as_of": {"$not": {"$gt": as_of}}},  # or never read yet
                            {"$set": {**{f"status.{key}": value for key, value in status.items()},
                                      "status.as_of": as_of}})

    def _replace_future_contact(self, unit: dict, last_seen_at: datetime, future_after: datetime) -> None:
        self.col.update_one({**unit, "status.last_seen_at": {"$gt": future_after}},
                            {"$set": {"status.last_seen_at": last_seen_at}})

    def bring_back_last_contacts(self, later_than: datetime, to: datetime) -> int:
        """Set every last contact noted later than ``later_than`` (in the future) to ``to``; how many there were."""
        return self.col.update_many({"status.last_seen_at": {"$gt": later_than}},
                                    {"$set": {"status.last_seen_at": to}}).modified_count

    def heard_from_between(self, since: datetime, until: datetime) -> list[TensUnit]:
        """Bound units last heard from (TensUnit.last_heard) in [since, until), all of them (the cursor pages
        through them). Found by ``last_seen_at`` alone: every sync notes the contact too, so it is never earlier
        than ``last_sync_at``."""
        query = {"patient_id": {"$ne": None}, "status.last_seen_at": {"$gte": since, "$lt": until}}
        return [unit_of(d) for d in self.col.find(query, {"patient_id": 1, "status": 1, "profile": 1, "bound_at": 1})]


class PairingCodes:
    def __init__(self, db: Database):
        self.col = db.pairing_codes

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def create(self, code_hash: str, patient_id: str, expires_at: datetime) -> None:
        self.col.insert_one({"_id": code_hash, "patient_id": patient_id, "expires_at": expires_at,
                             "used_at": None, "created_at": now()})

    def claim(self, code_hash: str, gateway_id: str, nonce_hash: str | None) -> dict | None:
        """Use a live code once, for the gateway ``gateway_id`` about to be made, noting the hash of the pairing
        request's nonce (None: it sent none): one conditional update, so of two gateways racing for it exactly one
        claims it."""
        at = now()
        return self.col.find_one_and_update({"_id": code_hash, "used_at": None, "expires_at": {"$gt": at}},
                                            {"$set": {"used_at": at, "gateway_id": gateway_id,
                                                      "nonce_hash": nonce_hash}},
                                            return_document=ReturnDocument.AFTER)

    def claimed_live(self, code_hash: str) -> dict | None:
        """A code used already but not expired, with the gateway it made and the hash of the nonce it was claimed
        with (None otherwise): its pairing may be answered again, to a request with that nonce, while that
        gateway never fetched a token."""
        return self.col.find_one({"_id": code_hash, "used_at": {"$ne": None}, "gateway_id": {"$ne": None},
                                  "expires_at": {"$gt": now()}})

    def delete_expired(self, before: datetime) -> int:
        return self.col.delete_many({"expires_at": {"$lt": before}}).deleted_count
