"""Reminders: occurrences stored once however often (or concurrently) they are materialized; done,
skipped, snoozed and missed; changes and travel move only pending future occurrences; bad input stores
nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from companion.domain.access import CaregiverPermissions
from companion.http.paging import encode_cursor
from tests.patient.conftest import START
from tests.patient.helpers import snapshot
from tests.support.problems import assert_problem
from tests.support.world import login

DAILY = {"kind": "medication", "title": "Evening tablet", "completion_window_min": 60,
         "schedule": {"type": "weekly", "times": ["09:30", "18:00"], "start_date": "2026-03-02"}}


def create(client, world, body=DAILY, who="patient_a"):
    return client.post(f"/api/v1/patients/{world['patient_a'].id}/reminders", json=body, headers=world[who].headers)


def occurrences(client, world, start=START, days=3, who="patient_a"):
    answer = client.get(f"/api/v1/patients/{world['patient_a'].id}/occurrences", headers=world[who].headers,
                        query_string={"from": start.isoformat(), "to": (start + timedelta(days=days)).isoformat()})
    assert answer.status_code == 200, answer.json
    return answer.json["items"]


def record(client, world, occurrence_id, body, who="patient_a"):
    return client.patch(f"/api/v1/patients/{world['patient_a'].id}/occurrences/{occurrence_id}", json=body,
                        headers=world[who].headers)


def test_materializing_again_and_concurrently_stores_each_occurrence_once(client, world, db, services):
    create(client, world)
    pid, end = world["patient_a"].id, START + timedelta(days=7)
    barrier = threading.Barrier(4)

    def run():
        barrier.wait()
        services.reminders.materialize(pid, START, end)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert services.reminders.materialize(pid, START, end) == 0
    assert db.reminder_occurrences.count_documents({"patient_id": pid}) == 14  # 7 days x 2 times
    assert {i["name"] for i in db.reminder_occurrences.list_indexes()} >= {"reminder_local_unique"}


def test_done_skipped_and_late_recording_of_a_missed_occurrence(client, world, db, services, clock):
    create(client, world)
    first, second, *_ = occurrences(client, world)
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    assert record(client, world, first["id"], {"status": "done"}).json["status"] == "done"
    assert record(client, world, first["id"], {"status": "done"}).status_code == 200
    assert_problem(record(client, world, first["id"], {"status": "skipped", "skip_reason": "x"}), 409)
    clock.move_to(datetime(2026, 3, 2, 19, 30, tzinfo=UTC))
    assert services.reminders.mark_missed(datetime.now(UTC)) == 1
    assert db.reminder_occurrences.find_one({"_id": second["id"]})["status"] == "missed"
    late = record(client, world, second["id"], {"status": "skipped", "skip_reason": "was out"})
    assert (late.json["status"], late.json["skip_reason"]) == ("skipped", "was out")
    assert services.reminders.mark_missed(datetime.now(UTC)) == 0


def test_an_occurrence_cannot_be_ticked_off_hours_before_it_is_due(client, world):
    create(client, world)
    later = occurrences(client, world)[1]  # 18:00, the clock says 09:00
    assert_problem(record(client, world, later["id"], {"status": "done"}), 422)


def test_snooze_reminds_again_but_never_past_the_completion_window(client, world, clock):
    create(client, world)
    first = occurrences(client, world)[0]
    clock.move_to(datetime(2026, 3, 2, 9, 35, tzinfo=UTC))
    url = f"/api/v1/patients/{world['patient_a'].id}/occurrences/{first['id']}/snooze"
    snoozed = client.post(url, json={"minutes": 15}, headers=world["patient_a"].headers)
    assert snoozed.json["snoozed_until"].startswith("2026-03-02T09:50")
    assert snoozed.headers["ETag"] == f'"{snoozed.json["version"]}"'  # like the outcome's answer
    assert snoozed.json["version"] != first["version"]
    capped = client.post(url, json={"minutes": 120}, headers=world["patient_a"].headers)
    assert capped.json["snoozed_until"].startswith("2026-03-02T10:30")  # the window closes at 10:30
    clock.move_to(datetime(2026, 3, 2, 10, 31, tzinfo=UTC))
    assert_problem(client.post(url, json={"minutes": 15}, headers=world["patient_a"].headers), 409)


def test_changing_a_schedule_moves_pending_future_occurrences_and_keeps_recorded_ones(client, world, db, clock):
    reminder = create(client, world).json
    first = occurrences(client, world)[0]
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    record(client, world, first["id"], {"status": "done"})
    changed = client.patch(f"/api/v1/patients/{world['patient_a'].id}/reminders/{reminder['id']}",
                           json={"schedule": {"type": "weekly", "times": ["09:30", "21:00"],
                                              "start_date": "2026-03-02"}}, headers=world["patient_a"].headers)
    assert changed.status_code == 200, changed.json
    listed = occurrences(client, world, days=2)
    assert [(o["local_date"], o["local_time"], o["status"]) for o in listed] == [
        ("2026-03-02", "09:30", "done"), ("2026-03-02", "21:00", "pending"),
        ("2026-03-03", "09:30", "pending"), ("2026-03-03", "21:00", "pending")]
    cancelled = list(db.reminder_occurrences.find({"local_time": "18:00"}))
    assert cancelled and all((o["status"], o["deleted"]) == ("cancelled", True) for o in cancelled)  # tombstones


def test_stopping_a_reminder_removes_its_future_and_keeps_its_history(client, world, db, clock):
    reminder = create(client, world).json
    first = occurrences(client, world)[0]
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    record(client, world, first["id"], {"status": "done"})
    url = f"/api/v1/patients/{world['patient_a'].id}/reminders/{reminder['id']}"
    assert client.delete(url, headers=world["patient_a"].headers).status_code == 204
    assert [o["status"] for o in occurrences(client, world)] == ["done"]
    assert client.get(url, headers=world["patient_a"].headers).json["active"] is False


def test_the_list_shows_every_active_reminder_first_however_many_were_stopped_and_pages_through_the_rest(
        client, world, db):
    """Stopping keeps a reminder (its history stays), so stopped ones pile up over the years: the list still opens
    with the ones the patient has now, then the stopped ones, the most recently stopped first, paged by `next`."""
    pid = world["patient_a"].id
    db.reminders.insert_many([{"_id": f"old-{n}", "patient_id": pid, "kind": "medication", "title": f"Old {n}",
                               "active": False, "created_at": START - timedelta(days=500 - n),
                               "updated_at": START - timedelta(days=400 - n), "seq": 0,
                               "schedule": {"type": "daily", "times": ["08:00"], "start_date": "2024-01-01"}}
                              for n in range(60)])
    made = create(client, world)
    assert made.status_code == 201, made.json
    url = f"/api/v1/patients/{pid}/reminders"
    first = client.get(url, headers=world["patient_a"].headers, query_string={"limit": 20})
    assert first.status_code == 200, first.json
    assert [r["id"] for r in first.json["items"]] == [made.json["id"], *(f"old-{n}" for n in range(59, 40, -1))]
    assert first.headers["Link"] == f'<{first.json["next"]}>; rel="next"'
    seen, following = [r["id"] for r in first.json["items"]], first.json["next"]
    while following:
        page = client.get(following, headers=world["patient_a"].headers).json
        seen, following = seen + [r["id"] for r in page["items"]], page["next"]
    assert seen == [made.json["id"], *(f"old-{n}" for n in range(59, -1, -1))]
    assert made.json["id"] in [r["id"] for r in client.get(url, headers=world["patient_a"].headers).json["items"]]


def test_quiet_hours_hold_back_the_push_not_the_task(client, world, db):
    client.patch(f"/api/v1/patients/{world['patient_a'].id}", json={"quiet_hours": {"start": "22:00", "end": "07:00"}},
                 headers=world["patient_a"].headers)
    create(client, world, {**DAILY, "schedule": {"type": "weekly", "times": ["06:30"], "start_date": "2026-03-02"}})
    stored = db.reminder_occurrences.find_one({"local_date": "2026-03-03"})
    assert (stored["due_at"], stored["notify_at"]) == (datetime(2026, 3, 3, 6, 30, tzinfo=UTC),
                                                       datetime(2026, 3, 3, 7, 0, tzinfo=UTC))


def test_a_caregiver_with_write_permission_can_tick_off_and_a_view_only_one_cannot(client, world, services, clock):
    create(client, world)
    first = occurrences(client, world, who="caregiver_linked")[0]
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    assert record(client, world, first["id"], {"status": "done"}, who="caregiver_linked").status_code == 403
    services.stores.care_links.grant(world["patient_a"].id, world["caregiver_linked"].id,
                                     CaregiverPermissions(write=True))
    assert record(client, world, first["id"], {"status": "done"}, who="caregiver_linked").status_code == 200


def test_a_caregiver_without_note_permission_does_not_see_skip_reasons(client, world, clock):
    create(client, world)
    first = occurrences(client, world)[0]
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    record(client, world, first["id"], {"status": "skipped", "skip_reason": "felt low"})
    seen = occurrences(client, world, who="caregiver_linked")[0]
    assert (seen["status"], seen["skip_reason"]) == ("skipped", None)
    assert occurrences(client, world)[0]["skip_reason"] == "felt low"


def _skipped_by_the_patient_then_the_caregiver_may_write(client, world, services, clock) -> tuple[dict, dict]:
    """The day's first two occurrences; the patient skipped the first ("felt low"), and the linked caregiver was
    then given leave to write, not to read the patient's words."""
    create(client, world)
    first, second, *_ = occurrences(client, world)
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    record(client, world, first["id"], {"status": "skipped", "skip_reason": "felt low"})
    services.stores.care_links.grant(world["patient_a"].id, world["caregiver_linked"].id,
                                     CaregiverPermissions(write=True))
    return first, second


