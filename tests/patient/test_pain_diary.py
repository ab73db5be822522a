"""The pain diary: entries, BPI scores and their internal rules, before/after ratings, offline replay stored
once, a client id reused for other content, sync, edits and deletions that name their version."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from companion.domain.access import CaregiverPermissions
from tests.patient.conftest import START
from tests.patient.helpers import snapshot
from tests.support.problems import assert_problem


def entry(n: int, **extra) -> dict:
    return {"client_entry_id": f"entry-{n:04d}", "recorded_at": (START - timedelta(hours=n)).isoformat(),
            "nrs": n % 11, **extra}


def url(world, tail=""):
    return f"/api/v1/patients/{world['patient_a'].id}/pain-entries{tail}"


def test_an_entry_sent_again_with_the_same_content_answers_the_stored_entry(client, world, db):
    sent = entry(3, context={"location": "lower back", "note": "stairs"})
    first = client.post(url(world), json=sent, headers=world["patient_a"].headers)
    assert first.status_code == 201
    again = client.post(url(world), json=sent, headers=world["patient_a"].headers)
    assert again.status_code == 200
    assert again.json == first.json
    assert again.headers["ETag"] == first.headers["ETag"] == f'"{first.json["version"]}"'
    assert db.pain_entries.count_documents({}) == 1


def test_a_client_id_sent_again_with_other_content_is_a_conflict_showing_the_stored_entry(client, world, db):
    first = client.post(url(world), json=entry(3), headers=world["patient_a"].headers)
    body = assert_problem(client.post(url(world), json=entry(3, nrs=9), headers=world["patient_a"].headers), 409)
    assert body["current"] == first.json
    assert body["errors"] == {"client_entry_id": ["already used for other content"]}
    assert db.pain_entries.find_one({})["nrs"] == 3


def test_brief_pain_inventory_scores_are_computed(client, world):
    bpi = {"worst": 8, "least": 2, "average": 5, "now": 6,
           "interference": {"general_activity": 4, "mood": 5, "walking_ability": 6, "normal_work": 3,
                            "relations": 2, "sleep": 7, "enjoyment_of_life": 8}}
    body = client.post(url(world), json=entry(1, bpi=bpi), headers=world["patient_a"].headers).json
    assert body["bpi"]["severity"] == 5.25
    assert body["bpi"]["interference_score"] == 5.0


def test_interference_needs_at_least_four_items(client, world):
    bpi = {"worst": 4, "least": 2, "average": 3, "now": 3, "interference": {"mood": 5, "sleep": 7, "relations": 3}}
    body = client.post(url(world), json=entry(1, bpi=bpi), headers=world["patient_a"].headers).json
    assert body["bpi"]["severity"] == 3.0
    assert body["bpi"]["interference_score"] is None


def test_before_and_after_ratings_link_to_a_tens_session(client, world):
    headers = world["patient_a"].headers
    before = client.post(url(world), json=entry(2, session_record_id="CTU-A0001:17", phase="before"),
                         headers=headers)
    after = client.post(url(world), json=entry(1, session_record_id="CTU-A0001:17", phase="after"), headers=headers)
    assert (before.json["phase"], after.json["phase"]) == ("before", "after")
    assert before.json["session_record_id"] == after.json["session_record_id"] == "CTU-A0001:17"


def test_the_same_batch_uploaded_three_times_stores_each_entry_once(client, world, db):
    batch = {"entries": [entry(n) for n in range(1, 41)]}
    answers = [client.post(url(world, "/batch"), json=batch, headers=world["patient_a"].headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [(a.json["created"], a.json["duplicates"]) for a in answers] == [(40, 0), (0, 40), (0, 40)]
    assert [i["id"] for i in answers[0].json["items"]] == [i["id"] for i in answers[2].json["items"]]
    assert db.pain_entries.count_documents({"patient_id": world["patient_a"].id}) == 40


def test_the_same_batch_uploaded_concurrently_stores_each_entry_once(app, world, db):
    batch = {"entries": [entry(n) for n in range(1, 31)]}
    barrier = threading.Barrier(4)
    answers = []

    def upload():
        client = app.test_client()
        barrier.wait()
        answers.append(client.post(url(world, "/batch"), json=batch, headers=world["patient_a"].headers))

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200] * 4
    assert sum(a.json["created"] for a in answers) == 30
    ids = {tuple(i["id"] for i in a.json["items"]) for a in answers}
    assert len(ids) == 1
    assert db.pain_entries.count_documents({"patient_id": world["patient_a"].id}) == 30


def test_a_repeated_id_inside_one_batch_is_stored_once_and_other_content_under_it_is_a_conflict(client, world, db):
    batch = {"entries": [entry(1), entry(1), entry(1, nrs=9)]}
    body = client.post(url(world, "/batch"), json=batch, headers=world["patient_a"].headers).json
    assert [i["status"] for i in body["items"]] == ["created", "duplicate", "conflict"]
    assert len({i["id"] for i in body["items"]}) == 1
    assert body["items"][2]["entry"]["nrs"] == 1
    assert (body["created"], body["duplicates"], body["conflicts"]) == (1, 1, 1)
    assert db.pain_entries.count_documents({}) == 1


def test_changes_since_pages_through_creations_edits_and_deletions(client, world, clock):
    headers = world["patient_a"].headers
    ids = [client.post(url(world), json=entry(n), headers=headers).json["id"] for n in range(1, 6)]
    first = client.get(url(world, "/changes?limit=3"), headers=headers).json
    assert [e["id"] for e in first["items"]] == ids[:3] and first["has_more"]
    rest = client.get(url(world, f"/changes?limit=3&cursor={first['next_cursor']}"), headers=headers).json
    assert [e["id"] for e in rest["items"]] == ids[3:] and not rest["has_more"]
    clock.shift(60)
    assert client.patch(url(world, f"/{ids[0]}"), json={"nrs": 10}, headers=headers).status_code == 200
    clock.shift(60)
    assert client.delete(url(world, f"/{ids[1]}"), headers=headers).status_code == 204
    changed = client.get(url(world, f"/changes?cursor={rest['next_cursor']}"), headers=headers).json
    assert [(e["id"], e["nrs"], e["deleted"]) for e in changed["items"]] == [(ids[0], 10, False),
                                                                              (ids[1], 2, True)]
    nothing_new = client.get(url(world, f"/changes?cursor={changed['next_cursor']}"), headers=headers).json
    assert nothing_new["items"] == []
    assert nothing_new["next_cursor"] == changed["next_cursor"]


@pytest.mark.parametrize("cursor", ["1772442000000.69a55190a1eed7571e4b377a", "not-a-cursor", "99999"],
                         ids=["cursor of the old feed", "garbage", "never issued"])
def test_a_cursor_the_feed_cannot_continue_from_is_told_to_resync(client, world, cursor):
    client.post(url(world), json=entry(1), headers=world["patient_a"].headers)
    body = assert_problem(client.get(url(world, "/changes"), query_string={"cursor": cursor},
                                     headers=world["patient_a"].headers), 410)
    assert body["type"].endswith("/resync-required")
    assert "without a cursor" in body["detail"]


def test_an_edit_naming_a_stale_version_is_refused_with_the_current_entry(client, world, db):
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(4), headers=headers)
    stale = created.headers["ETag"]
    first = client.patch(url(world, f"/{created.json['id']}"), json={"nrs": 6}, headers={**headers, "If-Match": stale})
    assert first.status_code == 200 and first.headers["ETag"] != stale
    second = client.patch(url(world, f"/{created.json['id']}"), json={"nrs": 8}, headers={**headers, "If-Match": stale})
    body = assert_problem(second, 412)
    assert body["current"] == first.json
    assert second.headers["ETag"] == first.headers["ETag"]
    assert db.pain_entries.find_one({})["nrs"] == 6


def test_a_retried_edit_succeeds_though_its_version_moved_on_and_writes_nothing(client, world):
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(4), headers=headers)
    change = {"nrs": 6, "context": {"note": "after the walk"}}
    first = client.patch(url(world, f"/{created.json['id']}"), json=change,
                         headers={**headers, "If-Match": created.headers["ETag"]})
    retried = client.patch(url(world, f"/{created.json['id']}"), json=change,
                           headers={**headers, "If-Match": created.headers["ETag"]})
    assert retried.status_code == 200
    assert retried.json == first.json


def test_an_edit_without_if_match_changes_only_its_fields_on_the_current_version(client, world):
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(4, context={"mood": 3}), headers=headers).json
    client.patch(url(world, f"/{created['id']}"), json={"context": {"mood": 5}}, headers=headers)
    second = client.patch(url(world, f"/{created['id']}"), json={"nrs": 2}, headers=headers).json
    assert (second["nrs"], second["context"]["mood"]) == (2, 5)


def test_an_edit_of_the_context_changes_only_the_items_it_names(client, world, db):
    # Two phones (or a phone and a caregiver's tablet), neither naming a version: the mood from one and the
    # note from the other both stay, and what the patient wrote first is never wiped by an edit of the mood.
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(4, context={"mood": 3, "note": "after the walk",
                                                             "location": "lower back"}), headers=headers).json
    target = url(world, f"/{created['id']}")
    client.patch(target, json={"context": {"mood": 5}}, headers=headers)
    edited = client.patch(target, json={"context": {"note": "after the long walk", "location": None}},
                          headers=headers)
    assert edited.status_code == 200
    assert edited.json["context"] == {"location": None, "activity": None, "sleep_quality": None, "mood": 5,
                                      "note": "after the long walk"}
    assert db.pain_entries.find_one({"_id": created["id"]})["context"] == edited.json["context"]
    # The whole context sent as null removes it.
    assert client.patch(target, json={"context": None}, headers=headers).json["context"] is None


def test_an_edit_of_the_pain_form_changes_only_the_items_it_names_and_the_form_must_still_agree(client, world, db):
    headers = world["patient_a"].headers
    bpi = {"worst": 8, "least": 2, "average": 5, "now": 6,
           "interference": {"general_activity": 4, "mood": 6, "walking_ability": 2, "normal_work": 5,
                            "relations": 1, "sleep": 7, "enjoyment_of_life": 3}}
    created = client.post(url(world), json=entry(1, bpi=bpi), headers=headers)
    target = url(world, f"/{created.json['id']}")
    edited = client.patch(target, json={"bpi": {"worst": 9, "interference": {"sleep": 9}}}, headers=headers)
    assert edited.status_code == 200
    form = edited.json["bpi"]
    assert (form["worst"], form["least"], form["average"], form["now"]) == (9, 2, 5, 6)
    assert form["interference"] == {**bpi["interference"], "sleep": 9}
    assert form["severity"] == 5.5 and form["interference_score"] == pytest.approx((28 - 7 + 9) / 7)
    # Merged with the stored items, the form must still agree with itself: refused per item, nothing stored.
    body = assert_problem(client.patch(target, json={"bpi": {"least": 7}}, headers=headers), 422)
    assert set(body["errors"]["bpi"]) == {"average", "now"}
    assert db.pain_entries.find_one({"_id": created.json["id"]})["bpi"]["least"] == 2
    # On an entry with no form yet, the four severity items are all needed.
    bare = client.post(url(world), json=entry(2), headers=headers).json
    body = assert_problem(client.patch(url(world, f"/{bare['id']}"), json={"bpi": {"worst": 5, "least": 1}},
                                       headers=headers), 422)
    assert set(body["errors"]["bpi"]) == {"average", "now"}
    assert db.pain_entries.find_one({"_id": bare["id"]})["bpi"] is None


def test_an_edit_that_no_longer_agrees_with_a_newer_version_is_refused_as_stale(client, world):
    # Merged with a version the phone has not seen, the edit would contradict itself: the phone is shown the
    # current entry (412) to merge again, not told its own edit was wrong.
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(1, bpi={"worst": 8, "least": 2, "average": 5, "now": 6}),
                          headers=headers)
    target = url(world, f"/{created.json['id']}")
    assert client.patch(target, json={"bpi": {"worst": 6, "now": 4}}, headers=headers).status_code == 200
    stale = client.patch(target, json={"bpi": {"average": 7}}, headers={**headers, "If-Match": created.headers["ETag"]})
    assert assert_problem(stale, 412)["current"]["bpi"]["worst"] == 6


def test_a_deletion_retried_answers_as_the_first_did(client, world):
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(4), headers=headers)
    target = url(world, f"/{created.json['id']}")
    assert client.delete(target, headers={**headers, "If-Match": created.headers["ETag"]}).status_code == 204
    assert client.delete(target, headers={**headers, "If-Match": created.headers["ETag"]}).status_code == 204
    assert client.delete(target, headers=headers).status_code == 204
    assert client.get(target, headers=headers).json["deleted"] is True
    assert_problem(client.delete(url(world, "/no-such-entry"), headers=headers), 404)


def test_a_deletion_naming_a_stale_version_is_refused(client, world, db):
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(4), headers=headers)
    client.patch(url(world, f"/{created.json['id']}"), json={"nrs": 7}, headers=headers)
    body = assert_problem(client.delete(url(world, f"/{created.json['id']}"),
                                        headers={**headers, "If-Match": created.headers["ETag"]}), 412)
    assert (body["current"]["nrs"], body["current"]["deleted"]) == (7, False)
    assert db.pain_entries.find_one({})["deleted"] is False


def test_an_edit_naming_a_version_that_another_phone_since_deleted_is_a_412_with_the_tombstone(client, world, db):
    """Two phones hold version v; one deletes the entry, the other edits it with If-Match v: the README promises
    the loser a 412 with the object as stored now (GET shows the tombstone), not a 404 'no such entry'. Naming
    the tombstone's own version is no stale copy to merge: the entry is deleted (404), so no app loops on 412."""
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(1), headers=headers)
    target = url(world, f"/{created.json['id']}")
    assert client.delete(target, headers={**headers, "If-Match": created.headers["ETag"]}).status_code == 204
    tombstone = client.get(target, headers=headers)
    assert tombstone.json["deleted"] is True
    refused = client.patch(target, json={"nrs": 9}, headers={**headers, "If-Match": created.headers["ETag"]})
    assert assert_problem(refused, 412)["current"]["deleted"] is True
    assert refused.headers["ETag"] == tombstone.headers["ETag"]
    assert_problem(client.patch(target, json={"nrs": 9}, headers={**headers, "If-Match": tombstone.headers["ETag"]}),
                   404)
    assert db.pain_entries.find_one({})["nrs"] == entry(1)["nrs"]


