"""Consent is checked at the moment of delivery (checklist J2, issue 15 finding 1): nothing queued for a person
goes out after their access ended. Each test queues a caregiver alert that waits (the caregiver's quiet hours),
ends the access through the real API, then runs the real worker's push job against the FCM emulator."""

from __future__ import annotations

import pytest

from companion import create_app
from companion.clock import now
from companion.domain.alerts import AlertCandidate, AlertKind, Severity
from companion.jobs.worker import Worker
from tests.conftest import FAST_PASSWORDS
from tests.scheduler.conftest import START
from tests.scheduler.helpers import services_on
from tests.support.world import PASSWORD, login

QUIET = {"start": "08:00", "end": "12:00"}  # the caregiver's quiet hours: START (09:00 UTC) is inside them
AFTER_QUIET = START.replace(hour=12, minute=5)


@pytest.fixture
def api(mongo_uri, db_name, jobs_db, traveller, mail_dir):
    app = create_app({"mongodb_uri": mongo_uri, "mongodb_db": db_name, "secret_key": "j" * 48,
                      "mail_dir": str(mail_dir), **FAST_PASSWORDS})
    yield app
    app.extensions["companion"].close()


@pytest.fixture
def people(api):
    """A patient and a caregiver (with a phone, quiet hours until noon, missed sessions and pain flares shared),
    both signed in through the API; an admin."""
    client, svc = api.test_client(), api.extensions["companion"]
    made = {}
    for key, role in (("pat", "patient"), ("cara", "caregiver"), ("root", "admin")):
        account = svc.accounts.sign_up(email=f"{key}@example.org", password=PASSWORD, display_name=key.title(),
                                       role=role, time_zone="UTC")
        made[key] = login(client, key, account.email, account.id, role)
    svc.stores.users.update_profile(made["cara"].id, version=0, quiet_hours=_quiet())
    granted = client.post(f"/api/v1/patients/{made['pat'].id}/caregivers", headers=made["pat"].headers, json={
        "caregiver_email": "cara@example.org", "current_password": PASSWORD,
        "permissions": {"alerts": ["missed_session", "pain_flare"]}})
    assert granted.status_code == 201
    assert client.post(f"/api/v1/caregiver/invitations/{granted.json['id']}/acceptance", headers=made["cara"].headers,
                       json={"current_password": PASSWORD}).status_code == 200
    made["link_id"] = svc.stores.care_links.active(made["pat"].id, made["cara"].id).id
    made["token"] = "tok-cara-phone"
    assert client.put("/api/v1/me/push-tokens/cara-phone", headers=made["cara"].headers,
                      json={"token": made["token"], "platform": "android"}).status_code == 200
    return made


def _quiet():
    from datetime import time

    from companion.domain.quiet_hours import QuietHours

    return QuietHours(time(8), time(12))


def _queue_alert(svc, patient_id: str, kind=AlertKind.MISSED_TENS) -> dict:
    candidate = AlertCandidate(kind, Severity.WARNING, patient_id, f"test:{kind}:{patient_id}", "2026-03-02",
                               "a test alert")
    alert = svc.alerts.raise_once(candidate)
    (queued,) = [n for n in svc.stores.outbox.for_patient(patient_id) if n["source_key"] == f"alert:{alert['_id']}"]
    assert queued["state"] == "scheduled" and queued["not_before"] > START
    return queued


def _run_the_worker_push_job(jobs_db, settings, sender) -> None:
    """The worker process's own job: take the leader lease, then run 'push-send' as the scheduler would."""
    worker = Worker(services_on(jobs_db, settings, now, sender), holder="test-worker")
    worker.lease.tick()
    (push_send,) = [spec for spec in worker.specs() if spec.id == "push-send"]
    worker.run_gated(push_send)


