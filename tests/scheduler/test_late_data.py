"""Late and changed data recompute what they touched: the days a change touches are marked, the adherence job
recomputes them however late (within 30 days), and alerts whose condition no longer holds are resolved with
the reason, their unsent notifications withdrawn, nothing new pushed."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
from pymongo.errors import ConnectionFailure

from companion.api.ingestion import SessionRecordSchema, SyncSchema
from companion.domain.access import Grant, Relationship
from companion.services.exports import events_csv, patient_csv
from companion.services.review import PatientReview
from companion.services.touched_days import TouchedDays
from tests.scheduler.helpers import (
    daily_reminder,
    link_caregiver,
    make_person,
    own,
    phone,
    run_minute,
    services_on,
)
from tests.support.records import session_record

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PLAN = {"tens": {"sessions_per_day": 2, "daily_minutes_target": None, "minutes_per_session": 30, "programmes": [1],
                 "intensity_min_ma": 10.0, "intensity_max_ma": 30.0, "start_date": date(2026, 2, 1), "end_date": None,
                 "counts_towards_adherence": True}, "medications": [], "mindfulness": None}


def _bound(db, services, patient, serial="CTU-L0001"):
    services.gateways.bind_unit(patient.id, serial, "companion-tens", bound_at=datetime(2026, 1, 1, tzinfo=UTC))
    return serial


def _upload(services, patient, serial, *starts: datetime, seq_from: int = 1, minutes: int = 30):
    records = [SessionRecordSchema().load(session_record(serial, seq_from + n, started_at=start, duration_s=minutes * 60))
               for n, start in enumerate(starts)]
    return services.ingestion.receive(None, patient.id, records, {serial})


def _marks(db, patient) -> set[str]:
    return {m["date"] for m in db.days_to_recompute.find({"patient_id": patient.id})}


def test_every_kind_of_change_marks_the_days_it_touches(jobs_db, settings, clock, traveller):
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "America/New_York")
    serial = _bound(jobs_db, services, patient)
    _upload(services, patient, serial, T10 - timedelta(days=6))  # 04:00 in New York on 24 February
    assert _marks(jobs_db, patient) == {"2026-02-24"}
    jobs_db.days_to_recompute.delete_many({})
    entry, _ = services.diary.record_entry(Grant(patient.id, Relationship.SELF), {
        "client_entry_id": "e1", "recorded_at": T10 - timedelta(days=3), "nrs": 4, "context": None, "bpi": None,
        "session_record_id": None, "phase": None})
    services.diary.edit_entry(Grant(patient.id, Relationship.SELF), entry["_id"], {"recorded_at": T10 - timedelta(days=4)})
    assert _marks(jobs_db, patient) == {"2026-02-26", "2026-02-27"}
    jobs_db.days_to_recompute.delete_many({})
    services.library.load()
    slug = services.library.short_items(10)[0]
    practice = services.library.start_practice(patient.id, slug, T10 - timedelta(days=2))
    services.library.complete_practice(patient.id, practice["_id"], T10 - timedelta(days=2) + timedelta(minutes=5), None)
    assert _marks(jobs_db, patient) == {"2026-02-28"}
    jobs_db.days_to_recompute.delete_many({})
    services.plans.prescribe(patient.id, PLAN, created_by="clinician")
    assert _marks(jobs_db, patient) == {"2026-03-02"}
    jobs_db.days_to_recompute.delete_many({})
    traveller.move_to(T10 + timedelta(days=1))
    services.profiles.update(patient.id, {"time_zone": "Europe/London"})
    assert _marks(jobs_db, patient) == {"2026-03-03"}


def test_a_session_ten_days_late_recomputes_its_day_and_the_mark_goes(jobs_db, settings, clock, traveller):
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "Europe/London")
    serial = _bound(jobs_db, services, patient)
    services.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 2, 1, tzinfo=UTC))
    late_day = T10 - timedelta(days=10)
    services.adherence.compute_day(services.accounts.account(patient.id), late_day.date())
    assert jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{late_day.date()}"})["state"] == "no_events"
    _upload(services, patient, serial, late_day - timedelta(hours=2), late_day + timedelta(hours=4))
    services.adherence_job.run()
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{late_day.date()}"})
    assert (day["covered"], day["tens_minutes"]) == (True, 60)
    assert _marks(jobs_db, patient) == set()


def test_a_day_marked_again_while_it_was_recomputed_stays_marked(jobs_db, settings, clock, traveller):
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    services.touched_days.dates(patient.id, {date(2026, 3, 1)}, "test")
    read = jobs_db.days_to_recompute.find_one({})
    services.touched_days.dates(patient.id, {date(2026, 3, 1)}, "again")  # new data while the job works
    assert jobs_db.days_to_recompute.count_documents({}) == 1
    assert services.stores.days_to_recompute.done([read]) == 0
    assert _marks(jobs_db, patient) == {"2026-03-01"}


def test_a_day_beyond_the_thirty_day_window_is_not_recomputed(jobs_db, settings, clock, traveller):
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    services.touched_days.dates(patient.id, {date(2026, 1, 2)}, "too late")
    services.adherence_job.run()
    assert jobs_db.adherence_days.find_one({"_id": f"{patient.id}:2026-01-02"}) is None
    assert _marks(jobs_db, patient) == set()


def test_a_day_marked_inside_the_window_is_recomputed_when_the_job_comes_back_days_later(jobs_db, settings, clock,
                                                                                         traveller):
    """A session 28 days late counts when it arrives; the worker is down five days; when it catches up, the day
    is 33 days back, and is recomputed all the same: the window is the one in force when the data arrived."""
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "Europe/London")
    serial = _bound(jobs_db, services, patient)
    services.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 1, 2, tzinfo=UTC))
    services.adherence_job.run()  # the worker ran, then went down
    late = T10 - timedelta(days=28)
    [result] = _upload(services, patient, serial, late)["results"]
    assert (result["status"], result["held"]) == ("created", False)
    traveller.move_to(T10 + timedelta(days=5))
    services.adherence_job.run()
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{late.date()}"})
    assert day is not None and day["tens_minutes"] == 30
    assert _marks(jobs_db, patient) == set()


def test_a_missed_session_alert_is_resolved_when_the_session_arrives_late_and_nothing_more_is_pushed(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", caregiver_alert_delay_min=30)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    caregiver = link_caregiver(jobs_db, patient, ["missed_session"], quiet_hours={"start": "11:00", "end": "23:00"})
    token = phone(jobs_db, caregiver)
    for at in (T10, T10 + timedelta(minutes=31)):
        traveller.move_to(at)
        run_minute(jobs_db, settings, clock, sender)
        services = services_on(jobs_db, settings, clock, sender)
        services.alerts.evaluate()
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id}))
    [queued] = list(jobs_db.push_outbox.find({"source_key": f"alert:{alert['_id']}"}))
    assert queued["state"] == "scheduled"  # held until the caregiver's quiet hours end
    # The hub was offline: the session done at 10:05 arrives at 14:00.
    traveller.move_to(T10 + timedelta(hours=4))
    services = services_on(jobs_db, settings, clock, sender)
    serial = _bound(jobs_db, services, patient)
    _upload(services, patient, serial, T10 + timedelta(minutes=5))
    services.adherence_job.run()
    resolved = jobs_db.alerts.find_one({"_id": alert["_id"]})
    assert resolved["resolved_at"] is not None and "10:05" in resolved["resolved_reason"]
    assert resolved["resolution"] == {"code": "session_found", "at": T10 + timedelta(minutes=5)}
    withdrawn = jobs_db.push_outbox.find_one({"_id": queued["_id"]})
    assert (withdrawn["state"], withdrawn["withdrawn_reason"]) == ("withdrawn", "alert_resolved")
    traveller.move_to(T10 + timedelta(hours=14))
    services.alerts.evaluate()
    services.push.send_due(owner="test-worker")
    assert emulator.delivered_to(token) == []
    assert jobs_db.alerts.count_documents({"patient_id": patient.id}) == 1


def test_a_flare_alert_is_resolved_when_its_ratings_are_deleted(jobs_db, settings, clock, traveller):
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    traveller.move_to(T10)
    entries = [services.diary.record_entry(Grant(patient.id, Relationship.SELF), {
        "client_entry_id": f"e{n}", "recorded_at": T10 - timedelta(hours=hours), "nrs": nrs, "context": None,
        "bpi": None, "session_record_id": None, "phase": None})[0] for n, (hours, nrs) in enumerate([(3, 8), (1, 9)])]
    services.alerts.evaluate()
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "pain_flare"}))
    services.diary.delete_entry(Grant(patient.id, Relationship.SELF), entries[1]["_id"])  # entered by mistake
    services.adherence_job.run()
    resolved = jobs_db.alerts.find_one({"_id": alert["_id"]})
    assert resolved["resolved_at"] is not None and "changed or removed" in resolved["resolved_reason"]
    assert resolved["resolution"] == {"code": "ratings_changed", "at": None}


def _rated(services, patient, client_entry_id: str, recorded_at: datetime, nrs: int) -> dict:
    return services.diary.record_entry(own(patient.id), {
        "client_entry_id": client_entry_id, "recorded_at": recorded_at, "nrs": nrs, "context": None, "bpi": None,
        "session_record_id": None, "phase": None})[0]


def test_a_flare_alert_is_resolved_when_its_earlier_rating_the_evening_before_is_deleted(
        jobs_db, settings, clock, traveller):
    """The flare is the second high rating's, dated on its day (2 March); the first, at 23:00 on 1 March, is
    deleted: only 1 March is marked, and the flare of the day after is judged again all the same."""
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    traveller.move_to(T10)
    entries = [_rated(services, patient, f"e{n}", T10 - timedelta(hours=hours), nrs)
               for n, (hours, nrs) in enumerate([(11, 8), (9, 9)])]  # 23:00 on 1 March, 01:00 on 2 March
    services.alerts.evaluate()
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "pain_flare"}))
    assert alert["period_key"] == "2026-03-02"
    services.adherence_job.run()
    assert jobs_db.alerts.find_one({"_id": alert["_id"]})["resolved_at"] is None
    services.diary.delete_entry(own(patient.id), entries[0]["_id"])
    assert _marks(jobs_db, patient) == {"2026-03-01"}
    services.adherence_job.run()
    traveller.move_to(T10 + timedelta(hours=2))
    services = services_on(jobs_db, settings, clock)
    services.alerts.evaluate()
    services.adherence_job.run()
    resolved = jobs_db.alerts.find_one({"_id": alert["_id"]})
    assert resolved["resolved_at"] is not None and resolved["resolution"]["code"] == "ratings_changed"


def test_a_flare_alert_is_resolved_when_a_rating_of_the_median_it_was_judged_against_is_deleted(
        jobs_db, settings, clock, traveller):
    """A rating of 6 on 2 March is a flare against the median of 2 of three ratings on 20 February; one of those
    deleted leaves no baseline (fewer than 3 ratings), and the flare ten days after the deleted rating ends."""
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    traveller.move_to(T10)
    baseline = [_rated(services, patient, f"b{n}", T10 - timedelta(days=10, hours=n), 2) for n in range(3)]
    _rated(services, patient, "flare", T10 - timedelta(hours=1), 6)
    services.alerts.evaluate()
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "pain_flare"}))
    assert (alert["period_key"], alert["details"]["reason"]) == ("2026-03-02", "above_median")
    services.adherence_job.run()
    services.diary.delete_entry(own(patient.id), baseline[0]["_id"])
    assert _marks(jobs_db, patient) == {"2026-02-20"}
    services.adherence_job.run()
    assert jobs_db.alerts.find_one({"_id": alert["_id"]})["resolved_at"] is not None


def test_a_late_rating_that_makes_the_next_day_a_flare_raises_it(jobs_db, settings, clock, traveller):
    """A rating of 9 at 01:00 on 2 March, synced at once, is no flare alone; a rating of 8 at 23:00 the evening
    before, synced from a phone offline until 4 March (too late for the minute job, which reads the last day's),
    makes the 9 a flare: raised on 2 March, though only 1 March was touched."""
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    traveller.move_to(T10)
    _rated(services, patient, "on-time", T10 - timedelta(hours=9), 9)
    services.alerts.evaluate()
    services.adherence_job.run()
    traveller.move_to(T10 + timedelta(days=2))
    services = services_on(jobs_db, settings, clock)
    _rated(services, patient, "late", T10 - timedelta(hours=11), 8)
    assert _marks(jobs_db, patient) == {"2026-03-01"}
    services.alerts.evaluate()
    assert jobs_db.alerts.count_documents({"patient_id": patient.id, "kind": "pain_flare"}) == 0
    services.adherence_job.run()
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "pain_flare"}))
    assert (alert["period_key"], alert["resolved_at"]) == ("2026-03-02", None)


SYNCED = datetime(2026, 3, 4, 16, 0, tzinfo=UTC)


def _ratings_synced_late(jobs_db, settings, clock, traveller, sender, patient, hours_ago) -> None:
    """Two ratings of 8 and 9 made ``hours_ago`` hours before the phone synced them at SYNCED (a flare), then the
    alerts job (every minute) and the adherence job (hourly; it judges again the days the ratings touched)."""
    traveller.move_to(SYNCED)
    services = services_on(jobs_db, settings, clock, sender)
    for n, (ago, nrs) in enumerate(zip(hours_ago, (8, 9), strict=True)):
        services.diary.record_entry(own(patient.id), {"client_entry_id": f"late-{n}", "nrs": nrs,
                                                      "recorded_at": SYNCED - timedelta(hours=ago)})
    for minutes in (1, 65):
        traveller.move_to(SYNCED + timedelta(minutes=minutes))
        services = services_on(jobs_db, settings, clock, sender)
        services.alerts.evaluate()
        services.adherence_job.run()
        services.push.send_due(owner="test-worker")


@pytest.mark.parametrize("hours_ago", [(2, 1), (31, 30)])
def test_a_flare_in_ratings_synced_a_day_late_is_raised(jobs_db, settings, clock, traveller, sender, emulator,
                                                        hours_ago):
    """A phone offline for a day and a half syncs two ratings of 8 and 9 made 30 hours ago: a flare that day, raised
    once, and the caregiver told (as of ratings synced at once)."""
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, link_caregiver(jobs_db, patient, ["pain_flare"]))
    _ratings_synced_late(jobs_db, settings, clock, traveller, sender, patient, hours_ago)
    [alert] = jobs_db.alerts.find({"patient_id": patient.id, "kind": "pain_flare"})
    assert alert["period_key"] == (SYNCED - timedelta(hours=hours_ago[1])).date().isoformat()
    assert len(emulator.delivered_to(token)) == 1


def test_a_flare_in_ratings_synced_more_than_two_days_late_is_raised_and_pushed_to_no_caregiver(
        jobs_db, settings, clock, traveller, sender, emulator):
    """Decided: a flare two and a half days past reaches the care team's panel and the caregiver's list of alerts,
    but no caregiver's phone (companion.domain.alerts.pushed_to_caregivers)."""
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["pain_flare"])
    token = phone(jobs_db, caregiver)
    _ratings_synced_late(jobs_db, settings, clock, traveller, sender, patient, (61, 60))
    [alert] = jobs_db.alerts.find({"patient_id": patient.id, "kind": "pain_flare"})
    assert alert["notified_at"] is not None and alert["resolved_at"] is None
    assert emulator.delivered_to(token) == []
    assert jobs_db.push_outbox.count_documents({"recipient_user_id": caregiver.id}) == 0


