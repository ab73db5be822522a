"""The adherence job: its cost follows the change, not the population. Each run recomputes only
- the days that received data since its last run, however late (the marks of
  companion.services.touched_days, within 30 days), and
- the local days that began since its last run (the day roll-over: the only change that comes without data;
  a planned day with nothing done yet must have its snapshot, for PDC and the low-adherence rule),
then judges the alert rules for the patients whose days it recomputed. A run with nothing new and no local
midnight passed writes nothing and reads the patients' zones and the marks only. The first run (no record
of an earlier one) recomputes every patient's last two local days.

Computing day by day (companion.services.adherence.compute_day) costs several queries per patient and
day; on a server without secondary indexes each is a scan of a whole collection. Here the days to compute
are gathered first, then each input collection is read for all of them at once: therapy plans of those
patients; session records and completed practice in the time window of each group of nearby dates (dates
three or more days apart are read apart, so one late day does not widen the window for everyone);
medication doses of those local dates. Each row is grouped in Python onto its patient's local day, by the
same rules as compute_day (a session belongs to the local date at its start, in the zone in force then; the
day's plan as companion.domain.plans.day_plan takes it). Then, a chunk of patients at a time (so what a chunk holds stays
bounded), the snapshots are written (the new days in one insert, the others in ordered bulk replaces), the
30 days the low-adherence rule reads are taken from the patients' panel rows where those are settled (one
read of the chunk's kept days, which also tell which rows this run changes) and otherwise fetched by their
computed ids (`_id $in`, the most recent first), the chunk's open alerts are read at once, and the rules judged:
raising what holds, and for patients with touched days resolving what no longer does and raising the flares of
those days (ratings synced late: their ratings read at once too). The queries of a run depend on how many dates
and chunks it covers, not on how many patients there are.

Two runs may overlap (an old leader still finishing a slow run while the next leader runs the job): each run takes
a number before it reads its data (companion.store.recompute.DaysToRecompute.start, one counter in the database)
and writes a day only over a snapshot of a run that took a lower number (AdherenceDays.save_many; the instants the
processes' clocks stamp order only the snapshots written without a number). A day that a later run wrote first is
marked again (the later run may have cleared the mark of data this one did not read) and the patient's rules are
not judged on this run's figures: the later run judged them, and the next run judges them again, so an alert the
later run resolved is not reopened, nor its caregiver's push queued again. What refused a run never refuses the
next one for the same reason: a snapshot without a number is numbered then, and a counter behind the numbers
stored (a database restored from a backup) is moved on past them (`_order_after`), also when it handed this run
the number a stored day carries (one behind it): that day refused the run all the same.

A day more than 30 days back is not recomputed (the offline window: nothing that old is accepted as
counting); its mark is cleared with a log line. A patient whose days fail keeps (or gets) marks for them,
so the next run does them again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from companion.clock import Clock, now
from companion.domain.adherence import PlannedTask, TaskEvent, TaskKind
from companion.domain.alerts import AlertCandidate, AlertKind, low_adherence_run_ended
from companion.domain.localtime import TimeZoneHistory, dates_reach
from companion.domain.people import CLOSED, Account
from companion.domain.plans import tasks_for_day
from companion.domain.practice import REACH
from companion.domain.sessions import tens_event
from companion.services.adherence import Adherence, day_bounds, snapshot_of
from companion.services.alerts import (
    LOW_ADHERENCE_LOOKBACK,
    RECONSIDERED,
    AlertService,
    AlertsReport,
    flare_days,
    low_adherence_in,
    progress_of,
)
from companion.services.day_facts import practice_events, with_counts
from companion.services.item_failures import ItemFailures
from companion.services.read_models import kept_day, kept_snapshots
from companion.services.touched_days import DECIDED, RECOMPUTE_WINDOW_DAYS, WINDOW_SLACK_DAYS
from companion.store.adherence import snapshot_id
from companion.store.recompute import PASS_LIMIT
from companion.store.stores import Stores

logger = logging.getLogger(__name__)

JOB = "adherence-daily"
RECENT_DAYS = 2  # the first run: yesterday (now complete) and today (partial)
DECIDED_REACH = timedelta(days=366)  # how far back such a decision is recomputed (the review's longest period)
DATE_GAP = 3  # dates this many days apart are read in separate windows (their windows do not overlap)
CHUNK = 1_000  # patients whose snapshots are written and whose rule is evaluated together
OVERTAKEN = "a later run of the adherence job wrote the day first"  # the reason of the marks it leaves
_PLAN_FIELDS = {"patient_id": 1, "version": 1, "active_from": 1, "active_to": 1, "tens": 1, "medications": 1,
                "mindfulness": 1}


@dataclass
class _Day:
    local_date: date
    zone: str
    tasks: list[PlannedTask] = field(default_factory=list)
    events: list[TaskEvent] = field(default_factory=list)
    doses: list[TaskEvent] = field(default_factory=list)


@dataclass
class _Patient:
    account: Account
    history: TimeZoneHistory
    today: date
    days: dict[date, _Day]
    touched: set[date] = field(default_factory=set)  # days that received data (the rules are judged again)

    @property
    def patient_id(self) -> str:
        return self.account.id


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk of patients produced: snapshots written and low-adherence alerts to raise."""

    written: int
    candidates: list[AlertCandidate]