def test_a_caregiver_revoked_while_an_alert_waits_never_receives_it(api, people, jobs_db, settings, sender,
                                                                    emulator, traveller):
    svc, client = api.extensions["companion"], api.test_client()
    queued = _queue_alert(svc, people["pat"].id)
    revoked = client.delete(f"/api/v1/patients/{people['pat'].id}/caregivers/{people['link_id']}",
                            headers=people["pat"].headers)
    assert revoked.status_code == 204
    traveller.move_to(AFTER_QUIET)
    _run_the_worker_push_job(jobs_db, settings, sender)
    assert emulator.delivered_to(people["token"]) == []
    stored = jobs_db.push_outbox.find_one({"_id": queued["_id"]})
    assert (stored["state"], stored["withdrawn_reason"]) == ("withdrawn", "consent_revoked")


def test_a_revocation_that_lands_after_the_queue_is_read_is_caught_by_the_sender(api, people, jobs_db, settings,
                                                                                 sender, emulator, traveller):
    """The withdrawal at revocation is the tidy-up; the check at sending is the guarantee. Here the link ends
    without it (as when the revocation races a dispatcher that has read the queue already)."""
    svc = api.extensions["companion"]
    queued = _queue_alert(svc, people["pat"].id)
    assert svc.stores.care_links.revoke(people["pat"].id, people["link_id"], ended_by="patient") is not None  # no withdrawal
    traveller.move_to(AFTER_QUIET)
    _run_the_worker_push_job(jobs_db, settings, sender)
    assert emulator.delivered_to(people["token"]) == []
    stored = jobs_db.push_outbox.find_one({"_id": queued["_id"]})
    assert (stored["state"], stored["withdrawn_reason"]) == ("withdrawn", "consent_revoked")


def test_narrowing_what_is_shared_stops_the_alerts_no_longer_covered(api, people, jobs_db, settings, sender,
                                                                     emulator, traveller):
    svc, client = api.extensions["companion"], api.test_client()
    missed = _queue_alert(svc, people["pat"].id, AlertKind.MISSED_TENS)
    flare = _queue_alert(svc, people["pat"].id, AlertKind.PAIN_FLARE)
    narrowed = client.post(f"/api/v1/patients/{people['pat'].id}/caregivers", headers=people["pat"].headers, json={
        "caregiver_email": "cara@example.org", "current_password": PASSWORD, "permissions": {"alerts": ["pain_flare"]}})
    assert narrowed.status_code == 201
    traveller.move_to(AFTER_QUIET)
    _run_the_worker_push_job(jobs_db, settings, sender)
    assert len(emulator.delivered_to(people["token"])) == 1
    states = {d["_id"]: (d["state"], d.get("withdrawn_reason")) for d in jobs_db.push_outbox.find()}
    assert states[missed["_id"]] == ("withdrawn", "alert_kind_not_shared")
    assert states[flare["_id"]] == ("sent", None)


def test_a_narrowed_caregiver_no_longer_lists_the_notifications_of_kinds_not_shared(api, people, jobs_db,
                                                                                    settings, sender, traveller):
    svc, client = api.extensions["companion"], api.test_client()
    missed = _queue_alert(svc, people["pat"].id, AlertKind.MISSED_TENS)
    flare = _queue_alert(svc, people["pat"].id, AlertKind.PAIN_FLARE)
    caregiver, pid = people["cara"].headers, people["pat"].id
    about = f"/api/v1/patients/{pid}/notifications"
    assert {n["id"] for n in client.get(about, headers=caregiver).json["items"]} == {missed["_id"], flare["_id"]}
    narrowed = client.post(f"/api/v1/patients/{pid}/caregivers", headers=people["pat"].headers, json={
        "caregiver_email": "cara@example.org", "current_password": PASSWORD, "permissions": {"alerts": ["pain_flare"]}})
    assert narrowed.status_code == 201
    # Neither the list about the patient nor the caregiver's own shows the missed-session one any more; the
    # patient still sees both.
    assert [n["id"] for n in client.get(about, headers=caregiver).json["items"]] == [flare["_id"]]
    assert missed["_id"] not in {n["id"] for n in client.get("/api/v1/me/notifications",
                                                             headers=caregiver).json["items"]}
    assert {n["id"] for n in client.get(about, headers=people["pat"].headers).json["items"]} >= {missed["_id"],
                                                                                                 flare["_id"]}


