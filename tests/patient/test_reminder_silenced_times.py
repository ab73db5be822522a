"""A reminder whose whole window falls inside the patient's quiet hours is accepted, and says which of its times no
push will remind of (``silenced_by_quiet_hours``), on creation, on a change, and when the quiet hours change."""

from __future__ import annotations

from tests.patient.conftest import START

NIGHT = {"start": "22:00", "end": "07:00"}


def reminder(times: list[str], window: int = 60) -> dict:
    return {"kind": "medication", "title": "Night tablet", "completion_window_min": window,
            "schedule": {"type": "weekly", "times": times, "start_date": START.date().isoformat()}}


def base(world) -> str:
    return f"/api/v1/patients/{world['patient_a'].id}"


def set_quiet_hours(client, world, quiet) -> None:
    answer = client.patch(base(world), json={"quiet_hours": quiet}, headers=world["patient_a"].headers)
    assert answer.status_code == 200, answer.json


def test_a_reminder_whose_window_ends_inside_quiet_hours_is_accepted_and_says_no_push_will_remind_of_it(
        client, world):
    set_quiet_hours(client, world, NIGHT)
    headers = world["patient_a"].headers
    created = client.post(f"{base(world)}/reminders", json=reminder(["06:00", "06:30", "21:30", "23:00"]),
                          headers=headers)
    assert created.status_code == 201, created.json
    # 06:30 is pushed at 07:00 (its window still open), 21:30 before the quiet hours; 06:00's window ends as they do.
    assert created.json["silenced_by_quiet_hours"] == ["06:00", "23:00"]
    longer = client.post(f"{base(world)}/reminders", json=reminder(["23:00"], window=8 * 60 + 1), headers=headers)
    assert longer.json["silenced_by_quiet_hours"] == []  # its window outlasts them: pushed at 07:00

    moved = client.patch(f"{base(world)}/reminders/{created.json['id']}",
                         json={"schedule": {"type": "weekly", "times": ["20:00", "23:30"]}}, headers=headers)
    assert moved.json["silenced_by_quiet_hours"] == ["23:30"]
    listed = client.get(f"{base(world)}/reminders", headers=headers).json["items"]
    assert {r["id"]: r["silenced_by_quiet_hours"] for r in listed} == {created.json["id"]: ["23:30"],
                                                                      longer.json["id"]: []}


def test_changing_quiet_hours_changes_the_reminders_it_silences_or_frees(client, world):
    headers = world["patient_a"].headers
    created = client.post(f"{base(world)}/reminders", json=reminder(["23:00"]), headers=headers)
    assert created.json["silenced_by_quiet_hours"] == []
    url = f"{base(world)}/reminders/{created.json['id']}"
    feed = client.get(f"{base(world)}/reminders/changes", headers=headers).json

    set_quiet_hours(client, world, NIGHT)
    read = client.get(url, headers={**headers, "If-None-Match": created.headers["ETag"]})
    assert read.status_code == 200 and read.json["silenced_by_quiet_hours"] == ["23:00"]  # a new version, not a 304
    assert read.headers["ETag"] != created.headers["ETag"]
    changed = client.get(f"{base(world)}/reminders/changes", headers=headers,
                         query_string={"cursor": feed["next_cursor"]}).json["items"]
    assert [(r["id"], r["silenced_by_quiet_hours"]) for r in changed] == [(created.json["id"], ["23:00"])]

    set_quiet_hours(client, world, {"start": "23:30", "end": "07:00"})
    assert client.get(url, headers=headers).json["silenced_by_quiet_hours"] == []
    set_quiet_hours(client, world, NIGHT)
    set_quiet_hours(client, world, None)
    assert client.get(url, headers=headers).json["silenced_by_quiet_hours"] == []


def test_the_field_is_in_the_openapi_document(client):
    schema = client.get("/openapi.json").json["components"]["schemas"]["Reminder"]
    assert "silenced_by_quiet_hours" in schema["required"]
    assert "quiet hours" in schema["properties"]["silenced_by_quiet_hours"]["description"]
