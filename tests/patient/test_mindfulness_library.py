"""The mindfulness library: loaded by a command, browsed and searched, favourites, practice time."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from pymongo.errors import ConnectionFailure

from companion.cli import main
from companion.domain.access import CaregiverPermissions
from companion.domain.content_library import default_library_path
from tests.patient.conftest import START
from tests.patient.helpers import snapshot
from tests.support.problems import assert_problem


@pytest.fixture
def library(db, world, services):
    services.library.load()
    return {item["_id"]: item for item in db.content_items.find({})}


def test_the_shipped_library_has_at_least_30_items_in_every_category(library):
    assert len(library) >= 30
    assert {i["category"] for i in library.values()} >= {"breathing", "body_scan", "meditation", "gentle_movement",
                                                         "pain_education", "sleep"}


def test_loading_twice_changes_nothing(db, services, library):
    again = services.library.load()
    assert again["created"] == 0
    assert again["updated"] == len(library)
    assert db.content_items.count_documents({}) == len(library)


def test_the_command_loads_the_library(settings_overrides, monkeypatch, db, capsys):
    monkeypatch.setenv("MONGODB_URI", settings_overrides["mongodb_uri"])
    monkeypatch.setenv("MONGODB_DB", settings_overrides["mongodb_db"])
    assert main(["load-content", "--file", str(default_library_path())]) == 0
    assert "library items" in capsys.readouterr().out
    assert db.content_items.count_documents({}) >= 30


def test_the_command_refuses_a_broken_library_and_loads_nothing(settings_overrides, monkeypatch, db, tmp_path,
                                                                 capsys):
    broken = tmp_path / "library.json"
    broken.write_text('{"version": 1, "items": [{"slug": "Not Kebab"}]}')
    monkeypatch.setenv("MONGODB_URI", settings_overrides["mongodb_uri"])
    monkeypatch.setenv("MONGODB_DB", settings_overrides["mongodb_db"])
    assert main(["load-content", "--file", str(broken)]) == 1
    assert "problem" in capsys.readouterr().err
    assert db.content_items.count_documents({}) == 0


def test_filters_combine(client, world, library):
    headers = world["patient_a"].headers
    short_breathing = client.get("/api/v1/library", query_string={"category": "breathing", "max_minutes": 5},
                                 headers=headers).json["items"]
    expected = sorted((i["duration_min"], s) for s, i in library.items()
                      if i["category"] == "breathing" and i["duration_min"] <= 5)
    assert [(i["duration_min"], i["slug"]) for i in short_breathing] == expected
    level = next(iter(library.values()))["level"]
    tag = next(iter(library.values()))["tags"][0]
    by_level_and_tag = client.get("/api/v1/library", query_string={"level": level, "tag": tag},
                                  headers=headers).json["items"]
    assert {i["slug"] for i in by_level_and_tag} == {s for s, i in library.items()
                                                    if i["level"] == level and tag in i["tags"]}


def test_text_search_finds_words_in_titles_case_insensitively(client, world, library):
    some = next(iter(library.values()))
    word = some["title"].split()[0].upper()
    found = client.get("/api/v1/library", query_string={"q": word}, headers=world["patient_a"].headers).json
    assert some["_id"] in {i["slug"] for i in found["items"]}
    nothing = client.get("/api/v1/library", query_string={"q": ".*"}, headers=world["patient_a"].headers).json
    assert nothing["items"] == []


def test_an_item_has_its_script(client, world, library):
    slug = next(iter(library))
    item = client.get(f"/api/v1/library/{slug}", headers=world["patient_a"].headers).json
    assert item["steps"] and all(isinstance(s, str) for s in item["steps"])
    assert_problem(client.get("/api/v1/library/no-such-item", headers=world["patient_a"].headers), 404)


def test_favourites_are_kept_in_order_and_can_be_removed(client, world, library):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    first, second = list(library)[:2]
    for slug in (second, first, second):
        assert client.put(f"/api/v1/patients/{pid}/favourites/{slug}", headers=headers).status_code == 200
    listed = client.get(f"/api/v1/patients/{pid}/favourites", headers=headers).json["items"]
    assert [i["slug"] for i in listed] == [second, first]
    assert client.delete(f"/api/v1/patients/{pid}/favourites/{second}", headers=headers).status_code == 204
    listed = client.get(f"/api/v1/patients/{pid}/favourites", headers=headers).json["items"]
    assert [i["slug"] for i in listed] == [first]


def test_practice_time_is_what_passed_and_never_more_than_the_item_lasts(client, world, library, clock):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    slug, item = min(library.items(), key=lambda kv: kv[1]["duration_min"])
    started = client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": slug}, headers=headers).json
    clock.shift(timedelta(minutes=2))
    done = client.post(f"/api/v1/patients/{pid}/practice/{started['id']}/complete", json={}, headers=headers)
    assert done.status_code == 200
    assert done.json["minutes"] == min(2.0, item["duration_min"])
    again = client.post(f"/api/v1/patients/{pid}/practice/{started['id']}/complete", json={}, headers=headers)
    assert (again.status_code, again.json) == (200, done.json)  # a retry: the completion as stored
    other = client.post(f"/api/v1/patients/{pid}/practice/{started['id']}/complete", json={"minutes": 0.5},
                        headers=headers)
    assert_problem(other, 409)
    long_ago = client.post(f"/api/v1/patients/{pid}/practice",
                           json={"item_slug": slug, "started_at": (START - timedelta(hours=3)).isoformat()},
                           headers=headers).json
    capped = client.post(f"/api/v1/patients/{pid}/practice/{long_ago['id']}/complete", json={}, headers=headers)
    assert capped.json["minutes"] == item["duration_min"]


def test_starting_and_completing_a_practice_answer_with_its_version_as_etag(client, world, library, clock):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    slug = min(library, key=lambda s: library[s]["duration_min"])
    keyed = {**headers, "Idempotency-Key": "practice-etag-1"}
    started = client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": slug}, headers=keyed)
    assert started.status_code == 201 and started.headers["ETag"] == f'"{started.json["version"]}"'
    replayed = client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": slug}, headers=keyed)
    assert replayed.headers["Idempotent-Replayed"] == "true" and replayed.headers["ETag"] == started.headers["ETag"]
    clock.shift(timedelta(minutes=2))
    url = f"/api/v1/patients/{pid}/practice/{started.json['id']}/complete"
    done = client.post(url, json={}, headers=headers)
    assert done.status_code == 200 and done.headers["ETag"] == f'"{done.json["version"]}"'
    assert done.headers["ETag"] != started.headers["ETag"]
    again = client.post(url, json={}, headers=headers)
    assert again.headers["ETag"] == done.headers["ETag"]


BAD_PRACTICE = {
    "unknown item": ({"item_slug": "no-such-item"}, 404),
    "start in the future": ({"item_slug": "{slug}", "started_at": (START + timedelta(minutes=10)).isoformat()}, 422),
    "operator injection": ({"item_slug": {"$ne": None}}, 422),
    "unknown field": ({"item_slug": "{slug}", "minutes": 5}, 422),
}


@pytest.mark.parametrize("case", sorted(BAD_PRACTICE))
def test_bad_practice_is_refused_and_stores_nothing(client, world, db, library, case):
    body, status = BAD_PRACTICE[case]
    slug = next(iter(library))
    body = {k: v.replace("{slug}", slug) if isinstance(v, str) else v for k, v in body.items()}
    before = snapshot(db, "practice_log")
    assert_problem(client.post(f"/api/v1/patients/{world['patient_a'].id}/practice", json=body,
                               headers=world["patient_a"].headers), status)
    assert snapshot(db, "practice_log") == before


def test_negative_practice_minutes_are_refused(client, world, library):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    started = client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": next(iter(library))},
                          headers=headers).json
    assert_problem(client.post(f"/api/v1/patients/{pid}/practice/{started['id']}/complete", json={"minutes": -3},
                               headers=headers), 422)


def test_a_practice_started_on_a_phone_a_little_ahead_is_completed_on_the_servers_clock(client, world, services,
                                                                                        clock):
    """The API takes a start up to 5 minutes ahead of the server (a phone's clock drifts): completing it a couple of
    minutes later, on the server's clock, must not be refused as ending before it began. The patient practised at
    most 5 minutes less the lead seen; a retry answers the same completion."""
    services.library.load()
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    started = client.post(f"/api/v1/patients/{pid}/practice", json={
        "item_slug": "three-breath-reset", "started_at": (START + timedelta(minutes=4)).isoformat()}, headers=headers)
    assert started.status_code == 201, started.json
    clock.shift(timedelta(minutes=2))  # two minutes later by the server: still "before" the phone's start
    url = f"/api/v1/patients/{pid}/practice/{started.json['id']}/complete"
    done = client.post(url, json={}, headers=headers)
    assert done.status_code == 200, done.json
    assert done.json["minutes"] == 2.0  # at most 5 - (4 - 2) = 3 minutes passed; the item lasts 2
    assert client.post(url, json={}, headers=headers).json == done.json
    assert_problem(client.post(url, json={"minutes": 1}, headers=headers), 409)


def test_today_counts_this_weeks_practice_whether_or_not_the_plan_sets_a_mindfulness_goal(
        client, world, library, clock):
    """The world's plan sets no mindfulness goal: the goal is none, the practice done this week is still counted."""
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    started = client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": "three-breath-reset"},
                          headers=headers).json
    clock.shift(timedelta(minutes=2))
    client.post(f"/api/v1/patients/{pid}/practice/{started['id']}/complete", json={}, headers=headers)
    today = client.get(f"/api/v1/patients/{pid}/today", headers=headers).json
    assert (today["mindfulness"]["goal"], today["mindfulness"]["sessions_this_week"]) == (None, 1)


