"""Panel rows: one document per patient (``_id`` = the patient's id) shaped like a line of the clinician panel,
the adherence days each row was computed from, and the marks saying which rows must be computed again.

A row holds only what the panel shows, filters and sorts on: FerretDB decodes every document a query matches
before sorting (about 0.1 ms each for a row this size, ten times that with the 30 days inside), so the days live
beside it (``panel_row_days``, read by the adherence job, never by the panel).

Rows are written only by companion.services.read_models (a whole row at a time, from the raw data), so two
writers never merge halves of a row. Each row, its days and its entries carry the ``seq`` of the patient's mark
read before the data they were computed from and the instant they were computed as of (``computed_at``), and are
written only over a version of an earlier ``seq``, or of the same ``seq`` computed as of no later instant: a
computation that read the data before a write never replaces one that read it after, and of two that read the
same mark (a panel read's catch-up beside the refresher) the one as of the earlier instant never replaces the other
(computed just before the patient's midnight, it would stand for the whole next day: the later one rescheduled
the mark to the midnight after). The panel filters, sorts
and pages over them in the database: a query by ``_id $in`` (the caller's patients: the care-team authorisation,
served from the _id index on MongoDB and on the patched FerretDB), its conditions and a sort on stored keys, and
only the page's rows come back.

Marks (``panel_row_marks``, one per patient) say "compute this row again": now (``due`` = ``NOW``), or at a
later instant (a figure that changes with time alone: the local day rolling over, a pain entry leaving the
14- or 28-day window), filed under the 10-minute slot it falls in so that the refresher finds them by string
equality (served from an index on FerretDB as on MongoDB; a range is not, on FerretDB). Each mark carries a
fresh token and a greater ``seq``: the refresher clears a mark only if it was not marked again while the row was
computed.
"""

from __future__ import annotations

import calendar
import json
import re
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from time import monotonic

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.domain.people import CLOSED
from companion.store.batches import chunks
from companion.store.db import count_by_id

# Rows, days and today rows are found by `_id` or `_id $in` (the _id index); marks by their slot.
INDEXES = {
    "panel_rows": [],
    "panel_row_days": [],
    "today_rows": [],
    "panel_row_marks": [IndexModel([("due", ASCENDING)], name="due")],
    # A team's page of the panel in one of its stored orders: one index per order, named by hint.
    "panel_entries": [IndexModel([("team_id", ASCENDING), ("k_need", ASCENDING)], name="team_need"),
                      IndexModel([("team_id", ASCENDING), ("k_name", ASCENDING)], name="team_name"),
                      IndexModel([("patient_id", ASCENDING)], name="patient")],
}
NOW = "now"
SLOT = timedelta(minutes=10)
BY_ID_AT_MOST = 100  # patients whose marks for now are read by `_id` (more: by the slot, see marked_now)
SILENT_DEVICE = timedelta(days=2)  # companion.domain.review.SILENT_DEVICE_DAYS, as a duration
EXPORT_LIMIT = 100_000

# Sorts as stored keys, each ending with the name then the id so that every order is total.
_BY_NAME = [("name_key", ASCENDING), ("_id", ASCENDING)]
NEED_ORDER = [("open_alerts", DESCENDING), ("low_pdc", DESCENDING), ("pdc_7_key", ASCENDING),
              ("pain_change_key", DESCENDING), ("sync_key", ASCENDING), *_BY_NAME]
# A figure's sort: rows without the figure last in either direction (``none_*`` is 1 for them).
FIGURE_KEYS = {"pdc_7": ("none_pdc_7", "pdc_7", 1), "pdc_30": ("none_pdc_30", "pdc_30", 1),
               "pain_change": ("none_pain_change", "pain_change", 1), "open_alerts": (None, "open_alerts", 1),
               # fewer days since the sync = a later sync
               "days_since_sync": ("none_sync", "last_sync", -1)}


