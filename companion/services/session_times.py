"""Where stored sessions sit: placed in real time, judged, given to whoever wore the unit, counted once.

Called by ingestion for every unit a batch touches, and by a clinician's resolution. The rules are the
domain's (``device_time`` places, ``sessions`` judges); this module reads what they need from the stores and
says which stored records changed.

**The gateway's clock, checked at every upload.** A gateway sends its clock reading (wall clock, its boot and
its monotonic clock) with each batch. The server compares the wall clock with its own receive time: within
``GATEWAY_TRUST`` it vouches for it (the answer says so, and the gateway then may set units' clocks). Whether it
vouches or not, a sync the gateway recorded earlier in the same boot is tied to the server's clock through the
monotonic clock: it happened ``monotonic now - monotonic then`` before the server received the batch (within
``ANCHOR_ERROR`` plus the monotonic clock's drift), whatever the wall clock said. A sync from an earlier boot is
tied by the server time the gateway had measured then (``vouched_time``), if it had one; otherwise nothing ties
it to real time and the placement bounds it by its neighbours (``device_time`` rule 1).

**Records of older gateways** (no sync) are placed where the gateway put them (its ``started_at``), moved by
the gateway's clock offset when the server did not vouch for it: ``exact`` when the gateway found the unit's
clock right, ``corrected`` when it corrected a skew, and ``estimated`` with open bounds (so: held) when it saw a
reset.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from companion.domain.device_time import SessionTime, SyncPoint, TimeQuality, UnitSession, reconstruct
from companion.domain.errors import ServiceUnavailable
from companion.domain.localtime import TimeZoneHistory
from companion.domain.sessions import (
    DEVICE_EVENT_KINDS,
    ERASED_WEARER,
    Binding,
    Finding,
    Flag,
    Timed,
    UnitOwners,
    clinical_findings,
    counting,
    device_events_for,
    overlaps,
    relay_vouched,
    time_findings,
)
from companion.services.sync import Changes
from companion.services.touched_days import TouchedDays
from companion.store.stores import Stores

GATEWAY_TRUST = timedelta(seconds=60)  # a gateway clock this close to the server's is vouched for
ANCHOR_ERROR = timedelta(seconds=2)  # a batch's time on the wire, and the monotonic clock's reading
MONOTONIC_PPM = 100
LEGACY_ERROR = timedelta(minutes=1)
CONTEXT = 20  # sequence numbers read around new records beyond what the syncs say (overlaps, neighbours)
UNIT_WINDOW = 5000  # the most of one unit's records one placement reads
LEGACY_QUALITY = {"ok": TimeQuality.EXACT, "skewed": TimeQuality.CORRECTED}
# What the server derives for each stored record (and writes again when it changes).
DERIVED = ("started_at", "started_earliest", "started_latest", "time_quality", "time_basis", "unit_offset_s",
           "patient_id", "candidate_patient_ids", "local_date", "flags", "held", "counts", "counted_minutes",
           "overlaps")
PLACEMENT_TTL = timedelta(minutes=5)  # a claim left by a stopped process lapses then
PLACEMENT_RETRY_S = 2


@contextmanager
def placing(stores: Stores, serials: Iterable[str], at: datetime, busy: str) -> Iterator[None]:
    """One placement of these units' records at a time (companion.store.sessions.UnitClaims): an upload's, or a
    clinician's decision on a held session. ServiceUnavailable (``busy``, retry shortly) while another holds one."""
    serials, holder = sorted(set(serials)), uuid.uuid4().hex
    if not stores.unit_claims.claim(serials, holder, at, at + PLACEMENT_TTL):
        raise ServiceUnavailable(busy, retry_after_s=PLACEMENT_RETRY_S)
    try:
        yield
    finally:
        stores.unit_claims.release(serials, holder)


