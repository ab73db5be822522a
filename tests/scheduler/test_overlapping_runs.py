"""Two runs of one scheduled job that overlap (the old leader still finishing a slow run while the next leader
runs the job, or a panel read beside the refresher): the slower, earlier run must not write older data over
what the later one stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.domain.alerts import low_adherence
from companion.services.adherence_batch import JOB
from companion.store.adherence import AdherenceDays
from tests.scheduler.helpers import link_caregiver, make_person, services_on, stored_day
from tests.scheduler.test_late_data import PLAN, _bound, _upload

NOW = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)


def test_an_adherence_run_that_read_before_late_data_does_not_overwrite_the_later_runs_day_nor_reopen_its_alert(
        jobs_db, settings, clock, traveller, monkeypatch):
    traveller.move_to(NOW)
    old_leader = services_on(jobs_db, settings, clock)
    new_leader = services_on(jobs_db, settings, clock)
    assert old_leader.stores is not new_leader.stores
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["adherence_low"])
    old_leader.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 1, 1, tzinfo=UTC))
    # Good days until four days ago, then three planned days with no TENS: an open low-adherence alert.
    days = {n: 1.0 for n in range(4, 12)} | {1: 0.0, 2: 0.0, 3: 0.0}
    jobs_db.adherence_days.insert_many([stored_day(patient.id, NOW.date() - timedelta(days=n), v)
                                        for n, v in days.items()])
    old_leader.alerts.raise_once(low_adherence(patient.id, {NOW.date() - timedelta(days=n): v for n, v in days.items()},
                                               NOW.date()))
    jobs_db.days_to_recompute.delete_many({})
    old_leader.stores.days_to_recompute.ran(JOB, NOW - timedelta(hours=1))
    serial = _bound(jobs_db, old_leader, patient)
    late_day = datetime.combine(NOW.date() - timedelta(days=2), datetime.min.time(), UTC) + timedelta(hours=10)
    _upload(old_leader, patient, serial, late_day)  # the hub's first half of the day: 30 of 60 minutes

    real_save_many = old_leader.stores.adherence_days.save_many
    overtaken = []

    def slow_save_many(docs):
        if not overtaken:  # the old leader read the day's data; before it writes, the rest arrives and the new
            overtaken.append(True)  # leader's run recomputes the day whole and ends the alert
            _upload(new_leader, patient, serial, late_day + timedelta(hours=2), seq_from=2)
            new_leader.adherence_job.run()
            day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{late_day.date()}"})
            assert day["tens_fraction"] == 1.0
            assert jobs_db.alerts.find_one({"patient_id": patient.id})["resolved_at"] is not None
        return real_save_many(docs)

    monkeypatch.setattr(old_leader.stores.adherence_days, "save_many", slow_save_many)
    old_leader.adherence_job.run()
    assert overtaken
    traveller.move_to(NOW + timedelta(hours=1))
    services_on(jobs_db, settings, clock).adherence_job.run()  # the next hourly run

    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{late_day.date()}"})
    alert = jobs_db.alerts.find_one({"patient_id": patient.id})
    waiting = jobs_db.push_outbox.count_documents({"recipient_user_id": caregiver.id, "state": {"$ne": "withdrawn"}})
    assert (day["tens_fraction"], alert["resolved_at"] is not None, waiting) == (1.0, True, 0)


def test_a_runs_snapshots_replace_only_days_computed_earlier_or_at_the_same_instant_by_an_earlier_run(jobs_db):
    store = AdherenceDays(jobs_db)
    stored = {"older": {"computed_at": NOW - timedelta(minutes=1), "run": 9}, "unstamped": {},
              "same instant, earlier run": {"computed_at": NOW, "run": 4}, "same instant, by hand": {"computed_at": NOW},
              "same instant, later run": {"computed_at": NOW, "run": 6},
              "later": {"computed_at": NOW + timedelta(seconds=1), "run": 1}}
    jobs_db.adherence_days.insert_many([{"_id": name, "figure": "stored", **fields} for name, fields in stored.items()])
    refused = store.save_many([{"_id": name, "figure": "run 5", "computed_at": NOW, "run": 5}
                               for name in [*stored, "new"]])
    assert sorted(d["_id"] for d in refused) == ["later", "same instant, later run"]
    assert {d["_id"]: d["figure"] for d in jobs_db.adherence_days.find()} == {
        "older": "run 5", "unstamped": "run 5", "same instant, earlier run": "run 5", "same instant, by hand": "run 5",
        "same instant, later run": "stored", "later": "stored", "new": "run 5"}
