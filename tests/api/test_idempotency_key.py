"""Idempotency-Key on creating POSTs: replay, mismatch, per-caller keys, and the lease a request holds its key under."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from pymongo.errors import ConnectionFailure

from companion.clock import now
from companion.domain.access import CaregiverPermissions
from companion.services.derived_ids import derived_id
from companion.store.idempotency import HeldKey, IdempotencyKeys
from tests.support.problems import assert_problem
from tests.support.stops import dead_database
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


def test_a_key_claimed_before_claims_had_ids_never_answers_a_practice_it_did_not_store(client, world, db, services):
    """A claim stored by the previous version (no claim id) names its objects by caller and key alone; that name
    can be taken by what the key made days ago for another patient. Taking such a claim over is a conflict, never
    a 201 for a practice that was not stored."""
    services.library.load()
    patient, caregiver = world["patient_b"], world["caregiver_linked"]
    services.stores.care_links.grant(patient.id, caregiver.id, CaregiverPermissions(write=True))
    db.practice_log.insert_one({"_id": derived_id("practice", f"{caregiver.id}:old-key-01"),
                                "patient_id": world["patient_a"].id, "item_slug": "three-breath-reset",
                                "started_at": now() - timedelta(days=2), "completed_at": None, "minutes": 0.0,
                                "seq": 0})
    body = json.dumps({"item_slug": "box-breathing"}).encode()
    path = f"/api/v1/patients/{patient.id}/practice"
    db.idempotency_keys.insert_one({
        "_id": f"{caregiver.id}:old-key-01", "state": "in_flight", "created_at": now() - timedelta(minutes=2),
        "lease_until": now() - timedelta(minutes=1),
        "request_hash": hashlib.sha256(b"POST" + path.encode() + body).hexdigest()})
    taken_over = client.post(path, data=body, content_type="application/json",
                             headers={**caregiver.headers, "Idempotency-Key": "old-key-01"})
    assert_problem(taken_over, 409)
    assert "Retry-After" not in taken_over.headers
    assert db.practice_log.count_documents({"patient_id": patient.id}) == 0
def _request_hash(path: str, body: bytes) -> str:
    return hashlib.sha256(b"POST" + path.encode() + body).hexdigest()


def test_a_slow_request_finishing_after_its_key_was_claimed_anew_leaves_its_answer_out_of_the_new_claim(
        client, world, db, services, monkeypatch):
    """A1 is slow: its lease runs out, its retry A2 takes the key over and fails, the key is forgotten after its 24
    hours, and B, another request with the same key, claims it anew. A1 then finishes: its answer is A's, and B's retry must not
    replay it (it is told B is still running; once B failed, it makes B's reminder)."""
    patient, key = world["patient_a"], "slow-first-01"
    path = f"/api/v1/patients/{patient.id}/reminders"
    body_a, body_b = (json.dumps({"kind": "tens", "title": title, "schedule": {"type": "weekly", "times": [at]}})
                      .encode() for title, at in (("Morning session", "08:00"), ("Evening session", "19:00")))
    claims, create, b_claim = services.idempotency, services.reminders.create, []

    def slow_create(*args, **kwargs):  # A1's work: what the other requests do meanwhile
        a2 = claims.begin(patient.id, key, _request_hash(path, body_a))  # A1's lease ran out: its retry takes over
        assert isinstance(a2, HeldKey)
        claims.release(patient.id, key, a2)  # ... and fails (the key stays bound to A: A1 may have written)
        _older_than_a_day(db, patient.id, key)  # and A1 is so slow that the key is forgotten
        monkeypatch.setattr(claims, "lease", timedelta(minutes=1))
        b_claim.append(claims.begin(patient.id, key, _request_hash(path, body_b)))  # B claims the key anew
        assert isinstance(b_claim[0], HeldKey) and b_claim[0] != a2
        return create(*args, **kwargs)

    monkeypatch.setattr(claims, "lease", timedelta(0))  # so A1's has run out when A2 comes
    monkeypatch.setattr(services.reminders, "create", slow_create)
    a1 = client.post(path, data=body_a, content_type="application/json",
                     headers={**patient.headers, "Idempotency-Key": key})
    assert a1.status_code == 201 and a1.json["title"] == "Morning session"
    monkeypatch.setattr(services.reminders, "create", create)
    stored = db.idempotency_keys.find_one({"_id": f"{patient.id}:{key}"})
    assert (stored["claim_id"], stored["state"], stored.get("body")) == (b_claim[0].claim_id, "in_flight", None)

    def b_retried():
        return client.post(path, data=body_b, content_type="application/json",
                           headers={**patient.headers, "Idempotency-Key": key})

    while_b_runs = b_retried()
    assert while_b_runs.status_code == 409 and "Retry-After" in while_b_runs.headers, while_b_runs.json
    claims.release(patient.id, key, b_claim[0])  # B fails
    b = b_retried()
    assert b.status_code == 201 and "Idempotent-Replayed" not in b.headers
    assert b.json["title"] == "Evening session"
    assert sorted(r["title"] for r in db.reminders.find({"patient_id": patient.id})) == [
        "Evening session", "Morning session"]


def _older_than_a_day(db, caller_id: str, key: str) -> None:
    db.idempotency_keys.update_one({"_id": f"{caller_id}:{key}"},
                                   {"$set": {"created_at": now() - timedelta(hours=25)}})


def test_a_request_ending_after_its_key_was_claimed_anew_neither_answers_nor_frees_the_new_claim(db):
    keys = IdempotencyKeys(db)
    a1 = keys.claim("caller-x", "late-end-01", "hash-a", timedelta(0))
    a2 = keys.claim("caller-x", "late-end-01", "hash-a", timedelta(0))  # A1's retry, after its lease
    assert isinstance(a1, HeldKey) and a2 == a1
    assert keys.release("caller-x", "late-end-01", a2)  # A2 fails
    refused = keys.claim("caller-x", "late-end-01", "hash-b", timedelta(minutes=1))
    assert (refused.state, refused.request_hash) == ("interrupted", "hash-a")  # bound to A: A1 may have written
    _older_than_a_day(db, "caller-x", "late-end-01")
    b = keys.claim("caller-x", "late-end-01", "hash-b", timedelta(minutes=1))  # another request claims it anew
    assert isinstance(b, HeldKey) and b != a1
    assert not keys.release("caller-x", "late-end-01", a1)  # A1 fails, late
    assert not keys.complete("caller-x", "late-end-01", a1, 201, b"A1's answer", "application/json")  # or ends
    retried = keys.claim("caller-x", "late-end-01", "hash-b", timedelta(minutes=1))  # B's retry: B still runs
    assert (retried.state, retried.body) == ("in_flight", None)
    assert keys.complete("caller-x", "late-end-01", b, 201, b"B's answer", "application/json")
    assert keys.claim("caller-x", "late-end-01", "hash-b", timedelta(minutes=1)).body == b"B's answer"


def test_a_claim_stored_before_claims_had_ids_is_answered_by_the_request_holding_it(db, services):
    """A claim without a claim id (the previous version's) is held, answered and released as the claim ""."""
    db.idempotency_keys.insert_one({"_id": "caller-y:old-claim-01", "state": "in_flight", "request_hash": "hash-a",
                                    "created_at": now() - timedelta(minutes=2),
                                    "lease_until": now() - timedelta(minutes=1)})
    keys = IdempotencyKeys(db)
    held = keys.claim("caller-y", "old-claim-01", "hash-a", timedelta(minutes=1))
    assert held == HeldKey("")
    assert not keys.complete("caller-y", "old-claim-01", HeldKey("another"), 201, b"not this", "text/plain")
    assert keys.complete("caller-y", "old-claim-01", held, 201, b"the answer", "text/plain")
    assert keys.claim("caller-y", "old-claim-01", "hash-a", timedelta(minutes=1)).body == b"the answer"


def test_a_retried_clinical_note_with_its_idempotency_key_is_stored_once(client, world):
    """A clinician's app retrying a note after a lost answer sends the same key; notes are never edited and
    cannot be deleted, so a second copy would stay in the record for good."""
    clinician, patient = world["clinician_team"], world["patient_a"]
    url = f"/api/v1/patients/{patient.id}/review/notes"
    headers = {**clinician.headers, "Idempotency-Key": "note-retry-0001"}
    first = client.post(url, headers=headers, json={"text": "Reduce intensity to 15 mA"})
    again = client.post(url, headers=headers, json={"text": "Reduce intensity to 15 mA"})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
    assert [n["id"] for n in client.get(url, headers=clinician.headers).json["items"]] == [first.json["id"]]


def test_the_same_note_key_from_two_clinicians_writes_two_notes(client, world, services):
    patient = world["patient_a"]
    colleague = world["clinician_other"]
    services.care.add_clinician(world.team_id, colleague.id)
    url = f"/api/v1/patients/{patient.id}/review/notes"
    for clinician in (world["clinician_team"], colleague):
        answer = client.post(url, headers={**clinician.headers, "Idempotency-Key": "note-shared-01"},
                             json={"text": "Seen in clinic"})
        assert answer.status_code == 201 and "Idempotent-Replayed" not in answer.headers
    notes = client.get(url, headers=world["clinician_team"].headers).json["items"]
    assert sorted(n["author_id"] for n in notes) == sorted([world["clinician_team"].id, colleague.id])


def _note(world):
    return (world["clinician_team"], f"/api/v1/patients/{world['patient_a'].id}/review/notes",
            {"text": "Reduce intensity to 15 mA"}, "clinical_notes", {"patient_id": world["patient_a"].id})


def _team(world):
    return world["admin"], "/api/v1/admin/teams", {"name": "Spine clinic"}, "care_teams", {"name": "Spine clinic"}


def _staff_account(world):
    return (world["admin"], "/api/v1/admin/users", {"email": "new.nurse@example.org", "role": "clinician",
                                                    "password": "a long enough password", "display_name": "Nurse"},
            "users", {"email": "new.nurse@example.org"})


def _emergency_grant(world):
    clinician = world["clinician_other"]
    return (clinician, "/api/v1/emergency-access", {"patient_id": world["patient_a"].id, "minutes": 30,
                                                     "reason": "admitted to A&E, unconscious"},
            "emergency_grants", {"clinician_id": clinician.id})


def _team_invitation(world):
    return (world["clinician_team"], f"/api/v1/clinician/teams/{world.team_id}/invitations",
            {"patient_email": "someone@example.org", "reason": "referral from GP"}, "care_invitations",
            {"email": "someone@example.org"})


@pytest.mark.parametrize("operation", [_note, _team, _staff_account, _emergency_grant, _team_invitation],
                         ids=lambda f: f.__name__[1:])
def test_a_creating_request_whose_answer_was_lost_is_done_once_by_its_retries(client, world, db, services,
                                                                              monkeypatch, operation):
    """The first attempt stores its object, then the database goes away before its answer is kept; the retry
    after its lease finds that object (its id is derived from the key) and a further retry is a replay."""
    caller, url, body, collection, query = operation(world)
    headers = {**caller.headers, "Idempotency-Key": "lost-answer-01"}

    def answer_lost(*args):
        raise ConnectionFailure("the database went away before the answer was stored")

    monkeypatch.setattr(services.idempotency, "lease", timedelta(0))  # so its lease has run out at the retry
    monkeypatch.setattr(services.idempotency.keys, "complete", answer_lost)
    assert client.post(url, headers=headers, json=body).status_code == 503
    monkeypatch.undo()
    retried = client.post(url, headers=headers, json=body)
    assert retried.status_code in (201, 202), retried.json
    replayed = client.post(url, headers=headers, json=body)
    assert replayed.headers["Idempotent-Replayed"] == "true" and replayed.json == retried.json
    assert db[collection].count_documents(query) == 1


def _start_practice(client, services, world, caregiver, key):
    services.library.load()
    return client.post(f"/api/v1/patients/{world['patient_a'].id}/practice", json={"item_slug": "box-breathing"},
                       headers={**caregiver.headers, "Idempotency-Key": key})


def _refusals(db, caregiver, patient):
    return db.audit_events.count_documents({"actor_id": caregiver.id, "patient_ids": patient.id,
                                            "outcome": "denied"})


@pytest.mark.parametrize("change, refused", [("write taken away", 403), ("link revoked", 404)])
def test_a_stored_answer_is_replayed_only_to_a_caller_still_allowed_to_make_the_request(
        client, world, db, services, change, refused):
    """A replay answers with the patient's data: it is given only to a caller the route still allows. A caregiver
    whose write permission was taken away, or whose link ended, gets what a first request would get, audited as
    a refusal, and nothing of the stored answer."""
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    link = services.stores.care_links.grant(patient.id, caregiver.id, CaregiverPermissions(write=True))
    first = _start_practice(client, services, world, caregiver, "practice-0001")
    assert first.status_code == 201
    if change == "write taken away":
        assert services.stores.care_links.change_permissions(patient.id, caregiver.id, CaregiverPermissions())
    else:
        assert client.delete(f"/api/v1/patients/{patient.id}/caregivers/{link.id}",
                             headers=patient.headers).status_code == 204
    before = _refusals(db, caregiver, patient)
    replayed = _start_practice(client, services, world, caregiver, "practice-0001")
    assert_problem(replayed, refused)
    assert "Idempotent-Replayed" not in replayed.headers
    assert first.json["id"] not in replayed.get_data(as_text=True)
    assert _refusals(db, caregiver, patient) == before + 1
    # Allowed again, the same key answers as it did: the first answer, the work done once.
    services.stores.care_links.grant(patient.id, caregiver.id, CaregiverPermissions(write=True))
    again = _start_practice(client, services, world, caregiver, "practice-0001")
    assert (again.status_code, again.json, again.headers["Idempotent-Replayed"]) == (201, first.json, "true")
    assert db.practice_log.count_documents({"patient_id": patient.id}) == 1


def test_a_clinician_who_left_the_team_is_not_replayed_its_invitation(client, world):
    clinician = world["clinician_team"]
    url = f"/api/v1/clinician/teams/{world.team_id}/invitations"
    body = {"patient_email": world["patient_b"].email, "reason": "Referral from the GP"}
    headers = {**clinician.headers, "Idempotency-Key": "invite-0001"}
    assert client.post(url, json=body, headers=headers).status_code == 202
    assert client.delete(f"/api/v1/clinician/teams/{world.team_id}/membership",
                         headers=clinician.headers).status_code == 204
    replayed = client.post(url, json=body, headers=headers)
    assert_problem(replayed, 404)
    assert world["patient_b"].email not in replayed.get_data(as_text=True)


def _reminder_at(client, patient, key, title, at):
    return client.post(f"/api/v1/patients/{patient.id}/reminders", headers={**patient.headers, "Idempotency-Key": key},
                       json={"kind": "tens", "title": title, "schedule": {"type": "weekly", "times": [at]}})


def test_a_key_whose_request_failed_after_writing_refuses_another_body_and_its_retry_finishes_the_work(
        client, world, db, services, monkeypatch):
    """The first attempt stores its reminder, then the database goes away before the occurrences (503). The key
    stays bound to that body: another body with it would be a new claim, a second reminder beside the first
    attempt's; the same body runs again and finishes the first attempt's reminder."""
    patient, key = world["patient_a"], "failed-after-01"
    monkeypatch.setattr(services.stores.occurrences, "insert_new", dead_database)
    assert_problem(_reminder_at(client, patient, key, "Morning session", "08:00"), 503)
    monkeypatch.undo()
    assert db.reminders.count_documents({"patient_id": patient.id}) == 1

    other = _reminder_at(client, patient, key, "Evening session", "19:00")
    assert_problem(other, 422)
    assert [r["title"] for r in db.reminders.find({"patient_id": patient.id})] == ["Morning session"]

    retried = _reminder_at(client, patient, key, "Morning session", "08:00")
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    assert retried.json["id"] == db.reminders.find_one({"patient_id": patient.id})["_id"]
    assert db.reminders.count_documents({"patient_id": patient.id}) == 1
    assert db.reminder_occurrences.count_documents({"patient_id": patient.id}) >= 2
    replayed = _reminder_at(client, patient, key, "Morning session", "08:00")
    assert replayed.headers["Idempotent-Replayed"] == "true" and replayed.json == retried.json


def test_a_key_whose_request_failed_before_writing_lets_the_same_request_run_again(client, world, db, services,
                                                                                  monkeypatch):
    patient, key = world["patient_a"], "failed-before-01"
    monkeypatch.setattr(services.stores.reminders, "create", dead_database)
    assert_problem(_reminder_at(client, patient, key, "Morning session", "08:00"), 503)
    monkeypatch.undo()
    assert db.reminders.count_documents({"patient_id": patient.id}) == 0
    retried = _reminder_at(client, patient, key, "Morning session", "08:00")
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    assert db.reminders.count_documents({"patient_id": patient.id}) == 1


def test_a_retry_that_cannot_read_yet_what_its_first_attempt_stored_is_told_to_retry_not_to_use_a_new_key(
        client, world, db, services, monkeypatch):
    """On a replica set the first attempt's reminder can be on the primary and not yet on the majority reads see
    (its write concern timed out: 503). The retry's insert is refused as a duplicate and its read-back finds
    nothing: answered 409 "this key made another reminder; send it with a new key", an app that obeyed made a
    second reminder once the first was confirmed. It is a 503 now, the key still bound, and a later retry
    finishes the one reminder."""
    patient, key = world["patient_a"], "lagging-read-01"
    monkeypatch.setattr(services.stores.occurrences, "insert_new", dead_database)
    assert_problem(_reminder_at(client, patient, key, "Morning session", "08:00"), 503)
    monkeypatch.setattr(services.stores.reminders.col, "find_one", lambda *args, **kwargs: None)  # (not yet readable)

    lagging = _reminder_at(client, patient, key, "Morning session", "08:00")
    assert_problem(lagging, 503)
    assert lagging.headers["Retry-After"]
    monkeypatch.undo()
    assert_problem(_reminder_at(client, patient, key, "Evening session", "19:00"), 422)

    retried = _reminder_at(client, patient, key, "Morning session", "08:00")
    assert retried.status_code == 201
    assert [r["title"] for r in db.reminders.find({"patient_id": patient.id})] == ["Morning session"]


def test_a_key_bound_by_a_failure_after_writing_stays_bound_when_its_retry_is_refused(
        client, world, db, services, monkeypatch):
    """A retry of an interrupted request can itself be refused (a 409 while the first write is not readable, a
    date check that moved past midnight). Freed then, the key took another body as a new claim: a second
    reminder beside the first attempt's."""
    from companion.domain.errors import Conflict

    patient, key = world["patient_a"], "bound-after-01"
    monkeypatch.setattr(services.stores.occurrences, "insert_new", dead_database)
    assert_problem(_reminder_at(client, patient, key, "Morning session", "08:00"), 503)
    monkeypatch.undo()

    def refused(*args, **kwargs):
        raise Conflict("refused on the retry")

    monkeypatch.setattr(services.stores.reminders, "create", refused)
    assert_problem(_reminder_at(client, patient, key, "Morning session", "08:00"), 409)
    monkeypatch.undo()

    assert_problem(_reminder_at(client, patient, key, "Evening session", "19:00"), 422)
    assert [r["title"] for r in db.reminders.find({"patient_id": patient.id})] == ["Morning session"]
    assert _reminder_at(client, patient, key, "Morning session", "08:00").status_code == 201
    assert db.reminders.count_documents({"patient_id": patient.id}) == 1