def test_a_years_practice_is_listed_whole_page_by_page_with_the_newest_on_the_last(client, world, db, library):
    """The list stops at `limit` and says where to go on (`next`), after the (start, id) its page ended on:
    practices sharing a millisecond across a page's end are each listed once, and none is dropped."""
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    first = START - timedelta(days=360)
    db.practice_log.insert_many([
        {"_id": f"old-{n:05d}", "patient_id": pid, "item_slug": "three-breath-reset",
         "started_at": first + timedelta(hours=8 * (n // 2)), "completed_at": first + timedelta(hours=8 * (n // 2),
                                                                                               minutes=2),
         "minutes": 2.0, "seq": 0} for n in range(2000)])  # two at each instant: ~6 short practices a day
    today = client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": "three-breath-reset"},
                        headers=headers).json
    year = {"from": (START - timedelta(days=365)).isoformat(), "to": (START + timedelta(minutes=1)).isoformat()}
    default = client.get(f"/api/v1/patients/{pid}/practice", headers=headers, query_string=year).json
    assert (len(default["items"]), default["next"] is not None) == (100, True)
    link = f"/api/v1/patients/{pid}/practice?" + urlencode({**year, "limit": 333})  # pages end inside an instant
    listed = []
    while link:
        page = client.get(link, headers=headers)
        assert page.status_code == 200, page.json
        assert page.headers.get("Link") == (f'<{page.json["next"]}>; rel="next"' if page.json["next"] else None)
        listed += [p["id"] for p in page.json["items"]]
        link = page.json["next"]
    assert listed == [f"old-{n:05d}" for n in range(2000)] + [today["id"]]