def test_a_caregiver_who_may_write_but_not_read_notes_gets_no_skip_reason_back_from_a_write(client, world,
                                                                                           services, clock):
    first, second = _skipped_by_the_patient_then_the_caregiver_may_write(client, world, services, clock)
    # A skip of the patient's skip (refused: see below), a new one, and a snooze: none shows the patient's words
    # to this caregiver.
    again = assert_problem(record(client, world, first["id"], {"status": "skipped", "skip_reason": "anything"},
                                  who="caregiver_linked"), 409)
    assert (again["current"]["status"], again["current"]["skip_reason"]) == ("skipped", None)
    clock.move_to(datetime(2026, 3, 2, 17, 55, tzinfo=UTC))
    snoozed = client.post(f"/api/v1/patients/{world['patient_a'].id}/occurrences/{second['id']}/snooze",
                          json={"minutes": 10}, headers=world["caregiver_linked"].headers)
    assert snoozed.status_code == 200 and snoozed.json["skip_reason"] is None
    clock.move_to(datetime(2026, 3, 2, 18, 20, tzinfo=UTC))
    skipped = record(client, world, second["id"], {"status": "skipped", "skip_reason": "their own words"},
                     who="caregiver_linked")
    assert (skipped.status_code, skipped.json["skip_reason"]) == (200, None)
    assert occurrences(client, world)[1]["skip_reason"] == "their own words"  # stored, and the patient sees it


