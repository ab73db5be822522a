"""A patient's TENS sessions as their units recorded them, and what the care team decides about the ones held
back from the figures."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from companion.clock import Clock, now
from companion.domain.errors import Invalid, NotFound
from companion.domain.sessions import RESOLUTIONS
from companion.services.session_times import SessionTimes, placing, write_changes
from companion.services.sync import Changes
from companion.services.touched_days import TouchedDays
from companion.store.stores import Stores

DEFAULT_DAYS = 30
FUTURE_MARGIN = timedelta(minutes=5)


class TensSessions:
    def __init__(self, stores: Stores, changes: Changes, clock: Clock = now, *, touched: TouchedDays | None = None,
                 on_events_changed: Callable[[list[dict], list[dict]], None] | None = None):
        self.stores = stores
        self.on_events_changed = on_events_changed  # the device events a decision took away or brought back (AlertService.events_changed)
        self.records = stores.session_records
        self.changes = changes
        self.touched = touched
        self.clock = clock

    def between(self, patient_id: str, start: datetime | None, end: datetime | None, limit: int) -> list[dict]:
        """Sessions newest first, between ``start`` and ``end`` (default: the last 30 days), held ones
        included (each says why it is held)."""
        end = end or self.clock() + FUTURE_MARGIN
        start = start or end - timedelta(days=DEFAULT_DAYS)
        return self.records.for_patient(patient_id, start, end, limit)

    def changes_since(self, patient_id: str, cursor: str | None, limit: int) -> dict:
        """Session records stored after the cursor, in the order they were stored (companion.services.sync)."""
        page = self.changes.page(patient_id, self.records, cursor, limit)
        return page.with_items(page.items)

    def held(self, patient_id: str, limit: int) -> list[dict]:
        """The first ``limit`` sessions held back from the figures that are the patient's, or may be (a unit that
        changed hands when they happened), newest first."""
        return self.records.held_for(patient_id, limit)

    def patients_a_decision_touches(self, patient_id: str, record_id: str) -> list[str]:
        """Whose record a decision on one of the patient's sessions touches: theirs and, for a session that may be
        another's (its unit changed hands then), each patient it may be."""
        doc = self.records.get(record_id)
        maybe = [doc.get("patient_id"), *(doc.get("candidate_patient_ids") or [])] if doc is not None else []
        return sorted({patient_id, *(p for p in maybe if p)}) if patient_id in maybe else [patient_id]

    def forget_wearer(self, patient_id: str) -> int:
        """After a patient's record is deleted (their units' bindings kept as worn by nobody nameable), no session
        names them. The records their gateways handed over for someone else no longer name them as the deliverer
        (companion.store.sessions.SessionRecords.forget_deliverer). The records nobody owns yet that may have
        been theirs (a unit that changed hands then) are placed again, as an upload places them, by their
        units' bindings as they now are: whose they may be is then the other wearers only (companion.services.
        session_times drops the erased one), and one the erased patient alone may have worn is deleted as theirs.
        Returns how many records were placed again. Done again, it finds nothing left to do."""
        self.records.forget_deliverer(patient_id)
        maybe = self.records.owned_by_none_of(patient_id)
        seqs: dict[str, list[int]] = defaultdict(list)
        for doc in maybe:
            seqs[doc["device_serial"]].append(doc["device_seq"])
        at = self.clock()
        for serial in sorted(seqs):
            with placing(self.stores, [serial], at, "the unit's records are being placed right now; try again"):
                bindings = self.stores.devices.bindings_of([serial])[serial]
                _, changes = SessionTimes(self.stores).place_unit(serial, [], [], bindings, at, seqs[serial])
                placed = [(doc, fields) for doc, fields in changes if not _nobodys({**doc, **fields})]
                write_changes(self.stores, self.changes, self.touched, placed, "wearer_erased",
                              self.on_events_changed)
                self.records.delete_ids(doc["_id"] for doc, fields in changes if _nobodys({**doc, **fields}))
        self.records.forget_candidate(patient_id)
        return len(maybe)

    def place_after_handover(self, serial: str, since: datetime) -> int:
        """After a change of a unit's bindings (a release or a binding, perhaps as of a moment in the past: a
        hand-over the app was told of late), place its stored records that may have started from ``since`` on
        again, as an upload places them, by the bindings as they now are: a session worn by the new wearer leaves
        the old one's figures for the new one's (or is held for the care team, when whose it is cannot be known),
        and both patients' days it left and came to are marked for recomputing. Returns how many records
        changed. Done again, it finds nothing left to do.

        Called under the unit's claim (companion.services.session_times.placing), which the change of its
        bindings holds from before its write (companion.services.gateways.Gateways.bind_unit): an upload's
        placement then comes wholly before the change, and its records are among those placed here, or wholly
        after, by the bindings it wrote."""
        seqs = self.records.of_unit_from(serial, since)
        if not seqs:
            return 0
        bindings = self.stores.devices.bindings_of([serial])[serial]
        _, changes = SessionTimes(self.stores).place_unit(serial, [], [], bindings, self.clock(), seqs)
        write_changes(self.stores, self.changes, self.touched, changes, "unit_handed_over", self.on_events_changed)
        return len(changes)

    def needs_start(self, doc: dict) -> bool:
        """Whether a held session can be counted only at a start the care team gives: it is placed after its
        record reached the server (its unit's clock was ahead)."""
        return doc["started_at"] > self._latest_start(doc, self.clock())

    @staticmethod
    def _latest_start(doc: dict, at: datetime) -> datetime:
        # A unit cannot have recorded a session after its record reached us: placed later than that, the placement
        # is wrong (a clock ahead), however much time has passed since.
        return min(at, doc.get("server_received_at") or at) + FUTURE_MARGIN

    def resolve(self, patient_id: str, record_id: str, action: str, clinician_id: str, *,
                started_at: datetime | None = None, note: str | None = None) -> dict:
        """A clinician's decision on a held session: ``count`` it (as the patient's, at ``started_at`` if
        given) or ``exclude`` it. The session and its unit's neighbours are placed again and their days
        recomputed. Deciding again replaces the earlier decision."""
        if action not in RESOLUTIONS:
            raise Invalid("resolve a session by counting or excluding it", errors={"action": list(RESOLUTIONS)})
        if note is not None and "\x00" in note:  # the API's schema refuses it; the page's form comes here as sent
            raise Invalid("a note may not hold a NUL character", errors={"note": ["may not hold a NUL character"]})
        doc = self.records.get(record_id)
        if doc is None or (doc.get("patient_id") != patient_id
                           and patient_id not in (doc.get("candidate_patient_ids") or [])):
            raise NotFound("no such session for this patient")
        at = self.clock()
        latest = self._latest_start(doc, at)
        if started_at is not None and started_at > latest:
            raise Invalid("a session cannot start after its record reached the server",
                          errors={"started_at": ["after the record reached the server"]})
        if action == "count" and started_at is None and doc["started_at"] > latest:
            # Counted where it is placed, it would count on a day the patient had not lived when it was recorded.
            raise Invalid("this session is placed after its record reached the server: give the time it started",
                          errors={"started_at": ["required: the session is placed after its record arrived"]})
        resolution = {"action": action, "by": clinician_id, "at": at, "note": note, "started_at": started_at,
                      "patient_id": patient_id if action == "count" else doc.get("patient_id")}
        serial = doc["device_serial"]
        # Placed as an upload is, one placement of the unit at a time: an upload placing it meanwhile would
        # neither see the decision nor be seen by it (its records counted beside this one, or the decision's
        # placement written over).
        # The decision is written with the placement it makes (one write of the record): a failure before that
        # leaves no decision stored beside a session still held, and deciding again applies it.
        with placing(self.stores, [serial], at, "the unit's records are being placed right now; try again shortly"):
            bindings = self.stores.devices.bindings_of([serial])[serial]
            _, changes = SessionTimes(self.stores).place_unit(serial, [], [], bindings, at, [doc["device_seq"]],
                                                              deciding={record_id: {"resolution": resolution}})
            write_changes(self.stores, self.changes, self.touched, changes, "session_resolved",
                          self.on_events_changed)
        return self.records.get(record_id)


def _nobodys(record: dict) -> bool:
    """Whether a record placed again is kept by nobody: worn by a patient whose record is deleted, with no other
    wearer it may be (as an upload answers such a record ``discarded``)."""
    return bool(record.get("erased_wearer")) or (not record.get("patient_id")
                                                 and not record.get("candidate_patient_ids"))