def test_a_flare_in_ratings_synced_more_than_three_days_late_is_history_and_raises_nothing(
        jobs_db, settings, clock, traveller, sender, emulator):
    """Decided: ratings a phone syncs four days late are kept and shown in the review's pain chart, but a flare in
    them is no call to act now (companion.domain.alerts.flare_still_raised): no alert, no push."""
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, link_caregiver(jobs_db, patient, ["pain_flare"]))
    _ratings_synced_late(jobs_db, settings, clock, traveller, sender, patient, (97, 96))
    assert jobs_db.alerts.count_documents({"patient_id": patient.id}) == 0
    assert emulator.delivered_to(token) == []


def test_a_silent_unit_heard_from_again_ends_its_alert(jobs_db, settings, clock, traveller):
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient")
    serial = _bound(jobs_db, services, patient)
    jobs_db.devices.update_one({"_id": serial}, {"$set": {"status.last_seen_at": T10}})
    traveller.move_to(T10 + timedelta(hours=25))
    services.alerts.evaluate()
    assert jobs_db.alerts.count_documents({"kind": "unit_silent", "resolved_at": None}) == 1
    services.ingestion.device_status(patient.id, [{"serial": serial, "battery_pct": 70, "firmware": "1.4.2",
                                                   "last_seen_at": T10 + timedelta(hours=25), "last_error": None}])
    services.alerts.evaluate()
    alert = jobs_db.alerts.find_one({"kind": "unit_silent"})
    assert alert["resolved_at"] is not None and "heard from again" in alert["resolved_reason"]
    assert alert["resolution"] == {"code": "unit_heard_again", "at": T10 + timedelta(hours=25)}
    assert services.alerts.review_list(patient.id, open_only=True) == ([], True)