@dataclass(frozen=True)
class ClockCheck:
    """The server's check of a gateway's clock at one upload."""

    received_at: datetime
    gateway_time: datetime
    boot_id: str
    monotonic_s: float

    @property
    def offset(self) -> timedelta:
        """How far the gateway's wall clock is ahead of the server's (the batch's time on the wire included)."""
        return self.gateway_time - self.received_at

    @property
    def vouched(self) -> bool:
        """Whether the server vouches for the gateway's clock (within ``GATEWAY_TRUST``)."""
        return abs(self.offset) <= GATEWAY_TRUST

    def as_doc(self) -> dict:
        return {"checked_at": self.received_at, "offset_s": round(self.offset.total_seconds(), 3),
                "vouched": self.vouched}


def clock_check(reading: Mapping | None, received_at: datetime) -> ClockCheck | None:
    """The check of the clock reading a gateway sent with a batch (None: it sent none)."""
    if not reading:
        return None
    return ClockCheck(received_at, reading["wall"], reading["boot_id"], reading["monotonic_s"])


CONTACT_MARGIN = timedelta(minutes=1)  # a unit's last contact later than now by more than this is in the future
# A gateway's clock offset measured at an upload still corrects its wall-clock readings in reports that carry no
# clock reading of their own this long after (a gateway uploads a sync of each unit it reaches every 6 hours at
# least; a clock without NTP drifts seconds a day, and a jump since is bounded by the clamp to the receipt time).
OFFSET_KEPT = timedelta(days=1)


def gateway_offset(check: ClockCheck | None, last_check: Mapping | None, received_at: datetime) -> timedelta | None:
    """How far ahead of the server's the gateway's wall clock is now, as far as the server knows: by this request's
    clock reading, else by the check of its last upload (``Gateways.note_clock``) if that is at most
    ``OFFSET_KEPT`` old; None: not measured (a gateway that never sent its clock) or too long ago to go by."""
    if check is not None:
        return check.offset
    if not last_check or last_check.get("offset_s") is None or last_check.get("checked_at") is None:
        return None
    if received_at - last_check["checked_at"] > OFFSET_KEPT:
        return None
    return timedelta(seconds=last_check["offset_s"])


def seen_at(reported: datetime, on_server_clock: bool, offset: timedelta | None, received_at: datetime) -> datetime:
    """When a gateway saw what it reports, on the server's clock: a reading of the gateway's own wall clock is
    moved by its measured ``offset`` (``gateway_offset``; taken as it is when there is none), and nothing is taken
    as seen later than the report arrived, by whichever clock (a wall clock ahead, or one moved forward since its
    offset was measured, would otherwise keep a unit from ever counting as silent)."""
    if not on_server_clock and offset is not None:
        reported -= offset
    return min(reported, received_at)


def anchor(sync: Mapping, check: ClockCheck | None) -> tuple[datetime | None, timedelta, str]:
    """When a sync really happened, within what error, and how the server knows: ``monotonic`` (same boot as
    this upload), ``vouched`` (the server time the gateway had measured then) or ``none``."""
    if check is not None and sync.get("boot_id") == check.boot_id and sync.get("monotonic_s") is not None:
        elapsed = timedelta(seconds=check.monotonic_s - sync["monotonic_s"])
        if elapsed >= timedelta(0):
            return check.received_at - elapsed, ANCHOR_ERROR + elapsed * MONOTONIC_PPM / 1_000_000, "monotonic"
    if sync.get("vouched_time") is not None:
        return sync["vouched_time"], timedelta(seconds=sync.get("vouched_error_s") or 0) + ANCHOR_ERROR, "vouched"
    return None, timedelta(0), "none"


def _sync_point(doc: Mapping, highest_seq: int) -> SyncPoint:
    at = doc.get("at")
    error = timedelta(seconds=doc.get("at_error_s") or 0)
    return SyncPoint(highest_seq, doc.get("unit_clock"), at, error, doc.get("clock_set_to"), doc["_id"],
                     f"{doc.get('gateway_id')}:{doc.get('boot_id')}", float(doc.get("monotonic_s") or 0.0),
                     doc.get("received_at"))


