"""Idempotency-Key on creating POSTs: replay, mismatch, per-caller keys, and the lease a request holds its key under."""

from __future__ import annotations

from datetime import timedelta

from pymongo.errors import ConnectionFailure

from companion.clock import now
from tests.support.world import PASSWORD


def grant(client, world, key, email=None):
    patient = world["patient_a"]
    return client.post(f"/api/v1/patients/{patient.id}/caregivers",
                       json={"caregiver_email": email or world["caregiver_unlinked"].email,
                             "current_password": PASSWORD},
                       headers={**patient.headers, "Idempotency-Key": key})


def test_same_key_and_body_replays_the_first_answer_and_writes_once(client, world, db):
    first = grant(client, world, "grant-0001")
    second = grant(client, world, "grant-0001")
    assert first.status_code == second.status_code == 201
    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"] != f"/api/v1/patients/{world['patient_a'].id}/caregivers"
    assert db.caregiver_invitations.count_documents({"email": world["caregiver_unlinked"].email}) == 1


def test_same_key_with_a_different_body_is_refused(client, world):
    assert grant(client, world, "grant-0002").status_code == 201
    other = grant(client, world, "grant-0002", email=world["caregiver_linked"].email)
    assert other.status_code == 422


def test_keys_belong_to_their_caller(client, world):
    assert grant(client, world, "shared-key-1").status_code == 201
    patient_b = world["patient_b"]
    response = client.post(f"/api/v1/patients/{patient_b.id}/devices", json={"serial": "CTU-B0002"},
                           headers={**patient_b.headers, "Idempotency-Key": "shared-key-1"})
    assert response.status_code == 201
    assert "caregiver" not in response.get_data(as_text=True)


def test_a_failed_request_does_not_burn_the_key(client, world):
    patient = world["patient_a"]
    bad = client.post(f"/api/v1/patients/{patient.id}/caregivers",
                      json={"caregiver_email": world["caregiver_unlinked"].email, "current_password": "wrong!"},
                      headers={**patient.headers, "Idempotency-Key": "grant-0003"})
    assert bad.status_code == 403
    assert grant(client, world, "grant-0003").status_code == 201


def _reminder(client, patient, key):
    return client.post(f"/api/v1/patients/{patient.id}/reminders", headers={**patient.headers, "Idempotency-Key": key},
                       json={"kind": "tens", "title": "Morning session",
                             "schedule": {"type": "weekly", "times": ["08:00"]}})


def _claim_left_by_a_dead_request(db, caller, key, lease_until):
    """What a web worker killed mid-request leaves behind: the key claimed, no answer, a lease."""
    import hashlib
    import json

    body = json.dumps({"kind": "tens", "title": "Morning session",
                       "schedule": {"type": "weekly", "times": ["08:00"]}}).encode()
    db.idempotency_keys.insert_one({
        "_id": f"{caller.id}:{key}", "state": "in_flight", "created_at": lease_until - timedelta(minutes=1),
        "lease_until": lease_until,
        "request_hash": hashlib.sha256(b"POST" + f"/api/v1/patients/{caller.id}/reminders".encode() + body).hexdigest()})
    return body


def test_a_key_whose_request_died_is_taken_over_after_its_lease_and_the_work_is_done_once(client, world, db):
    patient = world["patient_a"]
    body = _claim_left_by_a_dead_request(db, patient, "remind-0001", now() - timedelta(seconds=1))
    response = client.post(f"/api/v1/patients/{patient.id}/reminders", data=body, content_type="application/json",
                           headers={**patient.headers, "Idempotency-Key": "remind-0001"})
    assert response.status_code == 201
    again = client.post(f"/api/v1/patients/{patient.id}/reminders", data=body, content_type="application/json",
                        headers={**patient.headers, "Idempotency-Key": "remind-0001"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert db.reminders.count_documents({"patient_id": patient.id}) == 1


def test_a_retry_while_the_first_request_still_holds_its_lease_is_told_when_to_come_back(client, world, db):
    patient = world["patient_a"]
    body = _claim_left_by_a_dead_request(db, patient, "remind-0002", now() + timedelta(seconds=50))
    response = client.post(f"/api/v1/patients/{patient.id}/reminders", data=body, content_type="application/json",
                           headers={**patient.headers, "Idempotency-Key": "remind-0002"})
    assert response.status_code == 409 and int(response.headers["Retry-After"]) >= 1
    assert db.reminders.count_documents({"patient_id": patient.id}) == 0


def test_the_same_key_creates_one_reminder_even_when_its_answer_was_never_recorded(client, world, db, services,
                                                                                 monkeypatch):
    patient = world["patient_a"]

    def answer_lost(*args):
        raise ConnectionFailure("the database went away before the answer was stored")

    monkeypatch.setattr(services.idempotency, "lease", timedelta(0))  # so its lease has run out at the retry
    monkeypatch.setattr(services.idempotency.keys, "complete", answer_lost)
    assert _reminder(client, patient, "remind-0003").status_code == 503
    monkeypatch.undo()
    retried = _reminder(client, patient, "remind-0003")
    assert retried.status_code == 201
    assert db.reminders.count_documents({"patient_id": patient.id}) == 1