def _alert_then(jobs_db, settings, clock, traveller, sender, due: datetime, window_min: int):
    """A patient with a reminder due at ``due`` (UTC, their zone), its missed-session alert raised at the end of
    its window plus their 30-minute delay, held for their caregiver (quiet hours): (patient, alert, queued push,
    the caregiver's phone)."""
    patient = make_person(jobs_db, "patient", caregiver_alert_delay_min=30)
    daily_reminder(jobs_db, patient, [due.strftime("%H:%M")], due.date().isoformat(), window_min=window_min)
    quiet = {"start": (due + timedelta(minutes=window_min + 15)).strftime("%H:%M"),
             "end": (due + timedelta(minutes=window_min + 600)).strftime("%H:%M")}
    caregiver = link_caregiver(jobs_db, patient, ["missed_session"], quiet_hours=quiet)
    token = phone(jobs_db, caregiver)
    for at in (due, due + timedelta(minutes=window_min + 31)):
        traveller.move_to(at)
        run_minute(jobs_db, settings, clock, sender)
        services_on(jobs_db, settings, clock, sender).alerts.evaluate()
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id}))
    [queued] = list(jobs_db.push_outbox.find({"source_key": f"alert:{alert['_id']}"}))
    assert queued["state"] == "scheduled"
    return patient, alert, queued, token


