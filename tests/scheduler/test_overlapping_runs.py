"""Two runs of one scheduled job that overlap (the old leader still finishing a slow run while the next leader
runs the job, or a panel read beside the refresher): the slower, earlier run must not write older data over
what the later one stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from companion.api.ingestion import SessionRecordSchema
from companion.domain.adherence import ADHERENCE_RULES
from companion.domain.alerts import low_adherence
from companion.services.adherence_batch import JOB
from companion.services.read_models import PanelReadModel
from companion.store.adherence import AdherenceDays
from tests.scheduler.helpers import daily_reminder, link_caregiver, make_person, own, services_on, stored_day
from tests.scheduler.test_late_data import PLAN, _bound, _upload
from tests.support.records import session_record

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


def test_a_runs_snapshots_replace_only_days_of_an_earlier_run_or_without_a_number_computed_no_later(jobs_db):
    store = AdherenceDays(jobs_db)
    stored = {"earlier run": {"computed_at": NOW - timedelta(minutes=1), "run": 4},
              "earlier run, stamped later": {"computed_at": NOW + timedelta(days=2), "run": 4},
              "unstamped": {},
              "no number, earlier": {"computed_at": NOW - timedelta(minutes=1)},
              "no number, same instant": {"computed_at": NOW},
              "no number, later": {"computed_at": NOW + timedelta(seconds=1)},
              "later run, stamped earlier": {"computed_at": NOW - timedelta(hours=1), "run": 6},
              "same number, restored": {"computed_at": NOW - timedelta(days=1), "run": 5}}
    jobs_db.adherence_days.insert_many([{"_id": name, "figure": "stored", **fields}
                                        for name, fields in stored.items()])
    refused = store.save_many([{"_id": name, "figure": "run 5", "computed_at": NOW, "run": 5}
                               for name in [*stored, "new"]])
    kept = {"later run, stamped earlier", "no number, later", "same number, restored"}
    assert {d["_id"]: d.get("run") for d in refused.standing} == {"later run, stamped earlier": 6,
                                                                  "no number, later": None,
                                                                  "same number, restored": 5}
    assert sorted(d["_id"] for d in refused.docs) == sorted(kept)
    assert {d["_id"]: d["figure"] for d in jobs_db.adherence_days.find()} == {
        name: "stored" if name in kept else "run 5" for name in [*stored, "new"]}


def test_an_alerts_pass_that_read_before_the_session_was_ticked_off_does_not_alert_the_caregiver(
        jobs_db, settings, clock, traveller, monkeypatch):
    ten = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    patient = make_person(jobs_db, "patient", caregiver_alert_delay_min=30)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    caregiver = link_caregiver(jobs_db, patient, ["missed_session"])
    traveller.move_to(ten)
    services_on(jobs_db, settings, clock).reminder_dispatch.dispatch_due()
    traveller.move_to(ten + timedelta(minutes=31))
    [occurrence] = list(jobs_db.reminder_occurrences.find({"patient_id": patient.id, "due_at": ten}))

    def ticked_off():  # the pass has judged its candidates; the patient ticks the session off
        services_on(jobs_db, settings, clock).reminders.record_outcome(own(patient.id), occurrence["_id"], "done",
                                                                       None, at=ten + timedelta(minutes=20))

    _pass_overtaken(jobs_db, settings, clock, monkeypatch, ticked_off)
    traveller.move_to(ten + timedelta(minutes=32))
    services_on(jobs_db, settings, clock).alerts.evaluate()  # the next pass
    open_alerts = jobs_db.alerts.count_documents({"patient_id": patient.id, "resolved_at": None})
    assert (open_alerts, _told(jobs_db, caregiver)) == (0, 0)


def _pass_overtaken(jobs_db, settings, clock, monkeypatch, meanwhile) -> None:
    """An alerts pass that has judged its candidates when ``meanwhile`` happens, and raises its alerts after."""
    slow_pass = services_on(jobs_db, settings, clock)
    real_notified_among = slow_pass.stores.alerts.notified_among

    def judged(keys):
        meanwhile()
        return real_notified_among(keys)

    monkeypatch.setattr(slow_pass.stores.alerts, "notified_among", judged)
    slow_pass.alerts.evaluate()


def _resolved_as(alert: dict) -> str | None:
    return (alert["resolution"] or {}).get("code")


def _told(jobs_db, *people) -> int:
    return jobs_db.push_outbox.count_documents({"recipient_user_id": {"$in": [p.id for p in people]},
                                                "state": {"$ne": "withdrawn"}})


def test_an_alerts_pass_that_read_before_a_session_arrived_late_does_not_alert_the_caregiver(
        jobs_db, settings, clock, traveller, monkeypatch):
    ten = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    patient = make_person(jobs_db, "patient", caregiver_alert_delay_min=30)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    caregiver = link_caregiver(jobs_db, patient, ["missed_session"])
    traveller.move_to(ten)
    services_on(jobs_db, settings, clock).reminder_dispatch.dispatch_due()
    traveller.move_to(ten + timedelta(minutes=31))

    def session_arrives():  # the hub was offline: the session done at 10:05 arrives, and the adherence job runs
        services = services_on(jobs_db, settings, clock)
        _upload(services, patient, _bound(jobs_db, services, patient), ten + timedelta(minutes=5))
        services.adherence_job.run()

    _pass_overtaken(jobs_db, settings, clock, monkeypatch, session_arrives)
    services_on(jobs_db, settings, clock).alerts.evaluate()
    [alert] = jobs_db.alerts.find({"patient_id": patient.id})
    assert (_resolved_as(alert), alert["notified_at"], _told(jobs_db, caregiver)) == ("session_found", None, 0)


def test_an_alerts_pass_that_read_a_sessions_device_event_before_the_care_team_excluded_it_alerts_nobody(
        jobs_db, settings, clock, traveller, monkeypatch):
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["device_fault"])
    serial = _bound(jobs_db, services, patient)
    services.ingestion.receive(None, patient.id, [SessionRecordSchema().load(session_record(
        serial, 1, started_at=NOW - timedelta(hours=1), end_reason="electrode_off"))], {serial})
    assert jobs_db.device_events.count_documents({"kind": "electrode_off"}) == 1
    _pass_overtaken(jobs_db, settings, clock, monkeypatch, lambda: services.sessions.resolve(
        patient.id, f"{serial}:1", "exclude", "clinician-1", note="the pads were off the patient"))
    services_on(jobs_db, settings, clock).alerts.evaluate()
    [alert] = jobs_db.alerts.find({"patient_id": patient.id})
    assert (_resolved_as(alert), _told(jobs_db, patient, caregiver)) == ("session_not_counted", 0)


def test_an_alerts_pass_that_read_ratings_before_one_was_deleted_raises_no_flare_for_the_caregiver(
        jobs_db, settings, clock, traveller, monkeypatch):
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["pain_flare"])
    entries = [services.diary.record_entry(own(patient.id), {
        "client_entry_id": f"e{n}", "recorded_at": NOW - timedelta(hours=hours), "nrs": nrs})[0]
        for n, (hours, nrs) in enumerate([(3, 8), (1, 9)])]

    def deleted_meanwhile():  # entered by mistake; the adherence job judges the day again (no flare alert yet)
        services.diary.delete_entry(own(patient.id), entries[1]["_id"])
        services_on(jobs_db, settings, clock).adherence_job.run()

    _pass_overtaken(jobs_db, settings, clock, monkeypatch, deleted_meanwhile)
    services_on(jobs_db, settings, clock).alerts.evaluate()
    [alert] = jobs_db.alerts.find({"patient_id": patient.id})
    assert (_resolved_as(alert), _told(jobs_db, caregiver)) == ("ratings_changed", 0)


def test_an_alerts_pass_that_read_a_unit_as_silent_before_it_was_heard_from_alerts_nobody(
        jobs_db, settings, clock, traveller, monkeypatch):
    heard = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["device_silent"])
    serial = _bound(jobs_db, services, patient)
    jobs_db.devices.update_one({"_id": serial}, {"$set": {"status.last_seen_at": heard}})
    traveller.move_to(heard + timedelta(hours=25))
    _pass_overtaken(jobs_db, settings, clock, monkeypatch, lambda: services.ingestion.device_status(patient.id, [{
        "serial": serial, "battery_pct": 70, "firmware": "1.4.2", "last_seen_at": heard + timedelta(hours=25),
        "last_error": None}]))
    [alert] = jobs_db.alerts.find({"patient_id": patient.id})
    assert (_resolved_as(alert), _told(jobs_db, caregiver)) == ("unit_heard_again", 0)


def test_a_row_computed_before_the_patients_midnight_does_not_replace_the_one_computed_after_it(
        jobs_db, settings, clock, traveller, monkeypatch):
    before_midnight = datetime(2026, 3, 10, 23, 59, 50, tzinfo=UTC)
    traveller.move_to(before_midnight)
    services = services_on(jobs_db, settings, clock)
    person = make_person(jobs_db, "patient")  # UTC
    # Covered every day but the last one (10 March): the 7-day PDC is 1.0 on the 10th, 6/7 on the 11th.
    jobs_db.adherence_days.insert_many([stored_day(person.id, before_midnight.date() - timedelta(days=n),
                                                   0.0 if n == 0 else 1.0) for n in range(0, 12)])
    services.panel_rows.refresh([person.id])
    services.panel_rows.mark([person.id], "a session arrived")
    real_compute = PanelReadModel.compute
    raced = []

    def slow(self, who, at, kept=None):
        computed = real_compute(self, who, at, kept)  # a panel read's computation, as of 23:59:50
        if not raced:
            raced.append(True)
            traveller.move_to(before_midnight + timedelta(seconds=20))  # the refresher's pass just after midnight
            services_on(jobs_db, settings, clock).panel_rows.refresh_due()
            assert jobs_db.panel_row_days.find_one({"_id": person.id})["today"] == "2026-03-11"
        return computed

    monkeypatch.setattr(PanelReadModel, "compute", slow)
    services.panel_rows.catch_up([person.id])
    monkeypatch.setattr(PanelReadModel, "compute", real_compute)
    for minutes in (1, 2, 60, 600):  # the refresher goes on every minute on 11 March
        traveller.move_to(before_midnight + timedelta(minutes=minutes))
        services_on(jobs_db, settings, clock).panel_rows.refresh_due()
    row = jobs_db.panel_rows.find_one({"_id": person.id})
    days = jobs_db.panel_row_days.find_one({"_id": person.id})
    assert (days["today"], round(row["pdc_7"], 3)) == ("2026-03-11", round(6 / 7, 3))



def _patient_low_for_three_days(jobs_db, settings, clock, traveller, **stored):
    """A patient with good days until four days ago, then three planned days with no TENS (no alert yet), every
    day stored by an earlier computation (with ``stored``'s fields), the job's last run an hour ago."""
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    services.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 1, 1, tzinfo=UTC))
    days = {n: 1.0 for n in range(4, 12)} | {1: 0.0, 2: 0.0, 3: 0.0}
    jobs_db.adherence_days.insert_many([{**stored_day(patient.id, NOW.date() - timedelta(days=n), v),
                                         "computed_at": NOW - timedelta(days=n - 1), "rules": ADHERENCE_RULES,
                                         **stored} for n, v in days.items()])
    jobs_db.days_to_recompute.delete_many({})
    services.stores.days_to_recompute.ran(JOB, NOW - timedelta(hours=1))
    return services, patient


def _three_hourly_runs(jobs_db, settings, clock, traveller, patient) -> list[tuple[int, int]]:
    """The job's next three hourly runs; after each, the patient's low-adherence alerts and days still marked."""
    after = []
    for hour in range(3):
        traveller.move_to(NOW + timedelta(hours=hour))
        services_on(jobs_db, settings, clock).adherence_job.run()
        after.append((jobs_db.alerts.count_documents({"patient_id": patient.id, "kind": "low_adherence"}),
                      jobs_db.days_to_recompute.count_documents({"patient_id": patient.id})))
    return after


@pytest.mark.parametrize(("written_by", "held_back"), [
    ("a run of the job", []),  # numbered: replaced by the next run, whatever its stamp
    ("a version before numbered runs", [(0, 1)]),  # without a number: numbered by the run it refused
])
def test_a_day_stamped_ahead_by_a_fast_clock_holds_the_patients_alerts_back_one_run_at_most(
        jobs_db, settings, clock, traveller, written_by, held_back):
    services, patient = _patient_low_for_three_days(jobs_db, settings, clock, traveller)
    if written_by == "a run of the job":
        jobs_db.adherence_days.update_many({"patient_id": patient.id},
                                           {"$set": {"run": services.stores.days_to_recompute.start(JOB)}})
    ahead = NOW.date() - timedelta(days=5)  # written by a worker whose clock ran two days ahead, since corrected
    jobs_db.adherence_days.update_one({"_id": f"{patient.id}:{ahead}"}, {"$set": {"computed_at": NOW + timedelta(days=2)}})
    services.stores.days_to_recompute.mark(patient.id, [ahead], "a session arrived late", NOW)
    assert _three_hourly_runs(jobs_db, settings, clock, traveller, patient) == held_back + [(1, 0)] * (3 - len(held_back))


def test_a_run_counter_restored_behind_the_stored_days_holds_the_patients_alerts_back_one_run_at_most(
        jobs_db, settings, clock, traveller):
    # The days were written by runs up to 50; the database restored from a backup whose counter had handed out 3
    # (a dump that read recompute_runs before adherence_days, or adherence_days restored from a later one).
    services, patient = _patient_low_for_three_days(jobs_db, settings, clock, traveller, run=50)
    jobs_db.recompute_runs.update_one({"_id": JOB}, {"$set": {"runs": 3}})
    services.stores.days_to_recompute.mark(patient.id, [NOW.date() - timedelta(days=5)], "a session arrived late", NOW)
    assert _three_hourly_runs(jobs_db, settings, clock, traveller, patient) == [(0, 1), (1, 0), (1, 0)]


def test_a_restored_counter_that_hands_out_the_number_a_stored_day_carries_does_not_leave_that_day_unwritten(
        jobs_db, settings, clock, traveller):
    # The counter restored one behind a stored day's run: the next run takes that day's number, 50, and is refused
    # there (it replaces only a lower number); the day standing is not this run's write, though it has its number.
    services, patient = _patient_low_for_three_days(jobs_db, settings, clock, traveller, run=50)
    jobs_db.recompute_runs.update_one({"_id": JOB}, {"$set": {"runs": 49}})
    late = NOW.date() - timedelta(days=5)  # stored as a full TENS day; no session is in the database for it
    services.stores.days_to_recompute.mark(patient.id, [late], "a session arrived late", NOW)
    _three_hourly_runs(jobs_db, settings, clock, traveller, patient)
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{late}"})
    marked = jobs_db.days_to_recompute.count_documents({"patient_id": patient.id})
    assert (day["state"], day["tens_fraction"], marked) == ("no_events", None, 0), (day, marked)


def test_an_adherence_run_that_took_its_number_before_the_rules_upgrade_does_not_overwrite_the_days_it_computed(
        jobs_db, settings, clock, traveller, monkeypatch):
    traveller.move_to(NOW)
    job = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    job.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 1, 1, tzinfo=UTC))
    serial = _bound(jobs_db, job, patient)
    late_day = datetime.combine(NOW.date() - timedelta(days=2), datetime.min.time(), UTC) + timedelta(hours=10)
    _upload(job, patient, serial, late_day)  # 30 of the day's 60 minutes
    job.adherence.compute_day(patient, late_day.date())
    jobs_db.adherence_days.update_one({"_id": f"{patient.id}:{late_day.date()}"},
                                      {"$unset": {"rules": ""}, "$set": {"computed_at": NOW - timedelta(days=1)}})
    job.stores.days_to_recompute.ran(JOB, NOW - timedelta(hours=1))
    real_save_many = job.stores.adherence_days.save_many

    def upgraded_meanwhile(docs):  # the job read the day; the rest of it arrives, and `companion migrate` runs
        _upload(job, patient, serial, late_day + timedelta(hours=2), seq_from=2)
        assert services_on(jobs_db, settings, clock).adherence_upgrade.run().written == 1
        return real_save_many(docs)

    monkeypatch.setattr(job.stores.adherence_days, "save_many", upgraded_meanwhile)
    job.adherence_job.run()
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{late_day.date()}"})
    marked = jobs_db.days_to_recompute.count_documents({"_id": f"{patient.id}:{late_day.date()}"})
    assert (day["tens_fraction"], day["rules"], marked) == (1.0, ADHERENCE_RULES, 1)
