"""The audit trail: every patient-data access recorded, hash-chained, and failing closed."""

from __future__ import annotations

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
    trail = AuditTrail(AuditEvents(db))
    for i in range(30):
        trail.write([{"actor_id": f"u{i}", "action": "R", "patient_ids": ["p"], "outcome": "success"}])
    assert trail.verify()["breaks"] == []
    db.audit_events.update_one({"chain_id": trail.chain_id, "seq": 12}, {"$set": {"actor_id": "someone else"}})
    db.audit_events.delete_one({"chain_id": trail.chain_id, "seq": 20})
    breaks = trail.verify()["breaks"]
    assert [(b.seq, b.problem.split()[0]) for b in breaks] == [(12, "content"), (20, "missing"), (21, "prev_hash")]
