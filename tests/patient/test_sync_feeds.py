"""Change feeds: every collection the app syncs hands out creations, changes and deletions (tombstones) in
order, never reads past a write that has not finished, moves on from a writer that died, re-stamps a
writer that was given up, and tells a phone whose cursor is too old to resync in full."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.patient.conftest import START
from tests.patient.helpers import PLAN
from tests.support.problems import assert_problem
from tests.support.world import login


def base(world) -> str:
    return f"/api/v1/patients/{world['patient_a'].id}"


def follow(client, world, feed: str, cursor: str | None = None, who: str = "patient_a", limit: int = 500):
    """Read a feed to its end from ``cursor``: (items in order, the cursor to continue from)."""
    items = []
    while True:
        query = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        answer = client.get(f"{base(world)}/{feed}/changes", query_string=query, headers=world[who].headers)
        assert answer.status_code == 200, answer.json
        items += answer.json["items"]
        cursor = answer.json["next_cursor"]
        if not answer.json["has_more"]:
            return items, cursor


def months_later(client, world, clock, days: int) -> None:
    """Move the clock on and sign the patient in again (access tokens do not last months)."""
    clock.shift(timedelta(days=days).total_seconds())
    patient = world["patient_a"]
    world.people["patient_a"] = login(client, "patient_a", patient.email, patient.id, "patient")


def entry(n: int) -> dict:
    return {"client_entry_id": f"feed-entry-{n:04d}", "recorded_at": (START - timedelta(hours=n)).isoformat(),
            "nrs": n % 11}


REMINDER = {"kind": "medication", "title": "Tablet", "completion_window_min": 60,
            "schedule": {"type": "weekly", "times": ["09:30", "18:00"], "start_date": "2026-03-02"}}


def test_the_reminder_and_occurrence_feeds_carry_creation_change_stop_and_cancellations(client, world):
    headers = world["patient_a"].headers
    created = client.post(f"{base(world)}/reminders", json=REMINDER, headers=headers).json
    reminders, r_cursor = follow(client, world, "reminders")
    occurrences, o_cursor = follow(client, world, "occurrences")
    assert [r["id"] for r in reminders] == [created["id"]]
    assert {(o["local_date"], o["local_time"]) for o in occurrences} == {  # two days ahead
        ("2026-03-02", "09:30"), ("2026-03-02", "18:00"), ("2026-03-03", "09:30"), ("2026-03-03", "18:00")}
    changed = client.patch(f"{base(world)}/reminders/{created['id']}", headers=headers,
                           json={"schedule": {"type": "weekly", "times": ["09:30"]}}).json
    stopped_later = client.delete(f"{base(world)}/reminders/{created['id']}", headers=headers)
    assert stopped_later.status_code == 204
    reminders, _ = follow(client, world, "reminders", r_cursor)
    assert [(r["id"], r["active"], r["schedule"]["times"]) for r in reminders] == [(created["id"], False, ["09:30"])]
    assert reminders[0]["version"] > changed["version"] > created["version"]
    occurrences, _ = follow(client, world, "occurrences", o_cursor)
    assert {(o["local_date"], o["local_time"], o["status"], o["deleted"]) for o in occurrences} == {
        ("2026-03-02", "09:30", "cancelled", True), ("2026-03-02", "18:00", "cancelled", True),
        ("2026-03-03", "09:30", "cancelled", True), ("2026-03-03", "18:00", "cancelled", True)}


def test_an_occurrence_recorded_missed_or_snoozed_comes_through_its_feed(client, world, services, clock):
    headers = world["patient_a"].headers
    client.post(f"{base(world)}/reminders", json=REMINDER, headers=headers)
    _, cursor = follow(client, world, "occurrences")
    first = client.get(f"{base(world)}/occurrences", headers=headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()}).json["items"][0]
    clock.move_to(datetime(2026, 3, 2, 9, 35, tzinfo=UTC))
    client.post(f"{base(world)}/occurrences/{first['id']}/snooze", json={"minutes": 10}, headers=headers)
    clock.move_to(datetime(2026, 3, 2, 19, 30, tzinfo=UTC))
    services.reminders.mark_missed(datetime.now(UTC))
    changes, cursor = follow(client, world, "occurrences", cursor)
    assert sorted((o["local_time"], o["status"]) for o in changes) == [("09:30", "missed"), ("18:00", "missed")]
    client.patch(f"{base(world)}/occurrences/{first['id']}", headers=headers,
                 json={"status": "done", "at": "2026-03-02T09:50:00+00:00"})
    (done,), _ = follow(client, world, "occurrences", cursor)
    assert (done["id"], done["status"], done["on_time"]) == (first["id"], "done", True)


def test_the_plan_feed_carries_each_version_and_the_closing_of_the_one_before(client, world):
    clinician = world["clinician_team"].headers
    first = client.put(f"{base(world)}/therapy-plan", json=PLAN, headers=clinician).json
    _, cursor = follow(client, world, "therapy-plan")
    second = client.put(f"{base(world)}/therapy-plan", json=PLAN, headers=clinician).json
    changes, _ = follow(client, world, "therapy-plan", cursor)
    assert [(p["version"], p["active_to"] is None) for p in changes] == [(2, True), (1, False)]
    assert [p["id"] for p in changes] == [second["id"], first["id"]]


def test_the_practice_and_favourite_feeds_carry_starts_completions_and_removals(client, world, services, clock):
    services.library.load()
    headers = world["patient_a"].headers
    started = client.post(f"{base(world)}/practice", json={"item_slug": "three-breath-reset"}, headers=headers).json
    clock.shift(120)
    client.post(f"{base(world)}/practice/{started['id']}/complete", json={}, headers=headers)
    practice, _ = follow(client, world, "practice")
    assert [(p["id"], p["minutes"]) for p in practice] == [(started["id"], 2.0)]
    client.put(f"{base(world)}/favourites/three-breath-reset", headers=headers)
    _, cursor = follow(client, world, "favourites")
    assert client.delete(f"{base(world)}/favourites/three-breath-reset", headers=headers).status_code == 204
    assert client.delete(f"{base(world)}/favourites/three-breath-reset", headers=headers).status_code == 204
    removed, cursor = follow(client, world, "favourites", cursor)
    assert [(f["item_slug"], f["deleted"]) for f in removed] == [("three-breath-reset", True)]
    client.put(f"{base(world)}/favourites/three-breath-reset", headers=headers)
    back, _ = follow(client, world, "favourites", cursor)
    assert [(f["item_slug"], f["deleted"]) for f in back] == [("three-breath-reset", False)]
    assert [i["slug"] for i in client.get(f"{base(world)}/favourites", headers=headers).json["items"]] == \
        ["three-breath-reset"]
    assert_problem(client.delete(f"{base(world)}/favourites/body-scan-20", headers=headers), 404)


def test_a_feed_never_reads_past_a_change_whose_write_has_not_finished(client, world, services):
    """A slow writer reserves its number, a faster one writes after it: the feed waits for the slow one."""
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    slow = services.changes.stamp(pid, services.stores.pain_entries)
    seq = slow.__enter__()  # reserved, not yet written
    fast = client.post(f"{base(world)}/pain-entries", json=entry(2), headers=headers).json
    before, cursor = follow(client, world, "pain-entries")
    assert before == []
    services.stores.pain_entries.add(pid, {"client_entry_id": "slow-writer-1", "recorded_at": START, "nrs": 4},
                                     START, seq)
    slow.__exit__(None, None, None)
    after, _ = follow(client, world, "pain-entries", cursor)
    assert [e["client_entry_id"] for e in after] == ["slow-writer-1", fast["client_entry_id"]]


def test_a_write_whose_answer_was_lost_keeps_its_number_so_that_landing_late_it_is_still_read(
        client, world, services, clock):
    """The database took the write but its answer was lost (a dropped connection, a timeout), and the write
    lands after the request failed: had its number been settled at the failure, a feed read in between would
    have moved past it, and the entry would never reach the patient's other phone."""
    from pymongo.errors import NetworkTimeout

    pid, headers = world["patient_a"].id, world["patient_a"].headers
    with pytest.raises(NetworkTimeout), services.changes.stamp(pid, services.stores.pain_entries) as seq:
        raise NetworkTimeout("the answer was lost")
    client.post(f"{base(world)}/pain-entries", json=entry(2), headers=headers)
    before, cursor = follow(client, world, "pain-entries")
    assert before == [] and int(cursor.split(".")[0]) < seq  # held at the lost write's number
    services.stores.pain_entries.add(pid, {"client_entry_id": "landed-late-1", "recorded_at": START, "nrs": 4},
                                     START, seq)
    assert [e["client_entry_id"] for e in follow(client, world, "pain-entries", cursor)[0]] == []
    clock.shift(services.settings.sync_settle.total_seconds() + 1)  # then given up, as a crashed writer's
    after, _ = follow(client, world, "pain-entries", cursor)
    assert [e["client_entry_id"] for e in after] == ["landed-late-1", "feed-entry-0002"]