def local_today(history: TimeZoneHistory, at: datetime) -> date:
    return at.astimezone(history.zone_at(at)).date()


def _patient(account: Account, now: datetime, dates: set[date], touched: set[date] = frozenset()) -> _Patient:
    history = account.zone_history()
    days = {}
    for local_date in sorted(dates):
        days[local_date] = _Day(local_date, day_bounds(history, local_date)[2])
    return _Patient(account, history, local_today(history, now), days, set(touched) & set(dates))


def days_begun(history: TimeZoneHistory, since: datetime, now: datetime) -> set[date]:
    """The patient's local dates that began after ``since`` up to ``now`` (at most the recompute window)."""
    today = local_today(history, now)
    first = max(local_today(history, since) + timedelta(days=1), today - timedelta(days=RECOMPUTE_WINDOW_DAYS))
    return {first + timedelta(days=n) for n in range((today - first).days + 1)}


def _date_groups(patients: dict[str, _Patient]) -> list[tuple[list[date], set[str]]]:
    """The run's dates in groups of nearby dates, each with the patients having a day among them."""
    by_date: dict[date, set[str]] = defaultdict(set)
    for p in patients.values():
        for d in p.days:
            by_date[d].add(p.patient_id)
    groups: list[tuple[list[date], set[str]]] = []
    for d in sorted(by_date):
        if groups and (d - groups[-1][0][-1]).days < DATE_GAP:
            groups[-1][0].append(d)
            groups[-1][1].update(by_date[d])
        else:
            groups.append(([d], set(by_date[d])))
    return groups


def _window(dates: list[date]) -> tuple[datetime, datetime]:
    return dates_reach(min(dates), max(dates))


def _day_of(patient: _Patient | None, at: datetime) -> _Day | None:
    if patient is None:
        return None
    return patient.days.get(at.astimezone(patient.history.zone_at(at)).date())


def _apply_plans(plans: list[dict], patient: _Patient) -> None:
    for day in patient.days.values():
        day.tasks = tasks_for_day(plans, patient.history, day.local_date)


def _read_plans(stores: Stores, patients: dict[str, _Patient], failures: ItemFailures) -> None:
    """Each patient's plan versions applied to their days (companion.domain.plans.day_plan, as compute_day takes
    them); a version that cannot be read fails its patient (in ``failures``, under the patient's id): their days
    are not computed without it."""
    versions: dict[str, list[dict]] = defaultdict(list)
    for plan in stores.plans.versions_of(patients, _PLAN_FIELDS):
        if plan.get("patient_id") in patients:
            versions[plan["patient_id"]].append(plan)
    for patient_id, plans in versions.items():
        failures.attempt(patient_id, lambda plans=plans, patient=patients[patient_id]:
                         _apply_plans(plans, patient) or True)


def _read_events(stores: Stores, patients: dict[str, _Patient]) -> None:
    for dates, ids in _date_groups(patients):
        start, end = _window(dates)
        for s in stores.session_records.in_window(start, end, ids):
            day = _day_of(patients.get(s.get("patient_id")), s["started_at"])
            if day is not None:
                day.events.append(tens_event(s))
        practice: dict[str, list[dict]] = defaultdict(list)
        for p in stores.practice.completed_in_window(start - REACH, end, ids):
            practice[p.get("patient_id")].append(p)
        for patient_id, records in practice.items():
            for event in practice_events(with_counts(records)):
                day = _day_of(patients.get(patient_id), event.started_at_utc)
                if day is not None:
                    day.events.append(event)
        for d in stores.occurrences.doses_taken_on([d.isoformat() for d in dates], ids):
            patient = patients.get(d.get("patient_id"))
            day = patient.days.get(date.fromisoformat(d["local_date"])) if patient else None
            if day is not None:
                day.doses.append(TaskEvent(TaskKind.MEDICATION, d["due_at"]))


