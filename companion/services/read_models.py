"""The panel's read model: one row per patient with the figures the clinician panel shows, kept current.

A row is computed whole from the patient's stored data (their account, the adherence snapshots of the last
30 days and today, the pain ratings of the last 28 days, their units' last sync, their open alerts), by the
same domain rules the panel used to apply on every request (companion.domain.review). It is computed again:

- when its inputs change: every write that marks a day to recompute (companion.services.touched_days: a
  session, dose, practice, diary entry, plan or time-zone change, however late) marks the row too; so do the
  adherence job when a snapshot changes (the PDC is read from snapshots), an alert raised, reopened,
  acknowledged or resolved, a unit's contact that changes the days since sync, a change of name, and a change of
  the account's state (deactivated, reactivated, closed: the row says which, and when it was closed);
- when time alone changes a figure: at the patient's next local midnight (the PDC periods move on), when a
  pain rating leaves the 14- or 28-day window (the trend moves) and when the days since the last sync move on.
  Each row schedules its own next computation.

A unit's contact (a status report about every 30 seconds, an upload) marks the row only when it changes what
the row shows (companion.domain.review.contact_changes_line: the first contact, or one that changes the days since
the sync); otherwise the row takes it at its next computation, at the latest when its days since the sync would
move on.

The marks are durable (companion.store.read_models.PanelRowMarks) and the refresher (a job every minute)
computes the rows they name. A row is therefore at most one refresher run behind its inputs; days since the
last sync are counted when the row is read, from the stored instant.

The adherence job's low-adherence rule reads the days a row keeps (state and TENS fraction of the 30 days
before the row's local date) instead of the patient's snapshots, when the row is settled: computed on the
patient's today with nothing marked since (companion.services.adherence_batch).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from time import monotonic
from zoneinfo import ZoneInfo

from companion.clock import Clock, now
from companion.domain import review as rules
from companion.domain.localtime import REPORTED_AHEAD, resolve_local
from companion.domain.people import ACTIVE, CLOSED, Account
from companion.domain.review import PanelFilter
from companion.services.item_failures import ItemFailures
from companion.store.adherence import snapshot_id
from companion.store.read_models import NOW, SHOWN_FIELDS, SLOT, panel_order, panel_query
from companion.store.stores import Stores

logger = logging.getLogger(__name__)

KEPT_DAYS = 30  # the completed days before today a row keeps (the 30-day PDC and the low-adherence rule)
PAIN_WINDOW = timedelta(days=28)
PAIN_HALF = timedelta(days=14)
NO_PDC_KEY = 2.0  # sorts after any PDC
NO_CHANGE_KEY = -1_000.0  # below any change of a 0-10 scale
NO_SYNC_KEY = datetime(9999, 1, 1)  # after any sync
DAY_FIELDS = {"patient_id": 1, "date": 1, "state": 1, "covered": 1, "tens_fraction": 1}
MAX_LOOKBACK = timedelta(days=2)
OVERDUE_LIMIT = 10_000  # marks a pass that reads every mark due computes (the rest on the next pass)
ENDING_FINISHED_AFTER = timedelta(minutes=10)  # an enrolment's ending unfinished this long stopped half-way
MARKS_READ_AT_MOST = 1_000  # marks for now a panel read takes to catch its team's patients up (the rest: refresher)
# A kept page is answered without reading the marks for now when a read of them this long ago found none and this
# process has written none since: what another process marked shows at most this late (the refresher: a minute).
MARKS_SEEN_FOR = 1.0


def kept_day(snapshot: dict) -> dict:
    """What a row keeps of one day's snapshot: what the PDC and the low-adherence rule read."""
    return {"state": snapshot["state"], "covered": bool(snapshot.get("covered")),
            "tens_fraction": snapshot.get("tens_fraction")}


def kept_snapshots(days: dict | None) -> list[dict]:
    """A row's kept days in the shape of snapshots (``date``, ``state``, ``covered``, ``tens_fraction``)."""
    return [{"date": d, **kept} for d, kept in (days or {}).items()]