# The orders a team's panel is read in from panel_entries: (the entry's key, the index that serves it).
ENTRY_ORDERS = {"need": ("k_need", "team_need"), "name": ("k_name", "team_name")}
# What a panel line shows of its row, copied into each of the row's entries so that a page of the panel is
# one read of its entries (the rows themselves are read only for entries written before the copies).
SHOWN_FIELDS = ("display_name", "time_zone", "pdc_7", "pdc_30", "pain_recent_mean", "pain_previous_mean",
                "last_sync", "open_alerts", "account_status", "closed_at")
_COMPLEMENT = str.maketrans("0123456789abcdef", "fedcba9876543210")


def _number_key(x: float) -> str:
    """16 hex digits that order as the numbers do (IEEE 754 bits, sign-adjusted; -0.0 is 0.0 as in MongoDB)."""
    bits = struct.unpack(">Q", struct.pack(">d", float(x) + 0.0))[0]
    return f"{bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63:016x}"


def _instant_key(at: datetime) -> str:
    """16 hex digits that order as the instants do, at the milliseconds MongoDB keeps (a naive time is UTC)."""
    ms = calendar.timegm(at.utctimetuple()) * 1000 + at.microsecond // 1000
    return f"{ms + (1 << 63):016x}"


def _descending(key: str) -> str:
    return key.translate(_COMPLEMENT)


def entry_keys(row: dict) -> dict:
    """A row's place in each stored order, as strings that sort bytewise as the order's fields do: hex digits
    for the figures, the name as the hex of its UTF-8 bytes then ``!`` (below every hex digit, so that a name
    sorts before the names it begins), then the patient's id. Nothing in them is escaped in JSON, which the
    development server's index order relies on (see scripts/ferretdb-v1.24.2-sorted-page.patch)."""
    name = row["name_key"].encode().hex() + "!" + row["_id"]
    need = (_descending(f"{min(row['open_alerts'], 0xFFFFFF):06x}") + ("0" if row["low_pdc"] else "1")
            + _number_key(row["pdc_7_key"]) + _descending(_number_key(row["pain_change_key"]))
            + _instant_key(row["sync_key"]) + name)
    return {"k_need": need, "k_name": name}


def not_newer(seq: int, at: datetime | None = None) -> dict:
    """The condition a row, its days or an entry is replaced under: stored from a mark no later than ``seq`` (or
    before marks were numbered); with ``at``, from the same mark only if computed as of no later instant (or
    before the instant was kept)."""
    if at is None:
        return {"seq": {"$not": {"$gt": seq}}}
    return {"$or": [{"seq": {"$lt": seq}}, {"seq": None},
                    {"seq": seq, "computed_at": {"$not": {"$gt": at}}}]}


def _unless_newer(write, doc_id: str, seq: int, at: datetime, change: dict) -> bool:
    """``write`` (a collection's replace_one or update_one) ``change`` to the document ``doc_id``, computed as of
    ``at`` after reading its patient's mark's ``seq``, as an upsert guarded by not_newer; False when a later
    computation's version is stored (the upsert then finds the ``_id`` taken), True when this one is."""
    for upsert in (True, False):
        try:
            return write({"_id": doc_id, **not_newer(seq, at)}, change, upsert=upsert).matched_count == 1 or upsert
        except DuplicateKeyError:  # a later version is stored, or a concurrent first write inserted one: look again
            continue
    return False


def slot_of(at: datetime) -> str:
    """The 10-minute slot an instant falls in, as the string marks are filed under."""
    floored = at.replace(minute=at.minute - at.minute % 10, second=0, microsecond=0)
    return floored.strftime("%Y-%m-%dT%H:%M")


