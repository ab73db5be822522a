"""What reaches the phone, end to end through the real firebase-admin and the FCM emulator: each push in the
recipient's language (the account's choice, else the phone's, else English) with times on the recipient's
clock; the kind of push a reminder or an alert becomes, and its priority; an alert's structured fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from companion.store.push_tokens import PushTokens
from tests.scheduler.helpers import daily_reminder, link_caregiver, make_person, run_minute, services_on

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # 11:00 in Berlin and Madrid, 10:00 in London


def _phone(db, person, locale: str | None) -> str:
    token = f"tok-{person.id}"
    PushTokens(db).register(person.id, "phone-1", token, "android", locale=locale)
    return token


def _reminder_push(db, settings, clock, traveller, sender, emulator, *, zone: str, profile: str | None,
                   phone_locale: str | None, kind: str = "tens") -> dict:
    extra = {"locale": profile} if profile else {}
    patient = make_person(db, "patient", zone, **extra)
    token = _phone(db, patient, phone_locale)
    local_time = T10.astimezone(ZoneInfo(zone)).strftime("%H:%M")
    daily_reminder(db, patient, [local_time], "2026-03-01", kind=kind, window_min=30)
    traveller.move_to(T10)
    run_minute(db, settings, clock, sender)
    if kind == "mindfulness":  # a nudge goes out at its place in the 10-minute spread
        traveller.move_to(T10 + timedelta(minutes=10))
        services_on(db, settings, clock, sender).push.send_due(owner="test-worker")
    (delivery,) = emulator.delivered_to(token)
    return delivery.body["message"]


def test_reminder_is_written_in_the_language_the_patient_chose_over_the_phones(
        jobs_db, settings, clock, traveller, sender, emulator):
    message = _reminder_push(jobs_db, settings, clock, traveller, sender, emulator, zone="Europe/Berlin",
                             profile="de-DE", phone_locale="es-ES")
    assert message["notification"] == {"title": "Zeit für Ihre Therapiesitzung",
                                       "body": "Ihre Sitzung um 11:00 Uhr ist bereit, wenn Sie es sind."}
    assert message["android"]["notification"]["body_loc_key"] == "therapy_reminder_body"
    assert message["android"]["notification"]["body_loc_args"] == ["11:00"]
    assert message["apns"]["payload"]["aps"]["alert"]["loc-args"] == ["11:00"]


def test_without_a_chosen_language_the_phones_language_is_used(jobs_db, settings, clock, traveller, sender,
                                                                emulator):
    message = _reminder_push(jobs_db, settings, clock, traveller, sender, emulator, zone="Europe/Madrid",
                             profile=None, phone_locale="es-ES")
    assert message["notification"] == {"title": "Es hora de tu sesión de terapia",
                                       "body": "Tu sesión de las 11:00 te espera cuando quieras."}


def test_a_language_without_a_catalog_falls_back_to_english_on_the_recipients_clock(
        jobs_db, settings, clock, traveller, sender, emulator):
    message = _reminder_push(jobs_db, settings, clock, traveller, sender, emulator, zone="Asia/Kolkata",
                             profile=None, phone_locale="fr-FR")
    assert message["notification"] == {"title": "Time for your therapy session",
                                       "body": "Your 3:30\u202fPM session is ready when you are."}


def test_reminders_go_out_high_priority_and_time_sensitive(jobs_db, settings, clock, traveller, sender, emulator):
    message = _reminder_push(jobs_db, settings, clock, traveller, sender, emulator, zone="Europe/London",
                             profile=None, phone_locale=None)
    assert message["android"]["priority"] == "high"
    assert message["apns"]["headers"]["apns-priority"] == "10"
    assert message["apns"]["payload"]["aps"]["interruption-level"] == "time-sensitive"
    assert message["android"]["ttl"] == "1800s"  # the completion window


def test_a_breathing_reminder_is_a_normal_priority_practice_nudge(jobs_db, settings, clock, traveller, sender,
                                                                   emulator):
    message = _reminder_push(jobs_db, settings, clock, traveller, sender, emulator, zone="Europe/London",
                             profile=None, phone_locale="en-GB", kind="mindfulness")
    assert message["data"]["kind"] == "practice_nudge"
    assert message["notification"] == {"title": "A moment for yourself",
                                       "body": "Your 10:00 practice is ready when you are."}
    assert message["android"]["priority"] == "normal"
    assert message["apns"]["payload"]["aps"]["interruption-level"] == "active"


def test_an_overload_reaches_the_caregiver_as_an_urgent_overload_alert_with_structured_fields(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient", "Europe/Berlin")
    caregiver = link_caregiver(jobs_db, patient, ["device_fault"], zone="Europe/Berlin", locale="de")
    token = _phone(jobs_db, caregiver, None)
    jobs_db.devices.insert_one({"_id": "CTU-T0009", "patient_id": patient.id, "profile": "companion",
                                "bound_at": T10 - timedelta(days=30),
                                "status": {"battery_pct": 80, "last_seen_at": T10, "last_sync_at": T10}})
    at = T10 - timedelta(minutes=5)
    jobs_db.session_records.insert_one({"_id": "r1", "patient_id": patient.id, "device_serial": "CTU-T0009",
                                        "started_at": at, "duration_s": 1800, "battery_pct": 80,
                                        "server_received_at": at})
    jobs_db.device_events.insert_one({"_id": "r1:overload", "patient_id": patient.id, "device_serial": "CTU-T0009",
                                      "kind": "overload", "at": at, "record_id": "r1"})
    traveller.move_to(T10)
    services = services_on(jobs_db, settings, clock, sender)
    services.alerts.evaluate()
    services.push.send_due(owner="test-worker")
    (delivery,) = emulator.delivered_to(token)
    message = delivery.body["message"]
    assert message["android"]["priority"] == "high"
    assert message["notification"]["title"] == "Companion: Etwas braucht Ihre Aufmerksamkeit"
    assert message["data"] == {"notification_id": message["data"]["notification_id"], "kind": "caregiver_alert"}
    (queued,) = jobs_db.push_outbox.find({"recipient_user_id": caregiver.id})
    assert queued["kind"] == "caregiver_overload"
    (alert,) = jobs_db.alerts.find({"patient_id": patient.id})
    assert (alert["kind"], alert["device_serial"], alert["occurred_at"]) == ("overload", "CTU-T0009", at)
    assert "UTC" not in alert["text"] and "10:55 (Europe/Berlin)" in alert["text"]
