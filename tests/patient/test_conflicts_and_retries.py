"""Versions as ETags on reminders, the therapy plan and the profile: If-Match refuses a stale version with
412 and the current object, If-None-Match answers 304, retries of a change or a deletion succeed as the
first did; an occurrence's outcome names when it happened; today shows the plan's goals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.patient.conftest import START
from tests.patient.helpers import PLAN
from tests.support.problems import assert_problem

REMINDER = {"kind": "tens", "title": "Morning session", "completion_window_min": 60,
            "schedule": {"type": "weekly", "times": ["09:30"], "start_date": "2026-03-02"}}


def base(world) -> str:
    return f"/api/v1/patients/{world['patient_a'].id}"


def with_tag(world, etag: str, who: str = "patient_a") -> dict:
    return {**world[who].headers, "If-Match": etag}


def test_a_reminder_change_naming_a_stale_version_is_refused_with_the_current_reminder(client, world, db):
    created = client.post(f"{base(world)}/reminders", json=REMINDER, headers=world["patient_a"].headers)
    target = f"{base(world)}/reminders/{created.json['id']}"
    renamed = client.patch(target, json={"title": "Session"}, headers=with_tag(world, created.headers["ETag"]))
    assert renamed.status_code == 200 and renamed.headers["ETag"] == f'"{renamed.json["version"]}"'
    stale = client.patch(target, json={"title": "Other"}, headers=with_tag(world, created.headers["ETag"]))
    body = assert_problem(stale, 412)
    assert body["current"]["title"] == "Session" and stale.headers["ETag"] == renamed.headers["ETag"]
    assert_problem(client.delete(target, headers=with_tag(world, created.headers["ETag"])), 412)
    assert db.reminders.find_one({})["active"] is True


def test_a_weak_if_match_never_matches_and_is_refused_with_the_current_reminder(client, world, db):
    """RFC 9110 13.1.1: If-Match compares strongly, so W/"1" matches no version, not even version 1."""
    created = client.post(f"{base(world)}/reminders", json=REMINDER, headers=world["patient_a"].headers)
    target = f"{base(world)}/reminders/{created.json['id']}"
    weak = client.patch(target, json={"title": "Session"}, headers=with_tag(world, f"W/{created.headers['ETag']}"))
    body = assert_problem(weak, 412)
    assert body["current"]["title"] == REMINDER["title"] and weak.headers["ETag"] == created.headers["ETag"]
    unknown = client.patch(target, json={"title": "Session"}, headers=with_tag(world, '"not-one-of-ours"'))
    assert assert_problem(unknown, 412)["current"]["title"] == REMINDER["title"]
    assert db.reminders.find_one({})["title"] == REMINDER["title"]


def test_an_if_match_list_writes_when_any_of_its_tags_names_the_current_version(client, world, db):
    created = client.post(f"{base(world)}/reminders", json=REMINDER, headers=world["patient_a"].headers)
    target = f"{base(world)}/reminders/{created.json['id']}"
    version = created.json["version"]
    listed = f'"{version + 7}", W/"{version}" , {created.headers["ETag"]}'
    renamed = client.patch(target, json={"title": "Session"}, headers=with_tag(world, listed))
    assert renamed.status_code == 200 and renamed.json["title"] == "Session"
    stale = f'"{version + 7}", {created.headers["ETag"]}, W/"{renamed.json["version"]}"'
    body = assert_problem(client.delete(target, headers=with_tag(world, stale)), 412)
    assert body["current"]["title"] == "Session" and db.reminders.find_one({})["active"] is True


def test_an_if_match_that_is_no_list_of_entity_tags_is_a_400_its_operation_documents(client, world):
    created = client.post(f"{base(world)}/reminders", json=REMINDER, headers=world["patient_a"].headers)
    target = f"{base(world)}/reminders/{created.json['id']}"
    for malformed in (str(created.json["version"]), '"1", 2', '"1'):
        assert_problem(client.patch(target, json={"title": "x"}, headers=with_tag(world, malformed)), 400)
    operations = client.get("/openapi.json").json["paths"]["/api/v1/patients/{patient_id}/reminders/{reminder_id}"]
    assert {"400"} <= set(operations["patch"]["responses"]) & set(operations["delete"]["responses"])


def test_a_retried_reminder_change_and_stop_succeed_as_the_first_did(client, world, db):
    created = client.post(f"{base(world)}/reminders", json=REMINDER, headers=world["patient_a"].headers)
    target = f"{base(world)}/reminders/{created.json['id']}"
    change = {"schedule": {"type": "weekly", "times": ["10:00"]}}  # no start_date: the current one is kept
    first = client.patch(target, json=change, headers=with_tag(world, created.headers["ETag"]))
    again = client.patch(target, json=change, headers=with_tag(world, created.headers["ETag"]))
    assert (first.status_code, again.status_code) == (200, 200) and again.json == first.json
    assert first.json["schedule"]["start_date"] == "2026-03-02"
    assert client.delete(target, headers=with_tag(world, first.headers["ETag"])).status_code == 204
    assert client.delete(target, headers=with_tag(world, first.headers["ETag"])).status_code == 204
    assert client.get(target, headers=world["patient_a"].headers).json["active"] is False
    assert db.reminder_occurrences.count_documents({"status": "pending"}) == 0


def test_reading_a_reminder_the_plan_or_the_profile_again_with_its_etag_answers_304(client, world):
    headers = world["patient_a"].headers
    reminder = client.post(f"{base(world)}/reminders", json=REMINDER, headers=headers)
    client.put(f"{base(world)}/therapy-plan", json=PLAN, headers=world["clinician_team"].headers)
    for path in (f"/reminders/{reminder.json['id']}", "/therapy-plan", ""):
        first = client.get(f"{base(world)}{path}", headers=headers)
        again = client.get(f"{base(world)}{path}", headers={**headers, "If-None-Match": first.headers["ETag"]})
        assert (again.status_code, again.headers["ETag"]) == (304, first.headers["ETag"]), path


def test_a_new_plan_version_naming_a_replaced_one_is_refused_with_the_current_plan(client, world, db):
    clinician = world["clinician_team"].headers
    none_yet = client.get(f"{base(world)}/therapy-plan", headers=clinician)
    assert none_yet.headers["ETag"] == '"0"'
    too_soon = client.put(f"{base(world)}/therapy-plan", json=PLAN, headers={**clinician, "If-Match": '"1"'})
    assert_problem(too_soon, 412)  # no plan yet: nothing shown, no read of a plan recorded
    assert db.audit_events.count_documents({"request_id": too_soon.headers["X-Request-ID"], "action": "R"}) == 0
    first = client.put(f"{base(world)}/therapy-plan", json=PLAN, headers={**clinician, "If-Match": '"0"'})
    assert (first.status_code, first.headers["ETag"]) == (201, '"1"')
    colleague = client.put(f"{base(world)}/therapy-plan", json=PLAN, headers={**clinician, "If-Match": '"1"'})
    assert colleague.status_code == 201
    stale = client.put(f"{base(world)}/therapy-plan", json=PLAN, headers={**clinician, "If-Match": '"1"'})
    body = assert_problem(stale, 412)
    assert (body["current"]["version"], stale.headers["ETag"]) == (2, '"2"')
    assert db.therapy_plans.count_documents({}) == 2
    # The refusal shows the current plan: the patient's access log has it as a read of their plan.
    shown = db.audit_events.find_one({"request_id": stale.headers["X-Request-ID"], "action": "R"})
    assert (shown["resource_type"], shown["resource_ids"]) == ("therapy_plan", [body["current"]["id"]])


def test_a_profile_change_naming_a_stale_version_is_refused_and_a_change_without_one_keeps_other_fields(client, world):
    target = base(world)
    first = client.get(target, headers=world["patient_a"].headers)
    renamed = client.patch(target, json={"display_name": "Maria"}, headers=with_tag(world, first.headers["ETag"]))
    assert renamed.status_code == 200 and renamed.json["version"] == first.json["version"] + 1
    body = assert_problem(client.patch(target, json={"caregiver_alert_delay_min": 30},
                                       headers=with_tag(world, first.headers["ETag"])), 412)
    assert body["current"]["display_name"] == "Maria"
    quiet = client.patch(target, json={"quiet_hours": {"start": "22:00", "end": "07:00"}},
                         headers=world["patient_a"].headers).json
    assert (quiet["display_name"], quiet["quiet_hours"]) == ("Maria", {"start": "22:00", "end": "07:00"})
    unchanged = client.patch(target, json={"display_name": "Maria"}, headers=world["patient_a"].headers).json
    assert unchanged["version"] == quiet["version"]


def test_an_outcome_says_when_it_happened_and_late_ones_are_kept_but_not_on_time(client, world, services, clock):
    headers = world["patient_a"].headers
    client.post(f"{base(world)}/reminders", json=REMINDER, headers=headers)
    first = client.get(f"{base(world)}/occurrences", headers=headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()}).json["items"][0]
    clock.move_to(datetime(2026, 3, 2, 11, 0, tzinfo=UTC))  # the 09:30 window closed at 10:30
    services.reminders.mark_missed(datetime.now(UTC))
    target = f"{base(world)}/occurrences/{first['id']}"
    too_early = client.patch(target, json={"status": "done", "at": "2026-03-02T08:00:00+00:00"}, headers=headers)
    assert assert_problem(too_early, 422)["errors"] == {"at": ["too early"]}
    on_time = client.patch(target, json={"status": "done", "at": "2026-03-02T10:00:00+00:00"}, headers=headers).json
    assert (on_time["status"], on_time["on_time"], on_time["status_at"][:16]) == ("done", True, "2026-03-02T10:00")
    assert client.patch(target, json={"status": "done"}, headers=headers).status_code == 200
    assert_problem(client.patch(target, json={"status": "skipped", "skip_reason": "x"}, headers=headers), 409)


def test_a_snooze_before_the_due_time_counts_from_it(client, world, clock):
    headers = world["patient_a"].headers
    client.post(f"{base(world)}/reminders", json=REMINDER, headers=headers)
    first = client.get(f"{base(world)}/occurrences", headers=headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()}).json["items"][0]
    clock.move_to(datetime(2026, 3, 2, 9, 10, tzinfo=UTC))
    snoozed = client.post(f"{base(world)}/occurrences/{first['id']}/snooze", json={"minutes": 15}, headers=headers)
    assert snoozed.json["snoozed_until"].startswith("2026-03-02T09:45")


def test_a_snooze_that_loses_to_a_done_from_the_other_phone_is_refused_with_the_done(
        client, world, services, clock, monkeypatch):
    headers = world["patient_a"].headers
    client.post(f"{base(world)}/reminders", json=REMINDER, headers=headers)
    first = client.get(f"{base(world)}/occurrences", headers=headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()}).json["items"][0]
    clock.move_to(datetime(2026, 3, 2, 9, 35, tzinfo=UTC))
    reminders, read = services.reminders, services.reminders._open_occurrence

    def read_then_the_other_phone_answers(patient_id, key):
        found = read(patient_id, key)  # pending, as the snooze read it
        assert client.patch(f"{base(world)}/occurrences/{key}", json={"status": "done"},
                            headers=headers).status_code == 200
        return found

    monkeypatch.setattr(reminders, "_open_occurrence", read_then_the_other_phone_answers)
    lost = client.post(f"{base(world)}/occurrences/{first['id']}/snooze", json={"minutes": 10}, headers=headers)
    body = assert_problem(lost, 409)
    assert "already recorded as done" in body["detail"]
    assert (body["current"]["status"], lost.headers["ETag"]) == ("done", f'"{body["current"]["version"]}"')


def test_today_shows_the_mindfulness_goal_even_when_it_does_not_count_towards_adherence(client, world, services):
    plan = {**PLAN, "mindfulness": {"minutes_per_day": 10, "sessions_per_week": 3}}  # counts: default false
    client.put(f"{base(world)}/therapy-plan", json=plan, headers=world["clinician_team"].headers)
    services.library.load()
    headers = world["patient_a"].headers
    started = client.post(f"{base(world)}/practice", json={"item_slug": "three-breath-reset"}, headers=headers).json
    client.post(f"{base(world)}/practice/{started['id']}/complete", json={"minutes": 2, "completed_at": (
        START + timedelta(minutes=3)).isoformat()}, headers=headers)
    today = client.get(f"{base(world)}/today", headers=headers).json["mindfulness"]
    assert today == {"state": "progress", "fraction": 0.2, "minutes": 2.0, "minutes_target": 10.0, "done": 1,
                     "planned": 0, "counts_towards_adherence": False,
                     "goal": {"minutes_per_day": 10, "sessions_per_week": 3}, "sessions_this_week": 1}


def test_today_shows_a_weekly_mindfulness_goal_with_no_daily_minutes(client, world):
    plan = {**PLAN, "mindfulness": {"minutes_per_day": None, "sessions_per_week": 4}}
    client.put(f"{base(world)}/therapy-plan", json=plan, headers=world["clinician_team"].headers)
    today = client.get(f"{base(world)}/today", headers=world["patient_a"].headers).json["mindfulness"]
    assert (today["goal"], today["sessions_this_week"], today["state"]) == (
        {"minutes_per_day": None, "sessions_per_week": 4}, 0, "no_tasks")


def test_retried_deletes_of_a_caregiver_link_a_phone_and_a_unit_succeed_as_the_first_did(client, world, services):
    patient = world["patient_a"]
    link = services.stores.care_links.active(patient.id, world["caregiver_linked"].id).id
    for _ in range(2):
        assert client.delete(f"{base(world)}/caregivers/{link}", headers=patient.headers).status_code == 204
    assert_problem(client.delete(f"{base(world)}/caregivers/no-such-link", headers=patient.headers), 404)
    client.put("/api/v1/me/push-tokens/phone-9", json={"token": "t-9", "platform": "android"}, headers=patient.headers)
    for _ in range(2):
        assert client.delete("/api/v1/me/push-tokens/phone-9", headers=patient.headers).status_code == 204
    for _ in range(2):
        assert client.delete(f"{base(world)}/devices/{world.a_device}", headers=patient.headers).status_code == 204
    assert services.stores.devices.get(world.a_device) is None


def test_a_done_racing_the_reminders_stop_stands_as_answered_not_as_a_deleted_occurrence(
        client, world, services, clock, monkeypatch):
    headers = world["patient_a"].headers
    reminder = client.post(f"{base(world)}/reminders", json=REMINDER, headers=headers).json
    first = client.get(f"{base(world)}/occurrences", headers=headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(hours=3)).isoformat()}).json["items"][0]
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    reminders = type(services.reminders)
    read = reminders._open_occurrence

    def read_then_stopped_by_a_caregiver(self, patient_id, key, **kwargs):
        found = read(self, patient_id, key, **kwargs)  # read while pending...
        self.stop(patient_id, reminder["id"])  # ... then another request stops the reminder: it is cancelled
        return found

    monkeypatch.setattr(reminders, "_open_occurrence", read_then_stopped_by_a_caregiver)
    answered = client.patch(f"{base(world)}/occurrences/{first['id']}", json={"status": "done"}, headers=headers)
    monkeypatch.undo()
    assert answered.status_code == 200 and answered.json["status"] == "done"
    listed = client.get(f"{base(world)}/occurrences", headers=headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(hours=3)).isoformat()}).json["items"]
    assert [(o["id"], o["status"]) for o in listed] == [(first["id"], "done")]  # not a tombstone


def test_completing_a_completed_practice_otherwise_is_refused_with_the_practice_as_stored(client, world, services):
    """A second phone completing the same practice with other minutes learns what is stored (``current``, its
    ETag), as a diary entry's conflict tells it, instead of having to read the whole practice feed to find out."""
    services.library.load()
    headers = world["patient_a"].headers
    started = client.post(f"{base(world)}/practice", json={"item_slug": "three-breath-reset"}, headers=headers).json
    target = f"{base(world)}/practice/{started['id']}/complete"
    at = (START + timedelta(minutes=3)).isoformat()
    done = client.post(target, json={"minutes": 2, "completed_at": at}, headers=headers)
    assert done.status_code == 200, done.json
    other = client.post(target, json={"minutes": 1, "completed_at": at}, headers=headers)
    body = assert_problem(other, 409)
    assert (body["current"]["id"], body["current"]["minutes"]) == (started["id"], 2.0)
    assert other.headers["ETag"] == done.headers["ETag"]