def test_a_second_skip_with_another_reason_is_a_conflict_showing_the_first(client, world, db, clock):
    """Two phones of the patient answer the same occurrence 'skipped', each with its own reason: the second is
    told of the first (409 with it in current, nothing written), never answered 200 with its reason dropped. The
    same reason typed with other spacing or case is the same answer."""
    create(client, world)
    first = occurrences(client, world)[0]
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    one = record(client, world, first["id"], {"status": "skipped", "skip_reason": "felt sick"})
    assert one.status_code == 200, one.json
    other = assert_problem(record(client, world, first["id"], {"status": "skipped",
                                                               "skip_reason": "ran out of tablets"}), 409)
    assert (other["current"]["skip_reason"], other["current"]["version"]) == ("felt sick", one.json["version"])
    same = record(client, world, first["id"], {"status": "skipped", "skip_reason": " Felt  sick"})
    assert (same.status_code, same.json["skip_reason"]) == (200, "felt sick")
    stored = db.reminder_occurrences.find_one({"_id": first["id"]})
    assert (stored["skip_reason"], stored["seq"]) == ("felt sick", one.json["version"])


def test_a_caregiver_who_may_not_read_notes_cannot_tell_by_skipping_again_whether_a_guess_at_the_reason_is_right(
        client, world, services, clock):
    """Compared with the patient's reason, this caregiver's skip would tell them whether they guessed it: a skip
    of an occurrence someone else skipped is a 409 whatever they send, with the reason withheld. Their own skip
    sent again (a lost answer) is still the same answer, 200; with another reason, 409."""
    first, second = _skipped_by_the_patient_then_the_caregiver_may_write(client, world, services, clock)
    guesses = [record(client, world, first["id"], {"status": "skipped", "skip_reason": guess},
                      who="caregiver_linked") for guess in ("felt low", "was away")]
    bodies = [{k: v for k, v in assert_problem(g, 409).items() if k != "request_id"} for g in guesses]
    assert bodies[0] == bodies[1] and bodies[0]["current"]["skip_reason"] is None
    assert not any("felt low" in g.get_data(as_text=True) for g in guesses)
    # Tagged as the withheld copy it is, as a GET tags it: never as the whole occurrence.
    assert {g.headers["ETag"] for g in guesses} == {f'"{bodies[0]["current"]["version"]}.withheld"'}
    clock.move_to(datetime(2026, 3, 2, 18, 20, tzinfo=UTC))
    theirs = {"status": "skipped", "skip_reason": "she was asleep"}
    assert record(client, world, second["id"], theirs, who="caregiver_linked").status_code == 200
    assert record(client, world, second["id"], theirs, who="caregiver_linked").status_code == 200
    assert_problem(record(client, world, second["id"], {**theirs, "skip_reason": "out"}, who="caregiver_linked"),
                   409)
    assert_problem(record(client, world, second["id"], {**theirs, "skip_reason": "out"}), 409)
    assert record(client, world, second["id"], theirs).status_code == 200  # the patient reads it: compared