def test_reading_an_entry_again_with_its_etag_answers_304(client, world):
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(4), headers=headers)
    target = url(world, f"/{created.json['id']}")
    same = client.get(target, headers={**headers, "If-None-Match": created.headers["ETag"]})
    assert (same.status_code, same.get_data()) == (304, b"")
    client.patch(target, json={"nrs": 9}, headers=headers)
    assert client.get(target, headers={**headers, "If-None-Match": created.headers["ETag"]}).status_code == 200


def test_a_weak_if_match_never_matches_and_a_malformed_one_is_refused(client, world):
    headers = world["patient_a"].headers
    created = client.post(url(world), json=entry(4), headers=headers).json
    weak = f'W/"{created["version"]}"'  # If-Match compares strongly (RFC 9110 13.1.1)
    assert_problem(client.patch(url(world, f"/{created['id']}"), json={"nrs": 1},
                                headers={**headers, "If-Match": weak}), 412)
    assert_problem(client.patch(url(world, f"/{created['id']}"), json={"nrs": 1},
                                headers={**headers, "If-Match": str(created["version"])}), 400)


def test_a_deleted_entry_leaves_the_range_listing_and_cannot_be_edited(client, world):
    headers = world["patient_a"].headers
    kept, gone = (client.post(url(world), json=entry(n), headers=headers).json["id"] for n in (1, 2))
    client.delete(url(world, f"/{gone}"), headers=headers)
    listed = client.get(url(world), query_string={"from": (START - timedelta(days=1)).isoformat(),
                                                  "to": START.isoformat()}, headers=headers).json["items"]
    assert [e["id"] for e in listed] == [kept]
    assert_problem(client.patch(url(world, f"/{gone}"), json={"nrs": 1}, headers=headers), 404)


