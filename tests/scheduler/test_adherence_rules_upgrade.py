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

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import AutoReconnect

from companion import cli
from companion.domain.adherence import ADHERENCE_RULES
from companion.domain.sessions import counted_minutes
from companion.jobs.worker import Worker
from companion.services.adherence_batch import JOB
from companion.services.adherence_upgrade import AdherenceUpgrade
from companion.services.container import Services
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
        before.setattr("companion.domain.sessions.counted_minutes_shown", counted_minutes)
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
    assert AdherenceDays(jobs_db).failed_after_upgrade(ADHERENCE_RULES) is not None  # the step does not keep running


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


class _Writes(monitoring.CommandListener):
    """The update statements sent (each replace or update of a bulk write, or an update_many, is one)."""

    def __init__(self):
        self.statements = 0

    def started(self, event):
        if event.command_name == "update":
            self.statements += len(event.command["updates"])

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def _days_under_the_rules_before(db, patient_ids) -> None:
    """Every day of these patients labelled as computed by the version before, as the previous release left it."""
    db.adherence_days.update_many({"patient_id": {"$in": list(patient_ids)}},
                                  {"$set": {"rules": ADHERENCE_RULES - 1}})
    db.adherence_upgrades.delete_many({})


def test_the_upgrade_writes_only_the_version_of_the_days_whose_figures_are_the_same_in_a_few_statements(
        jobs_db, mongo_uri, settings, clock, traveller):
    """The step took one replace per day (1.8 ms a day on FerretDB: 27 minutes for 10,000 patients x 90 days);
    the days whose figures come out the same (most of them) are now written by an update_many per run that wrote
    them, their figures left; only the others are replaced, in bulk writes."""
    services = services_on(jobs_db, settings, clock)
    patients = [_patient_with_a_day_at_its_target(jobs_db, n) for n in range(3)]
    for patient in patients:
        for back in range(1, 21):
            services.adherence.compute_day(patient, START.date() - timedelta(days=back))
    _days_under_the_rules_before(jobs_db, [p.id for p in patients])
    changed = f"{patients[0].id}:{YESTERDAY}"
    jobs_db.adherence_days.update_one({"_id": changed}, {"$set": {"tens_minutes": 29.9}})  # other figures
    before = _snapshots(jobs_db)

    writes = _Writes()
    client = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[writes])
    try:
        listened = Services(settings.with_changes(mongodb_db=jobs_db.name), client=client, clock=clock)
        upgraded = listened.adherence_upgrade.run()
    finally:
        client.close()

    # The changed day's replace, and an update_many per computation read (one here: the days were computed at one
    # instant; one replace per day before).
    assert writes.statements <= 1 + 1, writes.statements
    assert (upgraded.written, upgraded.same) == (60, 59)
    after = _snapshots(jobs_db)
    bookkeeping = ("computed_at", "run", "rules", "write")
    for day_id, stored in after.items():
        assert stored["rules"] == ADHERENCE_RULES and "write" not in stored
        if day_id != changed:
            assert {k: v for k, v in stored.items() if k not in bookkeeping} == {
                k: v for k, v in before[day_id].items() if k not in bookkeeping}
    assert after[changed]["tens_minutes"] == 30.0
    assert len({(d["run"], d["computed_at"]) for d in after.values()}) == 1  # all the pass's, as a replace leaves


def test_a_day_whose_figures_are_the_same_written_again_after_the_upgrade_read_it_is_left_as_written(
        jobs_db, settings, clock, traveller, monkeypatch):
    """The version alone is written only over the day read: one an old worker wrote meanwhile (its own figures,
    from data read later, under the rules before) is not labelled with the current rules."""
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_a_day_at_its_target(jobs_db, 0)
    services.adherence.compute_day(patient, YESTERDAY)
    _days_under_the_rules_before(jobs_db, [patient.id])
    real = AdherenceDays.replace_computed

    def rewritten_meanwhile(self, pairs, *args, **kwargs):
        self.col.update_one({"_id": f"{patient.id}:{YESTERDAY}"},
                            {"$set": {"computed_at": START, "run": 10**6, "tens_minutes": 20.0}})
        return real(self, pairs, *args, **kwargs)

    monkeypatch.setattr(AdherenceDays, "replace_computed", rewritten_meanwhile)
    upgraded = services.adherence_upgrade.run()
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{YESTERDAY}"})
    assert (upgraded.written, day["rules"], day["run"], day["tens_minutes"]) == (0, ADHERENCE_RULES - 1, 10**6, 20.0)


def test_a_day_an_old_worker_writes_under_the_rules_before_after_migrate_is_computed_again_by_the_next_worker_run(
        jobs_db, settings, clock, traveller, on_the_test_database, monkeypatch, capsys):
    """`migrate` takes run number N and notes the version done; the old leader's next hourly run takes N+1 and
    writes a day under its rules over the one the step did. The new worker's adherence job computes it again."""
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_a_day_at_its_target(jobs_db, 0)
    _stored_by_version_1(services, patient, YESTERDAY, monkeypatch)
    assert cli.main(["migrate"]) == 0
    assert cli.main(["migrate"]) == 0  # found nothing: the version noted done
    capsys.readouterr()
    assert AdherenceDays(jobs_db).failed_after_upgrade(ADHERENCE_RULES) is not None
    run = services.stores.days_to_recompute.start(JOB)  # the old leader's run, after the step's
    jobs_db.adherence_days.update_one({"_id": f"{patient.id}:{YESTERDAY}"}, {"$set": {
        "rules": ADHERENCE_RULES - 1, "run": run, "computed_at": START, "covered": False, "tens_minutes": 29.9,
        "tens_fraction": 0.997}})

    services.stores.days_to_recompute.ran(JOB, START - timedelta(minutes=30))  # no day of its own to compute
    worker = Worker(services_on(jobs_db, settings, clock), holder="new-worker")
    (adherence,) = [spec for spec in worker.specs() if spec.id == "adherence-daily"]
    adherence.run()
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{YESTERDAY}"})
    assert (day["rules"], day["covered"], day["tens_minutes"]) == (ADHERENCE_RULES, True, 30.0)
    assert jobs_db.panel_row_marks.count_documents({"_id": patient.id}) == 1  # its row is computed again

    # The next run finds none left (one aggregation); the runs after it read nothing of the step.
    adherence.run()
    scans = []
    monkeypatch.setattr(AdherenceDays, "patients_under_other_rules", lambda self, rules: scans.append(rules) or set())
    adherence.run()
    assert scans == []
