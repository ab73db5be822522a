"""A patient's write that landed while what follows it did not (the marks that have the days it touched computed
again, the occurrences that follow a reminder) is finished by the app's retry of the same request, however the
retry is answered ("unchanged", "already recorded", "already deleted").

The fault hook is the store method of the follow-up, made to fail as a dead database would (pymongo's
ConnectionFailure, answered 503): the write before it is stored, nothing after it. Without the follow-up the
adherence job never recomputes those days (it recomputes marked days only), so a dose taken, a practice done
or a pain rating moved would stay miscounted for good, and its alerts stay open.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from pymongo.errors import ConnectionFailure

from tests.patient.conftest import START

REMINDER = {"kind": "medication", "title": "Morning tablet", "completion_window_min": 60,
            "schedule": {"type": "weekly", "times": ["09:30"], "start_date": "2026-03-02"}}


def _dead_database(*args, **kwargs):
    raise ConnectionFailure("the database went away mid-request")


def _marked(db, patient_id: str) -> set[str]:
    """The local dates waiting for the adherence job."""
    return {m["date"] for m in db.days_to_recompute.find({"patient_id": patient_id})}


def _base(world) -> str:
    return f"/api/v1/patients/{world['patient_a'].id}"


def _interrupted_then_retried(client, db, monkeypatch, store, method, send) -> tuple:
    """``send`` once with ``store.method`` dead (503), then again; the two answers."""
    db.days_to_recompute.delete_many({})  # the job ran since the set-up
    monkeypatch.setattr(store, method, _dead_database)
    first = send()
    monkeypatch.undo()
    assert first.status_code == 503, first.json
    return first, send()


@pytest.mark.parametrize("change", ["moved", "deleted"])
def test_a_diary_edit_or_deletion_is_marked_by_its_retry(client, world, db, services, monkeypatch, change):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    created = client.post(f"{_base(world)}/pain-entries", headers=headers, json={
        "client_entry_id": "retry-marks-1", "nrs": 8, "recorded_at": (START - timedelta(days=3)).isoformat()})
    url = created.headers["Location"]

    def send():
        if change == "moved":
            return client.patch(url, headers=headers, json={"recorded_at": (START - timedelta(days=1)).isoformat()})
        return client.delete(url, headers=headers)

    first, retry = _interrupted_then_retried(client, db, monkeypatch, services.stores.days_to_recompute, "mark",
                                             send)
    stored = db.pain_entries.find_one({"_id": created.json["id"]})
    assert stored["deleted"] if change == "deleted" else stored["recorded_at"] == START - timedelta(days=1)
    assert retry.status_code in (200, 204)
    # Both days the entry was on: the one it left, and the one it is on (or was, deleted).
    expected = {"2026-02-27", "2026-03-01"} if change == "moved" else {"2026-02-27"}
    assert _marked(db, pid) >= expected


def test_an_occurrence_outcome_is_marked_by_its_retry(client, world, db, services, monkeypatch, clock):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    client.post(f"{_base(world)}/reminders", json=REMINDER, headers=headers)
    occurrence = client.get(f"{_base(world)}/occurrences", headers=headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()}).json["items"][0]
    clock.move_to(START + timedelta(minutes=40))
    url = f"{_base(world)}/occurrences/{occurrence['id']}"
    first, retry = _interrupted_then_retried(client, db, monkeypatch, services.stores.days_to_recompute, "mark",
                                             lambda: client.patch(url, json={"status": "done"}, headers=headers))
    assert (retry.status_code, retry.json["status"]) == (200, "done")
    assert _marked(db, pid) == {"2026-03-02"}


def test_a_practice_completion_is_answered_and_marked_by_its_retry(client, world, db, services, monkeypatch, clock):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    services.library.load()
    started = client.post(f"{_base(world)}/practice", json={"item_slug": "three-breath-reset"}, headers=headers).json
    clock.shift(timedelta(minutes=2))
    url = f"{_base(world)}/practice/{started['id']}/complete"
    first, retry = _interrupted_then_retried(client, db, monkeypatch, services.stores.days_to_recompute, "mark",
                                             lambda: client.post(url, json={"minutes": 2}, headers=headers))
    assert retry.status_code == 200 and retry.json["minutes"] == 2.0
    assert db.practice_log.find_one({"_id": started["id"]})["minutes"] == 2.0
    assert _marked(db, pid) == {"2026-03-02"}


def test_a_reminder_change_is_followed_by_its_occurrences_on_its_retry(client, world, db, services, monkeypatch):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    created = client.post(f"{_base(world)}/reminders", json=REMINDER, headers=headers)
    url = f"{_base(world)}/reminders/{created.json['id']}"
    change = {"schedule": {"type": "weekly", "times": ["11:15"]}}
    first, retry = _interrupted_then_retried(client, db, monkeypatch, services.stores.occurrences, "insert_new",
                                             lambda: client.patch(url, json=change, headers=headers))
    assert retry.status_code == 200 and retry.json["schedule"]["times"] == ["11:15"]
    pending = list(db.reminder_occurrences.find({"patient_id": pid, "status": "pending"}))
    assert pending and {o["due_at"].strftime("%H:%M") for o in pending} == {"11:15"}


def test_a_move_of_time_zone_is_marked_by_its_retry(client, world, db, services, monkeypatch):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    first, retry = _interrupted_then_retried(
        client, db, monkeypatch, services.stores.days_to_recompute, "mark",
        lambda: client.patch(_base(world), json={"time_zone": "Asia/Tokyo"}, headers=headers))
    assert (retry.status_code, retry.json["time_zone"]) == (200, "Asia/Tokyo")
    assert "2026-03-02" in _marked(db, pid)
    assert db.panel_row_marks.find_one({"_id": pid})["due"] == "now"


def test_a_move_of_time_zone_interrupted_before_the_reminders_moved_is_finished_by_its_retry(
        client, world, db, services, monkeypatch):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    client.post(f"{_base(world)}/reminders", json=REMINDER, headers=headers)
    first, retry = _interrupted_then_retried(
        client, db, monkeypatch, services.stores.days_to_recompute, "mark",
        lambda: client.patch(_base(world), json={"time_zone": "Asia/Tokyo"}, headers=headers))
    assert (retry.status_code, retry.json["time_zone"]) == (200, "Asia/Tokyo")
    # From the day after the move on, 09:30 is Tokyo's (00:30 UTC), as if the first attempt had not stopped.
    later = [o["due_at"].strftime("%H:%M") for o in db.reminder_occurrences.find(
        {"patient_id": pid, "status": "pending", "due_at": {"$gte": START + timedelta(days=1)}})]
    assert later and set(later) == {"00:30"}


def test_a_change_of_name_interrupted_before_the_panel_row_is_marked_by_its_retry(client, world, db, services,
                                                                                   monkeypatch):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    db.panel_row_marks.delete_many({"_id": pid})  # the refresher computed the row since the set-up
    first, retry = _interrupted_then_retried(
        client, db, monkeypatch, services.stores.panel_row_marks, "mark",
        lambda: client.patch(_base(world), json={"display_name": "Patient A Renamed"}, headers=headers))
    assert (retry.status_code, retry.json["display_name"]) == (200, "Patient A Renamed")
    # The clinicians' panel shows the new name: its row is computed again.
    assert db.panel_row_marks.find_one({"_id": pid})["due"] == "now"


def test_new_quiet_hours_interrupted_before_the_pushes_moved_are_finished_by_the_retry(client, world, db, services,
                                                                                      monkeypatch):
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    early = {**REMINDER, "schedule": {"type": "weekly", "times": ["06:30"], "start_date": "2026-03-02"}}
    client.post(f"{_base(world)}/reminders", json=early, headers=headers)
    first, retry = _interrupted_then_retried(
        client, db, monkeypatch, services.stores.panel_row_marks, "mark",
        lambda: client.patch(_base(world), json={"quiet_hours": {"start": "22:00", "end": "07:00"}}, headers=headers))
    assert (retry.status_code, retry.json["quiet_hours"]) == (200, {"start": "22:00", "end": "07:00"})
    # Tomorrow's 06:30 push waits for the end of the new quiet hours, as if the first attempt had not stopped.
    stored = db.reminder_occurrences.find_one({"patient_id": pid, "local_date": "2026-03-03"})
    assert stored["notify_at"] == START.replace(day=3, hour=7, minute=0)


def test_a_stop_of_the_last_reminder_interrupted_and_never_retried_is_finished_by_the_hourly_pass(
        client, world, db, services, clock, monkeypatch):
    """The phone went offline after the 503 and never retried: the reminder is stopped, its occurrences pending.
    The patient has no other reminder, so no active one to be visited for; the hourly pass still finishes it."""
    headers, pid = world["patient_a"].headers, world["patient_a"].id
    reminder = client.post(f"{_base(world)}/reminders", headers=headers, json={
        **REMINDER, "schedule": {**REMINDER["schedule"], "times": ["09:30", "18:00"]}}).json
    monkeypatch.setattr(services.reminders.occurrences, "cancel_pending", _dead_database)
    assert client.delete(f"{_base(world)}/reminders/{reminder['id']}", headers=headers).status_code == 503
    monkeypatch.undo()
    assert db.reminder_occurrences.count_documents({"patient_id": pid, "status": "pending"}) > 0
    clock.move_to(START + timedelta(hours=1))
    services.reminders.materialize_ahead(timedelta(minutes=15), timedelta(days=2))
    assert db.reminder_occurrences.count_documents({"patient_id": pid, "status": "pending",
                                                    "due_at": {"$gt": START + timedelta(hours=1)}}) == 0
    clock.move_to(START + timedelta(hours=12))
    services.reminders.mark_missed(START + timedelta(hours=12))
    assert db.reminder_occurrences.count_documents({"patient_id": pid, "status": "missed",
                                                    "local_time": "18:00"}) == 0  # never missed: it was stopped
