"""A change of someone's quiet hours re-times their pushes already queued and not sent yet (a caregiver's through
their preferences, a patient's through their profile): one held for the old quiet hours that the new ones allow goes
now, one that now falls inside them waits for their end, and those that go whatever the hour keep their time; through
the real outbox, firebase-admin and the loopback FCM emulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scheduler.helpers import link_caregiver, make_person, phone, services_on

NIGHT = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
MORNING = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)


def queue(services, source: str, recipient, patient, kind: str, send_at: datetime, share_kind: str | None = None):
    services.stores.outbox.schedule(source_key=source, recipient_user_id=recipient.id, patient_id=patient.id,
                                    kind=kind, send_at=send_at, share_kind=share_kind)
    return services.stores.outbox.existing([(source, recipient.id)])[(source, recipient.id)]


def test_a_caregivers_push_held_for_their_quiet_hours_goes_now_when_the_new_ones_allow_it(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["adherence_low", "device_fault"])
    token = phone(jobs_db, caregiver)
    traveller.move_to(NIGHT - timedelta(hours=2))
    services = services_on(jobs_db, settings, clock, sender)
    services.profiles.update_preferences(caregiver.id, {"quiet_hours": {"start": "22:00", "end": "07:00"}})
    traveller.move_to(NIGHT)
    held = queue(services, "alert:low", caregiver, patient, "caregiver_low_adherence", MORNING, "adherence_low")
    overload = queue(services, "alert:overload", caregiver, patient, "caregiver_overload", NIGHT, "device_fault")
    emulator.script("QUOTA_EXCEEDED", token=token, times=1, retry_after=2400)  # the overload: "not before 23:40"
    services.push.send_due(owner="test")
    assert jobs_db.push_outbox.find_one({"_id": overload["_id"]})["not_before"] == NIGHT + timedelta(minutes=40)
    traveller.move_to(NIGHT + timedelta(minutes=10))  # quiet from 23:30 from now on
    services.profiles.update_preferences(caregiver.id, {"quiet_hours": {"start": "23:30", "end": "06:00"}})
    services.push.send_due(owner="test")
    assert [(d.received_at, d.body["message"]["data"]["kind"]) for d in emulator.delivered_to(token)] == [
        (NIGHT + timedelta(minutes=10), "caregiver_alert")]
    assert jobs_db.push_outbox.find_one({"_id": held["_id"]})["state"] == "sent"
    # The overload goes whatever the hour: FCM's time stands, inside the new quiet hours.
    assert jobs_db.push_outbox.find_one({"_id": overload["_id"]})["not_before"] == NIGHT + timedelta(minutes=40)


def test_a_caregivers_push_that_falls_inside_their_new_quiet_hours_waits_for_their_end(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["battery_low"])
    token = phone(jobs_db, caregiver)
    evening = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
    traveller.move_to(evening)
    services = services_on(jobs_db, settings, clock, sender)
    retried = queue(services, "alert:battery", caregiver, patient, "caregiver_battery_low", evening, "battery_low")
    emulator.script("QUOTA_EXCEEDED", token=token, times=1, retry_after=3600)  # "not before 22:00"
    services.push.send_due(owner="test")
    traveller.move_to(evening + timedelta(minutes=30))
    services.profiles.update_preferences(caregiver.id, {"quiet_hours": {"start": "21:45", "end": "07:00"}})
    assert jobs_db.push_outbox.find_one({"_id": retried["_id"]})["not_before"] == MORNING
    for at in (evening + timedelta(hours=1), MORNING):
        traveller.move_to(at)
        services.push.send_due(owner="test")
    assert [d.received_at for d in emulator.delivered_to(token)] == [MORNING]


def test_a_patients_own_push_held_for_their_quiet_hours_goes_now_when_they_end_them(
        jobs_db, settings, clock, traveller, sender, emulator):
    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    traveller.move_to(NIGHT - timedelta(hours=2))
    services = services_on(jobs_db, settings, clock, sender)
    services.profiles.update(patient.id, {"quiet_hours": {"start": "22:00", "end": "07:00"}})
    traveller.move_to(NIGHT)
    queue(services, "alert:battery", patient, patient, "battery_low", MORNING)  # held for their quiet hours
    traveller.move_to(NIGHT + timedelta(minutes=10))
    services.profiles.update(patient.id, {"quiet_hours": None})
    services.push.send_due(owner="test")
    assert [d.received_at for d in emulator.delivered_to(token)] == [NIGHT + timedelta(minutes=10)]
