"""A phone that lost the answer to a create and stays offline past the 24 hours its Idempotency-Key is kept retries
the same request with the same key: it finds what its first attempt made, never a second reminder (two pushes for
every dose, one of them "missed") or a second practice. Another request with that key, once forgotten, makes its own."""

from __future__ import annotations

from datetime import timedelta

from companion.clock import now


def _forget_the_key(db, caller_id: str, key: str) -> None:
    """What 24 hours do to a kept key: it is no longer a claim any request has to respect."""
    updated = db.idempotency_keys.update_one({"_id": f"{caller_id}:{key}"},
                                             {"$set": {"created_at": now() - timedelta(hours=25)}})
    assert updated.matched_count == 1


def _post(client, caller, path: str, key: str, body: dict):
    return client.post(path, json=body, headers={**caller.headers, "Idempotency-Key": key})


def test_a_reminder_created_again_days_later_with_its_key_is_the_one_made_first(client, world, db):
    patient = world["patient_a"]
    path = f"/api/v1/patients/{patient.id}/reminders"
    body = {"kind": "tens", "title": "Morning session", "schedule": {"type": "weekly", "times": ["09:30"]}}
    first = _post(client, patient, path, "phone-outbox-0001", body)
    assert first.status_code == 201, first.json
    _forget_the_key(db, patient.id, "phone-outbox-0001")

    again = _post(client, patient, path, "phone-outbox-0001", body)
    assert again.status_code in (200, 201), again.json
    assert again.json["id"] == first.json["id"]
    assert db.reminders.count_documents({"patient_id": patient.id}) == 1
    assert db.reminder_occurrences.count_documents({"reminder_id": {"$ne": first.json["id"]},
                                                    "patient_id": patient.id}) == 0

    _forget_the_key(db, patient.id, "phone-outbox-0001")
    other = _post(client, patient, path, "phone-outbox-0001", {**body, "title": "Evening session",
                                                               "schedule": {"type": "weekly", "times": ["19:00"]}})
    assert other.status_code == 201, other.json
    assert other.json["id"] != first.json["id"]
    assert sorted(r["title"] for r in db.reminders.find({"patient_id": patient.id})) == [
        "Evening session", "Morning session"]


def test_a_practice_started_again_days_later_with_its_key_is_the_one_started_first(client, world, db, services):
    services.library.load()
    patient = world["patient_a"]
    path = f"/api/v1/patients/{patient.id}/practice"
    first = _post(client, patient, path, "phone-outbox-0002", {"item_slug": "box-breathing"})
    assert first.status_code == 201, first.json
    _forget_the_key(db, patient.id, "phone-outbox-0002")

    again = _post(client, patient, path, "phone-outbox-0002", {"item_slug": "box-breathing"})
    assert again.status_code in (200, 201), again.json
    assert again.json["id"] == first.json["id"]
    assert db.practice_log.count_documents({"patient_id": patient.id}) == 1