def panel_query(patient_ids: list[str], at: datetime, *, q: str | None = None, needs_attention: bool = False,
                pdc_7_below: float | None = None, pain_rising: bool = False, silent_days: int | None = None,
                open_alerts: bool = False) -> dict:
    """The rows of these patients that pass every condition given (as companion.domain.review.PanelFilter)."""
    query: dict = {"_id": {"$in": patient_ids}}
    if q:
        query["name_key"] = {"$regex": re.escape(q.lower())}
    if needs_attention:
        # A closed record needs attention for its open alerts alone (companion.domain.review.PanelRow.reasons);
        # a row without a state is an open account's (computed before rows held it).
        kept_open = {"account_status": {"$ne": CLOSED}}
        query["$or"] = [{"open_alerts": {"$gt": 0}}, {"low_pdc": True, **kept_open},
                        {"pain_direction": "rising", **kept_open},
                        {"last_sync": {"$lte": at - SILENT_DEVICE}, **kept_open}]
    if pdc_7_below is not None or pain_rising or silent_days is not None:
        # The figure filters keep open accounts only: a closed record asks for attention through its open alerts
        # alone (nothing will come from it again), and stays listed without a filter.
        query["account_status"] = {"$ne": CLOSED}
    if pdc_7_below is not None:
        query["pdc_7"] = {"$lt": pdc_7_below}
    if pain_rising:
        query["pain_direction"] = "rising"
    if silent_days is not None:
        query["last_sync"] = {"$lte": at - timedelta(days=silent_days)}
    if open_alerts:
        query["open_alerts"] = {"$gt": 0}
    return query


def panel_order(sort: str, descending: bool) -> list[tuple[str, int]]:
    """The stored keys a panel sort orders by (see companion.domain.review.order_panel)."""
    if sort == "need":
        return NEED_ORDER
    if sort == "name":
        direction = DESCENDING if descending else ASCENDING
        return [("name_key", direction), ("_id", direction)]
    missing, figure, sense = FIGURE_KEYS[sort]
    first = [(missing, ASCENDING)] if missing else []
    return [*first, (figure, -sense if descending else sense), *_BY_NAME]


class PanelRows:
    def __init__(self, db: Database):
        self.col = db.panel_rows

    def save(self, row: dict, seq: int, at: datetime) -> bool:
        """Write a patient's row computed as of ``at`` after reading their mark's ``seq``, unless a row computed
        after a later mark, or after the same one as of a later instant, is stored; returns whether it was
        written."""
        return _unless_newer(self.col.replace_one, row["_id"], seq, at, {**row, "seq": seq, "computed_at": at})

    def get(self, patient_id: str) -> dict | None:
        return self.col.find_one({"_id": patient_id})

    def last_sync_of(self, patient_id: str) -> dict | None:
        """The patient's row's ``last_sync`` alone (None: no row)."""
        return self.col.find_one({"_id": patient_id}, {"last_sync": 1})

    def by_ids(self, patient_ids: Iterable[str], fields: dict | None = None) -> list[dict]:
        found = []
        for part in chunks(sorted(set(patient_ids))):
            found += self.col.find({"_id": {"$in": part}}, fields)
        return found

    def page(self, query: dict, order: list[tuple[str, int]], offset: int, limit: int,
             total: int | None = None) -> tuple[list[dict], int]:
        """One page of the rows ``query`` matches in ``order``, and how many match in all (counted unless the
        caller knows it, or the page is the whole answer)."""
        rows = list(self.col.find(query).sort(order).skip(offset).limit(limit))
        if total is not None:
            return rows, total
        if offset == 0 and len(rows) < limit:
            return rows, len(rows)
        return rows, self.col.count_documents(query)

    def account_states(self, patient_ids: Iterable[str]) -> dict[str, str | None]:
        """The account state each of these patients' rows holds (None: a row computed before rows held it);
        patients without a row are absent (read by `_id $in`, a chunk at a time)."""
        found: dict[str, str | None] = {}
        for part in chunks(sorted(set(patient_ids))):
            found.update((doc["_id"], doc.get("account_status"))
                         for doc in self.col.find({"_id": {"$in": part}}, {"account_status": 1}))
        return found

    def all_ids(self) -> Iterator[str]:
        for doc in self.col.find({}, {"_id": 1}):
            yield doc["_id"]

    def delete(self, patient_id: str) -> int:
        return self.col.delete_one({"_id": patient_id}).deleted_count

    def delete_for_patient(self, patient_id: str) -> int:
        """Forget the patient's row (their record is being deleted)."""
        return self.delete(patient_id)