def test_a_run_computed_from_a_reminder_changed_meanwhile_does_not_undo_the_change(client, world, db, services,
                                                                                 monkeypatch):
    created = create(client, world)
    pid, url = world["patient_a"].id, f"/api/v1/patients/{world['patient_a'].id}/reminders/{created.json['id']}"
    occurrences_store = type(services.stores.occurrences)
    real_by_ids, changed = occurrences_store.by_ids, []

    def changed_meanwhile(self, ids):
        if not changed:  # the run has read the reminder (09:30 and 18:00); now it changes to 10:00
            changed.append("changing")
            changed[0] = client.patch(url, json={"schedule": {"type": "weekly", "times": ["10:00"]}},
                                      headers=world["patient_a"].headers).status_code
        return real_by_ids(self, ids)

    monkeypatch.setattr(occurrences_store, "by_ids", changed_meanwhile)
    services.reminders.materialize(pid, START, START + timedelta(days=3))
    monkeypatch.undo()
    assert changed == [200]
    pending = list(db.reminder_occurrences.find({"patient_id": pid, "status": "pending"}))
    assert pending and {o["due_at"].strftime("%H:%M") for o in pending} == {"10:00"}


def test_a_week_paged_far_ahead_is_shown_without_being_stored_under_the_ids_stored_later(client, world, db, services,
                                                                                        clock):
    """Paging more than 31 days ahead (the week view, a range of occurrences) stores nothing there: a stop or a
    change of schedule or zone re-plans the stored occurrences within 31 days, and one stored further ahead
    outlived them (pushed, then counted missed, for a reminder the patient had stopped). The range shows the
    slots planned there under the ids they are stored with once in reach, so the app's answer to one works."""
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    create(client, world)
    week = client.get(f"/api/v1/patients/{pid}/progress/week", query_string={"date": "2026-04-15"}, headers=headers)
    shown = occurrences(client, world, start=datetime(2026, 4, 13, tzinfo=UTC), days=7)
    assert week.status_code == 200
    assert db.reminder_occurrences.count_documents({"patient_id": pid,
                                                    "due_at": {"$gte": START + timedelta(days=31)}}) == 0
    assert [(o["local_time"], o["status"], o["version"]) for o in shown] == [
        ("09:30", "pending", 0), ("18:00", "pending", 0)] * 7
    clock.move_to(datetime(2026, 4, 15, 8, 40, tzinfo=UTC))  # 09:40 in London (BST): the worker has made it
    services.reminders.materialize_ahead(timedelta(minutes=15), timedelta(days=2))
    patient = world["patient_a"]  # signed in again (access tokens do not last weeks)
    world.people["patient_a"] = login(client, "patient_a", patient.email, patient.id, "patient")
    slot = next(o for o in shown if (o["local_date"], o["local_time"]) == ("2026-04-15", "09:30"))
    assert record(client, world, slot["id"], {"status": "done"}).status_code == 200


