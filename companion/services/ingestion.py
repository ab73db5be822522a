"""Receiving TENS session records, syncs and unit status from a gateway: nothing a unit handed over is
dropped, each record is stored once, placed in time, given to whoever wore the unit, and answered alone.

A batch brings records, the syncs that captured them (a gateway's readings of units' clocks) and the
gateway's own clock reading. Receiving it:

1. checks that every unit named is, or once was, bound to the gateway's patient (a gateway is trusted to
   deliver the records of those units; each record then goes to whoever wore the unit when it happened);
2. checks the gateway's clock against the server's receive time and ties each sync to the server's clock
   (companion.services.session_times);
3. stores the syncs, then the records, each placed, judged and counted (a record that breaks a clinical or
   time rule is stored *held*, with its findings: companion.domain.sessions); only a record with no identity
   to be stored under is refused. A record that arrives again with other content is kept apart for review;
4. places again the stored records the new evidence touches (a later clock fix), and marks every local day
   whose figures changed (companion.services.touched_days) and writes the device events that follow them
   (those of a record no longer held, and those of one placed again moved with it), before their fields;
5. derives the batch's records' device events and the units' status.

Every step after the first two is derived again from what is stored on every attempt, so a gateway's retry
after a crash between the writes finishes what the first attempt left undone, doubling nothing: syncs,
records, copies and events have derived ids, placement is recomputed from the same evidence, marks are
idempotent and the status only moves forward.

Each batch's records (and every stored record placed again) take their patient's next change numbers
(companion.services.sync), so the app's session feed hands them out however late they arrive.

A batch holds a claim on each unit it names while it is placed and written (companion.store.sessions
.UnitClaims): placement reads the unit's stored records, so two batches of one unit placed at once would each
miss the other's (an overlap between them counted twice). One arriving meanwhile is answered 503 with a short
Retry-After; the gateway keeps it and sends it again. The unit's bindings it is placed by are read under the
claim, which a change of them holds too, from before its write to the end of its re-placement
(companion.services.gateways.Gateways.bind_unit): the batch is placed before the change and among what it
places again, or after it, by the bindings it wrote.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from companion.clock import Clock, now
from companion.domain.errors import Forbidden, TooManyRequests
from companion.domain.review import contact_changes_line
from companion.domain.sessions import Binding, identity_problem, reached_at
from companion.services.session_times import (
    CONTACT_MARGIN,
    ClockCheck,
    SessionTimes,
    anchor,
    clock_check,
    device_event_docs,
    gateway_offset,
    placing,
    seen_at,
    touched_days_of,
    write_changes,
)
from companion.services.sync import Changes
from companion.services.telemetry import NoTelemetry, Telemetry
from companion.services.touched_days import TouchedDays
from companion.settings import Settings
from companion.store.stores import Stores

# A placement holds its units' claims at most this long (one left by a stopped process lapses then); placing a
# unit's first-contact backlog again takes minutes at most.
DISCARDED = ("its unit was worn then by a patient whose record has since been deleted: not kept, and never "
             "given to anyone else")
IMPORT = "import"  # the gateway id part of syncs imported without a gateway (the demo's history)


def sync_key(gateway_id: str | None, sync_id: str) -> str:
    """The server's id of a gateway's sync."""
    return f"{gateway_id or IMPORT}:{sync_id}"


def _touched(doc: dict) -> tuple[str | None, str | None]:
    return doc.get("patient_id"), doc.get("local_date")


def _patients_of(records: list[dict], changes: list[tuple[dict, dict]]) -> list[str]:
    """Every patient whose record a batch wrote or answered from: the records' owners and, for one whose owner is
    in doubt, each it may be; a stored record placed again, before and after (its unit changed hands)."""
    docs = [*records, *(doc for doc, _ in changes), *({**doc, **fields} for doc, fields in changes)]
    return sorted({p for d in docs for p in [d.get("patient_id"), *(d.get("candidate_patient_ids") or [])] if p})


def _delivered_again(stored: list[dict], patient_id: str) -> dict[str, dict]:
    """For the stored records another patient's gateway handed over first and this patient's gateway hands over
    again, with the same content: the field naming this patient too (``also_delivered_for``), to be placed and
    written with the placement it makes. A session the unit recorded while this patient wore it is theirs,
    whichever hub reached the server first (companion.domain.sessions.relay_vouched)."""
    return {doc["_id"]: {"also_delivered_for": [*(doc.get("also_delivered_for") or []), patient_id]}
            for doc in stored
            if doc.get("delivered_for") not in (None, patient_id)
            and patient_id not in (doc.get("also_delivered_for") or [])}


def _as_placed(docs: list[dict], changes: list[tuple[dict, dict]]) -> list[dict]:
    """The stored records as this batch placed them (those it placed again with their changed fields)."""
    changed = {doc["_id"]: fields for doc, fields in changes}
    return [{**doc, **changed.get(doc["_id"], {})} for doc in docs]


def _answer_placed_again(results: dict[str, dict], changes: list[tuple[dict, dict]]) -> None:
    """A duplicate that this batch placed again (held no longer, or held now) is answered as it stands now."""
    for doc, fields in changes:
        answer = results.get(doc["_id"])
        if answer is not None and answer["status"] == "duplicate" and "conflicting_copy" not in answer["flags"]:
            now = {**doc, **fields}
            answer.update(flags=[f["flag"] for f in now.get("flags") or []], held=bool(now.get("held")),
                          time_quality=now.get("time_quality"))


class Ingestion:
    def __init__(self, settings: Settings, stores: Stores, clock: Clock = now, *,
                 telemetry: Telemetry | None = None, changes: Changes | None = None,
                 touched: TouchedDays | None = None, on_events_changed: Callable[[list[dict], list[dict]], None] | None = None):
        self.settings = settings
        self.on_events_changed = on_events_changed  # the device events records placed again took away or brought back
        self.telemetry = telemetry or NoTelemetry()
        self.changes = changes or Changes(stores, clock)
        self.stores = stores
        self.records = stores.session_records
        self.events = stores.device_events
        self.devices = stores.devices
        self.counters = stores.counters
        self.touched = touched
        self.clock = clock

    def _throttle(self, gateway_id: str, counter: str = "upload") -> None:
        """At most ``gateway_uploads_per_min`` uploads a minute per gateway and ``counter`` (shared by every web
        worker); TooManyRequests, with the seconds to the next minute, beyond."""
        count, wait = self.counters.hit(f"{counter}:{gateway_id}", 60)
        if count > self.settings.gateway_uploads_per_min:
            raise TooManyRequests("too many uploads from this gateway; retry later", retry_after_s=wait)

    def admit_dead_letters(self, gateway_id: str) -> None:
        """Count a gateway's dead-letter report against the same per-minute limit as its record batches, on a
        counter of its own (reports are sent once the records are, and must not hold them back): each report is
        kept and audited, so a looping or compromised gateway would otherwise grow the patient's record and the
        audit trail without bound. TooManyRequests beyond it; the gateway keeps its reports and sends them later."""
        self._throttle(gateway_id, "dead-letters")

    def _bindings(self, patient_id: str, serials: set[str]) -> dict[str, list[Binding]]:
        """Every unit named must be, or once have been, bound to the gateway's patient, or nothing is taken."""
        bindings = self.devices.bindings_of(serials)
        if any(all(b.patient_id != patient_id for b in bindings.get(serial, [])) for serial in serials):
            raise Forbidden("this gateway may not write for one or more of these units")
        return bindings

    def receive(self, gateway_id: str | None, patient_id: str, records: list[dict], named_serials: set[str], *,
                syncs: list[dict] | None = None, gateway_clock: dict | None = None,
                refused_by_schema: int = 0) -> dict:
        """Store a batch; answer each record (created / duplicate / rejected, with its findings) and each sync,
        and say whether the server vouches for the gateway's clock. ``named_serials`` are every unit the batch
        names, valid records or not. ``gateway_id`` is None for history imported without a gateway (the demo's),
        which is not throttled. ``refused_by_schema`` counts the batch's records the HTTP layer already rejected
        (for the metrics)."""
        syncs = syncs or []
        if gateway_id is not None:
            self._throttle(gateway_id)
        units = named_serials | {s["serial"] for s in syncs}
        self._bindings(patient_id, units)  # refused before any unit is claimed
        # One placement of a unit at a time: a batch arriving while another of the same unit is placed is
        # answered 503 with a short Retry-After, and the gateway sends it again.
        with placing(self.stores, units, self.clock(),
                     "another upload of these units is being placed; send this batch again shortly"):
            # The bindings this batch is placed by are read again once its units are claimed: a release or a
            # binding written between the check and the claim placed the unit's stored records again without
            # this batch's, which would otherwise be placed by the bindings as they were before it.
            bindings = self._bindings(patient_id, units)
            return self._receive(gateway_id, patient_id, records, bindings, syncs, gateway_clock, refused_by_schema)

    def _receive(self, gateway_id: str | None, patient_id: str, records: list[dict],
                 bindings: dict[str, list[Binding]], syncs: list[dict], gateway_clock: dict | None,
                 refused_by_schema: int) -> dict:
        received_at = self.clock()
        check = clock_check(gateway_clock, received_at)
        if check is not None and gateway_id is not None:
            self.stores.gateways.note_clock(gateway_id, check.as_doc())
        sync_docs = [self._sync_doc(gateway_id, s, check, received_at) for s in syncs]
        results: dict[str, dict] = {}
        docs: dict[str, dict] = {}
        repeated = []  # a record id twice in one batch: the first copy is taken, another content kept apart
        for record in records:
            problem = identity_problem(record)
            if problem:
                results[record["record_id"]] = {"status": "rejected", "reason": problem}
            elif record["record_id"] in docs:
                repeated.append(self._record_doc(gateway_id, patient_id, record, check, received_at))
            else:
                docs[record["record_id"]] = self._record_doc(gateway_id, patient_id, record, check, received_at)
        stored = self.records.by_ids(docs) if docs else {}
        fresh = [d for d in docs.values() if d["_id"] not in stored]
        kept = self._answer_stored(list(docs.values()), stored, results)
        placed, changes = [], []
        by_unit: dict[str, list[dict]] = defaultdict(list)
        for doc in fresh:
            by_unit[doc["device_serial"]].append(doc)
        # Records of this batch stored already (a retry of one that failed after storing them): what their first
        # arrival was to change about their unit's other records is placed again, as if they were new.
        again: dict[str, list[int]] = defaultdict(list)
        for doc in kept:
            again[doc["device_serial"]].append(doc["device_seq"])
        syncs_by_unit: dict[str, list[dict]] = defaultdict(list)
        for doc in sync_docs:
            syncs_by_unit[doc["serial"]].append(doc)
        delivered = _delivered_again(kept, patient_id)
        for serial in sorted(set(by_unit) | set(syncs_by_unit) | set(again)):
            unit_placed, unit_changes = SessionTimes(self.stores).place_unit(
                serial, by_unit.get(serial, []), syncs_by_unit.get(serial, []), bindings.get(serial, []), received_at,
                touched_seqs=again.get(serial, ()), deciding=delivered)
            placed += unit_placed
            changes += unit_changes
        # A session recorded while the unit was worn by a patient whose record has since been deleted is kept by
        # nobody: answered "discarded" (the gateway forgets it), never given to the unit's next wearer.
        for doc in [d for d in placed if d.get("erased_wearer")]:
            results[doc["_id"]] = {"status": "discarded", "flags": [], "held": False, "reason": DISCARDED}
        placed = [d for d in placed if not d.get("erased_wearer")]
        known = self.stores.unit_syncs.insert_new(sync_docs)
        created = self._insert(placed)
        for doc in placed:
            if doc["_id"] in created:
                results[doc["_id"]] = self._created(doc)
                kept.append(doc)
        # Stored meanwhile by a concurrent upload (or its own earlier attempt, still running): answered as any
        # record stored already, so that the same content is still derived and other content kept apart.
        raced = [doc for doc in placed if doc["_id"] not in created]
        if raced:
            kept += self._answer_stored(raced, self.records.by_ids(d["_id"] for d in raced), results)
        if repeated:
            self._answer_stored(repeated, {d["_id"]: d for d in kept}, {})
        # The new records' device events first: a stored record this batch places elsewhere takes its events
        # away (write_changes), and an alert one of these new events supports must not be ended for want of it.
        self._record_events([d for d in placed if d["_id"] in created], received_at)
        write_changes(self.stores, self.changes, self.touched, changes, "sessions", self.on_events_changed)
        _answer_placed_again(results, changes)
        if self.touched is not None:
            for patient, dates in touched_days_of(kept).items():
                self.touched.dates(patient, dates, "sessions")
        self._derive(patient_id, _as_placed(kept, changes), self._reached(sync_docs, known, received_at), received_at)
        for result in ("created", "duplicate", "discarded", "rejected"):
            count = sum(1 for r in results.values() if r["status"] == result)
            self.telemetry.records_received(result, count + (refused_by_schema if result == "rejected" else 0))
        self.telemetry.records_held(sum(1 for d in kept if d["_id"] in created and d.get("held")))
        return {"results": [{"record_id": rid, **res} for rid, res in results.items()],
                "syncs": [{"sync_id": s["sync_id"], "status": "duplicate" if s["_id"] in known else "created"}
                          for s in sync_docs],
                "clock": self._verdict(check, received_at),
                "patients": _patients_of([*kept, *stored.values()], changes)}

    @staticmethod
    def _verdict(check: ClockCheck | None, received_at: datetime) -> dict:
        if check is None:
            return {"server_time": received_at, "gateway_offset_s": None, "vouched": False}
        return {"server_time": received_at, "gateway_offset_s": round(check.offset.total_seconds(), 3),
                "vouched": check.vouched}

    @staticmethod
    def _created(doc: dict) -> dict:
        return {"status": "created", "reason": None, "flags": [f["flag"] for f in doc["flags"]], "held": doc["held"],
                "time_quality": doc["time_quality"]}

    def _answer_stored(self, docs: list[dict], stored: dict[str, dict], results: dict[str, dict]) -> list[dict]:
        """Answer the records already stored: the same content is a plain duplicate (and still derived, for a
        retry after a crash); other content is kept apart for review, the first copy standing."""
        kept, conflicts = [], []
        for doc in docs:
            first = stored.get(doc["_id"])
            if first is None:
                continue
            if first.get("content_hash") == doc["content_hash"]:
                results[doc["_id"]] = {"status": "duplicate", "reason": None, "flags": [
                    f["flag"] for f in first.get("flags") or []], "held": bool(first.get("held")),
                    "time_quality": first.get("time_quality")}
                kept.append(first)
            else:
                conflicts.append({**doc, "_id": f"{doc['_id']}:{doc['content_hash']}", "record_id": doc["_id"],
                                  "first_patient_id": first.get("patient_id")})
                results[doc["_id"]] = {"status": "duplicate", "flags": ["conflicting_copy"], "held": True,
                                       "reason": "already stored with different content; this copy is kept apart "
                                                 "for review"}
        self.stores.session_conflicts.keep(conflicts)
        return kept

    def _sync_doc(self, gateway_id: str | None, sync: dict, check: ClockCheck | None, received_at: datetime) -> dict:
        at, error, how = anchor(sync, check)
        return {**sync, "_id": sync_key(gateway_id, sync["sync_id"]), "gateway_id": gateway_id,
                "received_at": received_at, "at": at, "at_error_s": round(error.total_seconds(), 3), "anchor": how}

    @staticmethod
    def _record_doc(gateway_id: str | None, patient_id: str, record: dict, check: ClockCheck | None,
                    received_at: datetime) -> dict:
        doc = {k: v for k, v in record.items() if k not in ("record_id", "sync_id")}
        return {**doc, "_id": record["record_id"], "gateway_id": gateway_id, "delivered_for": patient_id,
                "server_received_at": received_at, "reported_started_at": record["started_at"],
                "sync_key": sync_key(gateway_id, record["sync_id"]) if record.get("sync_id") else None,
                "gateway_offset_s": (round(check.offset.total_seconds(), 3)
                                     if check is not None and not check.vouched else None),
                "resolution": None}

    def _insert(self, placed: list[dict]) -> set[str]:
        """Insert the new records, each group taking its patient's next change numbers (a record nobody owns
        yet, its unit having changed hands then, is in no feed until a clinician decides); the ids created."""
        by_patient: dict[str | None, list[dict]] = defaultdict(list)
        for doc in placed:
            by_patient[doc.get("patient_id")].append(doc)
        created: set[str] = set()
        for patient, docs in by_patient.items():
            if patient is None:
                created |= self.records.insert_new(docs)[0]
                continue
            with self.changes.stamp(patient, self.records, len(docs)) as first:
                created |= self.records.insert_new([{**d, "seq": first + n} for n, d in enumerate(docs)])[0]
        return created

    def _record_events(self, records: list[dict], received_at: datetime) -> None:
        """The device events of these records (not of held ones: their time or owner is not known); stored under
        derived ids, so recording them again changes nothing."""
        self.events.record(device_event_docs(records, received_at))

    def _reached(self, sync_docs: list[dict], known: set[str], received_at: datetime) -> dict[str, datetime]:
        """When the hub last reached each unit the batch's syncs name (companion.domain.sessions.reached_at: the
        sync's own time on the server's clock, ``anchor``, as placed; else when first received; at most the
        arrival); a stored one's (a batch sent again) as first stored."""
        first = self.stores.unit_syncs.by_ids(known) if known else {}
        reached: dict[str, datetime] = {}
        for doc in sync_docs:
            at = reached_at(first.get(doc["_id"], doc), received_at)
            reached[doc["serial"]] = max(at, reached.get(doc["serial"], at))
        return reached

    def _derive(self, patient_id: str, kept: list[dict], synced: dict[str, datetime], received_at: datetime) -> None:
        """The secondary writes of the batch's records: their device events (not for held ones: their time or
        owner is not known) and the status of units still bound to the gateway's patient, those ``synced`` with no
        record in the batch too (the hub reached them then, see ``_reached``; they had nothing new). A unit's
        contact is when the hub reached it, by the batch's sync of it (a backlog the hub kept for days is not
        contact now), else the arrival. (Those of
        stored records placed again are written with them, before them: ``write_changes``.)"""
        self._record_events(kept, received_at)
        latest: dict[str, dict] = {}
        for d in kept:
            if d["device_serial"] not in latest or d["device_seq"] > latest[d["device_serial"]]["device_seq"]:
                latest[d["device_serial"]] = d
        contact = {serial: synced.get(serial, received_at) for serial in latest}  # (a sync in the batch: its time)
        for serial, d in latest.items():
            ended = min(d["started_at"] + timedelta(seconds=d["duration_s"]), received_at)
            self.devices.note_upload(serial, patient_id, received_at=contact[serial], battery_pct=d["battery_pct"],
                                     battery_at=ended, last_record_seq=d["device_seq"],
                                     future_after=received_at + CONTACT_MARGIN)
        reached_only = {serial: at for serial, at in synced.items() if serial not in latest}
        for serial, at in sorted(reached_only.items()):
            self.devices.note_sync(serial, patient_id, synced_at=at, future_after=received_at + CONTACT_MARGIN)
        if latest or reached_only:
            self._contact_shown(patient_id, max([*contact.values(), *reached_only.values()]), received_at)

    def delivered_record(self, patient_id: str, serial: str, seq: int) -> dict:
        """Whether a gateway of the patient's delivered the unit's record ``seq``, and the content hash it sent
        with it: how a gateway that has no hash of its own at a unit's position tells a lost acknowledgement
        from a restarted counter (docs/device-gateway.md). Asked only about a unit bound to the patient now (the
        units the gateway collects from); a record delivered by another patient's gateway alone is not counted,
        and a record imported without a gateway (the demo's history) has no gateway's hash to give."""
        if not self.devices.bound_among([serial], patient_id):
            raise Forbidden("this gateway may not ask about this unit")
        record_id = f"{serial}:{seq}"
        doc = self.records.by_ids([record_id], {"content_hash": 1, "gateway_id": 1, "delivered_for": 1,
                                                "also_delivered_for": 1}).get(record_id)
        if doc is None or patient_id not in (doc.get("delivered_for"), *(doc.get("also_delivered_for") or [])):
            return {"serial": serial, "seq": seq, "delivered": False, "content_hash": None}
        return {"serial": serial, "seq": seq, "delivered": True,
                "content_hash": doc["content_hash"] if doc.get("gateway_id") is not None else None}

    def device_status(self, patient_id: str, reports: list[dict], gateway_clock: dict | None = None, *,
                      gateway_id: str | None = None) -> None:
        """A gateway's report on its units: battery, firmware, last contact and last error. A unit that has
        since moved to another patient is skipped (its new patient's gateway reports it). The last contact is
        put on the server's clock (``seen_at``: a gateway's wall clock is not trusted alone; the silent-unit
        alert runs on it): a reading of the gateway's wall clock is moved by the offset measured from the
        report's own clock reading, else (an older gateway sends none) by the one the server measured at the
        gateway's last upload, within a day (``gateway_offset``); a clock not measured for a day is taken as it
        reads. It never moves back, except from a time in the future, which one noted before readings were clamped may be."""
        received_at = self.clock()
        check = clock_check(gateway_clock, received_at)
        last_check = self.stores.gateways.clock_of(gateway_id) if check is None and gateway_id is not None else None
        offset = gateway_offset(check, last_check, received_at)
        bindings = self._bindings(patient_id, {r["serial"] for r in reports})
        heard = []
        for r in reports:
            if not bindings[r["serial"]] or bindings[r["serial"]][-1].end is not None \
                    or bindings[r["serial"]][-1].patient_id != patient_id:
                continue
            last_seen = seen_at(r["last_seen_at"], r.get("last_seen_clock") == "server", offset, received_at)
            self.devices.note_status(r["serial"], patient_id, {
                "battery_pct": r["battery_pct"], "firmware": r["firmware"], "last_error": r.get("last_error")},
                last_seen_at=last_seen, future_after=received_at + CONTACT_MARGIN)
            heard.append(last_seen)
        if heard:
            self._contact_shown(patient_id, max(heard), received_at)

    def _contact_shown(self, patient_id: str, heard: datetime, received_at: datetime) -> None:
        """Mark the patient's panel row if a unit of theirs heard from at ``heard`` changes what the row shows
        (companion.domain.review.contact_changes_line: its first contact, or the days since the sync): not at
        every report, which a hub sends about every 30 seconds for each unit and would keep every row of a
        deployment marked for now (no kept page of the panel would ever be answered). The battery, firmware and
        last error a report brings are not on the row."""
        row = self.stores.panel_rows.last_sync_of(patient_id)
        if row is None or contact_changes_line(row.get("last_sync"), heard, received_at):
            self.stores.panel_row_marks.mark([patient_id], "sync", received_at)