def _legacy_time(doc: Mapping) -> SessionTime:
    """A record without a sync: where its gateway put it (moved by the gateway's offset the server measured,
    when it did not vouch for the gateway's clock)."""
    shift = timedelta(seconds=doc.get("gateway_offset_s") or 0)
    start = doc.get("reported_started_at", doc["started_at"]) - shift
    quality = LEGACY_QUALITY.get(doc.get("clock_status"), TimeQuality.ESTIMATED)
    if quality is TimeQuality.EXACT and shift:
        quality = TimeQuality.CORRECTED
    if quality is TimeQuality.ESTIMATED:
        return SessionTime(doc["device_seq"], start, None, None, quality, "gateway_reset")
    offset = timedelta(seconds=doc.get("clock_offset_s") or 0)
    return SessionTime(doc["device_seq"], start, start - LEGACY_ERROR, start + LEGACY_ERROR, quality, "gateway",
                       offset)


def _same(stored, derived) -> bool:
    """Whether a derived value is what is stored (the database keeps datetimes to the millisecond)."""
    if isinstance(stored, datetime) and isinstance(derived, datetime):
        return stored.replace(microsecond=stored.microsecond // 1000 * 1000, tzinfo=UTC) == \
            derived.astimezone(UTC).replace(microsecond=derived.microsecond // 1000 * 1000)
    return stored == derived


def _day_of(doc: Mapping) -> tuple[str | None, str | None]:
    return doc.get("patient_id"), doc.get("local_date")


def touched_days_of(docs: Iterable[Mapping]) -> dict[str, set[date]]:
    """The local days (by patient) these records count on."""
    days: dict[str, set[date]] = {}
    for doc in docs:
        patient, day = _day_of(doc)
        if patient and day:
            days.setdefault(patient, set()).add(date.fromisoformat(day))
    return days


def write_changes(stores: Stores, feed: Changes, touched: TouchedDays | None, changes: list[tuple[dict, dict]],
                  reason: str, on_events_changed: Callable[[list[dict], list[dict]], None] | None = None) -> None:
    """Write what changed about stored records. Each takes the next change number of the patient it now
    belongs to, so the app's session feed hands it out again; a patient a record left has their feeds read
    again from the start (they carry no tombstone for it); the days it left and the days it came to are
    marked for recomputing, however old (whether a record counts was judged when it arrived, within the offline
    window of then; the days it is placed on or leaves may be older than the window is now). The device events
    that follow the changes are written before the records (``_events_follow``), and so is what ``on_events_changed``
    does with the events they took away and those they brought back (the alerts service ends the device alerts
    no event supports any more, and reopens those it had ended for a session that counts again)."""
    # The marks first: a write that fails after them leaves days recomputed for nothing, one that failed before
    # them would leave the fields written and nothing to tell a retry (which finds no change) to mark them. A
    # patient a record leaves has their cursors ended before and again after (an app that read its feeds
    # again in between still held the record).
    departing = sorted({doc["patient_id"] for doc, fields in changes
                        if doc.get("patient_id") and fields.get("patient_id", doc["patient_id"]) != doc["patient_id"]})
    for left in departing:
        feed.departed(left)
    days = touched_days_of([doc for doc, _ in changes] + [{**doc, **fields} for doc, fields in changes]) \
        if touched is not None else {}
    for patient_id, dates in days.items():
        touched.dates(patient_id, dates, reason, reach_back=True)
    # The device events the changes derive are written first too, for the same reason: a retry that finds the
    # fields written has no change left to derive them from (electrode off and battery low raise alerts).
    gone, back = _events_follow(stores, changes, feed.clock())
    if (gone or back) and on_events_changed is not None:
        on_events_changed(gone, back)
    by_patient: dict[str | None, list[tuple[dict, dict]]] = {}
    for doc, fields in changes:
        by_patient.setdefault({**doc, **fields}.get("patient_id"), []).append((doc, fields))
    for patient_id, items in by_patient.items():
        if patient_id is None:  # nobody's yet (the unit changed hands then): in no feed until a clinician decides
            for doc, fields in items:
                stores.session_records.set_fields(doc["_id"], fields)
            continue
        with feed.stamp(patient_id, stores.session_records, len(items)) as first:
            for n, (doc, fields) in enumerate(items):
                stores.session_records.set_fields(doc["_id"], {**fields, "seq": first + n})
    for left in departing:
        feed.departed(left)
    # And marked again once written: the adherence job (or a read of "today") that took the first marks while the
    # records were still being written computed the days from what they were, and the marks it cleared with them.
    for patient_id, dates in days.items():
        touched.dates(patient_id, dates, reason, reach_back=True)


def device_event_docs(records: Iterable[dict], created_at: datetime) -> list[dict]:
    """The device events these records raise (electrode off, overload, battery low), as stored: under ids derived
    from the record and the kind, so recording them again changes nothing. Held records, and records nobody owns,
    raise none (their time or owner is not known)."""
    return [{"_id": f"{d['_id']}:{kind}", "patient_id": d["patient_id"], "device_serial": d["device_serial"],
             "kind": kind, "at": d["started_at"], "record_id": d["_id"], "created_at": created_at}
            for d in records if not d.get("held") and d.get("patient_id") for kind in device_events_for(d)]


def _events_follow(stores: Stores, changes: list[tuple[dict, dict]],
                   at: datetime) -> tuple[list[dict], list[dict]]:
    """The device events of records whose derived fields change. A record no longer held (a later clock fix, a
    clinician's decision) has the events a record stored counted has from the start (electrode off, battery
    low, ...); those it had already are left as they are. A record placed again, or given to another patient,
    takes its events with it. Both may be done again (events have derived ids, a move sets what it sets): a
    record's fields written after them, or not, a retry does them again as long as the change is left. A record
    that stops counting (the care team excluded it, it is held again, or it is nobody's now) loses its events, so
    that no alert is raised from them (a held record has none, as at its arrival). Returns the events taken
    away from where they were (patient, unit, kind and instant as they were: those forgotten and those moved),
    and those a record counted again brought back."""
    stopped = [doc for doc, fields in changes
               if (fields.get("held") and not doc.get("held")) or ("patient_id" in fields and not fields["patient_id"])]
    left = [doc for doc, fields in changes
            if (fields.get("held") and not doc.get("held")) or "started_at" in fields or "patient_id" in fields]
    stores.device_events.forget([d["_id"] for d in stopped], DEVICE_EVENT_KINDS)
    gone = {d["_id"] for d in stopped}
    counted = [{**doc, **fields} for doc, fields in changes if doc.get("held") and not fields.get("held", True)]
    back = device_event_docs(counted, at)
    stores.device_events.record(back)
    for doc, fields in changes:
        if doc["_id"] not in gone and ("started_at" in fields or "patient_id" in fields):
            placed = {**doc, **fields}
            stores.device_events.move(doc["_id"], device_events_for(placed), placed["started_at"],
                                      placed.get("patient_id"))
    return [{"patient_id": doc["patient_id"], "device_serial": doc["device_serial"], "kind": kind,
             "at": doc["started_at"]}
            for doc in left if doc.get("patient_id") and not doc.get("held") for kind in device_events_for(doc)], back


def _finding_docs(findings: Iterable[Finding]) -> list[dict]:
    return [{"flag": f.flag.value, "reason": f.reason} for f in findings]


class SessionTimes:
    def __init__(self, stores: Stores):
        self.stores = stores
        self._histories: dict[str, TimeZoneHistory | None] = {}

    def _history(self, patient_id: str) -> TimeZoneHistory | None:
        if patient_id not in self._histories:
            patient = self.stores.users.by_id(patient_id)
            self._histories[patient_id] = patient.zone_history() if patient is not None else None
        return self._histories[patient_id]

    def place_unit(self, serial: str, fresh: list[dict], new_syncs: list[dict], bindings: list[Binding],
                   received_at: datetime, touched_seqs: Iterable[int] = (), *,
                   deciding: dict[str, dict] | None = None) -> tuple[list[dict], list[tuple[dict, dict]]]:
        """Place a unit's new records and the stored ones new evidence (or a change at ``touched_seqs``) touches.

        Returns the new records with their derived fields, and (stored record, changed fields) for every stored
        record whose derived fields changed. The stored records read are those from the interval before the
        earliest new evidence to the end of the interval after the latest, and ``CONTEXT`` sequence numbers
        beyond (``CONTEXT`` either side when the unit has no syncs); the ones before the earliest new evidence
        are context, never written. Syncs that say the unit is more than ``UNIT_WINDOW`` beyond its highest
        record are left out (``_trusted_up_to``).
        They are read by id (``<serial>:<seq>``), which every server serves from its primary index.

        A new sync that saw no more than a stored one before it is evidence only for what came after it. The
        records of one interval are placed together (a jump may lie anywhere in it), so each batch of a long
        interval (a unit's first-contact backlog) reads and places the whole interval again, up to
        ``UNIT_WINDOW`` records: a 5,000-record backlog takes minutes rather than seconds.

        ``deciding`` (record id: fields) places stored records as if those fields were stored (a clinician's
        decision, or another patient's gateway handing over the same record, written with the placement it
        makes: each such record is among the changes returned, with those fields)."""
        self._histories = {}
        touched_seqs = list(touched_seqs)
        syncs = {d["_id"]: d for d in self.stores.unit_syncs.of_unit(serial)}
        # A sync that says the unit is far beyond every record stored (a glitched transfer summary) is kept but
        # not gone by, neither for the records' times nor for which records are read, until records reach it.
        trusted = self._trusted_up_to(serial, [*syncs.values(), *new_syncs],
                                      max([d["device_seq"] for d in fresh] + touched_seqs, default=0))
        syncs = {k: d for k, d in syncs.items() if d["highest_seq"] <= trusted}
        new_syncs = [d for d in new_syncs if d["highest_seq"] <= trusted]
        # A sync of this batch stored already (a retry of a batch that failed after storing it) is evidence as a
        # new one is: what its first arrival was to change may not have been written.
        evidence = [d["device_seq"] for d in fresh] + [
            self._reach(d, {k: v for k, v in syncs.items() if k != d["_id"]}, received_at)
            for d in new_syncs] + touched_seqs
        # A sync is stored once and never changed: a retry's copy (anchored again from whatever the gateway knows
        # now, perhaps after a reboot that lost the tie to the server's clock) never replaces the stored one.
        syncs.update({d["_id"]: d for d in new_syncs if d["_id"] not in syncs})
        if not evidence:
            return fresh, []
        highs = sorted({d["highest_seq"] for d in syncs.values()})

        def below(position: int) -> int:
            return max((h for h in highs if h < position), default=0)

        if highs:
            write_from = min(below(p) for p in evidence)
            context_from = below(write_from) if write_from > 0 else 0
        else:  # a unit with no syncs (an older gateway): its neighbours matter only for overlaps
            write_from = min(evidence) - 1
            context_from = max(0, write_from - CONTEXT)
        # Up to the end of the interval after the latest evidence (a new sync opens that one), not to the highest
        # sync's: the records beyond are placed by other syncs, and reading up to a far one would leave the
        # records around the evidence out of the window.
        top = max(evidence)
        last = min((h for h in highs if h > top), default=top) + CONTEXT
        context_from = max(context_from, last - UNIT_WINDOW)
        fresh_ids = {d["_id"] for d in fresh}
        ids = [f"{serial}:{seq}" for seq in range(context_from + 1, last + 1) if f"{serial}:{seq}" not in fresh_ids]
        deciding = deciding or {}
        stored = sorted(({**d, **deciding.get(d["_id"], {})} for d in self.stores.session_records.by_ids(ids).values()),
                        key=lambda d: d["device_seq"])
        derived = self.derive(list(syncs.values()), stored + fresh, bindings, received_at)
        placed_fresh = [{**doc, **derived[doc["_id"]]} for doc in fresh]
        changes = []
        for doc in stored:
            if doc["device_seq"] <= write_from:
                continue
            fields = {k: v for k, v in derived[doc["_id"]].items() if not _same(doc.get(k), v)}
            fields.update(deciding.get(doc["_id"], {}))
            if fields:
                changes.append((doc, fields))
        return placed_fresh, changes

    def _trusted_up_to(self, serial: str, syncs: list[dict], known: int) -> int:
        """The highest ``highest_seq`` of a sync the placement goes by: ``UNIT_WINDOW`` beyond the unit's highest
        record, stored or arriving (``known``: the highest arriving or named). The API takes any uint32, and one
        glitched transfer summary near 2^32 would otherwise bound every later record's interval by that sync and
        take the read window to numbers no record has. A sync beyond is stored all the same, and gone by once
        records reach it (a first-contact backlog longer than the window, its sync sent with its first batch)."""
        limit = known + UNIT_WINDOW
        beyond = [d["highest_seq"] for d in syncs if d["highest_seq"] > limit]
        if beyond:  # read by id at the syncs' own highs: a sync's highest record is stored with it, or soon after
            highest = self.stores.session_records.highest_stored_of(serial, beyond)
            if highest is not None:
                limit = max(limit, highest + UNIT_WINDOW)
        return limit

    @staticmethod
    def _reach(sync: dict, stored: dict[str, dict], received_at: datetime) -> int:
        """The lowest sequence number a new sync can change the placement of: the records up to its highest
        ones, unless a stored sync that saw as many came before it (then it only opens the interval after)."""
        def order(d: Mapping) -> datetime:
            return d.get("at") or d.get("received_at") or received_at

        high = sync["highest_seq"]
        if any(s["highest_seq"] == high and order(s) <= order(sync) for s in stored.values()):
            return high + 1
        return high

    def derive(self, syncs: list[dict], docs: list[dict], bindings: list[Binding],
               received_at: datetime) -> dict[str, dict]:
        """The derived fields of each of one unit's records, by record id.

        Each sync goes by the highest sequence number the unit reported when the gateway read its clock, not by
        the highest record captured under it: a record numbered above that was made during the transfer (a
        session that ended while the gateway was connected), after the reading, so it belongs to the interval
        after the sync, placed by the offset the clock had after it (read, or set). Counted as ended by the
        sync, it fitted no offset there, and on a unit's first sync it passed for a clock that jumped after the
        backlog: the whole backlog was held as time_uncertain.

        But a gateway that reported too low a highest sequence (one not our own: ours reads it after the clock)
        sends records above it that ended before the clock was read (before the reading, and before a time the
        clock was set to): those are the sync's, as it captured them. Left to the interval after it, days of
        backlog would be placed at the upload's time, counted on today."""
        before_reading: dict[str, int] = {}
        by_id = {s["_id"]: s for s in syncs}
        for doc in docs:
            sync = by_id.get(doc.get("sync_key") or "")
            if sync is None or doc["device_seq"] <= sync["highest_seq"]:
                continue
            ended = doc["device_started_at"] + timedelta(seconds=max(doc["duration_s"], 0))
            readings = [t for t in (sync.get("unit_clock"), sync.get("clock_set_to")) if t is not None]
            if not readings or all(ended <= t for t in readings):
                before_reading[sync["_id"]] = max(before_reading.get(sync["_id"], 0), doc["device_seq"])
        points = [_sync_point(s, max(s["highest_seq"], before_reading.get(s["_id"], 0))) for s in syncs]
        synced = [d for d in docs if d.get("sync_key")]
        times: dict[int, SessionTime] = reconstruct(
            points, [UnitSession(d["device_seq"], d["device_started_at"],
                                 max(timedelta(seconds=d["duration_s"]), timedelta(0)), d.get("server_received_at"))
                     for d in synced],
            received_at=received_at) if synced else {}
        for doc in docs:
            if not doc.get("sync_key"):
                times[doc["device_seq"]] = _legacy_time(doc)
        return self._judge(docs, times, bindings, received_at)

    def _judge(self, docs: list[dict], times: dict[int, SessionTime], bindings: list[Binding],
               received_at: datetime) -> dict[str, dict]:
        judged: dict[str, dict] = {}
        findings: dict[str, list[Finding]] = {}
        owners = UnitOwners(bindings)
        for doc in docs:
            placed = times[doc["device_seq"]]
            resolution = doc.get("resolution") or {}
            start, earliest, latest, quality, basis = (placed.start, placed.earliest, placed.latest, placed.quality,
                                                       placed.basis)
            if resolution.get("started_at"):
                start = earliest = latest = resolution["started_at"]
                quality, basis = TimeQuality.CORRECTED, "clinician"
            owner = owners.at(earliest, latest)
            if resolution.get("patient_id"):
                owner_id, candidates = resolution["patient_id"], (resolution["patient_id"],)
            else:
                owner_id, candidates = owner.patient_id, owner.candidates
            erased = owner_id == ERASED_WEARER  # worn by a patient whose record is deleted: kept by nobody
            if erased or ERASED_WEARER in candidates:
                owner_id = None if erased else owner_id
                candidates = tuple(c for c in candidates if c != ERASED_WEARER)
            uncertain = "the unit's binding changed (or it was bound to nobody) when this may have happened"
            delivered_for = doc.get("delivered_for")
            # Each patient whose gateway handed it over (the first, then any other with the same content): what
            # one of them vouches for does not depend on which hub reached the server first.
            deliverers = (delivered_for, *(doc.get("also_delivered_for") or ()))
            if owner_id and not resolution.get("patient_id") and not any(
                    relay_vouched(bindings, owner_id, by, latest) for by in deliverers):
                # (A gateway of a patient whose record is deleted is nobody nameable: :data:`ERASED_WEARER`.)
                owner_id, candidates = None, tuple(dict.fromkeys(p for p in (owner_id, delivered_for)
                                                                 if p != ERASED_WEARER))
                uncertain = "another patient's gateway handed this over, and not as what the unit held when it moved"
            history = self._history(owner_id) if owner_id else None
            found = clinical_findings(doc)
            found += time_findings(start, earliest, latest, doc.get("server_received_at") or received_at, history)
            if owner_id is None:
                found.append(Finding(Flag.OWNER_UNCERTAIN, uncertain))
            findings[doc["_id"]] = found
            judged[doc["_id"]] = {
                "started_at": start, "started_earliest": earliest, "started_latest": latest,
                "time_quality": quality.value, "time_basis": basis,
                "unit_offset_s": round(placed.offset.total_seconds(), 3) if placed.offset is not None else None,
                "patient_id": owner_id, "candidate_patient_ids": list(candidates),
                **({"erased_wearer": True} if erased else {}),
                "local_date": start.astimezone(history.zone_at(start)).date().isoformat() if history else None,
            }
        self._count(docs, judged, findings)
        return judged

    def _count(self, docs: list[dict], judged: dict[str, dict], findings: dict[str, list[Finding]]) -> None:
        """Overlaps among the records not held, then how each counts."""
        def resolution(doc: dict) -> str | None:
            return (doc.get("resolution") or {}).get("action")

        candidates = [Timed(d["_id"], d["device_seq"], judged[d["_id"]]["started_at"],
                            max(timedelta(seconds=d["duration_s"]), timedelta(0)))
                      for d in docs
                      if not counting([f.flag for f in findings[d["_id"]]], timedelta(0), None, resolution(d)).held]
        overlapping = overlaps(candidates)
        for doc in docs:
            found = list(findings[doc["_id"]])
            overlap = overlapping.get(doc["_id"])
            if overlap is not None:
                found.append(Finding(Flag.OVERLAP, f"the unit was already in session {overlap[0]} then"))
            counted = counting([f.flag for f in found], timedelta(seconds=doc["duration_s"]),
                               overlap[1] if overlap else None, resolution(doc))
            judged[doc["_id"]].update({"flags": _finding_docs(found), "held": counted.held, "counts": counted.counts,
                                       "counted_minutes": counted.minutes,
                                       "overlaps": overlap[0] if overlap else None})