def test_a_caregiver_without_note_permission_does_not_see_notes(client, world):
    client.post(url(world), json=entry(1, context={"note": "private words", "mood": 4}),
                headers=world["patient_a"].headers)
    seen = client.get(url(world, "/changes"), headers=world["caregiver_linked"].headers)
    assert seen.status_code == 200
    assert seen.json["items"][0]["context"] == {"location": None, "activity": None, "sleep_quality": None,
                                                "mood": 4, "note": None}
    assert "private words" not in seen.get_data(as_text=True)


def test_a_caregiver_who_may_not_read_notes_edits_an_entry_without_erasing_the_note(client, world, services, db):
    services.stores.care_links.grant(world["patient_a"].id, world["caregiver_linked"].id,
                                     CaregiverPermissions(write=True))
    created = client.post(url(world), json=entry(1, context={"note": "private words", "mood": 4}),
                          headers=world["patient_a"].headers).json
    edited = client.patch(url(world, f"/{created['id']}"), json={"context": {"mood": 6, "note": None}},
                          headers=world["caregiver_linked"].headers)
    assert edited.status_code == 200 and edited.json["context"]["note"] is None  # still not shown to them
    stored = db.pain_entries.find_one({"_id": created["id"]})["context"]
    assert (stored["mood"], stored["note"]) == (6, "private words")