def test_a_copy_read_from_the_start_just_after_a_session_left_the_patient_is_not_told_to_start_again(
        client, world, services):
    """A session placed with another patient leaves no tombstone, so every older cursor must resync; a copy
    read from the start after it left cannot hold it, even while a write numbered before it is still running."""
    pid = world["patient_a"].id
    slow = services.changes.stamp(pid, services.stores.pain_entries)
    seq = slow.__enter__()  # reserved, not yet written
    services.changes.departed(pid)
    _, cursor = follow(client, world, "pain-entries")  # from the start
    services.stores.pain_entries.add(pid, {"client_entry_id": "slow-writer-2", "recorded_at": START, "nrs": 4},
                                     START, seq)
    slow.__exit__(None, None, None)
    after, _ = follow(client, world, "pain-entries", cursor)  # was 410: "sync again from the start"
    assert [e["client_entry_id"] for e in after] == ["slow-writer-2"]


def test_a_feed_moves_on_from_a_writer_that_died_after_the_settle_time(client, world, services, clock):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    services.stores.change_sequences.reserve(pid, 1, datetime.now(UTC))  # its process dies here
    client.post(f"{base(world)}/pain-entries", json=entry(3), headers=headers)
    assert follow(client, world, "pain-entries")[0] == []
    clock.shift(services.settings.sync_settle.total_seconds() + 1)
    assert [e["client_entry_id"] for e in follow(client, world, "pain-entries")[0]] == ["feed-entry-0003"]


