"""`companion migrate` computes again the adherence days stored under an earlier version of the rules.

Version 2 counts each session's minutes to the tenth shown: three sessions of 9 min 58 s are 30.0 minutes, a
30-minute day covered, where version 1 (stored without a version) counted 29.9 and the day not covered. A day
stored before the change kept its figure until something touched it again, so the panel and the review said
"not covered" where a recomputation says "covered". Version 3 counts practice recorded twice once (a build
that counted it so still wrote version 2, with the practice as logged: the same 20 minutes recorded by the
patient and a caregiver stored as 40).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pymongo.errors import AutoReconnect

from companion import cli
from companion.domain.adherence import ADHERENCE_RULES
from companion.domain.sessions import counted_minutes
from companion.services.adherence_upgrade import AdherenceUpgrade
from companion.store.adherence import AdherenceDays
from tests.scheduler.conftest import START
from tests.scheduler.helpers import make_person, services_on

YESTERDAY = (START - timedelta(days=1)).date()


@pytest.fixture
def on_the_test_database(mongo_uri, db_name, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)


def _patient_with_a_day_at_its_target(db, n: int):
    """A patient whose plan asks 3 x 10 minutes a day, and who did 3 sessions of 9 min 58 s yesterday."""
    patient = make_person(db, "patient")
    db.therapy_plans.insert_one({
        "_id": f"plan-{n}", "patient_id": patient.id, "version": 1, "created_at": START - timedelta(days=60),
        "created_by": "clinician", "active_from": START - timedelta(days=60), "active_to": None,
        "tens": {"sessions_per_day": 3, "daily_minutes_target": None, "minutes_per_session": 10, "programmes": [1],
                 "start_date": "2026-01-01", "end_date": None, "counts_towards_adherence": True},
        "medications": [], "mindfulness": None})
    for hour in (8, 12, 18):
        started = datetime.combine(YESTERDAY, datetime.min.time(), UTC) + timedelta(hours=hour)
        db.session_records.insert_one({"_id": f"CTU-{n}:{hour}", "patient_id": patient.id, "device_serial": f"CTU-{n}",
                                       "started_at": started, "duration_s": 598})
    return patient


def _stored_by_version_1(services, patient, day: date, monkeypatch) -> None:
    """The day as version 1 stored it: each session's minutes as recorded, no version."""
    with monkeypatch.context() as before:
        before.setattr("companion.services.adherence.counted_minutes_shown", counted_minutes)
        services.adherence.compute_day(patient, day)
    services.db.adherence_days.update_one({"_id": f"{patient.id}:{day}"}, {"$unset": {"rules": ""}})


def _figures(services, patient_id: str) -> tuple:
    """What the clinician reads of yesterday: covered, the panel row's 7-day PDC, the review's."""
    stored = services.db.adherence_days.find_one({"_id": f"{patient_id}:{YESTERDAY}"})
    return (stored["covered"], services.db.panel_rows.find_one({"_id": patient_id})["pdc_7"],
            services.adherence.summary(patient_id)["tens"]["7"]["pdc"])


def _snapshots(db) -> dict:
    return {d["_id"]: d for d in db.adherence_days.find()}


def test_migrate_computes_again_a_day_stored_under_the_earlier_rounding_and_the_panel_agrees(
        jobs_db, settings, clock, traveller, on_the_test_database, monkeypatch, capsys):
    services = services_on(jobs_db, settings, clock)
    old, current = (_patient_with_a_day_at_its_target(jobs_db, n) for n in range(2))
    _stored_by_version_1(services, old, YESTERDAY, monkeypatch)
    services.adherence.compute_day(current, YESTERDAY)  # stored under the current rules
    services.panel_rows.rebuild()
    assert _figures(services, old.id) == (False, 0.0, 0.0)  # 29.9 of 30 minutes: what the panel said
    untouched = jobs_db.adherence_days.find_one({"_id": f"{current.id}:{YESTERDAY}"})

    assert cli.main(["migrate"]) == 0
    said = capsys.readouterr()
    assert "1 adherence day(s) stored under earlier rules computed again (1 patient(s)' figures changed)" in said.out
    assert "adherence days under earlier rules: 2/2 patients (100%)" in said.err
    assert _figures(services, old.id) == (True, 1.0, 1.0)
    migrated = jobs_db.adherence_days.find_one({"_id": f"{old.id}:{YESTERDAY}"})
    assert migrated["rules"] == ADHERENCE_RULES and migrated["tens_minutes"] == 30.0
    assert jobs_db.adherence_days.find_one({"_id": f"{current.id}:{YESTERDAY}"}) == untouched
    recomputed = services.adherence.compute_day(old, YESTERDAY)  # a recomputation agrees, but for its instant
    assert {**migrated, "computed_at": None, "run": None} == {**recomputed, "_id": migrated["_id"],
                                                              "computed_at": None, "run": None}

    # Run again: nothing to compute, nothing written; that run notes the version done, and the next reads no day.
    stored = _snapshots(jobs_db)
    assert cli.main(["migrate"]) == 0
    assert "computed again" not in capsys.readouterr().out
    assert _snapshots(jobs_db) == stored
    monkeypatch.setattr(AdherenceDays, "computed_under_other_rules", None)  # (called, it would fail the run)
    assert cli.main(["migrate"]) == 0
    assert "adherence days" not in capsys.readouterr().err