class PanelRowDays:
    """The completed days a row was computed from (state, covered, TENS fraction by date), one per patient, with
    the patient's local date (``today``) they were computed on: the days are the 30 before it.

    The days are stored as one JSON text, not as 30 subdocuments: the adherence job reads a chunk of patients'
    days at once, and FerretDB decodes a document's every subdocument (2,000 of these: 1.73 s as subdocuments,
    0.27 s as text, decoding included; MongoDB is fast either way). Only this class reads or writes them."""

    def __init__(self, db: Database):
        self.col = db.panel_row_days

    def save(self, patient_id: str, days: dict, today: str, seq: int, at: datetime) -> bool:
        """As PanelRows.save, for the days the row was computed from."""
        doc = {"_id": patient_id, "days": json.dumps(days, sort_keys=True, separators=(",", ":")), "today": today,
               "seq": seq, "computed_at": at}
        return _unless_newer(self.col.replace_one, patient_id, seq, at, doc)

    def by_ids(self, patient_ids: Iterable[str]) -> dict[str, dict]:
        """Each patient's document (``days`` by date, and ``today`` unless written before it was kept); patients
        without one are absent."""
        found = {}
        for part in chunks(sorted(set(patient_ids))):
            for doc in self.col.find({"_id": {"$in": part}}):
                days = doc.get("days")
                found[doc["_id"]] = {**doc, "days": json.loads(days) if isinstance(days, str) else days or {}}
        return found

    def computed_after(self, days: dict[str, str]) -> set[str]:
        """The patients among ``days`` (patient id: local date) whose row was computed on a later local date than
        the one given (its ``today`` only is read)."""
        later = set()
        for part in chunks(sorted(days)):
            later |= {doc["_id"] for doc in self.col.find({"_id": {"$in": part}}, {"today": 1})
                      if (doc.get("today") or "") > days[doc["_id"]]}
        return later

    def delete_for_patient(self, patient_id: str) -> int:
        return self.col.delete_one({"_id": patient_id}).deleted_count


def is_current(row: dict, rules: str) -> bool:
    """Whether a today row (see `TodayRows`) was computed under its token as it stands, by ``rules``."""
    token = row.get("token")
    return row.get("computed") == token and row.get("computed_by") == {"token": token, "rules": rules}


class TodayRows:
    """A patient's "today" as last computed (``_id`` = the patient's id): the local date and zone it is of, its
    figures and its reminders, and two tokens. ``token`` is changed by every write that changes the patient's
    today (:meth:`touch`: a touched day, a reminder or occurrence written); ``computed`` is the token the row
    was computed under, and ``computed_by`` that token again with the version of the rules that computed the row
    (companion.services.progress.TODAY_RULES). The row is current (:func:`is_current`) while the token is the one
    it was computed under, by the rules of the reader, and its date is the patient's today: one read by ``_id``
    answers the patient's "today".

    The rules are stored with the token, not alone: a process of the release before (a rolling deploy) computes a
    row again under a new token and sets ``computed`` alone, leaving ``computed_by`` with the token before; a row
    without ``computed_by`` (computed before the rules were stored) is of no rules. Either is computed again by
    the first reader of this release."""

    def __init__(self, db: Database):
        self.col = db.today_rows

    def get(self, patient_id: str) -> dict | None:
        return self.col.find_one({"_id": patient_id})

    def token_of(self, patient_id: str) -> str | None:
        doc = self.col.find_one({"_id": patient_id}, {"token": 1})
        return doc.get("token") if doc else None

    def touch(self, patient_ids: Iterable[str]) -> None:
        """These patients' today changed: a new token (created if need be, so that a computation that began
        before this write, when no row existed, cannot store what it read)."""
        for pid in sorted(set(patient_ids)):
            change = {"$set": {"token": uuid.uuid4().hex}}
            try:
                self.col.update_one({"_id": pid}, change, upsert=True)
            except DuplicateKeyError:  # two first touches raced; the other inserted it
                self.col.update_one({"_id": pid}, change)

    def save(self, doc: dict, token: str | None, rules: str) -> bool:
        """Store a row computed by ``rules`` from data read after the token was ``token`` (None: no row existed),
        unless the token changed meanwhile (a write since: the row may miss it); returns whether it was stored."""
        if token is None:
            fresh = uuid.uuid4().hex
            try:
                self.col.insert_one({**doc, "token": fresh, "computed": fresh,
                                     "computed_by": {"token": fresh, "rules": rules}})
            except DuplicateKeyError:  # touched (or computed by another request) meanwhile
                return False
            return True
        fields = {k: v for k, v in doc.items() if k != "_id"}
        return self.col.update_one({"_id": doc["_id"], "token": token},
                                   {"$set": {**fields, "computed": token,
                                             "computed_by": {"token": token, "rules": rules}}}).matched_count == 1

    def delete_for_patient(self, patient_id: str) -> int:
        return self.col.delete_one({"_id": patient_id}).deleted_count