# The rule's 31 days read a slice at a time, each only for the patients whose run is not settled yet (no planned
# day at or above the threshold read so far): most patients settle on yesterday alone, most of the rest on the
# day before; a patient low on both reads the rest of the week, and one low all week the rest of the month.
LOOKBACK_SLICES = ((1, 1), (2, 2), (3, 7), (8, LOW_ADHERENCE_LOOKBACK.days))
# What the rules read of a stored snapshot (the fresh ones are whole documents).
RULE_FIELDS = {"patient_id": 1, "date": 1, "state": 1, "tens_fraction": 1}


def _write_and_read(stores: Stores, chunk: list[_Patient], now: datetime, run: int,
                    whole: set[str] = frozenset()) -> tuple[dict[str, list[dict]], dict[str, set[date]]]:
    """Write the chunk's recomputed days (as computed at ``now`` by run number ``run``); return each patient's
    snapshots the rules need, and the days not written because a run that started later wrote them first
    (`AdherenceDays.save_many`; by patient: their rules are not judged on this run's figures). The snapshots are
    the fresh ones and the stored ones of the rule's 31 days (today - 30 .. today). A patient whose panel row is
    settled (computed on their today, nothing marked since: companion.services.read_models) is judged on the
    days the row keeps, which are those snapshots' state and TENS fraction; for the others the snapshots are
    read, only the most recent of them that settle the low-adherence rule (all 31 for the patients in ``whole``:
    an open low-adherence alert is judged again on them)."""
    store = stores.adherence_days
    settled = stores.panel_row_marks.settled([p.patient_id for p in chunk], now)  # before this run marks rows
    # The kept days: those rows', and those of rows whose completed days this run may change (to mark them).
    kept = stores.panel_row_days.by_ids(p.patient_id for p in chunk
                                        if p.patient_id in settled or min(p.days) < p.today)
    snapshots: dict[str, list[dict]] = defaultdict(list)
    fresh = []
    for p in chunk:
        first = p.today - LOW_ADHERENCE_LOOKBACK
        for day in p.days.values():
            doc = snapshot_of(p.patient_id, day.local_date, day.zone, day.tasks, day.events + day.doses, now)
            doc["run"] = run
            fresh.append(doc)
            if first <= day.local_date <= p.today:
                snapshots[p.patient_id].append(doc)
    # The days just begun are new: one insert for all of them; the touched days stored already are replaced, each
    # only over a snapshot computed earlier.
    refused: dict[str, set[date]] = defaultdict(set)
    not_written = store.save_many(fresh)
    for doc in not_written.docs:
        refused[doc["patient_id"]].add(date.fromisoformat(doc["date"]))
    if not_written.standing:
        _order_after(stores, not_written.standing)
    _mark_changed_rows(stores, chunk, fresh, kept, now)
    # This run's today is written after the refresher may have passed the patient's midnight and computed the row
    # with it as a completed day, read before this write (the run's clock is taken once, at its start): such a
    # row, read after the write, is marked, and computed again with the day as written.
    on_today = {p.patient_id: p.today.isoformat() for p in chunk if p.today in p.days}
    stores.panel_row_marks.mark(stores.panel_row_days.computed_after(on_today), "adherence", now)
    waiting = []
    for p in chunk:
        row = kept.get(p.patient_id)
        if p.patient_id in settled and row is not None and row.get("today") == p.today.isoformat():
            snapshots[p.patient_id] += [s for s in kept_snapshots(row["days"])
                                        if date.fromisoformat(s["date"]) not in p.days]
        else:
            waiting.append(p)
    for index, (nearest, furthest) in enumerate(LOOKBACK_SLICES):
        last = index == len(LOOKBACK_SLICES) - 1
        wanted = [snapshot_id(p.patient_id, d) for p in waiting
                  for d in (p.today - timedelta(days=n) for n in range(
                      0 if p.patient_id in whole and index == 0 else nearest,
                      LOW_ADHERENCE_LOOKBACK.days + 1 if p.patient_id in whole else furthest + 1))
                  if d not in p.days]
        for doc in store.by_ids(wanted, RULE_FIELDS):
            snapshots[doc["patient_id"]].append(doc)
        # Settled by a good day only among the days read without a gap (back to ``furthest``): a fresh day further
        # back (recomputed, its data late) may have low days not read yet between it and yesterday.
        waiting = [p for p in waiting if p.patient_id not in whole and not low_adherence_run_ended(
            {d: v for d, v in progress_of(snapshots[p.patient_id]).items() if d >= p.today - timedelta(days=furthest)},
            p.today)]
        if last or not waiting:
            break
    for docs in snapshots.values():
        docs.sort(key=lambda d: d["date"])
    return snapshots, refused


