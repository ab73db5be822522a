"""The adherence job: every patient's last two local days computed in one pass, then every day that late or
changed data touched, however late (within 30 days), and the alert rules judged again for those days.

Computing day by day (companion.services.adherence.compute_day) costs several queries per patient and
day; on a server without secondary indexes each is a scan of a whole collection. Here each input
collection is read ONCE per run for all patients: therapy plans (whole collection, small), session
records and completed practice within the run's time window, medication doses of the run's local
dates. Each row is grouped in Python onto its patient's local day, by the same rules as compute_day
(a session belongs to the local date at its start, in the zone in force then; the plan in force at the
end of the local day). Then, a chunk of patients at a time (so what a chunk holds stays bounded), the
snapshots are written, one replace by _id each, and the 30 days the low-adherence rule reads are
fetched by their computed ids (`_id $in`).

What is held for the whole run is one small entry per patient (zone history, two days' planned tasks
and events): a few hundred bytes each.

Touched days (companion.services.touched_days) are then recomputed one by one (late data is rare next to the
daily roll-over), each patient's alert rules judged again over the fresh snapshots (raising what now holds,
resolving what no longer does), and the marks cleared, each only if it was not marked again meanwhile. A day
more than 30 days back is not recomputed (the offline window: nothing that old is accepted as counting); its
mark is cleared with a log line.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from companion.clock import Clock, now
from companion.domain.adherence import PlannedTask, TaskEvent, TaskKind
from companion.domain.alerts import AlertCandidate
from companion.domain.localtime import TimeZoneHistory
from companion.domain.people import Account
from companion.domain.plans import planned_tasks
from companion.services.adherence import Adherence, day_bounds, snapshot_of, tens_event
from companion.services.alerts import LOW_ADHERENCE_LOOKBACK, AlertService, AlertsReport, low_adherence_in
from companion.services.item_failures import ItemFailures
from companion.services.touched_days import RECOMPUTE_WINDOW_DAYS
from companion.store.adherence import snapshot_id
from companion.store.stores import Stores

logger = logging.getLogger(__name__)

RECENT_DAYS = 2  # yesterday (now complete) and today (partial)
CHUNK = 1_000  # patients whose snapshots are written and whose rule is evaluated together
# Any zone's local day lies within its UTC date widened by 15 hours on each side.
WINDOW_MARGIN = timedelta(hours=15)
_PLAN_FIELDS = {"patient_id": 1, "version": 1, "active_from": 1, "active_to": 1, "tens": 1, "medications": 1,
                "mindfulness": 1}


@dataclass
class _Day:
    local_date: date
    day_end: datetime
    zone: str
    plan_version: int | None = None
    tasks: list[PlannedTask] = field(default_factory=list)
    events: list[TaskEvent] = field(default_factory=list)
    doses: list[TaskEvent] = field(default_factory=list)


@dataclass
class _Patient:
    patient_id: str
    history: TimeZoneHistory
    today: date
    days: dict[date, _Day]


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk of patients produced: snapshots written and low-adherence alerts to raise."""

    written: int
    candidates: list[AlertCandidate]


def _patient(account: Account, now: datetime) -> _Patient:
    history = account.zone_history()
    today = now.astimezone(history.zone_at(now)).date()
    days = {}
    for n in range(RECENT_DAYS - 1, -1, -1):
        local_date = today - timedelta(days=n)
        _, day_end, zone = day_bounds(history, local_date)
        days[local_date] = _Day(local_date, day_end, zone)
    return _Patient(account.id, history, today, days)


def _window(patients: dict[str, _Patient]) -> tuple[datetime, datetime]:
    dates = {d for p in patients.values() for d in p.days}
    return (datetime.combine(min(dates), time(0), UTC) - WINDOW_MARGIN,
            datetime.combine(max(dates) + timedelta(days=1), time(0), UTC) + WINDOW_MARGIN)


def _day_of(patient: _Patient | None, at: datetime) -> _Day | None:
    if patient is None:
        return None
    return patient.days.get(at.astimezone(patient.history.zone_at(at)).date())


def _apply_plan(plan: dict, patient: _Patient) -> None:
    for day in patient.days.values():
        live = plan["active_from"] < day.day_end and (plan.get("active_to") is None
                                                      or plan["active_to"] >= day.day_end)
        if live and (day.plan_version is None or plan["version"] > day.plan_version):
            day.plan_version, day.tasks = plan["version"], planned_tasks(plan, day.local_date)


def _read_plans(stores: Stores, patients: dict[str, _Patient], failures: ItemFailures) -> None:
    for plan in stores.plans.every_version(_PLAN_FIELDS):
        patient = patients.get(plan.get("patient_id"))
        if patient is not None:
            failures.attempt(plan["_id"], lambda plan=plan, patient=patient: _apply_plan(plan, patient))


def _read_events(stores: Stores, patients: dict[str, _Patient]) -> None:
    start, end = _window(patients)
    for s in stores.session_records.in_window(start, end):
        day = _day_of(patients.get(s.get("patient_id")), s["started_at"])
        if day is not None:
            day.events.append(tens_event(s))
    for p in stores.practice.completed_in_window(start, end):
        day = _day_of(patients.get(p.get("patient_id")), p["started_at"])
        if day is not None:
            day.events.append(TaskEvent(TaskKind.MINDFULNESS, p["started_at"], p.get("minutes") or 0))
    dates = sorted({d.isoformat() for p in patients.values() for d in p.days})
    for d in stores.occurrences.doses_taken_on(dates):
        patient = patients.get(d.get("patient_id"))
        day = patient.days.get(date.fromisoformat(d["local_date"])) if patient else None
        if day is not None:
            day.doses.append(TaskEvent(TaskKind.MEDICATION, d["due_at"]))


