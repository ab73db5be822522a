"""A patient's "today" row computed by the previous release (760234f, ADHERENCE_RULES 3) is not served after the
deploy and `companion migrate`: this release computes today's TENS differently (ADHERENCE_RULES 4: a date's TENS
from the newest plan version that covers it). Nor is one that a web process of the previous release writes during a
rolling deploy. Found by the upgrade review (its test, with the old release's rows written as that release wrote
them: without the rules they were computed by)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from companion import cli
from companion.services.progress import TODAY_RULES
from tests.scheduler.conftest import START
from tests.scheduler.helpers import make_person, services_on

TODAY = START.date()


@pytest.fixture
def on_the_test_database(mongo_uri, db_name, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)


def _plan(pid, version, written, start_date):
    return {"_id": f"plan-{pid}-{version}", "patient_id": pid, "version": version, "created_at": written,
            "created_by": "clinician", "active_from": written, "active_to": None,
            "tens": {"sessions_per_day": 3, "daily_minutes_target": None, "minutes_per_session": 10,
                     "programmes": [1], "start_date": start_date, "end_date": None, "counts_towards_adherence": True},
            "medications": [], "mindfulness": None}


def _as_the_previous_release_stored_it(db, patient_id):
    """The row as the previous release's TodayRows.save left it: its figures and tokens, no rules."""
    db.today_rows.update_one({"_id": patient_id}, {"$unset": {"computed_by": ""}})


def _the_old_figures(services, jobs_db, patient_id):
    """The patient's today as the previous release computed it: version 2 (its course starting tomorrow) alone in
    view, the day's TENS taken from the version in force at the day's end, as that release did. Version 1 is then
    written back without the write hook (nothing touches the row)."""
    jobs_db.therapy_plans.insert_one(_plan(patient_id, 2, START - timedelta(hours=2),
                                           (TODAY + timedelta(days=1)).isoformat()))
    old = services.progress.today(patient_id)
    jobs_db.therapy_plans.insert_one(_plan(patient_id, 1, START - timedelta(days=60), "2026-01-01"))
    return old


def test_a_today_row_the_previous_release_computed_is_not_served_after_the_upgrade(
        jobs_db, settings, clock, traveller, on_the_test_database, capsys):
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    # This morning the clinician wrote version 2, "from tomorrow": the previous release's today had no TENS goal.
    before_upgrade = _the_old_figures(services, jobs_db, patient.id)
    _as_the_previous_release_stored_it(jobs_db, patient.id)
    assert jobs_db.today_rows.count_documents({"_id": patient.id}) == 1

    assert cli.main(["migrate"]) == 0  # the release step; then the new web processes answer
    capsys.readouterr()
    served = services.progress.today(patient.id)

    jobs_db.today_rows.delete_one({"_id": patient.id})
    fresh = services.progress.today(patient.id)  # what this release computes for today: version 1's 3 x 10 min
    assert fresh["tens"] != before_upgrade["tens"]
    assert served["tens"] == fresh["tens"], (served["tens"], fresh["tens"])
    assert jobs_db.today_rows.find_one({"_id": patient.id})["computed_by"]["rules"] == TODAY_RULES


def test_a_today_row_an_old_web_process_writes_during_a_rolling_deploy_is_computed_again(
        jobs_db, settings, clock, traveller):
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    old = _the_old_figures(services, jobs_db, patient.id)
    jobs_db.today_rows.delete_one({"_id": patient.id})
    fresh = services.progress.today(patient.id)  # a process of this release computes the row, under these rules
    assert fresh["tens"] != old["tens"]
    # Then a write touches the patient, and a web process of the previous release computes their today again and
    # stores it as that release did: its figures and "computed" under the new token, nothing else.
    services.stores.today_rows.touch([patient.id])
    token = services.stores.today_rows.token_of(patient.id)
    figures = {kind: old[kind] for kind in ("tens", "mindfulness", "medication", "pain")}
    jobs_db.today_rows.update_one({"_id": patient.id, "token": token},
                                  {"$set": {"figures": figures, "computed": token}})

    served = services.progress.today(patient.id)
    assert served["tens"] == fresh["tens"], (served["tens"], fresh["tens"])
