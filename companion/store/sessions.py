"""TENS session records (one document per record, keyed by device serial + sequence), the syncs that place
them in time (a gateway's reading of a unit's clock), copies of a record that arrived again with other
content, and the device events the records raised (battery low, electrode off, overload)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now, to_millis
from companion.domain.sessions import ERASED_WEARER, reached_at
from companion.store import feeds
from companion.store.batches import chunks, find_among_patients, insert_new, oldest_first

INDEXES = {
    "session_records": [
        IndexModel([("patient_id", ASCENDING), ("started_at", ASCENDING)], name="patient_time"),
        IndexModel([("device_serial", ASCENDING), ("device_seq", ASCENDING)], unique=True, name="serial_seq"),
        # the adherence job reads every patient's sessions of a time window in one query
        IndexModel([("started_at", ASCENDING)], name="started"),
        feeds.feed_index(),  # the app's change feed: records arrive late, in any order of started_at
    ],
    "device_events": [
        IndexModel([("patient_id", ASCENDING), ("at", ASCENDING)], name="patient_time"),
        IndexModel([("at", ASCENDING)], name="at"),  # the alerts job reads the last day's events of everyone
        IndexModel([("created_at", ASCENDING)], name="stored"),  # ... and those stored in it (uploaded late)
    ],
    "unit_syncs": [IndexModel([("serial", ASCENDING), ("highest_seq", ASCENDING)], name="serial_seq")],
    "unit_claims": [],  # by _id (the serial) only
    "session_conflicts": [IndexModel([("record_id", ASCENDING)], name="record")],
}
MAX_ROWS = 5000
UNIT_WINDOW = 5000  # the most of one unit's sessions (or syncs) a placement reads
WINDOW_FIELDS = {"patient_id": 1, "started_at": 1, "duration_s": 1, "held": 1, "counts": 1, "counted_minutes": 1}


class SessionRecords(feeds.SyncedCollection):
    def __init__(self, db: Database):
        self.col = db.session_records

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def forget_deliverer(self, patient_id: str) -> None:
        """A patient whose record is deleted no longer names the records their gateways handed over that are
        someone else's (or may be): ``delivered_for`` becomes :data:`ERASED_WEARER` (another patient's gateway
        handed it over still, for companion.domain.sessions.relay_vouched), and they leave ``also_delivered_for``."""
        self.col.update_many({"delivered_for": patient_id}, {"$set": {"delivered_for": ERASED_WEARER}})
        self.col.update_many({"also_delivered_for": patient_id}, {"$pull": {"also_delivered_for": patient_id}})

    def owned_by_none_of(self, patient_id: str) -> list[dict]:
        """The records nobody owns yet that may be the patient's (a unit that changed hands when they happened),
        their unit and number only, all of them."""
        return list(self.col.find({"patient_id": None, "candidate_patient_ids": patient_id},
                                  {"device_serial": 1, "device_seq": 1}))

    def forget_candidate(self, patient_id: str) -> None:
        """No record names the patient as one whose it may be any more (their record is deleted)."""
        self.col.update_many({"candidate_patient_ids": patient_id}, {"$pull": {"candidate_patient_ids": patient_id}})

    def delete_ids(self, ids: Iterable[str]) -> int:
        ids = sorted(set(ids))
        return self.col.delete_many({"_id": {"$in": ids}}).deleted_count if ids else 0

    def insert_new(self, docs: list[dict]) -> tuple[set[str], set[str]]:
        """Insert what is new; returns (created ids, duplicate ids). Unordered, so one duplicate does not
        stop the rest; the unique _id makes a second copy impossible however often a batch is replayed."""
        if not docs:
            return set(), set()
        ids = [d["_id"] for d in docs]
        refused = set(insert_new(self.col, docs))
        return {ids[n] for n in range(len(ids)) if n not in refused}, {ids[n] for n in refused}

    def by_ids(self, ids: Iterable[str], fields: dict | None = None) -> dict[str, dict]:
        """The stored records among ``ids``, by id."""
        found: dict[str, dict] = {}
        for part in chunks(sorted(set(ids))):
            found.update({d["_id"]: d for d in self.col.find({"_id": {"$in": part}}, fields)})
        return found

    def highest_stored_of(self, serial: str, seqs: Iterable[int]) -> int | None:
        """The highest of the unit's sequence numbers ``seqs`` that a stored record has (None: none). Read by id,
        from the highest down, a bounded ``$in`` at a time, stopping at the first part that finds one."""
        for part in chunks(sorted(set(seqs), reverse=True)):
            found = self.col.find({"_id": {"$in": [f"{serial}:{seq}" for seq in part]}}, {"device_seq": 1})
            highest = max((d["device_seq"] for d in found), default=None)
            if highest is not None:
                return highest
        return None

    def of_patient_by_ids(self, patient_id: str, ids: Iterable[str]) -> dict[str, dict]:
        """The patient's records among ``ids``, by id."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        return {s["_id"]: s for s in self.col.find({"patient_id": patient_id, "_id": {"$in": wanted}})}

    def for_patient(self, patient_id: str, start: datetime, end: datetime, limit: int = MAX_ROWS, *,
                    newest_first: bool = True, counted_only: bool = False) -> list[dict]:
        """The patient's sessions starting in [start, end) (``counted_only``: without the held ones, as every
        figure reads them)."""
        order = DESCENDING if newest_first else ASCENDING
        query: dict = {"patient_id": patient_id, "started_at": {"$gte": start, "$lt": end}}
        if counted_only:
            query["held"] = {"$ne": True}
        return list(self.col.find(query).sort("started_at", order).limit(limit))

    def started_in_order(self, patient_id: str, start: datetime, end: datetime) -> Iterator[dict]:
        """Every session of the patient starting in [start, end], held ones included, oldest first, read a page at
        a time on ``patient_time``."""
        return oldest_first(self.col, {"patient_id": patient_id}, "started_at", start, end)

    def every_one_of(self, patient_id: str, limit: int = MAX_ROWS) -> list[dict]:
        """Every session stored as the patient's, and every one nobody owns yet that may be theirs (its unit
        changed hands then), oldest first, whenever it is placed (held ones included: a unit whose clock was
        reset places its sessions in 2001)."""
        return list(self.col.find({"$or": [{"patient_id": patient_id},
                                           {"patient_id": None, "candidate_patient_ids": patient_id}]})
                    .sort([("started_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def in_window(self, start: datetime, end: datetime, patient_ids: Iterable[str] | None = None) -> Iterator[dict]:
        """Counted sessions starting in [start, end) (of every patient, or of ``patient_ids``, a bounded ``$in``
        at a time), with the fields the adherence job needs."""
        return find_among_patients(self.col, {"started_at": {"$gte": start, "$lt": end}, "held": {"$ne": True}},
                                   WINDOW_FIELDS, patient_ids)

    def set_fields(self, record_id: str, fields: dict) -> None:
        """Change what the server derived about a stored record (its placement, findings, owner, counting)."""
        self.col.update_one({"_id": record_id}, {"$set": fields})

    def held_for(self, patient_id: str, limit: int = 500) -> list[dict]:
        """Sessions held back from the figures that are the patient's, or that may be (owner uncertain),
        newest first."""
        mine = list(self.col.find({"patient_id": patient_id, "held": True}).sort("started_at", DESCENDING)
                    .limit(limit))
        maybe = list(self.col.find({"candidate_patient_ids": patient_id, "patient_id": None})
                     .sort("started_at", DESCENDING).limit(limit))
        return sorted(mine + maybe, key=lambda d: d["started_at"], reverse=True)[:limit]

    def get(self, record_id: str) -> dict | None:
        return self.col.find_one({"_id": record_id})

    def of_unit_from(self, serial: str, since: datetime, limit: int = UNIT_WINDOW) -> list[int]:
        """The sequence numbers of a unit's records that may have started at ``since`` or later (their latest
        start is then or later, or has no bound), lowest first, at most ``limit`` of the latest: the highest
        numbers, the unit's latest records, which a placement's window reads (companion.services.session_times).
        Stopped at ``limit`` in the query: MongoDB reads the serial_seq index from the top down; FerretDB (v1.24)
        finds the unit's matching records on that index and sorts them itself, and either answers ``limit``."""
        query = {"device_serial": serial, "$or": [{"started_latest": {"$gte": since}}, {"started_latest": None}]}
        found = self.col.find(query, {"_id": 0, "device_seq": 1}).sort("device_seq", DESCENDING).limit(limit)
        return [d["device_seq"] for d in found][::-1]

    def batteries_of(self, record_ids: Iterable[str | None]) -> dict[str, int | None]:
        """The battery level each of these records reported, by record id (a bounded ``$in`` at a time)."""
        return {i: d.get("battery_pct") for i, d in self.by_ids([i for i in record_ids if i],
                                                                 {"battery_pct": 1}).items()}

    def last_received_from_units(self, serials: Iterable[str], since: datetime) -> dict[str, datetime]:
        """When a hub last reached each of these units, as the records received from it since ``since`` tell: by
        the sync that captured each record (companion.domain.sessions.reached_at), else its arrival. A backlog a hub kept
        while offline is contact when the hub reached the unit, not when it was uploaded, as an upload notes it
        on the unit (companion.services.ingestion). (A bounded ``$in`` at a time; FerretDB v1.24 has no $max or
        $first accumulator in $group.)"""
        received: list[dict] = []
        for part in chunks(sorted(set(serials))):
            received += self.col.find({"device_serial": {"$in": part}, "server_received_at": {"$gte": since}},
                                      {"device_serial": 1, "server_received_at": 1, "sync_key": 1})
        syncs = UnitSyncs(self.col.database).by_ids({d["sync_key"] for d in received if d.get("sync_key")})
        latest: dict[str, datetime] = {}
        for doc in received:
            serial, arrived = doc["device_serial"], doc["server_received_at"]
            at = reached_at(syncs.get(doc.get("sync_key") or ""), arrived)
            if serial not in latest or at > latest[serial]:
                latest[serial] = at
        return latest

class UnitSyncs:
    """Syncs: each time a gateway connected to a unit, what the unit's clock read and when that really was
    (as far as the server could tell). Keyed ``<gateway>:<sync id>``; inserted once, never changed."""

    def __init__(self, db: Database):
        self.col = db.unit_syncs

    def insert_new(self, docs: list[dict]) -> set[str]:
        """Store the syncs not stored yet; returns the ids that were already there."""
        return {docs[n]["_id"] for n in insert_new(self.col, docs)}

    def by_ids(self, ids: Iterable[str]) -> dict[str, dict]:
        """The stored syncs of these ids, by id."""
        found: dict[str, dict] = {}
        for part in chunks(sorted(set(ids))):
            found.update({d["_id"]: d for d in self.col.find({"_id": {"$in": part}})})
        return found

    def of_unit(self, serial: str, limit: int = UNIT_WINDOW) -> list[dict]:
        """One unit's syncs from every gateway (the latest ``limit`` by highest sequence)."""
        docs = list(self.col.find({"serial": serial}).sort("highest_seq", DESCENDING).limit(limit))
        return docs[::-1]


class UnitClaims:
    """One placement of a unit's records at a time: a batch places its records from the unit's stored ones, so
    two batches of one unit placed at once (two hubs, or several web servers) would each miss the other's
    records (an overlap counted twice). A claim is one document per unit (``_id`` the serial), inserted while
    the batch is placed and deleted after; one left by a stopped process lapses after ``until``."""

    def __init__(self, db: Database):
        self.col = db.unit_claims

    def claim(self, serials: Iterable[str], holder: str, at: datetime, until: datetime) -> bool:
        """Claim every one of ``serials`` for ``holder``, or none (False: another placement holds one)."""
        taken: list[str] = []
        for serial in sorted(set(serials)):
            if not self._take(serial, holder, at, until):
                self.release(taken, holder)
                return False
            taken.append(serial)
        return True

    def _take(self, serial: str, holder: str, at: datetime, until: datetime) -> bool:
        for _ in range(2):
            try:
                self.col.insert_one({"_id": serial, "holder": holder, "until": until})
                return True
            except DuplicateKeyError:
                held = self.col.find_one({"_id": serial})
                if held is not None and held["until"] > at:
                    return False
                if held is not None:  # lapsed: its holder stopped
                    self.col.delete_one({"_id": serial, "holder": held["holder"]})
        return False

    def release(self, serials: Iterable[str], holder: str) -> None:
        serials = sorted(set(serials))
        if serials:
            self.col.delete_many({"_id": {"$in": serials}, "holder": holder})


class SessionConflicts:
    """A record that arrived again under a stored id with other content (a unit whose sequence restarted, or
    a gateway fault): kept here for review, never over the first."""

    def __init__(self, db: Database):
        self.col = db.session_conflicts

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete the copies delivered for the patient; a copy delivered for another patient beside one of this
        patient's records stays theirs, no longer naming this one (as the first copy's owner, or as one whose
        the copy may have been)."""
        self.col.update_many({"first_patient_id": patient_id, "delivered_for": {"$ne": patient_id}},
                             {"$set": {"first_patient_id": None}})
        self.col.update_many({"patient_id": patient_id, "delivered_for": {"$ne": patient_id}},
                             {"$set": {"patient_id": None}})
        for field in ("candidate_patient_ids", "also_delivered_for"):
            self.col.update_many({field: patient_id}, {"$pull": {field: patient_id}})
        return self.col.delete_many({"$or": [{"patient_id": patient_id},
                                             {"delivered_for": patient_id}]}).deleted_count

    def delivered_for(self, patient_id: str, limit: int) -> tuple[list[dict], int]:
        """The latest ``limit`` copies delivered for the patient (by the gateway of theirs that sent them), the
        newest received first, and how many there are in all."""
        query = {"delivered_for": patient_id}
        # (One upload's copies share their receipt time: then the unit's counter orders them, not the _id's text.)
        latest = list(self.col.find(query).sort([("server_received_at", DESCENDING), ("device_seq", DESCENDING),
                                                 ("_id", DESCENDING)]).limit(limit))
        return latest, (len(latest) if len(latest) < limit else self.col.count_documents(query))

    def keep(self, docs: list[dict]) -> None:
        """Keep each copy once (ids ``<record id>:<content hash>``)."""
        insert_new(self.col, docs)

    def for_records(self, record_ids: Iterable[str]) -> list[dict]:
        found = []
        for part in chunks(sorted(set(record_ids))):
            found += self.col.find({"record_id": {"$in": part}})
        return found


class DeviceEvents:
    def __init__(self, db: Database):
        self.col = db.device_events

    def delete_for_patient(self, patient_id: str) -> int:
        """Delete every document of the patient (a closed account; see companion.services.lifecycle)."""
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def record(self, events: list[dict]) -> None:
        """Store events under their derived ids; events already stored are left as they are."""
        insert_new(self.col, events)

    def move(self, record_id: str, kinds: Iterable[str], at: datetime, patient_id: str | None) -> None:
        """A record was placed again (a later clock fix) or given to another patient: its events follow it, stored
        anew (``created_at`` now): moved to a day more than a day ago, or to another wearer, they are read by the
        alerts pass's stored-time read, and raise their alert for the day and patient they now belong to (the old
        one is resolved: companion.services.alerts.events_gone)."""
        moved = {"at": at, "patient_id": patient_id, "created_at": to_millis(now())}
        for kind in kinds:
            self.col.update_one({"_id": f"{record_id}:{kind}"}, {"$set": moved})

    def forget(self, record_ids: Iterable[str], kinds: Iterable[str]) -> None:
        """These records no longer count (excluded, held again, nobody's): their events go (by their derived ids)."""
        ids = [f"{record_id}:{kind}" for record_id in record_ids for kind in kinds]
        if ids:
            self.col.delete_many({"_id": {"$in": ids}})

    def of_unit(self, patient_id: str, device_serial: str, kind: str, since: datetime, until: datetime) -> list[dict]:
        """The patient's events of one kind from one unit in [since, until]."""
        return list(self.col.find({"patient_id": patient_id, "device_serial": device_serial, "kind": kind,
                                   "at": {"$gte": since, "$lte": until}}))

    def happened_or_stored_between(self, since: datetime, until: datetime, *, stored_since: datetime,
                                   oldest: datetime) -> list[dict]:
        """Every patient's events that happened in [since, until] (``at``), and those stored in [stored_since,
        until] (``created_at``: when the upload, or the decision that counted their session, brought them) that
        happened from ``oldest`` on: all of them (the cursor pages through them). An event has a ``created_at``
        from its first write on (ingestion has always written it); one without (written by hand) is read by its
        ``at`` alone."""
        # Two reads, each one index range (an `$or` of the two is a scan of every event on the development
        # server), merged by id: an event that happened and was stored in the window is in both.
        found = {e["_id"]: e for e in self.col.find({"at": {"$gte": since, "$lte": until}})}
        # (the time range checked by the database: an event whose `at` is no time is not read, not a TypeError
        # that would fail every pass while it is in the window)
        for event in self.col.find({"created_at": {"$gte": stored_since, "$lte": until},
                                    "at": {"$gte": oldest, "$lte": until}}):
            found.setdefault(event["_id"], event)
        return list(found.values())

    def by_ids(self, event_ids: Iterable[str]) -> list[dict]:
        found = []
        for part in chunks(sorted(set(event_ids))):
            found += self.col.find({"_id": {"$in": part}})
        return found

    def for_patient(self, patient_id: str, since: datetime, limit: int = 200) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id, "at": {"$gte": since}}).sort("at", DESCENDING)
                    .limit(limit))
