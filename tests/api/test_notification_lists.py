"""Lists of notifications page by what the reader may see: a caregiver's page is full while more of the
notifications the patient still shares with them exist, and ``next`` says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.store.outbox import NotificationRequest, Outbox
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


def _years_of_reminders(services, db, recipient: str, patient: str, count: int) -> list[str]:
    """``count`` reminders' notifications, created through the store three to an instant (so that a page can end
    between notifications of one instant), all before now; their ids."""
    start = services.clock() - timedelta(days=30)
    instants = iter([start + timedelta(minutes=n // 3) for n in range(count)])
    requests = [NotificationRequest(f"reminder:r{n}:2026-12-01T08:00", recipient, patient, "therapy_reminder",
                                    send_at=start) for n in range(count)]
    assert all(Outbox(db, clock=lambda: next(instants)).schedule_many(requests))
    return [doc["_id"] for doc in db.push_outbox.find({"recipient_user_id": recipient}, {"_id": 1})]


def _walk_with_one_created_after_the_first_page(client, headers, url: str, create) -> tuple[list[str], str]:
    """Every notification id a walk of the list's pages answers, in order, with ``create()`` called between its
    first and second page; and the id ``create`` made."""
    answer = client.get(url, headers=headers)
    assert answer.status_code == 200, answer.json
    seen, following = [n["id"] for n in answer.json["items"]], answer.json["next"]
    newer = create()
    while following:
        answer = client.get(following, headers=headers)
        assert answer.status_code == 200, answer.json
        seen, following = seen + [n["id"] for n in answer.json["items"]], answer.json["next"]
    return seen, newer


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


def test_a_persons_list_pages_past_its_500th_notification_and_one_created_between_pages_shifts_nothing(
        client, world, services, db):
    """A patient with months of reminders: the list paged by position read at most 500 and stopped there without a
    word (no `next`), and a notification created between two pages moved the rest down a place, so the next page
    repeated the last one read. Every one is reached once, and the newer one heads the list read again."""
    patient = world["patient_a"]
    old = _years_of_reminders(services, db, patient.id, patient.id, 700)
    seen, newer = _walk_with_one_created_after_the_first_page(
        client, patient.headers, ME + "?limit=200",
        lambda: services.stores.outbox.schedule(source_key="reminder:new:2026-12-02T08:00", recipient_user_id=patient.id,
                                                patient_id=patient.id, kind="therapy_reminder",
                                                send_at=services.clock())[0]["_id"])
    assert len(seen) == len(set(seen)) == 700 and set(seen) == set(old)
    assert client.get(ME + "?limit=1", headers=patient.headers).json["items"][0]["id"] == newer


def test_the_lists_are_read_from_an_index_past_the_first_page(db):
    """The pages after the first add where the last one ended (a keyset) to the read by recipient or patient."""
    db.push_outbox.insert_one({"_id": "probe", "recipient_user_id": "c", "patient_id": "p"})
    at = datetime(2026, 12, 1, tzinfo=UTC)
    after = {"$or": [{"created_at": {"$lt": at}}, {"created_at": at, "_id": {"$lt": "probe"}}]}
    shared = [{"patient_id": "c"}, {"patient_id": {"$in": ["p"]}, "share_kind": {"$exists": False}}]
    for query in ({"recipient_user_id": "c", **after},
                  {"recipient_user_id": "c", "$and": [{"$or": shared}, after]}, {"patient_id": "p", **after}):
        plan = plan_of(db, "push_outbox", query)
        if is_ferretdb(db):
            assert "USING INDEX" in plan, plan
        else:
            assert "COLLSCAN" not in plan, plan


def test_the_list_about_a_patient_pages_past_its_500th_notification_and_one_created_between_pages_shifts_nothing(
        client, world, services, db):
    """The list about a patient read by position had no cap of 500 but moved down a place when a notification was
    created between two pages (the next page repeated one), and read every page before the one asked for again."""
    patient = world["patient_a"]
    old = _years_of_reminders(services, db, patient.id, patient.id, 700)
    about = f"/api/v1/patients/{patient.id}/notifications"
    seen, newer = _walk_with_one_created_after_the_first_page(
        client, patient.headers, about + "?limit=300",
        lambda: services.stores.outbox.schedule(source_key="reminder:new:2026-12-02T08:00", recipient_user_id=patient.id,
                                                patient_id=patient.id, kind="therapy_reminder",
                                                send_at=services.clock())[0]["_id"])
    assert len(seen) == len(set(seen)) == 700 and set(seen) == set(old)
    assert client.get(about + "?limit=1", headers=patient.headers).json["items"][0]["id"] == newer
