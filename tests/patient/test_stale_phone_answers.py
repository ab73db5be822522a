"""Through the API, as the app sends them: a dose ticked off on a phone whose copy of the occurrence is out of date
(a move west moved the slot later; the other phone re-timed the reminder) is answered 200 and recorded once, where
it was refused for good (422, then 404); an answer more than an hour before every time the slot was shown is still
422. The worker's side (pushes, missed-marking, adherence) is in tests/scheduler/test_answers_from_a_stale_copy.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.patient.conftest import START
from tests.support.problems import assert_problem

DAILY = {"kind": "medication", "title": "Evening tablet", "completion_window_min": 60,
         "schedule": {"type": "weekly", "times": ["09:30", "18:00"], "start_date": "2026-03-02"}}
TOOK_IT = "2026-03-02T18:05:00+00:00"


def _evening_copy(client, pid, headers) -> dict:
    """Phone A's copy of today's 18:00 slot (London: 18:00 UTC), read in the morning."""
    items = client.get(f"/api/v1/patients/{pid}/occurrences", headers=headers, query_string={
        "from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()}).json["items"]
    evening = next(o for o in items if o["local_time"] == "18:00" and o["local_date"] == "2026-03-02")
    assert evening["due_at"] == "2026-03-02T18:00:00+00:00"
    return evening


def test_a_dose_ticked_off_on_a_copy_read_before_a_move_west_is_recorded(client, world, db, services, clock):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    assert client.post(f"/api/v1/patients/{pid}/reminders", json=DAILY, headers=headers).status_code == 201
    evening = _evening_copy(client, pid, headers)
    clock.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))  # the other phone sets the new zone
    moved = client.patch(f"/api/v1/patients/{pid}", json={"time_zone": "America/New_York"}, headers=headers)
    assert moved.status_code == 200, moved.json
    assert db.reminder_occurrences.find_one({"_id": evening["id"]})["due_at"] == datetime(2026, 3, 2, 23, tzinfo=UTC)
    clock.move_to(datetime(2026, 3, 2, 18, 6, tzinfo=UTC))
    target = f"/api/v1/patients/{pid}/occurrences/{evening['id']}"
    first = client.patch(target, json={"status": "done", "at": TOOK_IT}, headers=headers)
    assert first.status_code == 200, first.json
    assert (first.json["status"], first.json["status_at"], first.json["on_time"]) == ("done", TOOK_IT, True)
    clock.move_to(datetime(2026, 3, 3, 0, 30, tzinfo=UTC))
    services.reminders.mark_missed(datetime.now(UTC))
    retry = client.patch(target, json={"status": "done", "at": TOOK_IT}, headers=headers)
    assert (retry.status_code, retry.json["version"]) == (200, first.json["version"])
    assert db.reminder_occurrences.find_one({"_id": evening["id"]})["status"] == "done"


def test_a_dose_ticked_off_at_the_old_time_after_a_re_timing_is_recorded_and_the_new_slot_settled(
        client, world, db, clock):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    created = client.post(f"/api/v1/patients/{pid}/reminders", json=DAILY, headers=headers)
    evening = _evening_copy(client, pid, headers)
    clock.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))  # phone B: 18:00 becomes 19:00
    changed = client.patch(f"/api/v1/patients/{pid}/reminders/{created.json['id']}", headers=headers, json={
        "schedule": {**DAILY["schedule"], "times": ["09:30", "19:00"]}})
    assert changed.status_code == 200, changed.json
    clock.move_to(datetime(2026, 3, 2, 18, 6, tzinfo=UTC))
    stale = client.patch(f"/api/v1/patients/{pid}/occurrences/{evening['id']}",
                         json={"status": "done", "at": TOOK_IT}, headers=headers)
    assert stale.status_code == 200, stale.json
    assert (stale.json["status"], stale.json["deleted"], stale.json["on_time"]) == ("done", False, True)
    feed = client.get(f"/api/v1/patients/{pid}/occurrences/changes", headers=headers).json["items"]
    today = {o["local_time"]: o for o in feed if o["local_date"] == "2026-03-02"}
    assert (today["19:00"]["status"], today["19:00"]["deleted"], today["19:00"]["settled_by"]) == (
        "cancelled", True, evening["id"])
    assert today["18:00"]["status"] == "done"
    # Phone B, not synced since, ticks off its 19:00: the same dose, nothing more recorded.
    clock.move_to(datetime(2026, 3, 2, 19, 5, tzinfo=UTC))
    again = client.patch(f"/api/v1/patients/{pid}/occurrences/{today['19:00']['id']}", json={"status": "done"},
                         headers=headers)
    assert (again.status_code, again.json["version"], again.json["deleted"]) == (200, today["19:00"]["version"], True)
    assert db.reminder_occurrences.count_documents({"patient_id": pid, "status": "done"}) == 1


def test_a_tick_more_than_an_hour_before_every_time_the_slot_was_shown_is_still_refused(client, world, db, clock):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    client.post(f"/api/v1/patients/{pid}/reminders", json=DAILY, headers=headers)
    evening = _evening_copy(client, pid, headers)
    clock.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    client.patch(f"/api/v1/patients/{pid}", json={"time_zone": "America/New_York"}, headers=headers)
    clock.move_to(datetime(2026, 3, 2, 18, 6, tzinfo=UTC))
    early = client.patch(f"/api/v1/patients/{pid}/occurrences/{evening['id']}",
                         json={"status": "done", "at": "2026-03-02T16:59:00+00:00"}, headers=headers)
    assert_problem(early, 422)
    assert early.json["errors"] == {"at": ["too early"]}
    assert db.reminder_occurrences.find_one({"_id": evening["id"]})["status"] == "pending"