def _next_change(entries: list[dict], last_sync: datetime | None, at: datetime, zone: str, today: date) -> datetime:
    """When time alone next changes the row: the next local midnight, a rating recorded ahead of ``at`` (a phone
    whose clock runs a few minutes fast) coming to count, a rating leaving a 14-day window, or the days since the
    last sync moving on (a contact since that left them the same did not mark the row: see
    companion.domain.review.contact_changes_line; computed again then, the row takes it)."""
    soonest = resolve_local(today + timedelta(days=1), time(0), ZoneInfo(zone))
    sync_moves = rules.days_since_changes_at(last_sync, at)
    if sync_moves is not None and at < sync_moves < soonest:
        soonest = sync_moves
    for entry in entries:
        for edge in (entry["recorded_at"], entry["recorded_at"] + PAIN_HALF, entry["recorded_at"] + PAIN_WINDOW):
            if at < edge < soonest:
                soonest = edge
    return soonest


def row_today(person: Account, at: datetime) -> date:
    """The local date a row computed at ``at`` is of: the days it keeps are the 30 before it."""
    return rules.local_date(at, person.time_zone or "UTC")


def panel_row_doc(person: Account, snapshots: list[dict], pain: list[dict], last_sync: datetime | None,
                  open_alerts: int, at: datetime) -> tuple[dict, dict, datetime]:
    """A patient's stored panel row as of ``at`` from their snapshots (the 30 completed days before today: today
    is in progress and no PDC counts it), pain ratings (the 28 days before ``at``), last sync and open alerts;
    with the days it was computed from, and when time alone changes it."""
    zone = person.time_zone or "UTC"
    today = row_today(person, at)
    first = today - timedelta(days=KEPT_DAYS)
    days = {s["date"]: kept_day(s) for s in snapshots if first.isoformat() <= s["date"] < today.isoformat()}
    pdc_7 = rules.pdc(kept_snapshots(days), *rules.completed_days(today, 7))
    pdc_30 = rules.pdc(kept_snapshots(days), *rules.completed_days(today, KEPT_DAYS))
    kept = [e for e in pain if not e.get("deleted") and at - e["recorded_at"] < PAIN_WINDOW]
    live = [e for e in kept if e["recorded_at"] <= at]
    trend = rules.pain_trend(live, at)
    name = person.display_name or ""
    closed = person.status == CLOSED
    # A closed record ranks by its open alerts alone (companion.domain.review.need_key): its other need keys are
    # those of a patient without figures. The figures themselves are shown as they are.
    ranked = not closed
    return {
        "_id": person.id, "display_name": name, "name_key": name.lower(), "time_zone": zone,
        "pdc_7": pdc_7, "pdc_30": pdc_30, "none_pdc_7": int(pdc_7 is None), "none_pdc_30": int(pdc_30 is None),
        "low_pdc": ranked and pdc_7 is not None and pdc_7 < rules.ADHERENT_PDC,
        "pdc_7_key": pdc_7 if ranked and pdc_7 is not None else NO_PDC_KEY,
        "pain_recent_mean": trend.recent_mean, "pain_previous_mean": trend.previous_mean,
        "pain_change": trend.change, "none_pain_change": int(trend.change is None),
        "pain_change_key": trend.change if ranked and trend.change is not None else NO_CHANGE_KEY,
        "pain_direction": trend.direction,
        "last_sync": last_sync, "none_sync": int(last_sync is None),
        "sync_key": last_sync if ranked and last_sync is not None else NO_SYNC_KEY,
        "open_alerts": open_alerts,
        "account_status": person.status, "closed_at": person.status_changed_at if closed else None,
    }, dict(sorted(days.items())), _next_change(kept, last_sync, at, zone, today)


