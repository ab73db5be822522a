"""A run of low-adherence days alerts once, however long it goes on.

The rule reads the 30 days before today. A run longer than that has no visible start: the start the rule sees
slides a day a day, and so did the alert's key, which raised a new alert and a new push to the caregiver every
day, for exactly the patients who have stopped their therapy. A run that a good day broke, followed by a new
run, is a new alert.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.domain.alerts import low_adherence
from companion.services.adherence_batch import JOB
from tests.scheduler.helpers import link_caregiver, make_person, services_on, stored_day
from tests.scheduler.test_late_data import PLAN, _bound, _upload

NOW = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)


def _patient_with_days(jobs_db, services, days: dict[int, float]):
    """A patient on PLAN whose stored days are ``days`` (days before NOW's date -> TENS fraction), a caregiver
    told of low adherence, and the job's last run an hour before NOW."""
    patient = make_person(jobs_db, "patient")
    link_caregiver(jobs_db, patient, ["adherence_low"])
    services.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 1, 1, tzinfo=UTC))
    jobs_db.adherence_days.insert_many([stored_day(patient.id, NOW.date() - timedelta(days=n), value)
                                        for n, value in days.items()])
    jobs_db.days_to_recompute.delete_many({})
    services.stores.days_to_recompute.ran(JOB, NOW - timedelta(hours=1))
    return patient


def _runs(jobs_db, settings, clock, traveller, days: int) -> None:
    for k in range(days):
        traveller.move_to(NOW + timedelta(days=k))
        services_on(jobs_db, settings, clock).adherence_job.run()


def test_a_run_longer_than_the_thirty_days_read_alerts_once(jobs_db, settings, clock, traveller):
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_days(jobs_db, services, dict.fromkeys(range(36), 0.0))
    _runs(jobs_db, settings, clock, traveller, 4)
    alerts = list(jobs_db.alerts.find({"kind": "low_adherence", "patient_id": patient.id}))
    assert len(alerts) == 1 and alerts[0]["resolved_at"] is None
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alerts[0]['_id']}"}) == 1
    assert jobs_db.push_outbox.count_documents({"source_key": {"$regex": "^alert:"}}) == 1


def test_a_new_run_after_a_good_day_is_a_new_alert(jobs_db, settings, clock, traveller):
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    # Low from 20 to 10 days back, a good day 9 days back, low again since.
    days = {n: 0.0 for n in range(1, 21)} | {9: 1.0}
    patient = _patient_with_days(jobs_db, services, days)
    # The first run's alert, raised while it went on (still open: nobody acknowledged it).
    first_run = {NOW.date() - timedelta(days=n): 0.0 for n in range(10, 21)}
    services.alerts.raise_once(low_adherence(patient.id, first_run, NOW.date() - timedelta(days=9)))
    _runs(jobs_db, settings, clock, traveller, 2)  # (a day begins in the second: the rule is judged)
    keys = sorted(a["period_key"] for a in jobs_db.alerts.find({"kind": "low_adherence", "patient_id": patient.id}))
    # The run in progress, from after the good day, is an alert of its own.
    assert keys == [(NOW.date() - timedelta(days=20)).isoformat(), (NOW.date() - timedelta(days=8)).isoformat()]


def test_nothing_is_added_to_a_closed_record_nor_raised_about_someone_who_has_left(jobs_db, settings, clock,
                                                                                    traveller):
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_days(jobs_db, services, {n: 1.0 for n in range(1, 8)})
    services.gateways.bind_unit(patient.id, "CTU-GONE1", "companion-tens", bound_at=NOW - timedelta(days=30))
    services.stores.devices.note_status("CTU-GONE1", patient.id, {}, last_seen_at=NOW - timedelta(hours=1),
                                        future_after=NOW)
    services.lifecycle.close(patient.id, by=patient.id)
    kept = jobs_db.adherence_days.count_documents({"patient_id": patient.id})
    for k in range(1, 6):  # five days on: no new days of the closed record, no alert about them or the unit
        traveller.move_to(NOW + timedelta(days=k))
        later = services_on(jobs_db, settings, clock)
        later.adherence_job.run()
        later.alerts.evaluate()
    assert jobs_db.adherence_days.count_documents({"patient_id": patient.id}) == kept
    assert list(jobs_db.alerts.find({"patient_id": patient.id}, {"kind": 1, "_id": 0})) == []


