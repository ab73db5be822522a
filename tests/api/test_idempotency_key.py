"""Idempotency-Key on creating POSTs: replay, mismatch, per-caller keys."""

from __future__ import annotations

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
    assert db.care_links.count_documents({"caregiver_id": world["caregiver_unlinked"].id}) == 1


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
    assert bad.status_code == 401
    assert grant(client, world, "grant-0003").status_code == 201