def test_a_late_session_past_midnight_resolves_the_evening_reminders_alert(jobs_db, settings, clock, traveller,
                                                                            sender, emulator):
    due = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # an evening reminder, a 60-minute window
    patient, alert, queued, token = _alert_then(jobs_db, settings, clock, traveller, sender, due, 60)
    traveller.move_to(due + timedelta(hours=4))  # the hub uploads a session begun at 00:05, the next local day
    services = services_on(jobs_db, settings, clock, sender)
    serial = _bound(jobs_db, services, patient)
    _upload(services, patient, serial, due + timedelta(minutes=35))
    services.adherence_job.run()
    resolved = jobs_db.alerts.find_one({"_id": alert["_id"]})
    assert resolved["resolution"] == {"code": "session_found", "at": due + timedelta(minutes=35)}
    assert jobs_db.push_outbox.find_one({"_id": queued["_id"]})["state"] == "withdrawn"


@pytest.mark.parametrize("outcome", ["skipped", "done"])
def test_an_outcome_recorded_after_the_alert_resolves_it_and_withdraws_the_held_push(
        jobs_db, settings, clock, traveller, sender, emulator, outcome):
    patient, alert, queued, token = _alert_then(jobs_db, settings, clock, traveller, sender, T10, 30)
    traveller.move_to(T10 + timedelta(minutes=40))  # the patient says what happened (a skip does not alert)
    services = services_on(jobs_db, settings, clock, sender)
    occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})
    services.reminders.record_outcome(own(patient.id), occurrence["_id"], outcome, None,
                                      at=T10 + timedelta(minutes=10))
    resolved = jobs_db.alerts.find_one({"_id": alert["_id"]})
    assert resolved["resolution"] == {"code": "outcome_recorded", "at": T10 + timedelta(minutes=10)}
    assert jobs_db.push_outbox.find_one({"_id": queued["_id"]})["state"] == "withdrawn"
    traveller.move_to(T10 + timedelta(hours=14))
    services.push.send_due(owner="test-worker")
    assert emulator.delivered_to(token) == []


