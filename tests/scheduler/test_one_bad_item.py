"""One malformed stored item never stops a job for everyone: it is logged with its id, counted, left for the
next pass, and every other item is handled as usual."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import daily_reminder, make_person, phone, run_minute, services_on

T9 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _failed_ids(caplog, job):
    return [r.item_id for r in caplog.records if getattr(r, "job_id", None) == job]


def test_an_occurrence_with_an_unreadable_local_time_does_not_stop_the_others_reminders(
        jobs_db, settings, clock, traveller, sender, emulator, caplog):
    traveller.move_to(T9)
    healthy, broken = make_person(jobs_db, "patient"), make_person(jobs_db, "patient")
    token = phone(jobs_db, healthy)
    daily_reminder(jobs_db, healthy, ["10:00"], "2026-03-02")
    daily_reminder(jobs_db, broken, ["10:00"], "2026-03-02")
    bad = jobs_db.reminder_occurrences.find_one({"patient_id": broken.id})
    jobs_db.reminder_occurrences.update_one({"_id": bad["_id"]}, {"$set": {"local_time": "25:99"}})
    traveller.move_to(T9 + timedelta(hours=1))
    with caplog.at_level(logging.ERROR, logger="companion.jobs"):
        result = services_on(jobs_db, settings, clock).reminder_dispatch.dispatch_due()
        run_minute(jobs_db, settings, clock, sender)
    assert (result.scheduled, result.failed) == (1, 1)
    assert len(emulator.delivered_to(token)) == 1
    assert bad["_id"] in _failed_ids(caplog, "reminders-dispatch")


def test_a_reminder_that_cannot_be_materialized_does_not_stop_the_others(jobs_db, settings, clock, traveller, caplog):
    traveller.move_to(T9)
    healthy, broken = make_person(jobs_db, "patient"), make_person(jobs_db, "patient")
    daily_reminder(jobs_db, healthy, ["10:00"], "2026-03-02")
    daily_reminder(jobs_db, broken, ["10:00"], "2026-03-02")
    jobs_db.reminders.update_one({"patient_id": broken.id}, {"$set": {"schedule.times": ["not a time"]}})
    jobs_db.reminder_occurrences.delete_many({})
    with caplog.at_level(logging.ERROR, logger="companion.jobs"):
        added = services_on(jobs_db, settings, clock).reminders.materialize_ahead(settings.reminder_grace,
                                                                                  settings.materialize_horizon)
    assert added >= 2
    assert jobs_db.reminder_occurrences.count_documents({"patient_id": healthy.id}) == added
    assert _failed_ids(caplog, "reminders-materialize") == [broken.id]


def test_a_patient_with_an_unreadable_zone_history_does_not_stop_the_adherence_job(jobs_db, settings, clock,
                                                                                  traveller, caplog):
    traveller.move_to(T9)
    healthy, broken = make_person(jobs_db, "patient"), make_person(jobs_db, "patient")
    jobs_db.users.update_one({"_id": broken.id}, {"$set": {"time_zone_history.0.zone": "Mars/Olympus_Mons"}})
    with caplog.at_level(logging.ERROR, logger="companion.jobs"):
        written = services_on(jobs_db, settings, clock).adherence_job.run()
    assert written == 2
    assert {d["patient_id"] for d in jobs_db.adherence_days.find()} == {healthy.id}
    assert _failed_ids(caplog, "adherence-daily") == [broken.id]


def test_a_patient_with_an_unreadable_plan_version_keeps_their_marks_and_no_day_is_computed_without_it(
        jobs_db, settings, clock, traveller, caplog):
    traveller.move_to(T9)
    healthy, broken = make_person(jobs_db, "patient"), make_person(jobs_db, "patient")
    jobs_db.therapy_plans.insert_one({  # a version whose start cannot be read
        "_id": "plan-broken-2", "patient_id": broken.id, "version": 2, "created_at": T9 - timedelta(days=1),
        "created_by": "clinician", "active_from": "not a time", "active_to": None,
        "tens": {"sessions_per_day": 2, "minutes_per_session": 30, "start_date": "2026-01-01", "end_date": None,
                 "counts_towards_adherence": True}, "medications": [], "mindfulness": {}})
    services = services_on(jobs_db, settings, clock)
    marked = (T9 - timedelta(days=3)).date()
    services.stores.days_to_recompute.mark(broken.id, [marked], "sessions", T9)
    with caplog.at_level(logging.ERROR, logger="companion.jobs"):
        services.adherence_job.run()
    assert {d["patient_id"] for d in jobs_db.adherence_days.find()} == {healthy.id}
    assert _failed_ids(caplog, "adherence-daily") == [broken.id]
    assert marked.isoformat() in {m["date"] for m in jobs_db.days_to_recompute.find({"patient_id": broken.id})}


def test_a_malformed_device_event_does_not_stop_the_other_alerts(jobs_db, settings, clock, traveller, caplog):
    traveller.move_to(T9)
    patient = make_person(jobs_db, "patient")
    jobs_db.device_events.insert_many([
        {"_id": "U1:1:electrode_off", "patient_id": patient.id, "device_serial": "U1", "kind": "electrode_off",
         "at": T9 - timedelta(hours=1), "record_id": "U1:1"},
        {"_id": "U1:2:overload", "patient_id": patient.id, "kind": "overload", "at": T9 - timedelta(hours=2),
         "record_id": "U1:2"},  # no unit named: unreadable
    ])
    with caplog.at_level(logging.ERROR, logger="companion.jobs"):
        report = services_on(jobs_db, settings, clock).alerts.evaluate()
    assert report.raised == {"electrode_off": 1} and report.failed == 1
    assert _failed_ids(caplog, "alerts-evaluate") == ["U1:2:overload"]


def test_a_notification_that_cannot_be_built_fails_alone_and_the_rest_go_out(jobs_db, settings, clock, traveller,
                                                                             sender, emulator):
    traveller.move_to(T9)
    people = [make_person(jobs_db, "patient") for _ in range(3)]
    tokens = [phone(jobs_db, person) for person in people]
    outbox = services_on(jobs_db, settings, clock).stores.outbox
    ids = [outbox.schedule(source_key=f"test:{n}", recipient_user_id=p.id, patient_id=p.id, kind="battery_low",
                           send_at=T9)[0]["_id"] for n, p in enumerate(people)]
    jobs_db.push_outbox.update_one({"_id": ids[1]}, {"$set": {"kind": "no_such_kind"}})
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="test-worker")
    assert [len(emulator.delivered_to(t)) for t in tokens] == [1, 0, 1]
    states = {d["_id"]: (d["state"]) for d in jobs_db.push_outbox.find()}
    assert [states[i] for i in ids] == ["sent", "failed", "sent"]
    assert jobs_db.push_attempts.find_one({"outbox_id": ids[1]})["error_codes"] == ["UNSENDABLE"]


def test_an_alert_that_cannot_be_raised_or_is_resolved_is_logged_without_its_kind_or_patient(
        jobs_db, settings, clock, traveller, monkeypatch, caplog):
    from companion.domain.alerts import AlertCandidate, AlertKind, Resolution, Severity
    from companion.services.alerts import DeviceEventsJudged

    traveller.move_to(T9)
    patient = make_person(jobs_db, "patient")
    alerts = services_on(jobs_db, settings, clock).alerts
    flare = AlertCandidate(AlertKind.PAIN_FLARE, Severity.WARNING, patient.id, f"pain_flare:{patient.id}:2026-03-02",
                           "2026-03-02", "Pain flare on 2026-03-02: pain 9/10", details={"score": 9})
    for rule in ("missed_sessions", "silent_units"):
        monkeypatch.setattr(alerts, rule, lambda now, failures: [])
    monkeypatch.setattr(alerts, "device_alerts", lambda now, failures, since=None: DeviceEventsJudged())
    monkeypatch.setattr(alerts, "pain_flares", lambda now, failures: [flare])
    raise_once = alerts.raise_once

    def database_blip(*args, **kwargs):
        raise ConnectionError("the database went away for a moment")

    monkeypatch.setattr(alerts, "raise_once", database_blip)
    with caplog.at_level(logging.INFO):
        assert alerts.evaluate().failed == 1
        alert = raise_once(flare)
        alerts.resolve(alert, "ratings changed", Resolution.RATINGS_CHANGED)
    lines = [" ".join([r.getMessage(), *(str(v) for v in vars(r).values())]) for r in caplog.records]
    assert len(_failed_ids(caplog, "alerts-evaluate")) == 1 and any("alert resolved" in line for line in lines)
    assert not [line for line in lines if "pain_flare" in line or patient.id in line]
