"""Lists of notifications page by what the reader may see: a caregiver's page is full while more of the
notifications the patient still shares with them exist, and ``next`` says so."""

from __future__ import annotations

from datetime import timedelta

from tests.proof.test_database_server import is_ferretdb, plan_of

ME = "/api/v1/me/notifications"


def _queue(services, db, *, source: str, recipient: str, patient: str, kind: str, share_kind: str | None,
           minutes_ago: int) -> str:
    at = services.clock() - timedelta(minutes=minutes_ago)
    doc, _ = services.stores.outbox.schedule(source_key=source, recipient_user_id=recipient, patient_id=patient,
                                             kind=kind, send_at=at, share_kind=share_kind)
    db.push_outbox.update_one({"_id": doc["_id"]}, {"$set": {"created_at": at, "state": "sent", "sent_at": at}})
    return doc["_id"]


def _pages(client, headers, url: str) -> list[list[str]]:
    pages = []
    while url:
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200, answer.json
        pages.append([n["id"] for n in answer.json["items"]])
        url = answer.json["next"]
        assert len(pages) < 20
    return pages


def _missed_then_newer_flares(services, db, world) -> tuple[list[str], list[str]]:
    """Three missed-session notifications to the caregiver (shared with them), then three newer pain-flare ones
    (not shared: the patient shares only missed sessions with them)."""
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    missed = [_queue(services, db, source=f"alert:missed{i}", recipient=caregiver.id, patient=patient.id,
                     kind="caregiver_missed_tens_session", share_kind="missed_session", minutes_ago=60 - i)
              for i in range(3)]
    flares = [_queue(services, db, source=f"alert:flare{i}", recipient=caregiver.id, patient=patient.id,
                     kind="caregiver_pain_flare", share_kind="pain_flare", minutes_ago=30 - i)
              for i in range(3)]
    return missed[::-1], flares[::-1]  # newest first


def test_a_caregivers_own_list_pages_through_what_is_shared_past_newer_unshared_ones(client, world, services, db):
    caregiver = world["caregiver_linked"]
    missed, _ = _missed_then_newer_flares(services, db, world)
    # Not shared either: about a patient who never linked the caregiver.
    _queue(services, db, source="alert:other", recipient=caregiver.id, patient=world["patient_b"].id,
           kind="caregiver_missed_tens_session", share_kind="missed_session", minutes_ago=1)
    # About the caregiver themselves (an offer waiting for them): no consent needed.
    offer = _queue(services, db, source="caregiver-invitation:offer1", recipient=caregiver.id, patient=caregiver.id,
                   kind="generic_update", share_kind=None, minutes_ago=90)
    assert _pages(client, caregiver.headers, ME + "?limit=2") == [missed[:2], [missed[2], offer]]


def test_a_caregivers_list_about_the_patient_pages_through_what_is_shared(client, world, services, db):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    missed, flares = _missed_then_newer_flares(services, db, world)
    about = f"/api/v1/patients/{patient.id}/notifications"
    assert _pages(client, caregiver.headers, about + "?limit=2") == [missed[:2], missed[2:]]
    # The patient still sees every one of them, paged as before.
    assert _pages(client, patient.headers, about + "?limit=4") == [flares + missed[:1], missed[1:]]


def test_a_patients_own_list_is_every_notification_sent_to_them(client, world, services, db):
    patient = world["patient_a"]
    mine = [_queue(services, db, source=f"reminder:r{i}:2026-12-01T08:00", recipient=patient.id,
                   patient=patient.id, kind="therapy_reminder", share_kind=None, minutes_ago=10 - i) for i in range(3)]
    assert _pages(client, patient.headers, ME + "?limit=2") == [mine[::-1][:2], mine[::-1][2:]]


def test_a_persons_list_is_read_from_an_index(db):
    """GET /me/notifications reads by recipient: without an index of its own that read went through the whole
    outbox (every person's notifications)."""
    db.push_outbox.insert_one({"_id": "probe", "recipient_user_id": "c", "patient_id": "p"})
    mine = {"recipient_user_id": "c"}
    shared = {**mine, "$or": [{"patient_id": "c"}, {"patient_id": {"$in": ["p"]}, "share_kind": {"$exists": False}}]}
    for query in (mine, shared):
        plan = plan_of(db, "push_outbox", query)
        if is_ferretdb(db):
            assert "USING INDEX" in plan, plan
        else:
            assert "COLLSCAN" not in plan, plan
