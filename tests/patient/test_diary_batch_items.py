"""An offline batch of diary entries is answered item by item: an entry that is not valid (a score out of range, a
time the server cannot take, no id) is rejected on its own with its errors, and the others are stored. Refusing the
whole batch for one of them (422) lost every good entry of it for an app that takes a 422 as final, and left an app
that retries stuck behind it for good. An entry deleted on another phone and sent again is answered `deleted`."""

from __future__ import annotations

from datetime import timedelta

from companion.clock import now
from tests.patient.test_pain_diary import entry, url


def _batch(client, world, entries: list):
    answer = client.post(url(world, "/batch"), json={"entries": entries}, headers=world["patient_a"].headers)
    assert answer.status_code == 200, answer.json
    return answer.json


def test_an_entry_that_is_not_valid_is_rejected_alone_and_the_others_are_stored(client, world, db):
    ahead = {**entry(7), "recorded_at": (now() + timedelta(hours=2)).isoformat()}
    answer = _batch(client, world, [entry(1), entry(2, nrs=11), ahead, entry(3), {"nrs": 4}, "not an entry"])

    assert [(i["index"], i["status"]) for i in answer["items"]] == [
        (0, "created"), (1, "rejected"), (2, "rejected"), (3, "created"), (4, "rejected"), (5, "rejected")]
    rejected = {i["index"]: i for i in answer["items"] if i["status"] == "rejected"}
    assert rejected[1]["client_entry_id"] == "entry-0002" and "nrs" in rejected[1]["errors"]
    assert rejected[2]["client_entry_id"] == "entry-0007"
    assert rejected[2]["errors"] == {"recorded_at": ["must not be more than 5 minutes in the future"]}
    assert rejected[4]["client_entry_id"] is None and "client_entry_id" in rejected[4]["errors"]
    assert rejected[5]["client_entry_id"] is None and rejected[5]["errors"]
    assert all("id" not in i and "entry" not in i for i in rejected.values())
    assert (answer["created"], answer["rejected"], answer["duplicates"], answer["conflicts"]) == (2, 4, 0, 0)
    assert sorted(e["client_entry_id"] for e in db.pain_entries.find({})) == ["entry-0001", "entry-0003"]

    corrected = _batch(client, world, [entry(1), entry(2), entry(3)])  # the app corrects the one and sends again
    assert [i["status"] for i in corrected["items"]] == ["duplicate", "created", "duplicate"]
    assert db.pain_entries.count_documents({}) == 3


def test_a_batch_of_nothing_but_bad_entries_stores_nothing_and_says_why_for_each(client, world, db):
    answer = _batch(client, world, [entry(1, nrs=-1), entry(2, phase="before")])
    assert [(i["client_entry_id"], i["status"]) for i in answer["items"]] == [
        ("entry-0001", "rejected"), ("entry-0002", "rejected")]
    assert answer["rejected"] == 2 and answer["created"] == 0
    assert db.pain_entries.count_documents({}) == 0


def test_an_entry_deleted_on_another_phone_and_sent_again_is_answered_deleted(client, world, db):
    headers = world["patient_a"].headers
    stored = _batch(client, world, [entry(1), entry(2)])["items"]
    deleted = client.delete(url(world, f"/{stored[0]['id']}"), headers=headers)
    assert deleted.status_code == 204, deleted.json

    again = _batch(client, world, [entry(1), entry(2)])
    assert [i["status"] for i in again["items"]] == ["deleted", "duplicate"]
    assert again["items"][0]["entry"]["deleted"] is True
    assert (again["deleted"], again["duplicates"], again["created"]) == (1, 1, 0)
    assert db.pain_entries.count_documents({"deleted": {"$ne": True}}) == 1