def _dead_database(*args, **kwargs):
    raise ConnectionFailure("the database went away between the resolution and the withdrawal")


@pytest.mark.parametrize("resolved_by", ["a late session", "the patient's outcome"])
def test_an_alert_resolved_by_a_process_that_stopped_before_withdrawing_its_held_push_never_sends_it(
        jobs_db, settings, clock, traveller, sender, emulator, monkeypatch, resolved_by):
    patient, alert, queued, token = _alert_then(jobs_db, settings, clock, traveller, sender, T10, 30)
    traveller.move_to(T10 + timedelta(hours=4))
    services = services_on(jobs_db, settings, clock, sender)
    monkeypatch.setattr(services.stores.outbox, "withdraw", _dead_database)  # the resolution's second write
    if resolved_by == "a late session":
        _upload(services, patient, _bound(jobs_db, services, patient), T10 + timedelta(minutes=5))
        services.adherence_job.run()  # (its per-patient failure is logged and counted)
    else:
        occurrence = jobs_db.reminder_occurrences.find_one({"patient_id": patient.id, "due_at": T10})
        with pytest.raises(ConnectionFailure):
            services.reminders.record_outcome(own(patient.id), occurrence["_id"], "done", None,
                                              at=T10 + timedelta(minutes=10))
    monkeypatch.undo()
    assert jobs_db.alerts.find_one({"_id": alert["_id"]})["resolved_at"] is not None
    assert jobs_db.push_outbox.find_one({"_id": queued["_id"]})["state"] == "scheduled"  # left behind
    for at in (T10 + timedelta(hours=5), T10 + timedelta(hours=14)):  # the caregiver's quiet hours end at 20:30
        traveller.move_to(at)
        services = services_on(jobs_db, settings, clock, sender)  # the processes started again
        services.adherence_job.run()
        services.alerts.evaluate()
        services.push.send_due(owner="test-worker")
    assert emulator.delivered_to(token) == []
    stopped = jobs_db.push_outbox.find_one({"_id": queued["_id"]})
    assert (stopped["state"], stopped["withdrawn_reason"]) == ("withdrawn", "alert_resolved")


def test_a_moved_patients_days_in_the_review_and_csv_are_the_days_of_their_adherence(jobs_db, settings, clock,
                                                                                       traveller):
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "America/New_York")
    services.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 2, 1, tzinfo=UTC))
    serial = _bound(jobs_db, services, patient)
    traveller.move_to(datetime(2026, 3, 3, 2, 0, tzinfo=UTC))
    _upload(services, patient, serial, datetime(2026, 3, 3, 1, 0, tzinfo=UTC), minutes=60)  # 20:00 on 2 March there
    services.adherence_job.run()
    traveller.move_to(datetime(2026, 3, 4, 12, 0, tzinfo=UTC))
    services.profiles.update(patient.id, {"time_zone": "Europe/London"})  # then they moved
    services.adherence_job.run()
    review = PatientReview(services.stores, services.stores.users.by_id(patient.id), at=clock())
    rows = {r["date"]: r for r in csv.DictReader(io.StringIO(patient_csv(review, 4)[1:]))}
    assert (rows["2026-03-02"]["tens_minutes"], rows["2026-03-02"]["tens_sessions"]) == ("60", "1")
    assert (rows["2026-03-03"]["tens_minutes"], rows["2026-03-03"]["tens_sessions"]) == ("0", "0")
    assert jobs_db.adherence_days.find_one({"_id": f"{patient.id}:2026-03-02"})["tens_minutes"] == 60


def _held_hour_five_weeks_back(jobs_db, settings, clock, traveller):
    """A patient (London, on PLAN) whose hub was offline for five weeks: an hour's session 35 days before
    2026-03-20 12:00 arrives held; the job has run. Returns the services, the patient, the unit and that time."""
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "Europe/London")
    services.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 1, 20, tzinfo=UTC))
    serial = _bound(jobs_db, services, patient)
    traveller.move_to(now)
    old = now - timedelta(days=35)
    _upload(services, patient, serial, old, minutes=60)
    services.adherence_job.run()
    return services, patient, serial, old


def test_a_held_session_over_thirty_days_old_that_a_clinician_counts_is_counted(jobs_db, settings, clock,
                                                                                traveller):
    services, patient, serial, old = _held_hour_five_weeks_back(jobs_db, settings, clock, traveller)
    assert services.sessions.resolve(patient.id, f"{serial}:1", "count", "clinician-1")["held"] is False
    services.adherence_job.run()
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{old.date().isoformat()}"})
    assert day is not None and day["tens_minutes"] == 60
    assert _marks(jobs_db, patient) == set()