@pytest.mark.parametrize("sent", [{"mood": 6}, None])
def test_a_caregiver_who_may_not_read_the_patients_words_never_erases_them(client, world, services, db, sent):
    services.stores.care_links.grant(world["patient_a"].id, world["caregiver_linked"].id,
                                     CaregiverPermissions(write=True))
    words = {"location": "lower back", "activity": "gardening", "note": "private words"}
    created = client.post(url(world), json=entry(1, context={**words, "mood": 4}),
                          headers=world["patient_a"].headers).json
    edited = client.patch(url(world, f"/{created['id']}"), json={"context": sent},
                          headers=world["caregiver_linked"].headers)
    assert edited.status_code == 200 and edited.json["context"]["location"] is None  # still not shown to them
    stored = db.pain_entries.find_one({"_id": created["id"]})["context"]
    assert {k: stored[k] for k in words} == words


def test_a_caregiver_cannot_tell_by_re_sending_an_entry_whether_a_guess_at_hidden_words_is_right(
        client, world, services):
    services.stores.care_links.grant(world["patient_a"].id, world["caregiver_linked"].id,
                                     CaregiverPermissions(write=True))
    sent = entry(2, context={"location": "lower back", "activity": "gardening", "mood": 4})
    assert client.post(url(world), json=sent, headers=world["patient_a"].headers).status_code == 201
    guesses = [{**sent, "context": {**sent["context"], "location": place, "activity": doing}}
               for place, doing in (("knee", "walking"), ("lower back", "gardening"), ("neck", "reading"))]
    answers = client.post(url(world, "/batch"), json={"entries": guesses},
                          headers=world["caregiver_linked"].headers).json["items"]
    assert len({a["status"] for a in answers}) == 1  # the same answer, right guess or wrong
    single = [client.post(url(world), json=g, headers=world["caregiver_linked"].headers).status_code
              for g in guesses]
    assert len(set(single)) == 1
    # The patient, who wrote them, is still told a different re-send from the same one.
    assert client.post(url(world), json=guesses[0], headers=world["patient_a"].headers).status_code == 409
    assert client.post(url(world), json=sent, headers=world["patient_a"].headers).status_code == 200