def stored_six_weeks_ahead(client, world, monkeypatch) -> None:
    """The week of 13 April paged to as versions before 31 days' reach answered it: storing its occurrences."""
    pid = world["patient_a"].id
    with monkeypatch.context() as earlier:
        earlier.setattr("companion.services.reminders.STORED_AHEAD", timedelta(days=366))
        week = client.get(f"/api/v1/patients/{pid}/progress/week", query_string={"date": "2026-04-15"},
                          headers=world["patient_a"].headers)
    assert week.status_code == 200


def test_stopping_a_reminder_cancels_its_occurrences_stored_however_far_ahead(client, world, db, services, clock,
                                                                              monkeypatch):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    reminder = create(client, world).json
    stored_six_weeks_ahead(client, world, monkeypatch)
    assert db.reminder_occurrences.count_documents({"patient_id": pid, "local_date": "2026-04-15"}) == 2
    assert client.delete(f"/api/v1/patients/{pid}/reminders/{reminder['id']}", headers=headers).status_code == 204
    left = db.reminder_occurrences.count_documents({"patient_id": pid, "status": "pending", "due_at": {"$gt": START}})
    # What the worker does when 15 April 09:30 (London, BST: 08:30 UTC) comes, the patient having no reminder.
    clock.move_to(datetime(2026, 4, 15, 8, 31, tzinfo=UTC))
    services.reminders.materialize_ahead(timedelta(minutes=15), timedelta(days=2))
    services.reminder_dispatch.dispatch_due()
    pushed = services.stores.outbox.col.count_documents({"recipient_user_id": pid, "kind": {"$ne": "generic_update"}})
    # ...and once its window has closed, it would be a missed dose in the patient's figures.
    clock.move_to(datetime(2026, 4, 15, 9, 31, tzinfo=UTC))
    services.reminder_dispatch.mark_missed()
    missed = db.reminder_occurrences.count_documents({"reminder_id": reminder["id"], "status": "missed"})
    assert (left, pushed, missed) == (0, 0, 0), \
        f"{left} pending occurrences of the stopped reminder, {pushed} push queued, {missed} marked missed"


@pytest.mark.parametrize("change", ["schedule", "time zone"])
def test_a_change_re_plans_the_occurrences_stored_however_far_ahead(client, world, db, monkeypatch, change):
    """Those beyond 31 days' reach are cancelled; the app sees the slots planned there (and they are made again,
    under the same ids, once in reach)."""
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    reminder = create(client, world).json
    stored_six_weeks_ahead(client, world, monkeypatch)
    if change == "schedule":
        answer = client.patch(f"/api/v1/patients/{pid}/reminders/{reminder['id']}", headers=headers, json={
            "schedule": {"type": "weekly", "times": ["09:30", "21:00"], "start_date": "2026-03-02"}})
        planned = [("09:30", "Europe/London"), ("21:00", "Europe/London")]
    else:
        answer = client.patch(f"/api/v1/patients/{pid}", json={"time_zone": "America/New_York"}, headers=headers)
        planned = [("09:30", "America/New_York"), ("18:00", "America/New_York")]
    assert answer.status_code == 200, answer.json
    stale = db.reminder_occurrences.count_documents({"patient_id": pid, "status": "pending",
                                                     "due_at": {"$gte": START + timedelta(days=31)}})
    shown = occurrences(client, world, start=datetime(2026, 4, 15, 6, tzinfo=UTC), days=1)
    assert (stale, [(o["local_time"], o["zone"]) for o in shown]) == (0, planned)


def test_the_worker_cancels_what_a_stopped_reminder_left_pending_instead_of_pushing_it_or_counting_it_missed(
        client, world, db, services, clock):
    """A stop stopped between its two writes (the reminder stopped, its occurrences not yet cancelled) and never
    retried: what falls due after it is called off, not pushed, then missed; what had closed before it is a missed
    dose as it was."""
    pid = world["patient_a"].id
    reminder = create(client, world).json  # Monday 09:00: Monday's and Tuesday's 09:30 and 18:00 are made
    clock.move_to(datetime(2026, 3, 2, 19, 5, tzinfo=UTC))  # Monday 18:00's window closed at 19:00
    db.reminders.update_one({"_id": reminder["id"]}, {"$set": {"active": False, "updated_at": datetime.now(UTC)}})
    clock.move_to(datetime(2026, 3, 3, 9, 31, tzinfo=UTC))
    services.reminders.materialize_ahead(timedelta(minutes=15), timedelta(days=2))
    services.reminder_dispatch.dispatch_due()
    clock.move_to(datetime(2026, 3, 3, 10, 31, tzinfo=UTC))
    services.reminder_dispatch.mark_missed()
    pushed = services.stores.outbox.col.count_documents({"recipient_user_id": pid, "kind": {"$ne": "generic_update"}})
    statuses = {(o["local_date"], o["local_time"]): o["status"] for o in db.reminder_occurrences.find({"patient_id": pid})}
    assert (pushed, statuses) == (0, {("2026-03-02", "09:30"): "missed", ("2026-03-02", "18:00"): "missed",
                                      ("2026-03-03", "09:30"): "cancelled", ("2026-03-03", "18:00"): "pending"})