def test_a_migrate_stopped_half_way_through_the_days_is_finished_by_the_next(
        jobs_db, settings, clock, traveller, on_the_test_database, monkeypatch, capsys):
    services = services_on(jobs_db, settings, clock)
    patients = [_patient_with_a_day_at_its_target(jobs_db, n) for n in range(3)]
    for patient in patients:
        _stored_by_version_1(services, patient, YESTERDAY, monkeypatch)
    services.panel_rows.rebuild()
    real_replace, calls = AdherenceDays.replace_computed, []

    def replace_until_the_connection_drops(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise AutoReconnect("connection closed")
        return real_replace(self, *args, **kwargs)

    with monkeypatch.context() as stopped:
        stopped.setattr(AdherenceUpgrade.run, "__defaults__", (None, 1))  # one day per pass
        stopped.setattr(AdherenceDays, "replace_computed", replace_until_the_connection_drops)
        assert cli.main(["migrate"]) == cli.EXIT_FAILED
    assert [_figures(services, p.id)[0] for p in patients].count(True) == 1
    assert cli.main(["migrate"]) == 0  # the operator runs it again
    capsys.readouterr()
    assert [_figures(services, p.id) for p in patients] == [(True, 1.0, 1.0)] * 3


def test_migrate_leaves_the_days_of_a_record_past_its_retention(jobs_db, settings, clock, traveller,
                                                                 on_the_test_database, monkeypatch, capsys):
    """The records-retention job deletes a closed record past its retention, raw data first: a day computed again
    from what is left would read as a day with nothing done."""
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_a_day_at_its_target(jobs_db, 0)
    _stored_by_version_1(services, patient, YESTERDAY, monkeypatch)
    jobs_db.users.update_one({"_id": patient.id}, {"$set": {"status": "closed", "closed_at": START - timedelta(
        days=settings.clinical_retention.days + 1)}})
    jobs_db.session_records.delete_many({"patient_id": patient.id})  # a deletion stopped half-way
    kept = _snapshots(jobs_db)
    assert cli.main(["migrate"]) == 0
    assert cli.main(["migrate"]) == 0
    assert "computed again" not in capsys.readouterr().out
    assert _snapshots(jobs_db) == kept
    assert AdherenceDays(jobs_db).upgraded_to(ADHERENCE_RULES)  # it does not keep the step running


def _stored_by_version_2_counting_practice_as_logged(services, patient, day: date, monkeypatch) -> None:
    """The day as a build of version 2 stored it: each practice's minutes as logged, a practice recorded twice
    counted twice; the version noted done by that build's `migrate`."""
    def as_logged(records):
        return [{**p, "counted_minutes": p.get("minutes") or 0.0, "counts": True} for p in records]

    with monkeypatch.context() as before:
        before.setattr("companion.services.adherence.with_counts", as_logged)
        services.adherence.compute_day(patient, day)
    services.db.adherence_days.update_one({"_id": f"{patient.id}:{day}"}, {"$set": {"rules": 2}})
    services.stores.adherence_days.note_upgraded(2, START - timedelta(days=1))


def test_migrate_computes_again_a_day_stored_by_version_2_with_a_practice_recorded_twice_counted_twice(
        jobs_db, settings, clock, traveller, on_the_test_database, monkeypatch, capsys):
    services = services_on(jobs_db, settings, clock)
    services.library.load()
    patient = make_person(jobs_db, "patient", "UTC")
    jobs_db.therapy_plans.insert_one({
        "_id": "plan-practice", "patient_id": patient.id, "version": 1, "created_at": START - timedelta(days=60),
        "created_by": "clinician", "active_from": START - timedelta(days=60), "active_to": None, "tens": None,
        "medications": [], "mindfulness": {"minutes_per_day": 30, "sessions_per_week": None,
                                           "counts_towards_adherence": True}})
    began = datetime.combine(YESTERDAY, datetime.min.time(), UTC) + timedelta(hours=10)
    for _by in ("patient", "caregiver"):  # the same 20 minutes, recorded from two phones
        practice = services.library.start_practice(patient.id, "full-body-scan", began)
        services.library.complete_practice(patient.id, practice["_id"], began + timedelta(minutes=20), None)
    _stored_by_version_2_counting_practice_as_logged(services, patient, YESTERDAY, monkeypatch)
    stored = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{YESTERDAY}"})
    assert (stored["mindfulness"]["minutes"], stored["mindfulness"]["fraction"]) == (40.0, 1.0)  # shown as met

    assert cli.main(["migrate"]) == 0
    assert "1 adherence day(s) stored under earlier rules computed again" in capsys.readouterr().out
    migrated = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{YESTERDAY}"})
    assert migrated["rules"] == ADHERENCE_RULES >= 3
    assert (migrated["mindfulness"]["minutes"], round(migrated["mindfulness"]["fraction"], 3)) == (20.0, 0.667)
    assert migrated["mindfulness"]["done"] == 1