def test_an_alert_whose_run_began_before_the_days_read_is_not_called_resolved_by_later_days(
        jobs_db, settings, clock, traveller):
    """A run of low days 40 days ago alerted, nobody acknowledged it, and the patient has done well since: data
    arriving now recomputes a recent day, and the alert is judged again on the 30 days read. Its own first days
    are not among them: it stands (a clinician acknowledges it), rather than being resolved "with data that
    arrived later, the sessions reached the plan", which never happened."""
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_days(jobs_db, services, {n: 0.0 if n >= 38 else 1.0 for n in range(1, 41)})
    first_run = {NOW.date() - timedelta(days=n): 0.0 for n in range(38, 41)}
    alert = services.alerts.raise_once(low_adherence(patient.id, first_run, NOW.date() - timedelta(days=37)))
    services.stores.days_to_recompute.mark(patient.id, [NOW.date() - timedelta(days=2)], "sessions", NOW)
    _runs(jobs_db, settings, clock, traveller, 1)
    assert jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{(NOW.date() - timedelta(days=2)).isoformat()}"})
    assert jobs_db.alerts.find_one({"_id": alert["_id"]})["resolved_at"] is None


def test_a_closed_records_days_recomputed_raise_no_alert_about_someone_who_has_left(jobs_db, settings, clock,
                                                                                      traveller):
    """A closed record's days may still be recomputed (a clinician counts one of its held sessions): its last
    days were low, but no alert is raised about a patient who has left."""
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_days(jobs_db, services, {n: 0.0 for n in range(1, 6)})
    services.lifecycle.close(patient.id, by=patient.id)
    services.stores.days_to_recompute.mark(patient.id, [NOW.date() - timedelta(days=2)], "session_resolved", NOW)
    _runs(jobs_db, settings, clock, traveller, 1)
    assert jobs_db.days_to_recompute.count_documents({"patient_id": patient.id}) == 0  # the day was judged
    assert list(jobs_db.alerts.find({"patient_id": patient.id}, {"kind": 1, "_id": 0})) == []


def test_a_run_that_late_data_shortens_at_its_start_is_the_same_alert_told_from_its_new_start(
        jobs_db, settings, clock, traveller):
    """Low for five days, alerted (the caregiver told). The sessions of the first day then arrive: the run is four
    days from the second. It is the run the alert is about, not a new one, nor one that ended: the alert stays
    open and now tells the run from its new first day, and nobody is pushed again."""
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_days(jobs_db, services, {n: 0.0 if n <= 5 else 1.0 for n in range(1, 11)})
    run = {NOW.date() - timedelta(days=n): 0.0 for n in range(1, 6)}
    alert = services.alerts.raise_once(low_adherence(patient.id, run, NOW.date()))
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alert['_id']}"}) == 1
    first_day = datetime.combine(NOW.date() - timedelta(days=5), datetime.min.time(), UTC)
    _upload(services, patient, _bound(jobs_db, services, patient), first_day + timedelta(hours=9),
            first_day + timedelta(hours=18))
    traveller.move_to(NOW + timedelta(hours=1))
    services_on(jobs_db, settings, clock).adherence_job.run()
    assert jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{first_day.date().isoformat()}"})["covered"]
    (stands,) = jobs_db.alerts.find({"kind": "low_adherence", "patient_id": patient.id})
    assert (stands["_id"], stands["resolved_at"]) == (alert["_id"], None)
    second_day = (NOW.date() - timedelta(days=4)).isoformat()
    assert (stands["period_key"], stands["details"]["first_day"], stands["details"]["days"]) == (second_day,
                                                                                                second_day, 4)
    assert jobs_db.push_outbox.count_documents({"source_key": {"$regex": "^alert:"}}) == 1
    # Judged again later with nothing new, it still holds from its new first day: neither resolved nor raised again.
    traveller.move_to(NOW + timedelta(days=1))
    services_on(jobs_db, settings, clock).adherence_job.run()
    assert [(a["_id"], a["resolved_at"]) for a in jobs_db.alerts.find({"patient_id": patient.id})] == [
        (alert["_id"], None)]