def test_a_view_only_caregiver_cannot_write_the_diary(client, world, db):
    assert client.post(url(world), json=entry(1), headers=world["caregiver_linked"].headers).status_code == 403
    assert db.pain_entries.count_documents({}) == 0


BAD_ENTRIES = {
    "pain 11": entry(1, nrs=11),
    "pain -1": entry(1, nrs=-1),
    "pain as a fraction": entry(1, nrs=6.5),
    "more than 5 minutes in the future": entry(1, recorded_at=(START + timedelta(minutes=6)).isoformat()),
    "no time zone": entry(1, recorded_at="2026-03-01T10:00:00"),
    "unknown field": entry(1, mood_colour="blue"),
    "server-owned field": entry(1, deleted=True),
    "operator injection": entry(1, nrs={"$ne": None}),
    "operator key in context": entry(1, context={"$where": "1"}),
    "phase without session": entry(1, phase="after"),
    "bpi score 11": entry(1, bpi={"worst": 11, "least": 0, "average": 5, "now": 5}),
    "bpi worst below least": entry(1, bpi={"worst": 3, "least": 5, "average": 4, "now": 4}),
    "bpi average above worst": entry(1, bpi={"worst": 6, "least": 2, "average": 7, "now": 4}),
    "bpi now below least": entry(1, bpi={"worst": 6, "least": 2, "average": 4, "now": 1}),
    "short client id": entry(1, client_entry_id="x"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_a_bad_entry_is_refused_and_stores_nothing(client, world, db, case):
    before = snapshot(db, "pain_entries")
    body = assert_problem(client.post(url(world), json=BAD_ENTRIES[case], headers=world["patient_a"].headers), 422)
    assert body["errors"]
    assert snapshot(db, "pain_entries") == before


def test_a_batch_of_over_500_entries_or_of_no_list_stores_nothing(client, world, db):
    """The batch itself is checked whole (its entries one by one: tests/patient/test_diary_batch_items.py)."""
    headers = world["patient_a"].headers
    assert_problem(client.post(url(world, "/batch"), json={"entries": [entry(1)] * 501}, headers=headers), 422)
    assert_problem(client.post(url(world, "/batch"), json={"entries": entry(1)}, headers=headers), 422)
    assert_problem(client.post(url(world, "/batch"), json={"entries": []}, headers=headers), 422)
    assert db.pain_entries.count_documents({}) == 0


def test_a_brief_pain_inventory_that_contradicts_itself_is_refused_per_item(client, world, db):
    bpi = {"worst": 4, "least": 5, "average": 8, "now": 2}
    body = assert_problem(client.post(url(world), json=entry(1, bpi=bpi), headers=world["patient_a"].headers), 422)
    errors = body["errors"]["json"]["bpi"]
    assert set(errors) == {"least", "average", "now"}
    assert "worst pain" in errors["least"][0] and "worst" in errors["average"][0] and "least" in errors["now"][0]
    consistent = {"worst": 7, "least": 2, "average": 7, "now": 2}
    assert client.post(url(world), json=entry(2, bpi=consistent), headers=world["patient_a"].headers).status_code == 201
    assert db.pain_entries.count_documents({}) == 1


def test_entries_recorded_at_the_same_instant_page_in_the_order_of_their_ids(client, world, db):
    """Offset pages of a range read the query again from its start: entries tied on ``recorded_at`` must come in
    one order every time (their ids), or a page repeats one and skips another."""
    headers = world["patient_a"].headers
    ids = [client.post(url(world), json={**entry(1), "client_entry_id": f"same-instant-{n}"}, headers=headers).json["id"]
           for n in range(6)]
    # Stored again newest first: the database's own order of the ties is not the ids' (MongoDB's is unspecified).
    stored = list(db.pain_entries.find({"_id": {"$in": ids}}))
    db.pain_entries.delete_many({"_id": {"$in": ids}})
    db.pain_entries.insert_many(sorted(stored, key=lambda e: e["_id"], reverse=True))
    paged, answer = [], client.get(url(world), headers=headers, query_string={
        "from": (START - timedelta(days=1)).isoformat(), "to": START.isoformat(), "limit": 2}).json
    while True:
        paged += [e["id"] for e in answer["items"]]
        if not answer["next"]:
            break
        answer = client.get(answer["next"], headers=headers).json
    assert paged == sorted(ids)