def test_a_practice_list_cursor_the_api_did_not_make_is_refused(client, world, library):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    for cursor in ("not-a-cursor", "eyJhdCI6IDF9"):  # the second: {"at": 1}
        assert_problem(client.get(f"/api/v1/patients/{pid}/practice", headers=headers, query_string={
            "from": START.isoformat(), "to": START.isoformat(), "cursor": cursor}), 422)


def test_an_idempotency_key_used_again_after_24_hours_for_another_patient_starts_a_real_practice(
        client, world, services, library, clock):
    """Keys are kept 24 hours per caller; after that the same key is a new request. A caregiver recording for
    two patients uses one key on day 1 for A and on day 3 for B: B's practice is stored and can be completed."""
    caregiver = world["caregiver_linked"]
    a, b = world["patient_a"].id, world["patient_b"].id
    for pid in (a, b):
        services.stores.care_links.grant(pid, caregiver.id, CaregiverPermissions(write=True))
    keyed = {**caregiver.headers, "Idempotency-Key": "caregiver-key-0001"}
    first = client.post(f"/api/v1/patients/{a}/practice", json={"item_slug": "three-breath-reset"}, headers=keyed)
    assert first.status_code == 201
    clock.shift(timedelta(hours=49))
    started = client.post(f"/api/v1/patients/{b}/practice", json={"item_slug": "box-breathing"}, headers=keyed)
    assert started.status_code == 201 and started.json["id"] != first.json["id"]
    clock.shift(timedelta(minutes=3))
    done = client.post(f"/api/v1/patients/{b}/practice/{started.json['id']}/complete", json={},
                       headers=caregiver.headers)
    assert done.status_code == 200, done.json