def test_a_write_that_outlived_its_reservation_is_stamped_again_and_still_seen(client, world, services, clock):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    client.post(f"{base(world)}/pain-entries", json=entry(1), headers=headers)
    late = services.changes.stamp(pid, services.stores.pain_entries)
    seq = late.__enter__()
    clock.shift(services.settings.sync_settle.total_seconds() + 1)
    seen, cursor = follow(client, world, "pain-entries")  # gives the late writer up, reads past its number
    assert [e["client_entry_id"] for e in seen] == ["feed-entry-0001"] and int(cursor.split(".")[0]) >= seq
    services.stores.pain_entries.add(pid, {"client_entry_id": "late-writer-1", "recorded_at": START, "nrs": 5},
                                     START, seq)
    late.__exit__(None, None, None)  # finds its reservation given up: stamps its write again
    later, _ = follow(client, world, "pain-entries", cursor)
    assert [e["client_entry_id"] for e in later] == ["late-writer-1"]
    assert later[0]["version"] > int(cursor.split(".")[0])


def test_tombstones_are_purged_after_the_sync_window_and_older_cursors_must_resync(client, world, services, clock):
    headers = world["patient_a"].headers
    ids = [client.post(f"{base(world)}/pain-entries", json=entry(n), headers=headers).json["id"] for n in (1, 2, 3)]
    _, old_cursor = follow(client, world, "pain-entries")
    client.delete(f"{base(world)}/pain-entries/{ids[0]}", headers=headers)
    _, recent_cursor = follow(client, world, "pain-entries", old_cursor)
    months_later(client, world, clock, 89)
    assert services.housekeeping.purge_expired()["tombstones"] == 0
    months_later(client, world, clock, 2)
    assert services.housekeeping.purge_expired()["tombstones"] == 1
    assert services.db.pain_entries.find_one({"_id": ids[0]})["purged"] is True  # a stub without content
    body = assert_problem(client.get(f"{base(world)}/pain-entries/changes", query_string={"cursor": old_cursor},
                                     headers=world["patient_a"].headers), 410)
    assert "older than the sync window" in body["detail"]
    assert follow(client, world, "pain-entries", recent_cursor)[0] == []
    fresh, _ = follow(client, world, "pain-entries")
    assert sorted(e["id"] for e in fresh) == sorted(ids[1:])