def test_the_worker_cancels_an_occurrence_whose_reminder_is_gone(client, world, db, services, clock):
    pid = world["patient_a"].id
    reminder = create(client, world).json
    db.reminders.delete_one({"_id": reminder["id"]})
    clock.move_to(datetime(2026, 3, 2, 9, 31, tzinfo=UTC))
    services.reminder_dispatch.dispatch_due()
    clock.move_to(datetime(2026, 3, 2, 19, 1, tzinfo=UTC))
    services.reminder_dispatch.mark_missed()
    pushed = services.stores.outbox.col.count_documents({"recipient_user_id": pid, "kind": {"$ne": "generic_update"}})
    statuses = [o["status"] for o in db.reminder_occurrences.find({"patient_id": pid, "due_at": {"$lt": START
                                                                                              + timedelta(days=1)}})]
    assert (pushed, statuses) == (0, ["cancelled", "cancelled"])


BAD_REMINDERS = {
    "never fires (weekend only, but ends on Friday)": {**DAILY, "schedule": {
        "type": "weekly", "times": ["09:00"], "weekdays": [6, 7], "start_date": "2026-03-02",
        "end_date": "2026-03-06"}},
    "hourly window shorter than the interval": {**DAILY, "schedule": {
        "type": "hourly", "window_start": "08:00", "window_end": "09:00", "every_hours": 3}},
    "ends before it starts": {**DAILY, "schedule": {**DAILY["schedule"], "end_date": "2026-03-01"}},
    "no times": {**DAILY, "schedule": {"type": "weekly", "times": []}},
    "not a clock time": {**DAILY, "schedule": {"type": "weekly", "times": ["24:00"]}},
    "weekday 8": {**DAILY, "schedule": {"type": "weekly", "times": ["09:00"], "weekdays": [8]}},
    "negative completion window": {**DAILY, "completion_window_min": -30},
    "repeats longer than the window": {**DAILY, "repeat": {"count": 5, "every_min": 30}},
    "unknown field": {**DAILY, "priority": "high"},
    "field of another schedule type": {**DAILY, "schedule": {**DAILY["schedule"], "every_hours": 2}},
    "operator injection": {**DAILY, "title": {"$ne": None}},
    "operator key": {**DAILY, "schedule": {**DAILY["schedule"], "$where": "1"}},
    "unknown kind": {**DAILY, "kind": "coffee"},
    "a time with a trailing newline": {**DAILY, "schedule": {**DAILY["schedule"], "times": ["08:00\n"]}},
    "a window end with a trailing newline": {**DAILY, "schedule": {
        "type": "hourly", "window_start": "08:00", "window_end": "20:00\n", "every_hours": 3}},
    "starts on the first day of the calendar": {**DAILY, "schedule": {**DAILY["schedule"], "start_date": "0001-01-01"}},
    "ends on the last day of the calendar": {**DAILY, "schedule": {**DAILY["schedule"], "end_date": "9999-12-31"}},
    "starts in 1800": {**DAILY, "schedule": {**DAILY["schedule"], "start_date": "1800-03-02"}},
}


@pytest.mark.parametrize("case", sorted(BAD_REMINDERS))
def test_a_bad_reminder_is_refused_and_stores_nothing(client, world, db, case):
    before = snapshot(db, "reminders", "reminder_occurrences")
    body = assert_problem(create(client, world, BAD_REMINDERS[case]), 422)
    assert body["errors"]
    assert snapshot(db, "reminders", "reminder_occurrences") == before