def test_a_decision_written_while_the_job_recomputed_its_day_is_counted_by_the_next_run(
        jobs_db, settings, clock, traveller, monkeypatch):
    """The hourly job ran in the worker right after a clinician's decision marked the session's day and before
    the session itself was written: it recomputed the day from what was stored, and took the mark with it."""
    services, patient, serial, old = _held_hour_five_weeks_back(jobs_db, settings, clock, traveller)
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    mark = TouchedDays.dates
    job_ran = []

    def marked_then_the_job_runs(self, patient_id, dates, reason, **how):
        mark(self, patient_id, dates, reason, **how)
        if reason == "session_resolved" and not job_ran:
            job_ran.append(True)
            services.adherence_job.run()

    monkeypatch.setattr(TouchedDays, "dates", marked_then_the_job_runs)
    services.sessions.resolve(patient.id, f"{serial}:1", "count", "clinician-1")
    monkeypatch.undo()
    traveller.move_to(now + timedelta(hours=1))
    services.adherence_job.run()
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{old.date().isoformat()}"})
    assert job_ran and day["tens_minutes"] == 60
    assert _marks(jobs_db, patient) == set()


def test_a_session_placed_days_after_it_arrived_on_a_day_now_beyond_the_window_reaches_that_day(
        jobs_db, settings, clock, traveller):
    """A unit whose clock was reset uploads a session 29 days after it was lived (counted: inside the offline
    window when it arrived), its time unknown; five days later the sync that places it arrives. Its day is then
    34 days back: recomputed all the same, as the review's raw figures already count it."""
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    traveller.move_to(now)
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "UTC")
    services.plans.prescribe(patient.id, PLAN, created_by="clinician", at=now - timedelta(days=60))
    serial = "CTU-P0001"
    services.gateways.bind_unit(patient.id, serial, "companion-tens", bound_at=now - timedelta(days=60))
    lived = now - timedelta(days=29)
    reset_at = lived - timedelta(hours=1)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    record = session_record(serial, 1, started_at=lived, offset_s=0.0, sync_id="sync-after-reset",
                            clock_status="reset", duration_s=3600)
    record["device_started_at"] = (epoch + (lived - reset_at)).isoformat()
    services.ingestion.receive(None, patient.id, [SessionRecordSchema().load(record)], {serial})
    services.adherence_job.run()
    traveller.move_to(now + timedelta(days=5))

    def sync(sync_id, highest, at, unit_clock, boot):
        return SyncSchema().load({"sync_id": sync_id, "serial": serial, "highest_seq": highest,
                                  "unit_clock": unit_clock.isoformat(), "gateway_clock": at.isoformat(),
                                  "boot_id": boot, "monotonic_s": 100.0, "vouched_time": at.isoformat(),
                                  "vouched_error_s": 1.0})

    services.ingestion.receive(None, patient.id, [], {serial}, syncs=[
        sync("sync-pairing-00", 0, lived - timedelta(days=1), lived - timedelta(days=1), "b0"),
        sync("sync-after-reset", 1, now, epoch + (now - reset_at), "b1")])
    placed = jobs_db.session_records.find_one({"_id": f"{serial}:1"})
    assert (placed["held"], placed["local_date"]) == (False, lived.date().isoformat())
    services.adherence_job.run()
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{lived.date().isoformat()}"})
    assert (day["tens_minutes"], day["covered"]) == (60, True)
    assert _marks(jobs_db, patient) == set()


def _practising_patient(jobs_db, settings, clock, now, *, minutes_per_day: int):
    """Services and a patient in UTC whose plan (since 60 days) asks ``minutes_per_day`` of mindfulness a day,
    counted towards adherence; the library loaded."""
    services = services_on(jobs_db, settings, clock)
    services.library.load()
    patient = make_person(jobs_db, "patient", "UTC")
    services.plans.prescribe(patient.id, {**PLAN, "mindfulness": {
        "minutes_per_day": minutes_per_day, "sessions_per_week": None, "counts_towards_adherence": True}},
        created_by="clinician", at=now - timedelta(days=60))
    return services, patient


def test_a_practice_recorded_forty_days_late_reaches_its_days_snapshot_as_it_reaches_the_week(
        jobs_db, settings, clock, traveller):
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    traveller.move_to(now)
    services, patient = _practising_patient(jobs_db, settings, clock, now, minutes_per_day=1)
    started = now - timedelta(days=40)
    practice = services.library.start_practice(patient.id, services.library.short_items(10)[0], started)
    services.library.complete_practice(patient.id, practice["_id"], started + timedelta(minutes=2), 2)
    services.adherence_job.run()
    day = jobs_db.adherence_days.find_one({"_id": f"{patient.id}:{started.date().isoformat()}"})
    week = services.progress.week(patient.id, started.date())
    shown = next(d for d in week["days"] if d["date"] == started.date().isoformat())
    assert day is not None and day["mindfulness"]["minutes"] == shown["mindfulness_minutes"] == 2


