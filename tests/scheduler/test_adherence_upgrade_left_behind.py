"""The rules upgrade is never held open by one patient: days left by an account that is gone are not left to do,
and a patient whose days cannot be computed is logged by id and tried again alone, while the others are finished
and the version noted done.

Before, a deleted account's days kept the worker's adherence job scanning the snapshots every hour for good (the
version noted, but "left" never empty), and one patient whose data raised kept the version from being noted: every
`migrate` went through every patient again, and every hourly run scanned the snapshots, until their data changed.
"""

from __future__ import annotations

import logging

import pytest
from pymongo.errors import AutoReconnect

from companion import cli
from companion.domain.adherence import ADHERENCE_RULES
from companion.jobs.worker import Worker
from companion.store.adherence import AdherenceDays
from tests.scheduler.helpers import services_on
from tests.scheduler.test_adherence_rules_upgrade import (
    YESTERDAY,
    _patient_with_a_day_at_its_target,
    _stored_by_version_1,
)


@pytest.fixture
def on_the_test_database(mongo_uri, db_name, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)


def _adherence_job(db, settings, clock):
    (spec,) = [s for s in Worker(services_on(db, settings, clock), holder="new-worker").specs()
               if s.id == "adherence-daily"]
    return spec


def _watched(monkeypatch) -> tuple[list, list]:
    """The scans for patients with days under other rules, and the patients whose days are read, from now on."""
    scans, reads = [], []
    scan, read = AdherenceDays.patients_under_other_rules, AdherenceDays.computed_under_other_rules
    monkeypatch.setattr(AdherenceDays, "patients_under_other_rules",
                        lambda self, rules: scans.append(rules) or scan(self, rules))
    monkeypatch.setattr(AdherenceDays, "computed_under_other_rules",
                        lambda self, patient_id, rules: reads.append(patient_id) or read(self, patient_id, rules))
    return scans, reads


def _plan_stored_malformed(db, patient_id: str) -> dict:
    """The patient's plan version as a faulty write left it: computing their days raises. Returns it as it was."""
    plan = db.therapy_plans.find_one({"patient_id": patient_id})
    db.therapy_plans.update_one({"_id": plan["_id"]}, {"$set": {"tens": "30 minutes"}})
    return plan


def _day(db, patient_id: str) -> dict:
    return db.adherence_days.find_one({"_id": f"{patient_id}:{YESTERDAY}"})


def test_days_an_account_deleted_left_behind_do_not_keep_the_worker_scanning_for_them(
        jobs_db, settings, clock, traveller, monkeypatch):
    services = services_on(jobs_db, settings, clock)
    patient, gone = (_patient_with_a_day_at_its_target(jobs_db, n) for n in range(2))
    for someone in (patient, gone):
        _stored_by_version_1(services, someone, YESTERDAY, monkeypatch)
    jobs_db.users.delete_one({"_id": gone.id})  # their days written again after their record was deleted
    left_behind = _day(jobs_db, gone.id)
    adherence = _adherence_job(jobs_db, settings, clock)
    adherence.run()  # computes the patient's day
    adherence.run()  # finds nothing more: the version noted
    assert _day(jobs_db, patient.id)["rules"] == ADHERENCE_RULES
    assert AdherenceDays(jobs_db).failed_after_upgrade(ADHERENCE_RULES) is not None

    adherence.run()  # none left but days of nobody's: done
    scans, reads = _watched(monkeypatch)
    adherence.run()
    adherence.run()
    assert (scans, reads) == ([], [])
    assert _day(jobs_db, gone.id) == left_behind


def test_a_patient_whose_days_cannot_be_computed_is_named_by_migrate_and_holds_nobody_else_back(
        jobs_db, settings, clock, traveller, on_the_test_database, monkeypatch, capsys, caplog):
    services = services_on(jobs_db, settings, clock)
    failing, patient = (_patient_with_a_day_at_its_target(jobs_db, n) for n in range(2))
    for someone in (failing, patient):
        _stored_by_version_1(services, someone, YESTERDAY, monkeypatch)
    _plan_stored_malformed(jobs_db, failing.id)

    with caplog.at_level(logging.ERROR, logger="companion.jobs"):
        assert cli.main(["migrate"]) == cli.EXIT_FAILED  # the others computed, the failing patient named
    assert f"could not be computed again ({failing.id}" in capsys.readouterr().err
    assert _day(jobs_db, patient.id)["rules"] == ADHERENCE_RULES
    assert [(r.item_id, r.getMessage()) for r in caplog.records if getattr(r, "job_id", None) == "adherence-upgrade"] \
        == [(failing.id, "adherence-upgrade: item failed (AttributeError); skipped until the next pass")]

    assert cli.main(["migrate"]) == cli.EXIT_FAILED  # nothing found but theirs: the version noted, with them
    days = AdherenceDays(jobs_db)
    assert days.failed_after_upgrade(ADHERENCE_RULES) == [failing.id]

    _scans, reads = _watched(monkeypatch)
    assert cli.main(["migrate"]) == cli.EXIT_FAILED  # tries them alone again, and names them again
    assert reads == [failing.id]
    assert f"could not be computed again ({failing.id}" in capsys.readouterr().err


def test_the_worker_tries_a_patient_whose_days_failed_again_each_run_without_scanning_and_finishes_them(
        jobs_db, settings, clock, traveller, monkeypatch):
    services = services_on(jobs_db, settings, clock)
    failing, patient = (_patient_with_a_day_at_its_target(jobs_db, n) for n in range(2))
    for someone in (failing, patient):
        _stored_by_version_1(services, someone, YESTERDAY, monkeypatch)
    plan = _plan_stored_malformed(jobs_db, failing.id)
    adherence = _adherence_job(jobs_db, settings, clock)
    adherence.run()  # computes the other patient's day
    adherence.run()  # finds nothing but the failing patient's: the version noted, with them
    assert _day(jobs_db, patient.id)["rules"] == ADHERENCE_RULES
    assert AdherenceDays(jobs_db).failed_after_upgrade(ADHERENCE_RULES) is not None

    adherence.run()  # none left but theirs: from now on they alone are tried again
    scans, reads = _watched(monkeypatch)
    adherence.run()
    adherence.run()
    assert (scans, reads) == ([], [failing.id, failing.id])

    jobs_db.therapy_plans.replace_one({"_id": plan["_id"]}, plan)  # their plan put right
    adherence.run()
    assert (_day(jobs_db, failing.id)["rules"], _day(jobs_db, failing.id)["covered"]) == (ADHERENCE_RULES, True)
    adherence.run()
    assert (scans, reads) == ([], [failing.id] * 3)  # done: nothing read of the step


def test_a_catch_up_that_fails_leaves_the_adherence_jobs_own_days_computed(jobs_db, settings, clock, traveller,
                                                                           monkeypatch):
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_a_day_at_its_target(jobs_db, 0)
    services.stores.days_to_recompute.mark(patient.id, [YESTERDAY], "sessions", clock())

    def timed_out(self, rules):
        raise AutoReconnect("connection closed")

    monkeypatch.setattr(AdherenceDays, "patients_under_other_rules", timed_out)
    assert _adherence_job(jobs_db, settings, clock).run() >= 1
    assert _day(jobs_db, patient.id)["covered"] is True