def test_a_deactivated_caregiver_gets_nothing_more(api, people, jobs_db, settings, sender, emulator, traveller):
    svc, client = api.extensions["companion"], api.test_client()
    queued = _queue_alert(svc, people["pat"].id)
    deactivated = client.post(f"/api/v1/admin/users/{people['cara'].id}/deactivation", headers=people["root"].headers,
                              json={"reason": "left the household"})
    assert deactivated.status_code == 200 and deactivated.json["status"] == "deactivated"
    traveller.move_to(AFTER_QUIET)
    _run_the_worker_push_job(jobs_db, settings, sender)
    assert emulator.delivered_to(people["token"]) == []
    stored = jobs_db.push_outbox.find_one({"_id": queued["_id"]})
    assert (stored["state"], stored["withdrawn_reason"]) == ("withdrawn", "recipient_inactive")


def test_a_deactivated_patients_alerts_do_not_reach_their_caregiver(api, people, jobs_db, settings, sender,
                                                                    emulator, traveller):
    svc = api.extensions["companion"]
    queued = _queue_alert(svc, people["pat"].id)
    svc.stores.users.set_status(people["pat"].id, "deactivated", START, "test")  # no withdrawal: the sender decides
    traveller.move_to(AFTER_QUIET)
    _run_the_worker_push_job(jobs_db, settings, sender)
    assert emulator.delivered_to(people["token"]) == []
    assert jobs_db.push_outbox.find_one({"_id": queued["_id"]})["withdrawn_reason"] == "patient_inactive"


def test_consent_kept_the_alert_goes_out(api, people, jobs_db, settings, sender, emulator, traveller):
    svc = api.extensions["companion"]
    queued = _queue_alert(svc, people["pat"].id)
    traveller.move_to(AFTER_QUIET)
    _run_the_worker_push_job(jobs_db, settings, sender)
    assert len(emulator.delivered_to(people["token"])) == 1
    assert jobs_db.push_outbox.find_one({"_id": queued["_id"]})["state"] == "sent"


def test_a_revoked_caregiver_can_no_longer_read_the_notifications_nor_post_receipts(api, people, jobs_db, settings,
                                                                                    sender, traveller):
    svc, client = api.extensions["companion"], api.test_client()
    queued = _queue_alert(svc, people["pat"].id)
    traveller.move_to(AFTER_QUIET)
    _run_the_worker_push_job(jobs_db, settings, sender)
    # Hours later: both sign in again (access tokens last 15 minutes).
    caregiver = login(client, "cara", "cara@example.org", people["cara"].id, "caregiver").headers
    patient = login(client, "pat", "pat@example.org", people["pat"].id, "patient").headers
    listed = client.get("/api/v1/me/notifications", headers=caregiver).json["items"]
    # (The other one told the caregiver of the patient's offer, and was withdrawn when they accepted it.)
    assert [n["id"] for n in listed if n["about"] != "caregiver_invitation"] == [queued["_id"]]
    receipt = f"/api/v1/me/notifications/{queued['_id']}/receipts"
    assert client.post(receipt, headers=caregiver, json={"receipt": "delivered"}).status_code == 204
    assert client.delete(f"/api/v1/patients/{people['pat'].id}/caregivers/{people['link_id']}",
                         headers=patient).status_code == 204
    assert [n["about"] for n in client.get("/api/v1/me/notifications", headers=caregiver).json["items"]] == [
        "caregiver_invitation"]
    assert client.post(receipt, headers=caregiver, json={"receipt": "opened"}).status_code == 404
    assert jobs_db.push_outbox.find_one({"_id": queued["_id"]})["opened_at"] is None


class _SlowFirstBatch:
    """The real sender, whose first batch takes a while at FCM (the pass prepares the next batch meanwhile);
    ``meanwhile`` runs right after FCM has answered that first batch (a revocation, a sign-out)."""

    def __init__(self, real, meanwhile):
        self.real, self.meanwhile, self.calls = real, meanwhile, 0

    def send(self, items):
        self.calls += 1
        results = self.real.send(items)
        if self.calls == 1:
            self.meanwhile()
        return results