SINCE_JANUARY = {**PLAN, "tens": {**PLAN["tens"], "sessions_per_day": 1, "start_date": date(2026, 1, 1)}}


def _day_shown(services, patient, day: date) -> tuple[str, bool]:
    calendar = services.review.of_patient(services.stores.users.by_id(patient.id)).adherence(60)["calendar"]
    shown = next(d for d in calendar if d["date"] == day.isoformat())
    return shown["state"], shown["covered"]


def test_a_decision_on_an_old_held_session_outlives_the_late_data_of_its_day(jobs_db, settings, clock, traveller):
    """An old hub delivers a backlog from 40 days ago in two uploads; between them the care team counts the first
    session (held: outside the offline window). The second upload marks the same day again before the job runs:
    the decision must still reach back to it."""
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "UTC")
    serial = _bound(jobs_db, services, patient)
    services.plans.prescribe(patient.id, SINCE_JANUARY, created_by="clinician", at=datetime(2025, 12, 1, tzinfo=UTC))
    day = T10 - timedelta(days=40)
    assert _upload(services, patient, serial, day)["results"][0]["held"] is True
    services.adherence_job.run()
    services.sessions.resolve(patient.id, f"{serial}:1", "count", "clinician-1")
    _upload(services, patient, serial, day + timedelta(hours=6), seq_from=2, minutes=20)  # held too
    services.adherence_job.run()
    assert _day_shown(services, patient, day.date()) == ("progress", True)


def test_a_session_accepted_at_the_edge_of_the_offline_window_reaches_its_day(jobs_db, settings, clock, traveller):
    """The hub catches up at 23:50: a session from 29 days 23 hours 55 minutes before is accepted, not held. The
    adherence job next runs after midnight, when its day is 31 local dates back: it is still recomputed."""
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "UTC")
    serial = _bound(jobs_db, services, patient)
    services.plans.prescribe(patient.id, SINCE_JANUARY, created_by="clinician", at=datetime(2025, 12, 1, tzinfo=UTC))
    evening = datetime(2026, 3, 1, 23, 50, tzinfo=UTC)
    traveller.move_to(evening)
    services.adherence_job.run()
    started = evening - timedelta(days=29, hours=23, minutes=55)
    answer = _upload(services, patient, serial, started)
    assert answer["results"][0]["held"] is False
    traveller.move_to(evening + timedelta(minutes=30))
    services.adherence_job.run()
    assert _day_shown(services, patient, started.date()) == ("progress", True)


def test_the_events_export_says_how_each_session_counts_and_adds_up_to_the_days_minutes(
        jobs_db, settings, clock, traveller):
    """Three days ago: a 30-minute session, a second overlapping it by 20 minutes (10 count), and a 40-minute one
    the care team excluded. The events export's counted minutes add up to the day export's 40, each session
    says how it counts, and the FHIR bundle marks the excluded one as entered in error."""
    from companion.services import fhir
    from companion.services.exports import events_csv

    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "UTC")
    serial = _bound(jobs_db, services, patient)
    services.plans.prescribe(patient.id, SINCE_JANUARY, created_by="clinician", at=datetime(2025, 12, 1, tzinfo=UTC))
    day = T10 - timedelta(days=3)
    _upload(services, patient, serial, day, day + timedelta(minutes=10))
    _upload(services, patient, serial, day + timedelta(hours=5), seq_from=3, minutes=40)
    services.sessions.resolve(patient.id, f"{serial}:3", "exclude", "clinician-1", note="not a real session")
    services.adherence_job.run()
    review = services.review.of_patient(services.stores.users.by_id(patient.id))
    [by_day] = [r for r in csv.DictReader(io.StringIO(patient_csv(review, 7).lstrip("\ufeff")))
                if r["date"] == day.date().isoformat()]
    assert float(by_day["tens_minutes"]) == 40.0
    sessions = [r for r in csv.DictReader(io.StringIO(events_csv(review, 7).lstrip("\ufeff")))
                if r["event"] == "tens_session"]
    assert [(r["duration_min"], r["counted_min"], r["status"]) for r in sessions] == [
        ("30", "30", "counted"), ("30", "10", "partly_counted"), ("40", "0", "excluded")]
    assert sum(float(r["counted_min"]) for r in sessions) == float(by_day["tens_minutes"])
    statuses = [e["resource"]["status"] for e in fhir.transaction_bundle(review, 7)["entry"]
                if e["resource"]["resourceType"] == "DeviceUseStatement"]
    assert sorted(statuses) == ["completed", "completed", "entered-in-error"]


def _practice_day(services, patient, day: date, clock) -> dict:
    """One local day's practice minutes as each view counts them."""
    snapshot = services.stores.adherence_days.between(patient.id, day, day)[0]
    shown = next(d for d in services.progress.week(patient.id, day)["days"] if d["date"] == day.isoformat())
    review = PatientReview(services.stores, services.stores.users.by_id(patient.id), at=clock())
    events = [r for r in csv.DictReader(io.StringIO(events_csv(review, 7).lstrip("\ufeff")))
              if r["event"] == "mindfulness_practice" and r["local_date"] == day.isoformat()]
    diary = [p for p in review.diary(7)["practice"] if p["started_at"].date() == day]
    return {"snapshot": snapshot["mindfulness"]["minutes"], "week": shown["mindfulness_minutes"],
            "events_csv": round(sum(float(r["counted_min"]) for r in events), 1),
            "review": round(sum(p["counted_minutes"] for p in diary), 1)}