def test_the_same_key_used_again_after_24_hours_by_the_patient_starts_the_item_asked_for(
        client, world, library, clock):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    keyed = {**headers, "Idempotency-Key": "patient-key-0001"}
    first = client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": "three-breath-reset"},
                        headers=keyed).json
    clock.shift(timedelta(hours=49))
    again = client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": "box-breathing"}, headers=keyed)
    assert (again.status_code, again.json["item_slug"], again.json["started_at"][:10]) == (
        201, "box-breathing", (START + timedelta(hours=49)).date().isoformat())
    assert again.json["id"] != first["id"]
    replayed = client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": "box-breathing"}, headers=keyed)
    assert (replayed.headers["Idempotent-Replayed"], replayed.json["id"]) == ("true", again.json["id"])


def test_a_failed_start_retried_finds_its_practice_and_another_item_under_its_key_is_refused(
        client, world, services, library, monkeypatch):
    """A start that failed after storing its practice (a 5xx) keeps its key for the same request: sent again, it
    finds that practice. Another request under the key (the app changed its mind) is refused (422): as a new claim
    it would start a second practice beside the one the failed attempt stored. Under a new key it starts."""
    pid, headers = world["patient_a"].id, {**world["patient_a"].headers, "Idempotency-Key": "failed-start-01"}
    stored = services.library.log.start

    def stored_then_lost(*args, **kwargs):
        stored(*args, **kwargs)
        raise ConnectionFailure("the database went away before the answer")

    monkeypatch.setattr(services.library.log, "start", stored_then_lost)
    url = f"/api/v1/patients/{pid}/practice"
    assert client.post(url, json={"item_slug": "three-breath-reset"}, headers=headers).status_code == 503
    monkeypatch.undo()
    retried = client.post(url, json={"item_slug": "three-breath-reset"}, headers=headers)
    assert retried.status_code == 201
    monkeypatch.setattr(services.library.log, "start", stored_then_lost)
    assert client.post(url, json={"item_slug": "box-breathing"}, headers={
        **headers, "Idempotency-Key": "failed-start-02"}).status_code == 503
    monkeypatch.undo()
    refused = client.post(url, json={"item_slug": "five-minute-body-scan"}, headers={
        **headers, "Idempotency-Key": "failed-start-02"})
    assert refused.status_code == 422, refused.json
    other = client.post(url, json={"item_slug": "five-minute-body-scan"}, headers={
        **headers, "Idempotency-Key": "failed-start-03"})
    assert (other.status_code, other.json["item_slug"]) == (201, "five-minute-body-scan"), other.json
    listed = client.get(url, headers=world["patient_a"].headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(minutes=1)).isoformat()}).json["items"]
    assert sorted(p["item_slug"] for p in listed) == ["box-breathing", "five-minute-body-scan", "three-breath-reset"]