def as_panel_row(doc: dict, at: datetime) -> rules.PanelRow:
    """A stored row as the domain's panel row, its days since the last sync counted at ``at``."""
    return rules.PanelRow(
        patient_id=doc["_id"], display_name=doc["display_name"], time_zone=doc["time_zone"],
        pdc_7=doc["pdc_7"], pdc_30=doc["pdc_30"],
        pain=rules.PainTrend(doc["pain_recent_mean"], doc["pain_previous_mean"]),
        days_since_sync=rules.days_since(doc["last_sync"], at), open_alerts=doc["open_alerts"],
        last_sync=doc["last_sync"],
        # (A row computed before it held the account's status is an open account's: `companion migrate` computes
        # again those of accounts closed or deactivated, and every row is computed again at its local midnight.)
        account_status=doc.get("account_status") or ACTIVE, closed_at=doc.get("closed_at"))


class PanelPages:
    """Pages of teams' panels this process has read, each kept under the team's panel version it was read at
    (companion.store.read_models.PanelEntries moves the version on after every change to the team's entries)
    and served again only while the team's version is the same, and for at most ``max_age_s`` (the bound on a
    page kept after a crash between an entry's write and its version's move). Least recently used pages go
    first beyond ``size``; a size of 0 keeps none."""

    def __init__(self, size: int = 256, max_age_s: float = 60.0, ticker: Callable[[], float] = monotonic):
        self.size = size
        self.max_age_s = max_age_s
        self.ticker = ticker
        self._pages: OrderedDict[tuple, tuple[int, float, list[dict], int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, version: int) -> tuple[list[dict], int] | None:
        with self._lock:
            kept = self._pages.get(key)
            if kept is None:
                return None
            if kept[0] != version or self.ticker() - kept[1] > self.max_age_s:
                del self._pages[key]
                return None
            self._pages.move_to_end(key)
            return kept[2], kept[3]

    def put(self, key: tuple, version: int, docs: list[dict], total: int) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._pages[key] = (version, self.ticker(), docs, total)
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild of panel rows did: rows written, and the patients whose row could not be computed."""

    written: int
    failed: tuple[str, ...]


class PanelReadModel:
    def __init__(self, stores: Stores, clock: Clock = now, pages: PanelPages | None = None):
        self.stores = stores
        self.rows = stores.panel_rows
        self.entries = stores.panel_entries
        self.marks = stores.panel_row_marks
        self.clock = clock
        self.pages = pages or PanelPages(size=0)
        self._last_refresh: datetime | None = None

    # Keeping rows current
    def mark(self, patient_ids: Iterable[str], reason: str) -> None:
        """These patients' rows must be computed again (their inputs changed)."""
        self.marks.mark(patient_ids, reason, self.clock())

    def compute(self, person: Account, at: datetime, kept: dict | None = None) -> tuple[dict, dict, datetime]:
        """A patient's row from their stored data as of ``at`` (a handful of queries), the days it kept, and
        when time alone changes it. ``kept``: the days the row was last computed from (companion.store.read_models
        .PanelRowDays), given when only time has passed since (its mark is the scheduled one): those days are
        taken as they are, and only the snapshots of the days completed since are read."""
        today = row_today(person, at)
        dates = [today - timedelta(days=n) for n in range(KEPT_DAYS, 0, -1)]
        known: list[dict] = []
        if kept and kept.get("today") and kept["today"] <= today.isoformat():
            since = kept["today"]  # the days before it are kept; the later ones were not complete then
            known = [s for s in kept_snapshots(kept["days"]) if s["date"] >= dates[0].isoformat()]
            dates = [d for d in dates if d.isoformat() >= since]
        snapshots = known + self.stores.adherence_days.by_ids([snapshot_id(person.id, d) for d in dates], DAY_FIELDS)
        # Up to the few minutes ahead the API accepts a rating at: one recorded so counts when its time comes.
        pain = self.stores.pain_entries.scores_between(person.id, at - PAIN_WINDOW, at + REPORTED_AHEAD)
        synced = [u.last_heard for u in self.stores.devices.for_patient(person.id) if u.last_heard]
        alerts = self.stores.alerts.open_counts([person.id]).get(person.id, 0)
        return panel_row_doc(person, snapshots, pain, max(synced, default=None), alerts, at)

    def refresh(self, patient_ids: Iterable[str], marks: dict[str, dict] | None = None,
                failures: ItemFailures | None = None) -> int:
        """Compute and store these patients' rows now; each mark that named one (``marks``, by patient) becomes
        the mark of its next computation unless it was marked again meanwhile; returns how many rows were
        written (an id that is no patient's loses its row). A row that fails keeps its mark."""
        failures = ItemFailures("panel-rows") if failures is None else failures  # (an empty one is falsy)
        marks = marks or {}
        ids = set(patient_ids)
        # Each row is stored with the seq of the patient's mark read before its data (given, or read now), and
        # only over a row of no later seq: one computed from data read before a write never replaces one computed
        # after it (two refreshes of a patient can race: the refresher, a panel read, a review).
        seqs = {pid: marks[pid].get("seq", 0) for pid in ids if pid in marks}
        unread = [pid for pid in ids if pid not in seqs]
        if unread:
            seqs.update(self.marks.seqs(unread))
        at = self.clock()
        people = {p.id: p for p in self.stores.users.by_ids(ids) if p.is_patient}
        # Rows that only time has changed since they were computed (their mark is the scheduled one their
        # computation left; any change marks them for now): their kept days stand, read at once.
        kept = self.stores.panel_row_days.by_ids(pid for pid, m in marks.items()
                                                 if pid in people and m.get("due") != NOW)
        written = 0
        for pid in sorted(ids):
            person = people.get(pid)
            if person is None:
                for store in (self.rows, self.stores.panel_row_days, self.entries, self.marks):
                    store.delete_for_patient(pid)
                continue
            computed = failures.attempt(pid, lambda p=person: self.compute(p, at, kept.get(p.id)))
            if computed is None:
                continue
            row, days, due_at = computed
            seq, teams = seqs[pid], self.stores.care_teams
            # Each written only over a version of an earlier mark, or of this one computed as of no later instant
            # (a refresher pass after the patient's midnight that overtook this computation stands).
            self.stores.panel_row_days.save(pid, days, row_today(person, at).isoformat(), seq, at)
            self.rows.save(row, seq, at)
            self.entries.save(row, teams.team_ids_of_patient(pid), seq, at)
            # The teams read again: an enrolment ended since the first read lost its entry before ours was written.
            self.entries.keep_only(pid, teams.team_ids_of_patient(pid), seq)
            if pid in marks:
                self.marks.reschedule(marks[pid], due_at)
            else:
                self.marks.schedule(pid, due_at)
            written += 1
        return written

    def refresh_due(self) -> int:
        """The refresher (a job every minute): compute the rows whose marks are due; returns how many. A pass
        finds the marks of the slots since the last one; the first pass of a process, and one after a gap longer
        than MAX_LOOKBACK (the worker stopped, or another held the lead), reads every mark due, however old (one
        scan of the marks), until one such pass finds fewer than its limit."""
        at = self.clock()
        gap = None if self._last_refresh is None else at - self._last_refresh + SLOT
        if gap is None or gap > MAX_LOOKBACK:
            marks = self.marks.overdue(at, OVERDUE_LIMIT)
            self._last_refresh = at if len(marks) < OVERDUE_LIMIT else None
        else:
            marks = self.marks.due(at, gap)
            self._last_refresh = at
        written = self.refresh({m["_id"] for m in marks}, {m["_id"]: m for m in marks}) if marks else 0
        if written:
            logger.info("panel rows refreshed: %d", written)
        if self.stores.care_teams.finish_endings(at - ENDING_FINISHED_AFTER):
            logger.warning("enrolment endings left half-way were finished")
        return written

    def catch_up(self, patient_ids: list[str]) -> int:
        """Compute now the rows of these patients whose inputs changed since the refresher's last pass, so that
        a read sees every write made before it. (What time alone changes is the refresher's: at most one of its
        passes late.)"""
        marks = self.marks.marked_now(patient_ids)
        return self.refresh({m["_id"] for m in marks}, {m["_id"]: m for m in marks}) if marks else 0

    def rebuild(self, progress: Callable[[int, int], None] | None = None, batch: int = 200, *,
                patient_ids: Iterable[str] | None = None) -> Rebuilt:
        """Compute these patients' rows again (by default every patient's, a repair, which also drops rows of
        non-patients), ``batch`` at a time, with ``progress(done, total)`` after each batch. A patient whose row
        fails is logged, keeps any mark, and is named in the answer (their row is computed on the next run)."""
        every = patient_ids is None
        ids = self.stores.users.patient_ids() if every else sorted(set(patient_ids))
        failures = ItemFailures("panel-rows")
        done = 0
        for start in range(0, len(ids), batch):
            part = ids[start:start + batch]
            # The marks waiting now are answered by this computation (unless marked again meanwhile).
            marks = {m["_id"]: m for m in self.marks.marked_now(part)}
            done += self.refresh(part, marks, failures)
            if progress is not None:
                progress(min(start + batch, len(ids)), len(ids))
        if every:
            for stale in set(self.rows.all_ids()) - set(ids):
                for store in (self.rows, self.stores.panel_row_days, self.entries):
                    store.delete_for_patient(stale)
        return Rebuilt(done, tuple(failures.item_ids))

    def missing(self) -> list[str]:
        """The patients missing from the panel: those without a row, those whose row was computed before rows
        held the account's state while their account is not active (a closed record would show as an open one
        until the row's next computation, at the patient's midnight), and those enrolled in a team without their
        line on its panel (a database from before the read model or its lines, a build stopped half-way, a
        patient signed up or enrolled by a process of a version before them). Found by ids, never by scanning
        the rows: the patients' ids from the role index, which of them have a row (and its state) by `_id $in` a
        chunk at a time, the states of the accounts whose row holds none by `_id $in`, each team's enrolments
        from the team index and which of their lines exist counted from the `_id` index (10,000 patients in 100
        teams, nothing missing: 1-2 s on the development server, 2 shared cores)."""
        patients = self.stores.users.patient_ids()
        states = self.rows.account_states(patients)
        wanted = set(patients) - set(states)
        unknown = [pid for pid, state in states.items() if state is None]
        wanted.update(pid for pid, state in self.stores.users.states(unknown).items() if state != ACTIVE)
        lines = {f"{team_id}:{pid}": pid for team_id, enrolled in self.stores.care_teams.enrolled_by_team()
                 for pid in enrolled}
        wanted.update(lines[line] for line in set(lines) - self.entries.present(lines))
        return sorted(wanted & set(patients))

    # Reading
    def one(self, patient_id: str, at: datetime | None = None) -> rules.PanelRow | None:
        """One patient's row (their review's summary figures): one read by ``_id`` once it is current."""
        self.catch_up([patient_id])
        doc = self.rows.get(patient_id)
        if doc is None and self.refresh([patient_id]):
            doc = self.rows.get(patient_id)
        return as_panel_row(doc, at or self.clock()) if doc else None

    def team_page(self, team_id: str, *, sort: str = "need", descending: bool = False, offset: int = 0,
                  limit: int = 50, at: datetime | None = None,
                  version: int | None = None) -> tuple[list[rules.PanelRow], int]:
        """One page of a team's whole panel in a stored order (ENTRY_ORDERS), and how many patients it has: the
        page's entries read from that order's index, each with what its line shows (SHOWN_FIELDS, copied from
        the row when both are written); nothing else of the team is read. The rows of the team's patients
        marked since the refresher's last pass are computed first. An entry whose enrolment has ended (a crash
        between the two deletions) is dropped, never shown. ``version``: the team's panel version, read before
        this call (with the team; None while one of its enrolments is ending): the page this process last read
        under it is answered again, its figures taken as of ``at`` (none of the team's entries has changed since),
        unless a row was computed first. Such a page is answered without reading the marks when a read of them
        began at most MARKS_SEEN_FOR ago in this process and found none (companion.store.read_models
        .NoneForNowSeen): a kept page then costs no command beyond the caller's checks and the audit."""
        at = at or self.clock()
        teams = self.stores.care_teams
        key = (team_id, sort, descending, offset, limit)
        if version is not None and self.marks.none_now_within(MARKS_SEEN_FOR):
            kept = self.pages.get(key, version)
            if kept is not None:
                docs, total = kept
                return [as_panel_row(d, at) for d in docs], total
        now_marks = self.marks.all_now(MARKS_READ_AT_MOST)
        marked = {m["_id"]: m for m in now_marks}
        # (Marks of every team's patients: one lookup for all. A patient enrolled before enrolment ids were
        # derived is not caught up here; the refresher computes their row within a minute.)
        mine = teams.enrolled(team_id, marked, by_pair=False)
        if mine:
            self.refresh(mine, {pid: marked[pid] for pid in mine})
            version = None  # moved on by the refresh: this read is not kept under the version read before it
        if len(now_marks) >= MARKS_READ_AT_MOST:
            # More patients marked than one read takes (a flood of uploads): this read computes the team's among
            # those it read, shows the rest as they are, and is not kept; the refresher catches them up within a
            # minute. Reading every mark on every panel read would make each read cost what the flood wrote.
            version = None
        kept = self.pages.get(key, version) if version is not None else None
        if kept is not None:
            # (An enrolment ended since the page was read moved the version on. One ending now, or stopped
            # half-way with its entry left behind, gives no version: companion.store.relationships.CareTeams.)
            docs, total = kept
            return [as_panel_row(d, at) for d in docs], total
        while True:
            entries = self.entries.page(team_id, sort, descending, offset, limit)
            ended = {e["patient_id"] for e in entries} - teams.enrolled(team_id, (e["patient_id"] for e in entries))
            if not ended:
                break
            self.entries.delete_ids(f"{team_id}:{pid}" for pid in ended)
        # Each entry holds what its line shows; an entry written before it did is shown from its row.
        copied = {e["patient_id"]: {**e, "_id": e["patient_id"]} for e in entries
                  if all(field in e for field in SHOWN_FIELDS)}
        rows = {d["_id"]: d for d in self.rows.by_ids(e["patient_id"] for e in entries
                                                      if e["patient_id"] not in copied)} | copied
        docs = [rows[e["patient_id"]] for e in entries if e["patient_id"] in rows]
        total = self.entries.count(team_id)
        if version is not None:
            self.pages.put(key, version, docs, total)
        return [as_panel_row(d, at) for d in docs], total

    def page(self, patient_ids: list[str], *, sort: str = "need", descending: bool = False,
             keep: PanelFilter | None = None, offset: int = 0, limit: int = 50,
             at: datetime | None = None) -> tuple[list[rules.PanelRow], int]:
        """One page of these patients' rows, filtered and ordered in the database, and how many matched."""
        at = at or self.clock()
        keep = keep or PanelFilter()
        query = panel_query(patient_ids, at, q=keep.q, needs_attention=keep.needs_attention,
                            pdc_7_below=keep.pdc_7_below, pain_rising=keep.pain_rising,
                            silent_days=keep.silent_days, open_alerts=keep.open_alerts)
        # Without a filter every patient matches (each has a row: built by migrate, and computed before the
        # read once their sign-up or enrolment marked it), so the count is not asked of the database.
        whole = None if keep != PanelFilter() else len(set(patient_ids))
        docs, total = self.rows.page(query, panel_order(sort, descending), offset, limit, whole)
        return [as_panel_row(d, at) for d in docs], total