class PanelEntries:
    """A line per (care team, patient) holding the patient's row's place in each stored order and what the panel
    shows of the row (SHOWN_FIELDS), so that a team's page of the panel is one read from an index (team,
    order). ``_id`` is the enrolment's (``<team>:<patient>``). Written with the row, from the same values
    (companion.services.read_models), deleted with the enrolment (companion.store.relationships)."""

    def __init__(self, db: Database, teams_changed: Callable[[list[str]], None]):
        """``teams_changed``: moves on these teams' panel versions (companion.store.relationships.CareTeams
        .panel_changed), called after every write or deletion of their entries, so that a page kept under an
        earlier version is never served again (companion.services.read_models.PanelReadModel.team_page)."""
        self.col = db.panel_entries
        self.teams_changed = teams_changed

    def _changed(self, team_ids: Iterable[str]) -> None:
        wanted = sorted(set(team_ids))
        if wanted:
            self.teams_changed(wanted)

    def save(self, row: dict, team_ids: Iterable[str], seq: int, at: datetime) -> None:
        """The row's entries, one for each of these teams (those the patient is enrolled in), each written unless
        an entry computed after a later mark (or the same one as of a later instant than ``at``) is stored; then
        keep_only, with the teams read again."""
        keys = entry_keys(row) | {field: row[field] for field in SHOWN_FIELDS}
        written = [team_id for team_id in sorted(set(team_ids))
                   if _unless_newer(self.col.update_one, f"{team_id}:{row['_id']}", seq, at,
                                    {"$set": {"team_id": team_id, "patient_id": row["_id"], **keys, "seq": seq,
                                              "computed_at": at}})]
        self._changed(written)

    def keep_only(self, patient_id: str, team_ids: Iterable[str], seq: int) -> int:
        """Delete the patient's entries of teams other than these (read after the entries were written: an
        enrolment ended meanwhile loses the entry written after its deletion), but none written after a later
        mark (it may be of a team enrolled since)."""
        stale = list(self.col.find({"patient_id": patient_id, "team_id": {"$nin": sorted(set(team_ids))},
                                    **not_newer(seq)}, {"team_id": 1}))
        if not stale:
            return 0
        deleted = self.col.delete_many({"_id": {"$in": [e["_id"] for e in stale]}, **not_newer(seq)}).deleted_count
        self._changed(e["team_id"] for e in stale)
        return deleted

    def page(self, team_id: str, sort: str, descending: bool, offset: int, limit: int) -> list[dict]:
        """One page of the team's entries in a stored order, read from that order's index, each with what its line
        shows. Need has one direction (as in panel_order)."""
        key, index = ENTRY_ORDERS[sort]
        direction = DESCENDING if descending and sort != "need" else ASCENDING
        # Whole: the entry is little more than what its line shows, and the development server copies a
        # document to project it (4.8 ms for a page of 50 whole, 5.4 ms projected).
        found = self.col.find({"team_id": team_id}).sort(key, direction).hint(index)
        return list(found.skip(offset).limit(limit))

    def count(self, team_id: str) -> int:
        """How many entries the team has: those whose ``_id`` starts with ``<team>:``, counted from the ``_id``
        index (a string range; every entry's ``_id`` is ``<team>:<patient>``, see save, and a team id, an
        ObjectID's hex, holds no ``:``). Not by team_id: a team id is 24 hex digits, which the development
        server stores as it stores an ObjectID's, so it would read each entry to check its type."""
        return count_by_id(self.col, {"$gte": f"{team_id}:", "$lt": f"{team_id};"})

    def present(self, entry_ids: Iterable[str]) -> set[str]:
        """Which of these entries (``<team>:<patient>``) are stored: counted from the `_id` index a chunk at a
        time (companion.store.db.count_by_id), and read only where the count falls short."""
        found: set[str] = set()
        for part in chunks(sorted(set(entry_ids))):
            if count_by_id(self.col, {"$in": part}) == len(part):
                found.update(part)
            else:
                found.update(doc["_id"] for doc in self.col.find({"_id": {"$in": part}}, {"_id": 1}))
        return found

    def delete_ids(self, entry_ids: Iterable[str]) -> int:
        """Delete these entries (``<team>:<patient>``) and move on their teams' panel versions."""
        wanted = sorted(set(entry_ids))
        if not wanted:
            return 0
        deleted = self.col.delete_many({"_id": {"$in": wanted}}).deleted_count
        self._changed(entry_id.split(":", 1)[0] for entry_id in wanted)
        return deleted

    def delete_for_patient(self, patient_id: str) -> int:
        teams = [e["team_id"] for e in self.col.find({"patient_id": patient_id}, {"team_id": 1})]
        deleted = self.col.delete_many({"patient_id": patient_id}).deleted_count
        self._changed(teams)
        return deleted