def _order_after(stores: Stores, standing: list[dict]) -> None:
    """Let the runs to come replace the snapshots that refused this run's (``standing``): the run counter is moved
    on past the numbers they carry (it is behind them only in a database restored from a backup older than they
    are), then those without a number (written by a version before numbered runs, stamped later than this run by
    its clock: perhaps a clock that ran ahead) take the counter's number. A run numbered higher takes its number
    after this, so it reads its data after they were written, and replaces them (AdherenceDays.number)."""
    counter = stores.days_to_recompute.at_least(JOB, max((d.get("run") or 0 for d in standing), default=0))
    if stores.adherence_days.number(standing, counter):
        logger.info("adherence days without a run number stamped later than this run: numbered %d", counter)


def _mark_changed_rows(stores: Stores, chunk: list[_Patient], fresh: list[dict], kept: dict[str, dict],
                       now: datetime) -> None:
    """Mark the panel rows (companion.services.read_models) whose kept completed days (``kept``, by patient)
    differ from the fresh snapshots."""
    today = {p.patient_id: p.today.isoformat() for p in chunk}
    changed = {doc["patient_id"] for doc in fresh
               if doc["date"] < today[doc["patient_id"]]
               and (kept.get(doc["patient_id"]) or {}).get("days", {}).get(doc["date"]) != kept_day(doc)}
    stores.panel_row_marks.mark(changed, "adherence", now)


def _chunk(stores: Stores, chunk: list[_Patient], now: datetime, run: int) -> ChunkResult:
    snapshots, refused = _write_and_read(stores, chunk, now, run)
    _mark_overtaken(stores, refused, now)
    candidates = [c for p in chunk if p.patient_id not in refused
                  and (c := low_adherence_in(p.patient_id, snapshots[p.patient_id], p.today))]
    return ChunkResult(sum(len(p.days) for p in chunk) - sum(len(d) for d in refused.values()), candidates)


def _mark_overtaken(stores: Stores, refused: dict[str, set[date]], at: datetime,
                    marked_at: dict[tuple[str, date], datetime] | None = None,
                    decided: dict[str, set[date]] | None = None) -> None:
    """Mark again the days a run that started later wrote first: this run does not know whether that one read
    everything this one did (data that arrived between their reads, its mark cleared by one of them), so the next
    run computes them again. Each keeps the instant it was marked at (``marked_at``: the window it is judged by)
    and whether it was marked to reach back (``decided``)."""
    for patient_id, days in refused.items():
        logger.info("days written first by a later run of the job: marked to be computed again, rules not judged",
                    extra={"patient_id": patient_id, "dates": sorted(d.isoformat() for d in days)})
        for day in sorted(days):
            stores.days_to_recompute.mark(patient_id, [day], OVERTAKEN, (marked_at or {}).get((patient_id, day), at),
                                          decided=day in (decided or {}).get(patient_id, ()))


def _with_days(accounts: Iterator[Account] | list[Account], dates_of, now: datetime,
               failures: ItemFailures) -> dict[str, _Patient]:
    """The patients with days to compute (``dates_of(account)`` -> (dates, touched dates)), nothing read yet."""
    patients = {}
    for account in accounts:
        def build(a=account) -> _Patient | None:
            dates, touched = dates_of(a)
            return _patient(a, now, dates, touched) if dates else None
        patient = failures.attempt(account.id, build)
        if patient is not None:
            patients[account.id] = patient
    return patients


def _read_inputs(stores: Stores, patients: dict[str, _Patient], failures: ItemFailures) -> None:
    """Read the patients' plans and events onto their days."""
    if patients:
        _read_plans(stores, patients, failures)
        _read_events(stores, patients)