def test_a_schedule_at_the_ends_of_the_calendar_is_refused_naming_the_date_created_or_edited(client, world, db):
    """The schedule's post_load stored its dates as text before the check of their years saw them."""
    reminder = create(client, world).json
    url = f"/api/v1/patients/{world['patient_a'].id}/reminders/{reminder['id']}"
    before = snapshot(db, "reminders", "reminder_occurrences")
    stored = db.reminders.find_one({"_id": reminder["id"]})
    for name, value in (("start_date", "0001-01-01"), ("end_date", "9999-12-31")):
        schedule = {**DAILY["schedule"], name: value}
        for answer in (create(client, world, {**DAILY, "schedule": schedule}),
                       client.patch(url, json={"schedule": schedule}, headers=world["patient_a"].headers)):
            problem = assert_problem(answer, 422)
            assert problem["errors"]["json"]["schedule"] == {name: ["must lie in the years 1900 to 2200"]}
    assert snapshot(db, "reminders", "reminder_occurrences") == before
    assert db.reminders.find_one({"_id": reminder["id"]}) == stored


def test_an_unknown_time_zone_is_refused_and_changes_nothing(client, world, db):
    create(client, world)
    before = snapshot(db, "reminder_occurrences")
    url = f"/api/v1/patients/{world['patient_a'].id}"
    assert_problem(client.patch(url, json={"time_zone": "Mars/Olympus_Mons"}, headers=world["patient_a"].headers), 422)
    assert snapshot(db, "reminder_occurrences") == before
    assert client.get(url, headers=world["patient_a"].headers).json["time_zone"] == "Europe/London"


def test_an_occurrence_range_over_31_days_is_refused(client, world):
    answer = client.get(f"/api/v1/patients/{world['patient_a'].id}/occurrences", headers=world["patient_a"].headers,
                        query_string={"from": START.isoformat(), "to": (START + timedelta(days=32)).isoformat()})
    assert_problem(answer, 422)


def test_new_quiet_hours_move_the_pushes_of_pending_occurrences(client, world, db):
    create(client, world, {**DAILY, "schedule": {"type": "weekly", "times": ["06:30"], "start_date": "2026-03-02"}})
    client.patch(f"/api/v1/patients/{world['patient_a'].id}", json={"quiet_hours": {"start": "22:00", "end": "07:00"}},
                 headers=world["patient_a"].headers)
    stored = db.reminder_occurrences.find_one({"local_date": "2026-03-03"})
    assert stored["notify_at"] == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)


def test_an_edit_of_the_window_or_the_repeats_alone_is_checked_against_the_other_as_stored(client, world):
    """Repeats that outlast the completion window would remind after the patient can no longer answer on time:
    refused at creation, and at an edit of either alone."""
    reminder = create(client, world, {**DAILY, "repeat": {"count": 3, "every_min": 15}}).json  # 45 of 60 minutes
    url = f"/api/v1/patients/{world['patient_a'].id}/reminders/{reminder['id']}"
    headers = world["patient_a"].headers
    narrowed = assert_problem(client.patch(url, json={"completion_window_min": 30}, headers=headers), 422)
    assert "repeat" in narrowed["errors"]
    assert_problem(client.patch(url, json={"repeat": {"count": 5, "every_min": 15}}, headers=headers), 422)
    assert client.get(url, headers=headers).json["completion_window_min"] == 60  # nothing written
    assert client.patch(url, json={"completion_window_min": 45}, headers=headers).status_code == 200


def test_a_reminder_stored_before_the_repeat_rule_can_still_be_paused_or_renamed(client, world, db):
    """Its repeats outlast its window (stored before edits were checked): a change of neither is not refused."""
    reminder = create(client, world, {**DAILY, "repeat": {"count": 3, "every_min": 20}}).json
    db.reminders.update_one({"_id": reminder["id"]}, {"$set": {"completion_window_min": 30}})
    url = f"/api/v1/patients/{world['patient_a'].id}/reminders/{reminder['id']}"
    headers = world["patient_a"].headers
    assert client.patch(url, json={"title": "Evening tablets"}, headers=headers).status_code == 200
    assert client.patch(url, json={"active": False}, headers=headers).status_code == 200
    # An app that sends its whole edit form back, the repeats unchanged, renames it too.
    assert client.patch(url, json={"title": "Tablets", "repeat": {"count": 3, "every_min": 20}},
                        headers=headers).status_code == 200
    assert_problem(client.patch(url, json={"completion_window_min": 40}, headers=headers), 422)  # still short