def _chunk(stores: Stores, chunk: list[_Patient], now: datetime) -> ChunkResult:
    store = stores.adherence_days
    fresh = [snapshot_of(p.patient_id, day.local_date, day.zone, day.tasks, day.events + day.doses, now)
             for p in chunk for day in p.days.values()]
    # One replace by _id per snapshot (served from the _id index). Not a bulk_write: FerretDB v1.24 hangs
    # on an unordered bulk of ~100 upserting replaces of these documents (seen in bench/nightly.py).
    for doc in fresh:
        store.save(doc)
    older = defaultdict(list)
    lookback = LOW_ADHERENCE_LOOKBACK.days
    for doc in store.by_ids(snapshot_id(p.patient_id, p.today - timedelta(days=n))
                            for p in chunk for n in range(RECENT_DAYS, lookback + 1)):
        older[doc["patient_id"]].append(doc)
    for doc in fresh:
        older[doc["patient_id"]].append(doc)
    candidates = [c for p in chunk if (c := low_adherence_in(p.patient_id, older[p.patient_id], p.today))]
    return ChunkResult(len(fresh), candidates)


def recompute_everyone(stores: Stores, now: datetime, chunk_size: int = CHUNK,
                       failures: ItemFailures | None = None) -> Iterator[ChunkResult]:
    """Recompute every patient's last two local days and judge the low-adherence rule, chunk by chunk. A
    patient or a plan that cannot be read (a malformed stored item) is logged and skipped."""
    failures = failures or ItemFailures("adherence-daily")
    patients = {}
    for account in stores.users.patients():
        patient = failures.attempt(account.id, lambda a=account: _patient(a, now))
        if patient is not None:
            patients[account.id] = patient
    if not patients:
        return
    _read_plans(stores, patients, failures)
    _read_events(stores, patients)
    ordered = list(patients.values())
    for start in range(0, len(ordered), chunk_size):
        yield _chunk(stores, ordered[start:start + chunk_size], now)


class AdherenceJob:
    """The hourly adherence job: every patient's yesterday (now complete) and today (partial), then the
    low-adherence alert rule over the fresh snapshots; then every touched day, and the rules judged again."""

    def __init__(self, stores: Stores, alerts: AlertService, adherence: Adherence, clock: Clock = now):
        self.stores = stores
        self.alerts = alerts
        self.adherence = adherence
        self.clock = clock

    def run(self) -> int:
        """Recompute the snapshots of every patient's last two local days and of every touched day; returns how
        many were written."""
        at = self.clock()
        marks = self.stores.days_to_recompute.pending()
        written = 0
        report = AlertsReport()
        failures = ItemFailures("adherence-daily")
        for chunk in recompute_everyone(self.stores, at, failures=failures):
            written += chunk.written
            for candidate in chunk.candidates:
                failures.attempt(candidate.dedup_key, lambda c=candidate: self.alerts.raise_once(c, report))
        written += self.recompute_touched(marks, report, failures)
        logger.info("adherence snapshots written: %d; alerts %s; failed %d", written, report.raised, len(failures))
        return written

    def recompute_touched(self, marks: list[dict], report: AlertsReport | None = None,
                          failures: ItemFailures | None = None) -> int:
        """Recompute the marked days (within 30 days of each patient's today), judge the patients' alert rules
        again, then clear the marks that were not marked again meanwhile; returns the snapshots written. A
        patient whose days fail keeps their marks for the next run; the others go on."""
        failures = failures or ItemFailures("adherence-daily")
        by_patient: dict[str, set[date]] = defaultdict(set)
        for mark in marks:
            by_patient[mark["patient_id"]].add(date.fromisoformat(mark["date"]))
        written = 0
        failed: set[str] = set()
        for patient in self.stores.users.by_ids(sorted(by_patient)):
            if not patient.is_patient:
                continue
            count = failures.attempt(patient.id, lambda p=patient: self._recompute_patient(p, by_patient[p.id], report))
            if count is None:
                failed.add(patient.id)
            else:
                written += count
        self.stores.days_to_recompute.done([m for m in marks if m["patient_id"] not in failed])
        return written

    def _recompute_patient(self, patient: Account, marked: set[date], report: AlertsReport | None) -> int:
        history = patient.zone_history()
        at = self.clock()
        today = at.astimezone(history.zone_at(at)).date()
        days = {d for d in marked if today - timedelta(days=RECOMPUTE_WINDOW_DAYS) <= d <= today}
        for day in sorted(marked - days):
            logger.info("touched day outside the recompute window, not recomputed",
                        extra={"patient_id": patient.id, "date": day.isoformat()})
        for day in sorted(days):
            self.adherence.compute_day(patient, day)
        if days:
            snapshots = self.stores.adherence_days.between(patient.id, today - LOW_ADHERENCE_LOOKBACK, today)
            self.alerts.reconsider(patient, days, snapshots, today, report)
        return len(days)