def _gathered(stores: Stores, accounts: Iterator[Account] | list[Account], dates_of, now: datetime,
              failures: ItemFailures) -> dict[str, _Patient]:
    """The patients with days to compute (``dates_of(account)`` -> (dates, touched dates)), their plans and
    events read."""
    patients = _with_days(accounts, dates_of, now, failures)
    _read_inputs(stores, patients, failures)
    return patients


def computed_afresh(stores: Stores, accounts: list[Account], days_of: dict[str, set[date]], now: datetime,
                    failures: ItemFailures) -> list[dict]:
    """The snapshots of these patients' days (``days_of``, by patient) computed again from the stored data, their
    inputs read all at once as this job reads them; not written. A patient or a plan that cannot be read is
    logged, in ``failures``, and left out."""
    patients = _gathered(stores, accounts, lambda a: (days_of.get(a.id, set()), set()), now, failures)
    return [snapshot_of(p.patient_id, day.local_date, day.zone, day.tasks, day.events + day.doses, now)
            for p in patients.values() if p.patient_id not in failures.item_ids for day in p.days.values()]


def recompute_everyone(stores: Stores, now: datetime, chunk_size: int = CHUNK,
                       failures: ItemFailures | None = None) -> Iterator[ChunkResult]:
    """Recompute every patient's last two local days and judge the low-adherence rule, chunk by chunk (the
    first run). A patient or a plan that cannot be read (a malformed stored item) is logged and skipped."""
    failures = ItemFailures(JOB) if failures is None else failures  # (an empty one is falsy)

    def last_two(account: Account) -> tuple[set[date], set[date]]:
        if account.status == CLOSED:  # nothing new is added to a closed record
            return set(), set()
        today = local_today(account.zone_history(), now)
        return {today - timedelta(days=n) for n in range(RECENT_DAYS)}, set()

    patients = _with_days(stores.users.patients(), last_two, now, failures)
    run = stores.days_to_recompute.start(JOB)  # before the data is read (see AdherenceJob.run)
    _read_inputs(stores, patients, failures)
    ordered = [p for p in patients.values() if p.patient_id not in failures.item_ids]
    for start in range(0, len(ordered), chunk_size):
        yield _chunk(stores, ordered[start:start + chunk_size], now, run)