def _one_at_a_time(jobs_db, clock, sender):
    from datetime import timedelta

    from companion.services.notifications import DeliveryConsent
    from companion.services.push_delivery import OutboxDispatcher
    from companion.store.stores import Stores

    stores = Stores(jobs_db, clock)
    return stores, lambda real: OutboxDispatcher(stores.outbox, stores.push_tokens, real, owner="w-1",
                                                 lease=timedelta(minutes=5), batch_size=1,
                                                 consent=DeliveryConsent(stores), users=stores.users)


def test_a_revocation_while_a_batch_is_at_fcm_stops_the_batches_after_it_and_the_record_tells_the_truth(
        jobs_db, settings, clock, traveller, sender, emulator):
    from companion.store.relationships import CareLinks
    from tests.scheduler.helpers import link_caregiver, make_person, phone

    patient = make_person(jobs_db, "patient")
    caregiver = link_caregiver(jobs_db, patient, ["missed_session"])
    token = phone(jobs_db, caregiver)
    link = CareLinks(jobs_db).active(patient.id, caregiver.id)
    stores, dispatcher = _one_at_a_time(jobs_db, clock, sender)
    for n in range(3):
        stores.outbox.schedule(source_key=f"alert:a-{n}", recipient_user_id=caregiver.id, patient_id=patient.id,
                               kind="caregiver_missed_tens_session", send_at=START, share_kind="missed_session")

    def revoke():
        services_on(jobs_db, settings, clock).care.revoke_caregiver(patient.id, link.id)

    dispatcher(_SlowFirstBatch(sender, revoke)).run_pass(100)
    assert len(emulator.delivered_to(token)) == 1  # the batch at FCM when the patient revoked: no more
    states = sorted((d["state"], d.get("withdrawn_reason")) for d in jobs_db.push_outbox.find())
    assert states == [("sent", None), ("withdrawn", "consent_revoked"), ("withdrawn", "consent_revoked")]


def test_a_phone_signed_out_during_a_pass_gets_nothing_from_the_batches_prepared_after(
        jobs_db, settings, clock, traveller, sender, emulator):
    from datetime import timedelta

    from tests.scheduler.helpers import make_person, phone

    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient, "phone-1")
    stores, dispatcher = _one_at_a_time(jobs_db, clock, sender)
    for n in range(4):
        stores.outbox.schedule(source_key=f"reminder:occ-{n}", recipient_user_id=patient.id, patient_id=patient.id,
                               kind="therapy_reminder", send_at=START, completion_window=timedelta(minutes=30))

    def sign_out():
        services_on(jobs_db, settings, clock).notifications.forget_phone(patient.id, "phone-1")

    dispatcher(_SlowFirstBatch(sender, sign_out)).run_pass(100)
    # The first batch, and the second (prepared while the first was at FCM): no later one.
    assert len(emulator.delivered_to(token)) <= 2


def test_reminders_answered_while_a_batch_is_at_fcm_are_not_sent_from_the_batches_after_it(
        jobs_db, settings, clock, traveller, sender, emulator):
    from datetime import timedelta

    from tests.scheduler.helpers import make_person, phone

    patient = make_person(jobs_db, "patient")
    token = phone(jobs_db, patient)
    stores, dispatcher = _one_at_a_time(jobs_db, clock, sender)
    for n in range(3):
        jobs_db.reminder_occurrences.insert_one({"_id": f"occ-{n}", "patient_id": patient.id, "reminder_id": "r",
                                                 "local_date": "2026-03-02", "status": "pending"})
        stores.outbox.schedule(source_key=f"reminder:occ-{n}", recipient_user_id=patient.id, patient_id=patient.id,
                               kind="therapy_reminder", send_at=START, completion_window=timedelta(minutes=30))

    def answered():  # the patient ticks them all off: the batch prepared meanwhile is already claimed
        jobs_db.reminder_occurrences.update_many({}, {"$set": {"status": "done"}})

    dispatcher(_SlowFirstBatch(sender, answered)).run_pass(100)
    assert len(emulator.delivered_to(token)) == 1  # the one at FCM when they answered
    states = sorted((d["state"], d.get("withdrawn_reason")) for d in jobs_db.push_outbox.find())
    assert states == [("sent", None), ("withdrawn", "reminder_answered"), ("withdrawn", "reminder_answered")]
