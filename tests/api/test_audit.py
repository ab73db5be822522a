"""The audit trail: every patient-data access recorded, hash-chained, and failing closed."""

from __future__ import annotations

from datetime import timedelta

from companion.clock import now
from companion.services.audit import AuditTrail
from companion.store.audit import AuditEvents


def test_a_read_writes_one_event_with_who_what_and_outcome(client, world, db):
    patient = world["patient_a"]
    client.get(f"/api/v1/patients/{patient.id}", headers=world["clinician_team"].headers)
    event = db.audit_events.find_one({"actor_id": world["clinician_team"].id, "resource_type": "patient"})
    assert event["actor_role"] == "clinician"
    assert event["patient_ids"] == [patient.id]
    assert event["action"] == "R" and event["outcome"] == "success"
    assert event["request_id"] and event["at"] and event["client_ip"]


def test_audit_failure_fails_the_request_closed(client, world, services, monkeypatch):
    patient = world["patient_a"]

    def broken(events):
        raise OSError("audit store unavailable")

    monkeypatch.setattr(services.audit, "write", broken)
    response = client.get(f"/api/v1/patients/{patient.id}", headers=patient.headers)
    assert response.status_code == 503
    body = response.get_data(as_text=True)
    assert "Patient A" not in body and patient.email not in body


def test_chain_verifier_finds_a_changed_and_a_deleted_event(db):
    trail = AuditTrail(AuditEvents(db), key="k" * 32)
    for i in range(30):
        trail.write([{"actor_id": f"u{i}", "action": "R", "patient_ids": ["p"], "outcome": "success"}])
    assert trail.verify()["breaks"] == []
    db.audit_events.update_one({"chain_id": trail.chain_id, "seq": 12}, {"$set": {"actor_id": "someone else"}})
    db.audit_events.delete_one({"chain_id": trail.chain_id, "seq": 20})
    breaks = trail.verify()["breaks"]
    assert [(b.seq, b.problem.split()[0]) for b in breaks] == [(12, "content"), (20, "missing"), (21, "prev_hash")]


def _diary_entry(client, patient, client_entry_id="audit-entry-0001"):
    return client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers,
                       json={"client_entry_id": client_entry_id, "recorded_at": "2026-11-29T09:00:00+00:00", "nrs": 5})


def test_every_write_records_its_intent_before_and_its_outcome_after(client, world, db, services):
    patient = world["patient_a"]
    response = _diary_entry(client, patient)
    assert response.status_code == 201
    request_id = response.headers["X-Request-ID"]
    events = list(db.audit_events.find({"request_id": request_id}).sort("seq", 1))
    assert [e["action"] for e in events] == ["intent", "C"]
    assert events[0]["outcome"] == "pending" and events[1]["outcome"] == "success"
    assert services.audit.verify(settled_before=now() + timedelta(hours=1))["unfinished"] == []


def test_a_write_whose_intent_cannot_be_recorded_changes_nothing(client, world, db, services, monkeypatch):
    patient = world["patient_a"]

    def broken(events):
        raise OSError("audit store unavailable")

    monkeypatch.setattr(services.audit, "write", broken)
    response = _diary_entry(client, patient)
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert db.pain_entries.count_documents({"patient_id": patient.id}) == 0


def test_a_write_whose_outcome_cannot_be_recorded_is_reported_unfinished(client, world, db, services, monkeypatch):
    patient = world["patient_a"]
    real_write = services.audit.write
    calls = []

    def outcome_fails(events):
        calls.append(events)
        if len(calls) > 1:
            raise OSError("audit store went away")
        real_write(events)

    monkeypatch.setattr(services.audit, "write", outcome_fails)
    response = _diary_entry(client, patient)
    assert response.status_code == 503
    assert "Patient A" not in response.get_data(as_text=True)
    assert services.audit.verify()["unfinished"] == []  # five minutes' grace: it may still be running
    (unfinished,) = services.audit.verify(settled_before=now() + timedelta(hours=1))["unfinished"]
    assert unfinished["request_id"] == response.headers["X-Request-ID"]
    assert unfinished["route"] == "/api/v1/patients/<patient_id>/pain-entries"