def test_a_purge_between_the_feeds_horizon_check_and_its_read_never_skips_a_deletion(
        client, world, services, clock, monkeypatch):
    """A phone back after the sync window syncs while the daily housekeeping purges: it must be told to resync
    (410), never moved past the deletion with its copy still holding the entry."""
    headers = world["patient_a"].headers
    kept, gone = (client.post(f"{base(world)}/pain-entries", json=entry(n), headers=headers).json["id"]
                  for n in (1, 2))
    _, cursor = follow(client, world, "pain-entries")  # the phone's copy holds both
    assert client.delete(f"{base(world)}/pain-entries/{gone}", headers=headers).status_code == 204
    months_later(client, world, clock, 91)
    entries = services.stores.pain_entries
    original = entries.changed_between

    def purge_meanwhile(*args, **kwargs):  # the housekeeping job runs between the horizon read and the rows read
        monkeypatch.setattr(entries, "changed_between", original)
        assert services.housekeeping.purge_expired()["tombstones"] == 1
        return original(*args, **kwargs)

    monkeypatch.setattr(entries, "changed_between", purge_meanwhile)
    answer = client.get(f"{base(world)}/pain-entries/changes", query_string={"cursor": cursor},
                        headers=world["patient_a"].headers)
    monkeypatch.undo()
    assert "older than the sync window" in assert_problem(answer, 410)["detail"]
    assert [e["id"] for e in follow(client, world, "pain-entries")[0]] == [kept]


def test_a_deleted_entry_can_no_longer_be_found_once_its_tombstone_is_purged(client, world, services, clock):
    headers = world["patient_a"].headers
    gone = client.post(f"{base(world)}/pain-entries", json=entry(1), headers=headers).json["id"]
    client.delete(f"{base(world)}/pain-entries/{gone}", headers=headers)
    months_later(client, world, clock, 91)
    services.housekeeping.purge_expired()
    assert_problem(client.delete(f"{base(world)}/pain-entries/{gone}", headers=world["patient_a"].headers), 404)


