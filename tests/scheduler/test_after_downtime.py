"""What people get after the worker or the push sender was down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.domain.alerts import AlertCandidate, AlertKind, Severity
from tests.scheduler.helpers import (
    daily_reminder,
    link_caregiver,
    make_person,
    phone,
    run_minute,
    services_on,
)

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_reminders_that_reached_no_phone_while_the_sender_was_down_bring_the_outage_summary(
        jobs_db, settings, clock, traveller, sender, emulator):
    # The scheduler runs (it queues each reminder's push), the sending side is down from 09:59 to 12:00
    # (sender process stopped / FCM unreachable): exactly the case the worker-outage summary exists for.
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    for at in ("10:00", "10:03", "10:06"):
        daily_reminder(jobs_db, patient, [at], "2026-03-02")
    traveller.move_to(datetime(2026, 3, 2, 9, 59, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    for minute in range(0, 120, 1):  # the scheduler's dispatch and missed passes go on; nothing is sent
        traveller.move_to(T10 + timedelta(minutes=minute))
        services = services_on(jobs_db, settings, clock, sender)
        services.reminder_dispatch.dispatch_due()
        if minute % 5 == 0:
            services.reminder_dispatch.mark_missed()
    for at in (datetime(2026, 3, 2, 12, 0, tzinfo=UTC), datetime(2026, 3, 2, 12, 40, tzinfo=UTC)):
        traveller.move_to(at)  # the sender is back
        services = services_on(jobs_db, settings, clock, sender)
        services.reminder_dispatch.mark_missed()
        services.push.send_due(owner="back")
    assert jobs_db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "missed"}) == 3
    kinds = [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(token)]
    assert kinds == ["generic_update"], kinds  # as after a worker outage: told once that reminders did not reach them


def test_a_reminder_one_phone_got_while_the_other_was_owed_it_until_its_window_closed_brings_no_summary(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    tablet = phone(jobs_db, patient, "tablet")
    handset = phone(jobs_db, patient, "handset")
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    emulator.script("QUOTA_EXCEEDED", token=handset, retry_after=60)
    traveller.move_to(T10)
    run_minute(jobs_db, settings, clock, sender)  # then the sender is down until the window has closed
    [push] = list(jobs_db.push_outbox.find({"source_key": {"$regex": "^reminder:"}}))
    assert (push["state"], push["pending_phones"]) == ("scheduled", ["handset"])  # the tablet has it
    traveller.move_to(T10 + timedelta(minutes=31))
    services = services_on(jobs_db, settings, clock, sender)
    services.reminder_dispatch.mark_missed()
    assert jobs_db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "missed"}) == 1
    assert jobs_db.push_outbox.count_documents({"source_key": {"$regex": "^missed-summary:"}}) == 0
    assert len(emulator.delivered_to(tablet)) == 1


def _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender, *, reminded: bool):
    """A patient (delay 60 min) with a 10:00 TENS reminder (window 30 min) and a caregiver shared missed sessions;
    the worker runs until 09:59, or until the reminder has gone out at 10:00 (``reminded``), then stops."""
    patient = make_person(jobs_db, "patient", caregiver_alert_delay_min=60)
    daily_reminder(jobs_db, patient, ["10:00"], "2026-03-02", window_min=30)
    patient_token = phone(jobs_db, patient)
    caregiver = link_caregiver(jobs_db, patient, ["missed_session"])
    token = phone(jobs_db, caregiver)
    traveller.move_to(T10 if reminded else T10 - timedelta(minutes=1))
    run_minute(jobs_db, settings, clock, sender)
    return patient, patient_token, token


def _worker_back_at(at, jobs_db, settings, clock, traveller, sender) -> None:
    traveller.move_to(at)
    services = services_on(jobs_db, settings, clock, sender)
    services.reminder_dispatch.dispatch_due()
    services.alerts.evaluate()  # (before the missed pass: the worker's jobs run in no fixed order)
    services.reminder_dispatch.mark_missed()
    services.push.send_due(owner="back")


def test_a_worker_back_the_next_morning_raises_yesterdays_never_reminded_session_for_the_panel_alone(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, token = _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender,
                                                                     reminded=False)
    _worker_back_at(datetime(2026, 3, 3, 8, 0, tzinfo=UTC), jobs_db, settings, clock, traveller, sender)
    assert not [d for d in emulator.delivered_to(patient_token)
                if d.body["message"]["data"]["kind"] == "therapy_reminder"]  # the patient was never reminded
    alert = jobs_db.alerts.find_one({"patient_id": patient.id, "kind": "missed_tens_session"})
    assert alert is not None  # the care team's panel has it
    stale = [d.received_at for d in emulator.delivered_to(token)]
    assert stale == [], f"caregiver pushed at {stale} about a 10:00 session of the day before"


def test_a_missed_session_alert_after_an_outage_says_no_reminder_could_be_sent_and_pushes_nobody(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, _, token = _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender, reminded=False)
    _worker_back_at(T10 + timedelta(hours=2), jobs_db, settings, clock, traveller, sender)  # down 09:59-12:00
    assert jobs_db.push_outbox.count_documents({"source_key": {"$regex": "^reminder:"}}) == 0  # never reminded
    alert = jobs_db.alerts.find_one({"patient_id": patient.id, "kind": "missed_tens_session"})
    assert "no reminder of it could be sent" in alert["text"], alert["text"]
    assert "of the last reminder" not in alert["text"]
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alert['_id']}"}) == 0
    assert emulator.delivered_to(token) == []


def test_a_worker_back_the_next_morning_raises_a_reminded_sessions_alert_for_the_panel_without_pushing(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, token = _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender,
                                                                     reminded=True)
    assert [d.body["message"]["data"]["kind"] for d in emulator.delivered_to(patient_token)] == ["therapy_reminder"]
    _worker_back_at(datetime(2026, 3, 3, 8, 0, tzinfo=UTC), jobs_db, settings, clock, traveller, sender)
    alert = jobs_db.alerts.find_one({"patient_id": patient.id, "kind": "missed_tens_session"})
    assert "within 60 minutes of the last reminder" in alert["text"]  # true: it was reminded
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alert['_id']}"}) == 0
    assert emulator.delivered_to(token) == []


def test_a_worker_back_within_the_margin_still_pushes_the_caregiver_about_a_reminded_missed_session(
        jobs_db, settings, clock, traveller, sender, emulator):
    _, _, token = _missed_session_with_a_caregiver(jobs_db, settings, clock, traveller, sender, reminded=True)
    _worker_back_at(T10 + timedelta(hours=4), jobs_db, settings, clock, traveller, sender)  # due at 11:00, +3 h
    assert len(emulator.delivered_to(token)) == 1


NIGHT = {"start": "22:00", "end": "07:00"}


def test_a_sender_back_at_night_holds_a_routine_alert_for_the_end_of_the_caregivers_quiet_hours(
        jobs_db, settings, clock, traveller, sender, emulator):
    traveller.move_to(datetime(2026, 3, 2, 21, 30, tzinfo=UTC))  # before the caregiver's night
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["adherence_low"], quiet_hours=NIGHT)
    token = phone(jobs_db, caregiver)
    services_on(jobs_db, settings, clock, sender).alerts.raise_once(AlertCandidate(
        AlertKind.LOW_ADHERENCE, Severity.WARNING, patient.id, f"low_adherence:{patient.id}:2026-02-28",
        "2026-02-28", "low"))
    # the sender was down from 21:29 and comes back at 03:00
    traveller.move_to(datetime(2026, 3, 3, 3, 0, tzinfo=UTC))
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="back")
    [held] = list(jobs_db.push_outbox.find({"recipient_user_id": caregiver.id}))
    assert (held["state"], held["attempts"], held["not_before"]) == ("scheduled", 0,
                                                                     datetime(2026, 3, 3, 7, 0, tzinfo=UTC))
    traveller.move_to(datetime(2026, 3, 3, 7, 0, tzinfo=UTC))
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="back")
    received = [d.received_at for d in emulator.delivered_to(token)]
    assert received == [datetime(2026, 3, 3, 7, 0, tzinfo=UTC)], received


def test_a_reminder_whose_sending_an_outage_pushed_into_the_night_expires_unsent(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", quiet_hours=NIGHT)
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["21:50"], "2026-03-02", window_min=30)
    traveller.move_to(datetime(2026, 3, 2, 21, 50, tzinfo=UTC))
    services_on(jobs_db, settings, clock, sender).reminder_dispatch.dispatch_due()  # queued; the sender is down
    traveller.move_to(datetime(2026, 3, 2, 22, 5, tzinfo=UTC))  # back inside the patient's night
    services_on(jobs_db, settings, clock, sender).push.send_due(owner="back")
    assert emulator.delivered_to(token) == []
    [push] = list(jobs_db.push_outbox.find({"recipient_user_id": patient.id}))
    assert push["state"] == "expired"  # the end of the night is past its window


def test_a_nudge_a_short_worker_outage_delayed_into_the_patients_night_is_not_queued(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", quiet_hours=NIGHT)
    token = phone(jobs_db, patient)
    daily_reminder(jobs_db, patient, ["21:40"], "2026-03-02", window_min=60, repeat={"count": 1, "every_min": 18})
    traveller.move_to(datetime(2026, 3, 2, 21, 40, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    # the worker was down from 21:41 to 22:10: its nudge, planned at 21:58, is still within the grace
    traveller.move_to(datetime(2026, 3, 2, 22, 10, tzinfo=UTC))
    run_minute(jobs_db, settings, clock, sender)
    assert jobs_db.push_outbox.count_documents({"source_key": {"$regex": ":repeat:"}}) == 0
    assert [d.received_at for d in emulator.delivered_to(token)] == [datetime(2026, 3, 2, 21, 40, tzinfo=UTC)]


def _overload_while_the_worker_was_down(jobs_db, settings, clock, traveller, sender, *, hours: float):
    """A patient (with a phone) and a caregiver shared device faults; the worker's alerts pass ran at 10:00, then the
    worker stopped; an overload at 11:00, uploaded at once by the hub; the worker back ``hours`` after 10:00."""
    patient = make_person(jobs_db, "patient")
    patient_token = phone(jobs_db, patient)
    caregiver_token = phone(jobs_db, link_caregiver(jobs_db, patient, ["device_fault"]))
    traveller.move_to(T10)
    services_on(jobs_db, settings, clock, sender).alerts.evaluate()  # the worker was running
    serial = "CTU-T0001"
    jobs_db.devices.insert_one({"_id": serial, "patient_id": patient.id, "profile": "companion",
                                "bound_at": T10 - timedelta(days=30),
                                "status": {"battery_pct": 80, "firmware": "1.0", "last_seen_at": T10,
                                           "last_error": None, "last_sync_at": T10}})
    overload_at = T10 + timedelta(hours=1)
    record_id = f"{serial}:{int(overload_at.timestamp())}"
    jobs_db.session_records.insert_one({"_id": record_id, "patient_id": patient.id, "device_serial": serial,
                                        "started_at": overload_at, "duration_s": 1800, "battery_pct": 50,
                                        "server_received_at": overload_at})
    jobs_db.device_events.insert_one({"_id": f"{record_id}:overload", "patient_id": patient.id,
                                      "device_serial": serial, "kind": "overload", "at": overload_at,
                                      "record_id": record_id})
    traveller.move_to(T10 + timedelta(hours=hours))
    services = services_on(jobs_db, settings, clock, sender)
    services.alerts.evaluate()
    services.adherence_job.run()
    services.push.send_due(owner="back")
    return patient, patient_token, caregiver_token


def test_a_worker_down_over_a_day_raises_the_overload_of_its_first_hours_for_the_panel_without_pushing(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _overload_while_the_worker_was_down(
        jobs_db, settings, clock, traveller, sender, hours=25.5)
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "overload"}))  # the care team learns of it
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alert['_id']}"}) == 0
    assert emulator.delivered_to(patient_token) == emulator.delivered_to(caregiver_token) == []  # 24.5 hours late


def test_a_worker_down_less_than_a_day_still_pushes_the_overload_it_finds(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient, patient_token, caregiver_token = _overload_while_the_worker_was_down(
        jobs_db, settings, clock, traveller, sender, hours=20)
    assert jobs_db.alerts.count_documents({"patient_id": patient.id, "kind": "overload"}) == 1
    assert (len(emulator.delivered_to(patient_token)), len(emulator.delivered_to(caregiver_token))) == (1, 1)