def test_a_good_day_recomputed_long_ago_does_not_hide_the_low_days_between_it_and_yesterday(
        jobs_db, settings, clock, traveller):
    """Low yesterday and the day before; the day before that was good until a session of it went to another
    patient. Recomputed in the same run: that day (now low) and one twenty days back (now good, its sessions
    arrived late). The rule reads back only as far as it must, up to a good day: twenty days back is not the end of
    the run unless every day after it was read; the three low days in a row are an alert."""
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_days(jobs_db, services, {n: 0.0 if n <= 2 else 1.0 for n in range(1, 31)})
    old_day = datetime.combine(NOW.date() - timedelta(days=20), datetime.min.time(), UTC)
    _upload(services, patient, _bound(jobs_db, services, patient), old_day + timedelta(hours=9),
            old_day + timedelta(hours=18))
    services.stores.days_to_recompute.mark(patient.id, [NOW.date() - timedelta(days=3)], "session_moved", NOW)
    traveller.move_to(NOW + timedelta(minutes=30))
    services_on(jobs_db, settings, clock).adherence_job.run()
    assert jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{old_day.date().isoformat()}"})["covered"]
    assert not jobs_db.adherence_days.find_one(
        {"_id": f"{patient.id}:{(NOW.date() - timedelta(days=3)).isoformat()}"})["covered"]
    (alert,) = jobs_db.alerts.find({"kind": "low_adherence", "patient_id": patient.id})
    assert alert["period_key"] == (NOW.date() - timedelta(days=3)).isoformat()


def test_an_older_alert_whose_run_late_data_shortens_is_told_from_its_new_start_while_a_newer_run_has_its_own(
        jobs_db, settings, clock, traveller):
    """Low 28 February to 4 March (alerted on the 5th), a good 5 March, low again from the 6th (alerted on the
    10th). The sessions of 28 February then arrive: the first alert's run is four days from 1 March, not over."""
    traveller.move_to(NOW)
    services = services_on(jobs_db, settings, clock)
    patient = _patient_with_days(jobs_db, services, {n: 1.0 if n == 5 else 0.0 for n in range(1, 11)})
    day = {n: NOW.date() - timedelta(days=n) for n in range(1, 11)}
    traveller.move_to(NOW - timedelta(days=5))
    first = services.alerts.raise_once(low_adherence(patient.id, {day[n]: 0.0 for n in range(6, 11)}, day[5]))
    traveller.move_to(NOW)
    second = services.alerts.raise_once(low_adherence(patient.id, {day[n]: 0.0 for n in range(1, 5)}, NOW.date()))
    feb28 = datetime.combine(day[10], datetime.min.time(), UTC)
    _upload(services, patient, _bound(jobs_db, services, patient), feb28 + timedelta(hours=9),
            feb28 + timedelta(hours=18))
    traveller.move_to(NOW + timedelta(hours=1))
    services_on(jobs_db, settings, clock).adherence_job.run()
    assert jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{day[10].isoformat()}"})["covered"]
    stands = {a["_id"]: a for a in jobs_db.alerts.find({"patient_id": patient.id})}
    assert set(stands) == {first["_id"], second["_id"]}
    assert [stands[first["_id"]][k] for k in ("resolved_at", "period_key")] == [None, day[9].isoformat()]
    assert stands[first["_id"]]["details"]["days"] == 4
    assert [stands[second["_id"]][k] for k in ("resolved_at", "period_key")] == [None, day[4].isoformat()]