def test_an_idempotency_key_used_again_after_24_hours_names_each_patients_reminder_once(
        client, world, db, services, clock):
    """A caregiver keeps one key for a day-1 reminder of A; on day 3 the same key creates B's (another request: its
    own reminder), and then A's again: the same request as day 1's, so day 1's reminder (a phone retrying a create
    whose answer it lost, after days offline, must not make a second one)."""
    caregiver = world["caregiver_linked"]
    a, b = world["patient_a"].id, world["patient_b"].id
    for pid in (a, b):
        services.stores.care_links.grant(pid, caregiver.id, CaregiverPermissions(write=True))
    keyed = {**caregiver.headers, "Idempotency-Key": "caregiver-reminder-01"}
    made = [client.post(f"/api/v1/patients/{a}/reminders", json=DAILY, headers=keyed)]
    for pid in (b, a):
        clock.shift(timedelta(hours=25))
        made.append(client.post(f"/api/v1/patients/{pid}/reminders", json=DAILY, headers=keyed))
    assert [m.status_code for m in made] == [201, 201, 201]
    first, for_b, again = (m.json["id"] for m in made)
    assert first != for_b and again == first
    assert sorted(r["patient_id"] for r in db.reminders.find({"_id": {"$in": [first, for_b]}})) == sorted([a, b])
    assert db.reminders.count_documents({"patient_id": {"$in": [a, b]}}) == 2


def test_stopping_a_reminder_between_two_pages_of_the_list_loses_no_active_reminder(client, world, db):
    """The list pages by position over an order that a stop changes (active first, then the most recently stopped
    first): a reminder stopped after page one moves behind the active ones, and the next page must still hold
    every reminder page one did not."""
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    made = []
    for n in range(3):
        answer = create(client, world, {**DAILY, "title": f"Tablet {n}"})
        assert answer.status_code == 201, answer.json
        made.append(answer.json["id"])
    url = f"/api/v1/patients/{pid}/reminders"
    first = client.get(url, headers=headers, query_string={"limit": 2}).json
    seen = [r["id"] for r in first["items"]]
    assert client.delete(f"{url}/{seen[0]}", headers=headers).status_code == 204
    following = first["next"]
    while following:
        page = client.get(following, headers=headers).json
        seen, following = seen + [r["id"] for r in page["items"]], page["next"]
    assert set(made) <= set(seen), f"never listed: {set(made) - set(seen)}"


def test_reminders_sharing_a_moment_across_a_page_end_are_each_listed_once(client, world, db):
    """Pages continue after the (time, id) the page before ended on, in each part: reminders created, or stopped,
    in the same millisecond are each listed once, whichever page ends among them."""
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    schedule = {"type": "daily", "times": ["08:00"], "start_date": "2026-01-01"}
    db.reminders.insert_many([{"_id": f"{state}-{n}", "patient_id": pid, "kind": "medication", "title": f"{n}",
                               "active": state == "on", "created_at": START - timedelta(days=30 + n // 3),
                               "updated_at": START - timedelta(days=n // 3), "seq": 0, "schedule": schedule}
                              for state in ("on", "off") for n in range(7)])
    listed, link = [], f"/api/v1/patients/{pid}/reminders?limit=2"
    while link:
        page = client.get(link, headers=headers)
        assert page.status_code == 200, page.json
        listed, link = listed + [r["id"] for r in page.json["items"]], page.json["next"]
    assert listed == ["on-6", "on-3", "on-4", "on-5", "on-0", "on-1", "on-2",  # oldest first, ties by id
                      "off-2", "off-1", "off-0", "off-5", "off-4", "off-3", "off-6"]  # latest stopped first


@pytest.mark.parametrize("cursor", [
    "not-a-cursor",
    encode_cursor({"o": 2}),  # a position, as the list's pages were before
    encode_cursor({"part": "old", "at": START.isoformat(), "id": "x"}),  # a part the list does not have
    encode_cursor({"part": "active", "at": "2026-03-02T09:00:00", "id": "x"}),  # a time without its offset
])
def test_a_reminders_list_cursor_the_api_did_not_make_is_refused(client, world, cursor):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    assert_problem(client.get(f"/api/v1/patients/{pid}/reminders", headers=headers,
                              query_string={"cursor": cursor}), 422)