class NoneForNowSeen:
    """When this process last began a read of the marks for now that found none, per database: the note that lets a
    kept page of the panel be answered without reading the marks again for a moment (PanelRowMarks.none_now_within).
    Process-wide, not per store: every store of one database in the process (the web app's, a worker's in the same
    process) forgets the note as soon as it writes a mark for now, so what this process wrote is never missed; a
    mark another process wrote is seen at the next read of the marks, at most that moment later. A read that began
    before a mark was written in this process leaves no note (the count of marks written is compared)."""

    def __init__(self, ticker: Callable[[], float] = monotonic):
        self.ticker = ticker
        self._lock = threading.Lock()
        self._written: dict[str, int] = {}
        self._seen: dict[str, float] = {}

    def before_read(self, database: str) -> tuple[int, float]:
        with self._lock:
            return self._written.get(database, 0), self.ticker()

    def found_none(self, database: str, started: tuple[int, float]) -> None:
        with self._lock:
            if self._written.get(database, 0) == started[0]:
                self._seen[database] = started[1]

    def marking(self, database: str) -> None:
        with self._lock:
            self._written[database] = self._written.get(database, 0) + 1
            self._seen.pop(database, None)

    def within(self, database: str, seconds: float) -> bool:
        with self._lock:
            seen = self._seen.get(database)
            return seen is not None and self.ticker() - seen <= seconds


NONE_FOR_NOW_SEEN = NoneForNowSeen()