def test_a_practice_recorded_twice_and_completed_late_before_the_other_is_counted_once_in_every_view(
        jobs_db, settings, clock, traveller):
    """A caregiver starts a 20-minute item five minutes before the patient starts it on their phone; the patient's
    record is completed and counted (20 minutes), then the caregiver's, late: the union is 25 minutes, and every
    view says 25, however it reads (today, the week, the snapshot the job recomputes, the export, the review)."""
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    traveller.move_to(now)
    services, patient = _practising_patient(jobs_db, settings, clock, now, minutes_per_day=30)
    early, late = now - timedelta(hours=3), now - timedelta(hours=3) + timedelta(minutes=5)
    by_caregiver = services.library.start_practice(patient.id, "full-body-scan", early)
    by_patient = services.library.start_practice(patient.id, "full-body-scan", late)
    services.library.complete_practice(patient.id, by_patient["_id"], late + timedelta(minutes=20), None)
    services.adherence_job.run()
    assert set(_practice_day(services, patient, now.date(), clock).values()) == {20.0}
    services.library.complete_practice(patient.id, by_caregiver["_id"], early + timedelta(minutes=20), None)
    services.adherence_job.run()
    assert set(_practice_day(services, patient, now.date(), clock).values()) == {25.0}
    today = services.progress.today(patient.id)["mindfulness"]
    assert (today["minutes"], today["sessions_this_week"]) == (25.0, 1)
    assert services.progress.week(patient.id, now.date())["practice_minutes"] == 25.0
    one_day = services.adherence.compute_day(services.accounts.account(patient.id), now.date())
    assert (one_day["mindfulness"]["minutes"], one_day["mindfulness"]["done"]) == (25.0, 1)
    assert [p["minutes"] for p in jobs_db.practice_log.find({}).sort("started_at", 1)] == [20.0, 20.0]  # as logged


def test_a_practice_completed_late_that_runs_past_midnight_recomputes_the_next_days_duplicate(
        jobs_db, settings, clock, traveller):
    """The original begins at 23:50 and its copy at 00:00: the copy counts only its 10 minutes after the
    original's end, on the next day, once the original is completed, however late; that day is recomputed too."""
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    traveller.move_to(now)
    services, patient = _practising_patient(jobs_db, settings, clock, now, minutes_per_day=30)
    original = services.library.start_practice(patient.id, "full-body-scan", datetime(2026, 3, 17, 23, 50, tzinfo=UTC))
    copy = services.library.start_practice(patient.id, "full-body-scan", datetime(2026, 3, 18, 0, 0, tzinfo=UTC))
    services.library.complete_practice(patient.id, copy["_id"], datetime(2026, 3, 18, 0, 20, tzinfo=UTC), None)
    services.adherence_job.run()
    assert set(_practice_day(services, patient, date(2026, 3, 18), clock).values()) == {20.0}
    services.library.complete_practice(patient.id, original["_id"], datetime(2026, 3, 18, 0, 10, tzinfo=UTC), None)
    services.adherence_job.run()
    assert set(_practice_day(services, patient, date(2026, 3, 17), clock).values()) == {20.0}
    assert set(_practice_day(services, patient, date(2026, 3, 18), clock).values()) == {10.0}


def test_two_practices_done_back_to_back_are_counted_alike_in_every_view_and_meet_a_goal_shown_as_met(
        jobs_db, settings, clock, traveller):
    """Two 6-minute practices back to back: the first completed after 5:58 is recorded as 6.0 minutes (a tenth), so
    the second, started at 5:58, 'overlaps' it by 2 seconds. The union makes 11.97 minutes: the week and the CSV
    show 12.0, the snapshot keeps 11.97, and the plan's 12 minutes read 12.0 of 12 yet not met."""
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    traveller.move_to(now)
    services, patient = _practising_patient(jobs_db, settings, clock, now, minutes_per_day=12)
    first_start = now - timedelta(hours=3)
    second_start = first_start + timedelta(minutes=5, seconds=58)
    first = services.library.start_practice(patient.id, "full-body-scan", first_start)
    services.library.complete_practice(patient.id, first["_id"], second_start, None)
    second = services.library.start_practice(patient.id, "full-body-scan", second_start)
    services.library.complete_practice(patient.id, second["_id"], second_start + timedelta(minutes=6), None)
    services.adherence_job.run()
    assert [p["minutes"] for p in jobs_db.practice_log.find({}).sort("started_at", 1)] == [6.0, 6.0]
    today = services.progress.today(patient.id)["mindfulness"]
    views = _practice_day(services, patient, now.date(), clock)
    assert (today["minutes"], today["minutes_target"], today["fraction"]) == (12.0, 12, 1.0), today
    assert set(views.values()) == {12.0}, views