def test_one_practice_recorded_by_the_patient_and_by_their_caregiver_is_not_counted_twice(
        client, world, services, library, clock):
    """The patient and a caregiver allowed to record for them (or two phones) log the same 20 minutes: both
    records are kept as logged, and today and the week count 20 minutes, one practice."""
    pid = world["patient_a"].id
    services.stores.care_links.grant(pid, world["caregiver_linked"].id, CaregiverPermissions(write=True))
    slug = next(s for s, i in library.items() if i["duration_min"] >= 20)
    ids = [client.post(f"/api/v1/patients/{pid}/practice", json={"item_slug": slug},
                       headers=world[who].headers).json["id"] for who in ("patient_a", "caregiver_linked")]
    clock.shift(timedelta(minutes=20))
    for who, practice_id in zip(("patient_a", "caregiver_linked"), ids, strict=True):
        assert client.post(f"/api/v1/patients/{pid}/practice/{practice_id}/complete", json={},
                           headers=world[who].headers).status_code == 200
    today = client.get(f"/api/v1/patients/{pid}/today", headers=world["patient_a"].headers).json
    week = client.get(f"/api/v1/patients/{pid}/progress/week", headers=world["patient_a"].headers).json
    # 20 minutes of wall-clock time cannot hold more than 20 minutes of practice
    assert (today["mindfulness"]["minutes"], week["practice_minutes"]) == (20.0, 20.0)
    assert today["mindfulness"]["sessions_this_week"] == 1
    listed = client.get(f"/api/v1/patients/{pid}/practice", headers=world["patient_a"].headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(minutes=1)).isoformat()}).json["items"]
    assert sorted(p["minutes"] for p in listed) == [20.0, 20.0]  # each record as it was logged


def test_today_the_week_and_the_days_snapshot_count_every_practice_of_their_days_however_many(
        client, world, db, services, library, clock):
    """2,000 short practices before breakfast and one of 10 minutes after: the reads behind today, the week and
    the day's snapshot are bounded by their days, not by a count, so the last practice is counted too (they
    stopped at the first 2,000, and the 10 minutes were silently missing)."""
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    first = START.replace(hour=1)  # Monday 01:00, London (UTC in March)
    db.practice_log.insert_many([
        {"_id": f"short-{n:05d}", "patient_id": pid, "item_slug": "three-breath-reset",
         "started_at": first + timedelta(seconds=10 * n), "completed_at": first + timedelta(seconds=10 * n + 6),
         "minutes": 0.1, "seq": 0} for n in range(2000)])
    db.practice_log.insert_one({"_id": "last", "patient_id": pid, "item_slug": "three-breath-reset",
                                "started_at": START - timedelta(minutes=20), "minutes": 10.0, "seq": 0,
                                "completed_at": START - timedelta(minutes=10)})
    today = client.get(f"/api/v1/patients/{pid}/today", headers=headers).json
    week = client.get(f"/api/v1/patients/{pid}/progress/week", headers=headers).json
    snapshot = services.adherence.compute_day(services.profiles.patient(pid), START.date())
    assert (today["mindfulness"]["minutes"], today["mindfulness"]["sessions_this_week"]) == (210.0, 2001)
    assert (week["practice_minutes"], week["days"][0]["mindfulness_minutes"]) == (210.0, 210.0)
    assert (round(snapshot["mindfulness"]["minutes"], 1), snapshot["mindfulness"]["done"]) == (210.0, 2001)
