"""Computing again the adherence snapshots stored under an earlier version of the rules: an upgrade step of
`companion migrate`, done once per version (companion.domain.adherence.ADHERENCE_RULES).

A snapshot holds a day's figures as computed when it was written. A change of the rules leaves the days stored
before it as they were until something touches them again: since version 2 (each session's minutes to the tenth
shown) a day within a few hundredths of a minute per session of its target can read "not covered" in the PDC, the
panel and the review while a recomputation says "covered". Every snapshot now carries the version it was computed
by; this step finds those of another version (or of none), computes them again from the stored data as the
adherence job reads it (companion.services.adherence_batch.computed_afresh), and marks the panel rows of the
patients whose days changed what a row keeps (``migrate`` then computes those rows, and those that a run stopped
half-way marked).

- Found patient by patient: an equality on the patient (the patient_date index), the version compared per
  document; a run costs one pass over the snapshots, and says how far it is.
- Written in bulk (AdherenceDays.replace_computed: ordered bulk writes of 500), and only what changed: a day whose
  figures come out the same (most of them: a change of the rules changes few stored days) has its version and run
  set, its figures left; the others are replaced. Measured on FerretDB (bench/rules_upgrade.py; README, "Migrations").
- Each day is written only over the snapshot read before its data (AdherenceDays.replace_computed): a day the job
  wrote meanwhile, from data read later, stands. Each pass takes a number from the adherence job's counter before
  it reads its data (companion.store.recompute.DaysToRecompute.start) and its snapshots carry it: a run of the job
  that took an earlier number, still writing, does not write its older figures over them, and a later run
  replaces them, whatever the clocks of the processes (AdherenceDays.save_many).
- Resumable: what is written carries the current version, so a run stopped half-way leaves the rest to the next.
  The rows are marked before a pass writes (a run stopped then still has them computed, by the refresher) and
  again after (a refresh in between read the days before they changed).
- Cheap once done: the version is noted done only after a run that found nothing to compute but the days of
  patients whose computation failed (the processes of the version before go on writing under their rules until the
  new ones replace them; as for change numbers, companion.services.housekeeping.number_unsynced); from then on one
  read says so.
- One patient never holds the others back: a patient whose days cannot be computed (their data raises) is logged
  by id alone, counted in ``failed``, and the others are computed and the version noted all the same, with the
  failed patients' ids beside it (``failed`` in adherence_upgrades). They are tried again on their own (their days
  read by the patient index, nothing scanned): by each later `migrate`, which exits 1 naming them while any fails,
  and by each run of the adherence job (`catch_up`). Held to it, one such patient would have every `migrate` go
  through every patient, and every hourly run of the job scan the snapshots, for as long as their data stays so.
- Retention: a patient closed longer ago than ``COMPANION_CLINICAL_RETENTION_DAYS`` is left alone. The
  records-retention job deletes their record, raw data and snapshots alike, perhaps half-way already: a day
  computed again from what is left would read as a day with nothing done. Their snapshots do not keep the version
  from being noted done; nor do the snapshots of anyone without a patient's account (days an old worker wrote
  while the record was deleted, a backup restored over deleted accounts): there is nothing to compute them from,
  and counted as left they would have the adherence job scan the snapshots every hour, for good.
- Finished by the worker: a worker of the version before, still running during or after `migrate`, writes days
  under its rules over days this step did (its runs take later numbers); the adherence job of this version runs
  the step over the patients with such days (`AdherenceUpgrade.catch_up`) on each run until the version is noted
  done and none is left but those whose computation fails, at most ``CATCH_UP_PATIENTS`` a run (the job's own days
  wait for it). Their panel rows are marked, and computed by the refresher within the minute.
- No alert is judged here: a past day's figures moving by a rounding are not news to a caregiver; the adherence
  job judges the low-adherence rule on its next run from the days as they now stand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from companion.clock import Clock, now
from companion.domain.access import Role
from companion.domain.adherence import ADHERENCE_RULES
from companion.domain.people import Account
from companion.services.adherence_batch import JOB, computed_afresh
from companion.services.item_failures import ItemFailures
from companion.services.read_models import kept_day
from companion.store.accounts import MAX_PATIENTS
from companion.store.adherence import Recomputed
from companion.store.stores import Stores

logger = logging.getLogger(__name__)

STEP = "adherence-upgrade"
DAYS_PER_PASS = 5_000  # days computed together (their inputs read at once); bounds what a pass holds
PROGRESS_EVERY = 100  # patients between two progress reports
# Patients the adherence job computes again in one run (catch_up): its own days wait for them.
CATCH_UP_PATIENTS = 1_000
MARK_REASON = "adherence rules"  # the panel rows' marks this step makes


@dataclass(frozen=True)
class Upgraded:
    """What a run did: days computed again and written (``same``: of them, those whose figures were the same, their
    version alone written), the patients whose rows must be computed again (their days changed what a row keeps),
    and the patients whose days could not be computed."""

    written: int
    changed: tuple[str, ...]
    failed: tuple[str, ...]
    same: int = 0


class AdherenceUpgrade:
    def __init__(self, stores: Stores, clinical_retention: timedelta, clock: Clock = now):
        self.stores = stores
        self.retention = clinical_retention
        self.clock = clock
        self._caught_up = False  # catch_up found the version noted and none left but patients whose days fail
        self._failing: set[str] = set()  # of those, the ones that failed when last tried (catch_up tries them again)

    def run(self, progress: Callable[[int, int], None] | None = None, days_per_pass: int = DAYS_PER_PASS) -> Upgraded:
        """Compute again every stored snapshot of another version of the rules (see the module docstring), with
        ``progress(done, total)`` as the patients are gone through; once the version is noted done, only the
        patients whose days could not be computed then (noted with it) are tried again."""
        failed = self.stores.adherence_days.failed_after_upgrade(ADHERENCE_RULES)
        if failed is None:
            return self._upgrade(self._patients(), progress, days_per_pass)
        if not failed:
            return Upgraded(0, (), ())
        return self._upgrade(self._patients(failed), progress, days_per_pass, noted=True)

    def catch_up(self) -> Upgraded | None:
        """The adherence job's part of this step (each run, before its own days): compute again the days still
        stored under other rules, the version noted done or not, until it is noted and none is left but those of
        patients whose computation fails; from then on in this process those alone are tried again, each run, on
        their own (no scan), and None once none fails (nothing read). A worker of the version before, still running
        while `migrate` goes through the patients (or after it), goes on writing days under its rules, over days the
        step has done too (its runs take higher numbers than the step's); `migrate` notes the version done once a
        run finds nothing, and these days would stay as that worker wrote them until the next release. Only the
        patients with such days are gone through (one aggregation finds them), ``CATCH_UP_PATIENTS`` at most (the
        rest on the next run: the job's own days wait for this), and as by `run`, those past their retention and
        days of no patient's account are left."""
        if self._caught_up:
            return self._try_again()
        store = self.stores.adherence_days
        failed = store.failed_after_upgrade(ADHERENCE_RULES)
        stale = store.patients_under_other_rules(ADHERENCE_RULES)
        accounts = {a.id: a for a in self._patients(stale)} if stale else {}
        if failed is not None and set(accounts) <= set(failed):
            self._caught_up, self._failing = True, set(accounts)
            return self._try_again()
        todo = sorted(accounts)[:CATCH_UP_PATIENTS]
        upgraded = self._upgrade([accounts[patient_id] for patient_id in todo], noting=len(todo) == len(accounts),
                                 noted=failed is not None)
        self._log(upgraded)
        return upgraded

    def _try_again(self) -> Upgraded | None:
        """Once caught up: the patients whose days failed, on their own, until none does."""
        if not self._failing:
            return None
        upgraded = self._upgrade(self._patients(self._failing), noted=True)
        self._failing = set(upgraded.failed)
        self._log(upgraded)
        return upgraded

    @staticmethod
    def _log(upgraded: Upgraded) -> None:
        # Counts alone: each patient that failed is logged by id, by ItemFailures (no figure, no date).
        if upgraded.written or upgraded.failed:
            logger.info("adherence days under earlier rules computed again: %d (%d patient(s)' rows marked, %d "
                        "failed)", upgraded.written, len(upgraded.changed), len(upgraded.failed))

    def _patients(self, among: Iterable[str] | None = None) -> list[Account]:
        """The patients whose days this step computes (every one, or those of ``among``): the patients' accounts,
        but those past their retention. Days of anyone else are not to be computed: no account, nothing to compute
        them from."""
        cutoff = self.clock() - self.retention
        past_retention = set(self.stores.users.closed_patients_before(cutoff, MAX_PATIENTS))
        found = self.stores.users.patients() if among is None else self.stores.users.by_ids(among, Role.PATIENT)
        return [account for account in found if account.id not in past_retention]

    def _upgrade(self, patients: list[Account], progress: Callable[[int, int], None] | None = None,
                 days_per_pass: int = DAYS_PER_PASS, *, noting: bool = True, noted: bool = False) -> Upgraded:
        """`run`, over ``patients``. When they are all that is left (``noting``), the version is noted done, with
        the ids of the patients that failed, if no day was found to compute but theirs; once it is (``noted``), the
        patients that failed are noted anew whatever was found (those no longer failing are done)."""
        store = self.stores.adherence_days
        failures = ItemFailures(STEP)
        waiting: dict[str, tuple[Account, dict[date, dict]]] = {}
        found: set[str] = set()  # the patients with days to compute
        held, written, same, changed = 0, 0, 0, set()
        for done, account in enumerate(patients, start=1):
            stale = failures.attempt(account.id, lambda a=account: store.computed_under_other_rules(
                a.id, ADHERENCE_RULES))
            if stale:
                waiting[account.id] = (account, {date.fromisoformat(s["date"]): s for s in stale})
                found.add(account.id)
                held += len(stale)
            if held >= days_per_pass or done == len(patients):
                passed, marked = self._pass(waiting, failures)
                written, same, changed = written + passed.written, same + passed.marked, changed | marked
                waiting, held = {}, 0
            if progress is not None and (done % PROGRESS_EVERY == 0 or done == len(patients)):
                progress(done, len(patients))
        if noting and (noted or found <= set(failures.item_ids)):
            store.note_upgraded(ADHERENCE_RULES, self.clock(), failures.item_ids)
        # With the rows this run marked, those an earlier run stopped half-way marked and the refresher has not
        # computed yet (marks for now are few: the refresher computes them every minute).
        changed |= {m["_id"] for m in self.stores.panel_row_marks.all_now() if m.get("reason") == MARK_REASON}
        return Upgraded(written, tuple(sorted(changed)), tuple(failures.item_ids), same)
    def _pass(self, waiting: dict[str, tuple[Account, dict[date, dict]]],
              failures: ItemFailures) -> tuple[Recomputed, set]:
        """Compute these patients' days again and write each over the snapshot read; returns what was written and
        the patients whose rows were marked."""
        if not waiting:
            return Recomputed(0, 0), set()
        at = self.clock()
        run = self.stores.days_to_recompute.start(JOB)  # before the data is read, as a run of the job takes it
        fresh = [{**doc, "run": run} for doc in computed_afresh(
            self.stores, [account for account, _ in waiting.values()],
            {pid: set(days) for pid, (_, days) in waiting.items()}, at, failures)]
        stored = {(doc["patient_id"], doc["date"]): waiting[doc["patient_id"]][1][date.fromisoformat(doc["date"])]
                  for doc in fresh}
        changed = {doc["patient_id"] for doc in fresh
                   if kept_day(doc) != kept_day(stored[doc["patient_id"], doc["date"]])}
        marks = self.stores.panel_row_marks
        marks.mark(changed, MARK_REASON, at)
        written = self.stores.adherence_days.replace_computed(
            [(doc, stored[doc["patient_id"], doc["date"]]) for doc in fresh])
        marks.mark(changed, MARK_REASON, self.clock())
        return written, changed
