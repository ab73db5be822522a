"""The audit trail: every patient-data access recorded, hash-chained, and failing closed."""

from __future__ import annotations

import threading
from datetime import timedelta

from companion.clock import now
from companion.http import auditing
from companion.services.audit import AuditTrail, AuditWriteFailed
from companion.store.audit import AuditEvents
from tests.support.gateway_processes import wait_for


def test_a_read_writes_one_event_with_who_what_and_outcome(client, world, db):
    patient = world["patient_a"]
    client.get(f"/api/v1/patients/{patient.id}", headers=world["clinician_team"].headers)
    event = db.audit_events.find_one({"actor_id": world["clinician_team"].id, "resource_type": "patient"})
    assert event["actor_role"] == "clinician"
    assert event["patient_ids"] == [patient.id]
    assert event["action"] == "R" and event["outcome"] == "success"
    assert event["request_id"] and event["at"] and event["client_ip"]


def test_an_admin_listing_patients_is_in_each_listed_patients_access_history(client, world, db):
    admin, patient = world["admin"], world["patient_a"]
    listed = client.get("/api/v1/admin/users", query_string={"role": "patient"}, headers=admin.headers)
    assert listed.status_code == 200 and patient.id in {a["id"] for a in listed.json["items"]}
    event = db.audit_events.find_one({"actor_id": admin.id, "resource_type": "account", "action": "search"})
    assert event is not None and patient.id in event["patient_ids"]
    history = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers).json["items"]
    assert any(e["actor_role"] == "admin" and e["action"] == "search" for e in history)


def test_an_act_over_many_patients_is_written_as_several_events_sharing_the_request_id(client, world, db,
                                                                                        monkeypatch, services):
    """Adding a clinician to a team is audited against every patient of the team; a large team's patients are
    named across several events (at most PATIENTS_PER_EVENT each), one request id, each patient in exactly one."""
    admin, team = world["admin"], world.team_id
    services.stores.care_teams.enrol(team, world["patient_b"].id)
    monkeypatch.setattr(auditing, "PATIENTS_PER_EVENT", 1)
    clinician = world["clinician_other"]
    assert client.post(f"/api/v1/admin/teams/{team}/clinicians", headers=admin.headers,
                       json={"clinician_id": clinician.id}).status_code == 200
    events = list(db.audit_events.find({"actor_id": admin.id, "resource_type": "team_clinician"}))
    assert sorted(e["patient_ids"] for e in events) == sorted([[world["patient_a"].id], [world["patient_b"].id]])
    assert len({e["request_id"] for e in events}) == 1
    assert {tuple(e["resource_ids"]) for e in events} == {(team, clinician.id)}


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


class _GatedEvents(AuditEvents):
    """The real store, with the first insert held at a gate and any insert made to fail on demand."""

    def __init__(self, db):
        super().__init__(db)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.inserts: list[int] = []
        self.fail_insert: int | None = None  # the insert (counting from 1) that fails
        self.failure: BaseException = OSError("audit store unavailable")

    def append(self, events):
        self.inserts.append(len(events))
        if len(self.inserts) == 1:
            self.entered.set()
            assert self.gate.wait(60)
        if len(self.inserts) == self.fail_insert:
            raise self.failure
        super().append(events)


def _write_in_threads(trail, writers: int, prefix: str):
    errors: dict[str, BaseException] = {}

    def one(n):
        try:
            trail.write([{"actor_id": f"{prefix}{n}", "action": "R", "patient_ids": ["p"], "outcome": "success"}])
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors[f"{prefix}{n}"] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    return threads, errors


def _queued(trail) -> int:
    with trail._queue_lock:
        return sum(len(w.events) for w in trail._queue)


def test_writers_waiting_on_an_insert_are_written_together_in_the_next_one(db):
    events = _GatedEvents(db)
    trail = AuditTrail(events, key="k" * 32)
    first, first_errors = _write_in_threads(trail, 1, "first-")
    assert events.entered.wait(60)  # the first insert is at the database
    waiting, errors = _write_in_threads(trail, 15, "later-")
    assert wait_for(lambda: _queued(trail) == 15, 60)
    assert not any(db.audit_events.find_one({"actor_id": f"later-{n}"}) for n in range(15))
    events.gate.set()
    for thread in first + waiting:
        thread.join(60)
    assert not first_errors and not errors
    assert events.inserts == [1, 15]  # one command carried all fifteen waiting requests' events
    stored = list(db.audit_events.find({"chain_id": trail.chain_id}).sort("seq", 1))
    assert [e["seq"] for e in stored] == list(range(16))
    assert {e["actor_id"] for e in stored} == {"first-0"} | {f"later-{n}" for n in range(15)}
    assert trail.verify()["breaks"] == []


def test_every_writer_in_a_failed_group_is_told_and_the_next_write_starts_a_fresh_chain(db):
    events = _GatedEvents(db)
    events.fail_insert = 2
    trail = AuditTrail(events, key="k" * 32)
    first, first_errors = _write_in_threads(trail, 1, "first-")
    assert events.entered.wait(60)
    waiting, errors = _write_in_threads(trail, 6, "doomed-")
    assert wait_for(lambda: _queued(trail) == 6, 60)
    failing_chain = trail.chain_id
    events.gate.set()
    for thread in first + waiting:
        thread.join(60)
    assert not first_errors and events.inserts == [1, 6]
    assert set(errors) == {f"doomed-{n}" for n in range(6)}  # every caller in the group fails its request
    assert all(isinstance(e, AuditWriteFailed) for e in errors.values())
    assert db.audit_events.count_documents({"actor_id": {"$regex": "^doomed-"}}) == 0
    assert trail.chain_id != failing_chain
    trail.write([{"actor_id": "after", "action": "R", "patient_ids": ["p"], "outcome": "success"}])
    after = db.audit_events.find_one({"actor_id": "after"})
    assert after["chain_id"] == trail.chain_id and after["seq"] == 0
    assert trail.verify()["breaks"] == []


class _Interrupted(BaseException):
    """What a worker thread may be stopped with mid-write (not an Exception)."""


def test_when_the_writer_of_a_group_is_interrupted_every_other_writer_in_it_fails_too(db):
    events = _GatedEvents(db)
    events.fail_insert, events.failure = 2, _Interrupted()
    trail = AuditTrail(events, key="k" * 32)
    first, first_errors = _write_in_threads(trail, 1, "first-")
    assert events.entered.wait(60)
    waiting, errors = _write_in_threads(trail, 5, "cut-")
    assert wait_for(lambda: _queued(trail) == 5, 60)
    events.gate.set()
    for thread in first + waiting:
        thread.join(60)
    assert not first_errors and set(errors) == {f"cut-{n}" for n in range(5)}
    kinds = sorted(type(e).__name__ for e in errors.values())
    assert kinds == ["AuditWriteFailed"] * 4 + ["_Interrupted"]  # the one writing it, and the four it took along
    trail.write([{"actor_id": "after", "action": "R", "patient_ids": ["p"], "outcome": "success"}])
    assert db.audit_events.find_one({"actor_id": "after"}) is not None