class PanelRowMarks:
    def __init__(self, db: Database, seen: NoneForNowSeen = NONE_FOR_NOW_SEEN):
        self.col = db.panel_row_marks
        self.seen = seen
        self._db = db.name

    def mark(self, patient_ids: Iterable[str], reason: str, at: datetime) -> None:
        """These patients' rows must be computed again now (replacing any later mark)."""
        self.seen.marking(self._db)  # before the write: a read for now under way when it lands leaves no note
        for pid in sorted(set(patient_ids)):
            self.col.update_one({"_id": pid}, {"$set": {"due": NOW, "due_at": at, "token": uuid.uuid4().hex,
                                                        "reason": reason}, "$inc": {"seq": 1}}, upsert=True)

    @staticmethod
    def _later(due_at: datetime) -> dict:
        return {"due": slot_of(due_at), "due_at": due_at, "token": uuid.uuid4().hex, "reason": "time"}

    def schedule(self, patient_id: str, due_at: datetime) -> None:
        """The row must be computed again at ``due_at`` at the latest (a mark due sooner stays)."""
        try:
            self.col.insert_one({"_id": patient_id, **self._later(due_at), "seq": 1})
        except DuplicateKeyError:
            self.col.update_one({"_id": patient_id, "due": {"$ne": NOW}, "due_at": {"$gt": due_at}},
                                {"$set": self._later(due_at), "$inc": {"seq": 1}})

    def reschedule(self, mark: dict, due_at: datetime) -> bool:
        """A mark whose row was just computed becomes the mark of its next computation, at ``due_at``, unless
        it was marked again meanwhile (then it stays, for the refresher's next run)."""
        return self.col.update_one({"_id": mark["_id"], "token": mark["token"]},
                                   {"$set": self._later(due_at), "$inc": {"seq": 1}}).modified_count == 1

    def seqs(self, patient_ids: Iterable[str]) -> dict[str, int]:
        """The ``seq`` of each patient's mark (0 for a patient without one, or a mark from before they were
        numbered): read before a row is computed, it orders that computation after every write marked before."""
        found = dict.fromkeys(patient_ids, 0)
        for part in chunks(sorted(found)):
            found.update({m["_id"]: m.get("seq", 0) for m in self.col.find({"_id": {"$in": part}}, {"seq": 1})})
        return found

    def token_of(self, patient_id: str) -> str | None:
        """The current token of the patient's mark: every mark and every computation of the row changes it."""
        mark = self.col.find_one({"_id": patient_id}, {"token": 1})
        return mark["token"] if mark else None

    def marked_now(self, patient_ids: Iterable[str]) -> list[dict]:
        """The marks for now among these patients. A few patients (a review, a page): their marks by `_id`. More:
        one equality on the slot (an index lookup on FerretDB too, where an `_id $in` of a whole panel would decode
        every mark), then the patients kept in Python."""
        wanted = set(patient_ids)
        if len(wanted) <= BY_ID_AT_MOST:
            return list(self.col.find({"_id": {"$in": sorted(wanted)}, "due": NOW}))
        return [m for m in self.all_now() if m["_id"] in wanted]

    def settled(self, patient_ids: Iterable[str], at: datetime) -> set[str]:
        """The patients whose rows nothing waits to change at ``at``: their mark is the next computation's,
        scheduled after ``at`` (a row with a mark for now, one due already, or none, is not settled)."""
        found = set()
        for part in chunks(sorted(set(patient_ids))):
            found.update(m["_id"] for m in self.col.find({"_id": {"$in": part}}, {"due": 1, "due_at": 1})
                         if m.get("due") != NOW and m["due_at"] > at)
        return found

    def all_now(self, at_most: int = 0) -> list[dict]:
        """Every mark for now (one equality on the slot); only the first ``at_most`` when that is given."""
        started = self.seen.before_read(self._db)
        found = list(self.col.find({"due": NOW}).limit(at_most))
        if not found:
            self.seen.found_none(self._db, started)
        return found

    def none_now_within(self, seconds: float) -> bool:
        """Whether a read of the marks for now that began at most ``seconds`` ago in this process found none, and
        this process has written none since (NoneForNowSeen)."""
        return self.seen.within(self._db, seconds)

    def due(self, at: datetime, lookback: timedelta = timedelta(days=2), limit: int = 10_000) -> list[dict]:
        """The marks due by ``at``: those for now, then those of the slots up to ``at`` (``lookback`` back)."""
        found = list(self.col.find({"due": NOW}).limit(limit))
        slot, first = at, at - lookback
        while slot >= first and len(found) < limit:
            found += [m for m in self.col.find({"due": slot_of(slot)}) if m["due_at"] <= at]
            slot -= SLOT
        return found[:limit]

    def overdue(self, at: datetime, limit: int) -> list[dict]:
        """Every mark due by ``at``, however long ago (for now, or scheduled at or before ``at``): one read of the
        marks, for a refresher that has not run for a while."""
        return list(self.col.find({"due_at": {"$lte": at}}).limit(limit))

    def delete_for_patient(self, patient_id: str) -> int:
        return self.col.delete_one({"_id": patient_id}).deleted_count