def test_a_purged_entry_stays_deleted_when_a_phone_sends_its_creation_again(client, world, services, clock):
    """A phone whose answer to a creation was lost, back after the entry was deleted elsewhere and its tombstone
    purged, sends the creation again: it is told the entry was deleted, and the entry does not come back."""
    headers = world["patient_a"].headers
    first = {**entry(1), "context": {"location": "lower back", "activity": "gardening", "sleep_quality": 2,
                                     "mood": 3, "note": "after the long drive"},
             "bpi": {"worst": 7, "least": 2, "average": 4, "now": 3, "interference": {"sleep": 5}}}
    gone = client.post(f"{base(world)}/pain-entries", json=first, headers=headers).json["id"]
    kept = client.post(f"{base(world)}/pain-entries", json=entry(2), headers=headers).json["id"]
    moved = client.patch(f"{base(world)}/pain-entries/{gone}", json={"recorded_at": entry(5)["recorded_at"]},
                         headers=headers)
    assert moved.status_code == 200, moved.json
    client.delete(f"{base(world)}/pain-entries/{gone}", headers=headers)
    months_later(client, world, clock, 91)
    headers = world["patient_a"].headers
    assert services.housekeeping.purge_expired()["tombstones"] == 1
    stub = services.db.pain_entries.find_one({"_id": gone})
    assert set(stub) == {"_id", "patient_id", "client_entry_id", "deleted", "purged", "seq"}, stub
    assert services.housekeeping.purge_expired()["tombstones"] == 0  # a stub is not purged again

    again = assert_problem(client.post(f"{base(world)}/pain-entries", json=first, headers=headers), 409)
    assert "deleted" in again["detail"] and "client_entry_id" in again["errors"] and "current" not in again
    batch = client.post(f"{base(world)}/pain-entries/batch", json={"entries": [first, entry(2), entry(3)]},
                        headers=headers)
    assert batch.status_code == 200, batch.json
    assert [(i["id"], i["status"]) for i in batch.json["items"][:2]] == [(gone, "deleted"), (kept, "duplicate")]
    assert "entry" not in batch.json["items"][0] and batch.json["items"][2]["status"] == "created"
    assert (batch.json["created"], batch.json["duplicates"], batch.json["deleted"]) == (1, 1, 1)

    fresh, _ = follow(client, world, "pain-entries")
    assert gone not in [e["id"] for e in fresh] and kept in [e["id"] for e in fresh]
    listed = client.get(f"{base(world)}/pain-entries", headers=headers, query_string={
        "from": (START - timedelta(days=1)).isoformat(), "to": (START + timedelta(days=1)).isoformat()})
    assert gone not in [e["id"] for e in listed.json["items"]]
    assert_problem(client.get(f"{base(world)}/pain-entries/{gone}", headers=headers), 404)
    assert_problem(client.patch(f"{base(world)}/pain-entries/{gone}", json={"nrs": 1}, headers=headers), 404)


@pytest.mark.parametrize("limit", [1, 2, 7])
def test_paging_a_feed_in_any_page_size_gives_every_change_once_in_order(client, world, limit):
    headers = world["patient_a"].headers
    ids = [client.post(f"{base(world)}/pain-entries", json=entry(n), headers=headers).json["id"] for n in range(8)]
    client.patch(f"{base(world)}/pain-entries/{ids[2]}", json={"nrs": 10}, headers=headers)
    items, _ = follow(client, world, "pain-entries", limit=limit)
    assert [e["id"] for e in items] == ids[:2] + ids[3:] + [ids[2]]
    assert [e["version"] for e in items] == sorted(e["version"] for e in items)


def test_a_feed_is_only_for_those_related_to_the_patient(client, world):
    answer = client.get(f"{base(world)}/occurrences/changes", headers=world["patient_b"].headers)
    assert_problem(answer, 404)


def test_a_caregiver_without_note_permission_reads_the_occurrence_feed_without_skip_reasons(client, world, clock):
    headers = world["patient_a"].headers
    client.post(f"{base(world)}/reminders", json=REMINDER, headers=headers)
    first = follow(client, world, "occurrences")[0][0]
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    client.patch(f"{base(world)}/occurrences/{first['id']}", json={"status": "skipped", "skip_reason": "felt low"},
                 headers=headers)
    seen = {o["id"]: o for o in follow(client, world, "occurrences", who="caregiver_linked")[0]}
    assert (seen[first["id"]]["status"], seen[first["id"]]["skip_reason"]) == ("skipped", None)