class AdherenceJob:
    """The hourly adherence job: the days that received data since the last run and the local days begun since,
    then the alert rules judged for those patients (see the module docstring)."""

    def __init__(self, stores: Stores, alerts: AlertService, adherence: Adherence, clock: Clock = now,
                 chunk_size: int = CHUNK):
        self.stores = stores
        self.alerts = alerts
        self.adherence = adherence
        self.clock = clock
        self.chunk_size = chunk_size

    def run(self) -> int:
        """Recompute the touched days and the days begun since the last run (every patient's last two days on
        the first run); returns how many snapshots were written."""
        at = self.clock()
        marks = self.stores.days_to_recompute
        since = marks.last_run(JOB)
        pending = marks.pending()
        if len(pending) >= PASS_LIMIT:  # the rest stay marked: the next run takes them, oldest first
            logger.warning("touched days waiting past one run's %d: the oldest now, the rest on the next run",
                           PASS_LIMIT)
        report = AlertsReport()
        failures = ItemFailures(JOB)
        marked: dict[str, set[date]] = defaultdict(set)
        decided: dict[str, set[date]] = defaultdict(set)  # days marked to be recomputed however old (reach_back)
        marked_at: dict[tuple[str, date], datetime] = {}
        for mark in pending:
            marked[mark["patient_id"]].add(date.fromisoformat(mark["date"]))
            marked_at[mark["patient_id"], date.fromisoformat(mark["date"])] = mark.get("marked_at") or at
            if mark.get("decided") or mark.get("reason") == DECIDED:
                decided[mark["patient_id"]].add(date.fromisoformat(mark["date"]))

        def dates_of(account: Account) -> tuple[set[date], set[date]]:
            history = account.zone_history()
            today = local_today(history, at)
            if account.status == CLOSED:  # no new day is added to a closed record (touched ones are redone)
                begun = set()
            elif since is None:
                begun = {today - timedelta(days=n) for n in range(RECENT_DAYS)}
            else:
                begun = days_begun(history, since, at)
            touched = marked.get(account.id, set())
            # Each day is judged by the window in force when it was marked: data accepted as counting then still
            # counts when the job reaches it days later (a worker that was down, a backlog of marks).
            reach = timedelta(days=RECOMPUTE_WINDOW_DAYS + WINDOW_SLACK_DAYS)
            inside = {d for d in touched
                      if min(today, local_today(history, marked_at[account.id, d])) - reach <= d <= today}
            # A clinician's decision to count (or exclude) a held session reaches as far back as the session
            # (held because it arrived over 30 days late, it would otherwise never count), and so do the other
            # marks made to reach back (touched_days: records placed again, late practice and dose answers).
            inside |= {d for d in decided.get(account.id, set()) if today - DECIDED_REACH <= d <= today}
            for day in sorted(touched - inside):
                logger.info("touched day outside the recompute window, not recomputed",
                            extra={"patient_id": account.id, "date": day.isoformat()})
            return begun | inside, inside

        # Every patient's zone is read (one query) to see whose local day began; nothing else is read for the
        # patients with no day to compute.
        patients = _with_days(self.stores.users.patients(), dates_of, at, failures)
        # This run's number, taken before its data is read (and only by a run with days to write): of two runs
        # that overlap, the one that took the higher number writes over the other (save_many), whatever the clocks.
        run = marks.start(JOB) if patients else 0
        _read_inputs(self.stores, patients, failures)
        # A patient whose account or a plan version could not be read: nothing of theirs is computed or judged.
        failed: set[str] = (set(marked) | set(patients)) & set(failures.item_ids)
        ordered = sorted((p for p in patients.values() if p.patient_id not in failed), key=lambda p: p.patient_id)
        written = 0
        for start in range(0, len(ordered), self.chunk_size):
            chunk = ordered[start:start + self.chunk_size]
            written += self._judge(chunk, at, run, report, failures, failed, marked_at, decided)
        if failed:  # their days again on the next run
            for p in (patients[pid] for pid in failed if pid in patients):
                marks.mark(p.patient_id, p.days, "the adherence job failed for this patient", at)
        marks.done([m for m in pending if m["patient_id"] not in failed])
        marks.ran(JOB, at)
        logger.info("adherence snapshots written: %d; alerts %s; failed %d", written, report.raised, len(failures))
        return written

    def _judge(self, chunk: list[_Patient], at: datetime, run: int, report: AlertsReport, failures: ItemFailures,
               failed: set[str], marked_at: dict[tuple[str, date], datetime], decided: dict[str, set[date]]) -> int:
        """Write the chunk's days and judge the rules for its patients: raise the low-adherence alerts that hold;
        for patients with touched days, resolve what no longer holds and raise the flares of those days (their
        open alerts and ratings read at once). A patient with a day that a run started later wrote first is not
        judged (this run's figures may be older than that run's, which judged them): the day is marked again."""
        touched = [p for p in chunk if p.touched]
        open_alerts: dict[str, list[dict]] = defaultdict(list)
        for alert in self.stores.alerts.unresolved([p.patient_id for p in touched], RECONSIDERED):
            open_alerts[alert["patient_id"]].append(alert)
        whole = {pid for pid, alerts in open_alerts.items()
                 if any(a["kind"] == AlertKind.LOW_ADHERENCE.value for a in alerts)}
        snapshots, refused = _write_and_read(self.stores, chunk, at, run, whole)
        _mark_overtaken(self.stores, refused, at, marked_at, decided)
        # Their flares judged again: on the touched days and those whose flares the touched days' ratings are part of.
        ratings = self.alerts.ratings_for({p.patient_id: flare_days(p.touched, p.today) for p in touched})
        for p in chunk:
            def judge(p=p) -> bool:
                if p.patient_id in refused:
                    pass  # judged on the later run's figures by that run, and again on the next
                elif p.touched:
                    self.alerts.reconsider(p.account, p.touched, snapshots[p.patient_id], p.today, report,
                                           open_alerts=open_alerts[p.patient_id],
                                           ratings=ratings.get(p.patient_id, []))
                elif p.account.status == CLOSED:
                    pass  # no alert is raised about someone who has left
                elif (candidate := low_adherence_in(p.patient_id, snapshots[p.patient_id], p.today)) is not None:
                    self.alerts.raise_low_adherence(candidate, snapshots[p.patient_id], p.today, p.account, report)
                return True
            if failures.attempt(p.patient_id, judge) is None:
                failed.add(p.patient_id)
        return sum(len(p.days) for p in chunk) - sum(len(days) for days in refused.values())