def test_the_session_feed_hands_out_records_uploaded_late_in_the_order_they_were_stored(client, world):
    from tests.support.records import session_record

    gateway = world["gateway_a"]
    recent = [session_record(world.a_device, seq) for seq in (5, 6, 7)]
    assert client.post("/api/v1/gateway/session-records", json={"records": recent}, headers=gateway.headers).status_code == 200
    first, cursor = follow(client, world, "sessions")
    assert [s["record_id"] for s in first] == [f"{world.a_device}:{n}" for n in (5, 6, 7)]
    late = [session_record(world.a_device, seq, started_at=START - timedelta(days=3, hours=seq)) for seq in (1, 2)]
    client.post("/api/v1/gateway/session-records", json={"records": late + recent}, headers=gateway.headers)
    later, _ = follow(client, world, "sessions", cursor)
    assert [s["record_id"] for s in later] == [f"{world.a_device}:{n}" for n in (1, 2)]


def test_a_session_placed_with_another_patient_has_the_first_ones_app_read_its_feeds_again(client, world,
                                                                                           services):
    from companion.services.session_times import write_changes
    from tests.support.records import session_record

    record = session_record(world.a_device, 1)
    assert client.post("/api/v1/gateway/session-records", json={"records": [record]},
                       headers=world["gateway_a"].headers).status_code == 200
    held, cursor = follow(client, world, "sessions")
    assert [s["record_id"] for s in held] == [record["record_id"]]
    # A later clock fix places it with patient B (a unit that changed hands): A's feed has no tombstone for it.
    stored = services.db.session_records.find_one({"_id": record["record_id"]})
    write_changes(services.stores, services.sessions.changes, None, [(stored, {"patient_id": world["patient_b"].id})],
                  "a test")
    body = assert_problem(client.get(f"{base(world)}/sessions/changes", query_string={"cursor": cursor},
                                     headers=world["patient_a"].headers), 410)
    assert "sync again from the start" in body["detail"]
    assert follow(client, world, "sessions")[0] == []  # read again from the start: not A's any more
    b_feed = client.get(f"/api/v1/patients/{world['patient_b'].id}/sessions/changes",
                        headers=world["patient_b"].headers).json["items"]
    assert [s["record_id"] for s in b_feed] == [record["record_id"]]


def _legacy_entry(services, pid: str, n: int) -> None:
    """A diary entry as a version before change feeds wrote it: no change number."""
    services.db.pain_entries.insert_one({"_id": f"legacy-{n}", "patient_id": pid, "client_entry_id": f"legacy-{n:04d}",
                                         "recorded_at": START, "nrs": 3, "deleted": False})


def test_documents_written_before_change_feeds_are_numbered_by_the_migration_step_until_a_run_finds_none(
        client, world, services):
    pid = world["patient_a"].id
    _legacy_entry(services, pid, 1)
    assert follow(client, world, "pain-entries")[0] == []
    assert services.housekeeping.number_unsynced() == 1
    assert [e["id"] for e in follow(client, world, "pain-entries")[0]] == ["legacy-1"]
    _legacy_entry(services, pid, 2)  # written meanwhile by a process of the version before, still serving
    assert services.housekeeping.number_unsynced() == 1  # numbered by the next run (the next release's)
    assert services.housekeeping.number_unsynced() == 0  # a run that found none: done
    _legacy_entry(services, pid, 3)
    assert services.housekeeping.number_unsynced() == 0  # the collections are not scanned again


def test_a_numbering_cut_short_by_its_bound_is_finished_by_the_next_run(client, world, services, monkeypatch):
    """It noted the numbering done after PURGE_ROUNDS batches of a collection even when more were left: those
    documents never reached a feed."""
    monkeypatch.setattr("companion.services.housekeeping.PURGE_ROUNDS", 1)
    monkeypatch.setattr("companion.store.feeds.BATCH", 2)
    for n in range(3):
        _legacy_entry(services, world["patient_a"].id, n)
    assert [services.housekeeping.number_unsynced() for _ in range(3)] == [2, 1, 0]
    assert services.db.pain_entries.count_documents({"seq": {"$exists": False}}) == 0


def test_ownerless_held_sessions_are_not_numbered(client, world, services):
    """Ingestion stores a held session nobody owns yet without a change number: the scan took those for documents
    written before change feeds, numbered them under a null patient and, as new ones kept arriving, never
    finished."""
    db = services.db
    for n in (1, 2):
        db.session_records.insert_one({"_id": f"CT-000009:{n}", "patient_id": None,
                                       "candidate_patient_ids": [world["patient_a"].id, world["patient_b"].id],
                                       "held": True, "device_serial": "CT-000009", "device_seq": n,
                                       "started_at": START, "duration_s": 600})
        services.housekeeping.number_unsynced()
    assert db.change_sequences.find_one({"_id": None}) is None
    assert db.session_records.count_documents({"seq": {"$exists": True}}) == 0


@pytest.mark.parametrize("store", ["pain_entries", "reminders", "occurrences", "plans", "practice", "favourites",
                                   "session_records"])
def test_a_numbering_run_that_finds_only_documents_nobody_owns_is_done(client, world, services, store):
    synced = getattr(services.stores, store).col
    synced.insert_many([{"_id": "ownerless-1", "patient_id": None}, {"_id": "ownerless-2"}])
    assert services.housekeeping.number_unsynced() == 0
    assert services.stores.change_sequences.numbering_done()


def test_the_numbering_step_removes_the_null_patients_sequence_an_earlier_run_left(client, world, services):
    services.db.change_sequences.insert_one({"_id": None, "issued": 2, "pending": {}})
    services.housekeeping.number_unsynced()
    assert services.db.change_sequences.find_one({"_id": None}) is None


def test_a_patient_whose_change_numbers_cannot_be_reserved_gets_a_503_to_retry_and_nothing_is_written(
        client, world, db, monkeypatch):
    monkeypatch.setattr("companion.store.changes.ATTEMPTS", 0)  # as if other writers always came first
    answer = client.post(f"{base(world)}/pain-entries", json=entry(1), headers=world["patient_a"].headers)
    assert_problem(answer, 503)
    assert answer.headers["Retry-After"] == "1"
    assert db.pain_entries.count_documents({}) == 0


@pytest.mark.parametrize("limit", [1, 2])
def test_a_fresh_read_after_a_purge_pages_through_to_its_end(client, world, services, clock, limit):
    # Entries older than the last purged tombstone are read page by page: each page's cursor lies below the
    # purged number, and must not be taken for a cursor that missed the deletion.
    headers = world["patient_a"].headers
    ids = [client.post(f"{base(world)}/pain-entries", json=entry(n), headers=headers).json["id"] for n in (1, 2, 3, 4)]
    client.delete(f"{base(world)}/pain-entries/{ids[-1]}", headers=headers)
    months_later(client, world, clock, 91)
    assert services.housekeeping.purge_expired()["tombstones"] == 1
    fresh, cursor = follow(client, world, "pain-entries", limit=limit)
    assert [e["id"] for e in fresh] == ids[:3]
    # The cursor it ends with carries on: later changes come, nothing twice.
    changed = client.patch(f"{base(world)}/pain-entries/{ids[0]}", json={"nrs": 9}, headers=world["patient_a"].headers)
    assert changed.status_code == 200
    assert [e["id"] for e in follow(client, world, "pain-entries", cursor, limit=limit)[0]] == [ids[0]]


def test_after_a_restore_every_earlier_cursor_resyncs_and_the_fresh_read_misses_nothing(
        client, world, db, db_name, mongo_uri, monkeypatch, capsys):
    from companion import cli

    pid, headers = world["patient_a"].id, world["patient_a"].headers
    ids = [client.post(f"{base(world)}/pain-entries", json=entry(n), headers=headers).json["id"] for n in (1, 2, 3)]
    _, cursor = follow(client, world, "pain-entries")
    # The database comes back from a backup taken before the third entry: its change number is free again.
    third = db.pain_entries.find_one({"_id": ids[2]})
    db.pain_entries.delete_one({"_id": ids[2]})
    db.change_sequences.update_one({"_id": pid}, {"$set": {"issued": third["seq"] - 1, "pending": {}}})
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    assert cli.main(["after-restore"]) == 0
    assert "change sequences moved on" in capsys.readouterr().out
    # A write after the restore: without the step it would take the lost entry's number, which the phone's
    # cursor has already passed, and the phone would never see it.
    again = client.post(f"{base(world)}/pain-entries", json=entry(4), headers=headers).json["id"]
    assert_problem(client.get(f"{base(world)}/pain-entries/changes", query_string={"cursor": cursor},
                              headers=headers), 410)
    fresh, _ = follow(client, world, "pain-entries", limit=1)
    assert [e["id"] for e in fresh] == [ids[0], ids[1], again]


def _slow(monkeypatch, services, clock, store, method: str) -> None:
    """Make ``store.method`` outlast the settle time while another device reads the feed (which gives the
    writer's reservation up: the write is stamped again with a new number when it settles)."""
    original = getattr(store, method)

    def slow(patient_id, *args, **kwargs):
        result = original(patient_id, *args, **kwargs)
        clock.shift(services.settings.sync_settle.total_seconds() + 1)
        services.changes.page(patient_id, store, None, 100)
        return result

    monkeypatch.setattr(store, method, slow)


def test_a_write_stamped_again_answers_the_version_it_is_stored_with(client, world, services, clock, monkeypatch):
    headers, entries = world["patient_a"].headers, services.stores.pain_entries
    _slow(monkeypatch, services, clock, entries, "add")
    created = client.post(f"{base(world)}/pain-entries", json=entry(1), headers=headers)
    monkeypatch.undo()
    stored = services.db.pain_entries.find_one({"_id": created.json["id"]})
    assert (created.json["version"], created.headers["ETag"]) == (stored["seq"], f'"{stored["seq"]}"')
    assert [e["version"] for e in follow(client, world, "pain-entries")[0]] == [stored["seq"]]
    _slow(monkeypatch, services, clock, entries, "update")
    edited = client.patch(f"{base(world)}/pain-entries/{created.json['id']}", json={"nrs": 2},
                          headers={**headers, "If-Match": created.headers["ETag"]})
    monkeypatch.undo()
    # The phone's next edit names the version it was answered: it is the one stored, so it is not refused.
    again = client.patch(f"{base(world)}/pain-entries/{created.json['id']}", json={"nrs": 3},
                         headers={**headers, "If-Match": edited.headers["ETag"]})
    assert again.status_code == 200, again.json
    _slow(monkeypatch, services, clock, entries, "add_many")
    batch = client.post(f"{base(world)}/pain-entries/batch", json={"entries": [entry(2), entry(3)]}, headers=headers)
    monkeypatch.undo()
    for item in batch.json["items"]:
        assert item["entry"]["version"] == services.db.pain_entries.find_one({"_id": item["id"]})["seq"]


def test_a_reminder_change_stamped_again_answers_the_version_it_is_stored_with(client, world, services, clock,
                                                                               monkeypatch):
    headers = world["patient_a"].headers
    created = client.post(f"{base(world)}/reminders", json=REMINDER, headers=headers)
    _slow(monkeypatch, services, clock, services.stores.reminders, "update")
    renamed = client.patch(f"{base(world)}/reminders/{created.json['id']}", json={"title": "Session"},
                           headers={**headers, "If-Match": created.headers["ETag"]})
    monkeypatch.undo()
    assert renamed.status_code == 200
    again = client.patch(f"{base(world)}/reminders/{created.json['id']}", json={"title": "Evening"},
                         headers={**headers, "If-Match": renamed.headers["ETag"]})
    assert again.status_code == 200, again.json
