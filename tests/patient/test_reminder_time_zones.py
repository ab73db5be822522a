"""Reminders fire at the patient's wall-clock times across both DST transitions in four zones.

Policy (companion.domain.localtime): a time in the spring-forward gap fires at the end of the gap; a
time that happens twice at fall-back fires once, the first time. Every expected instant below was
worked out by hand from the zone's offsets.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tests.support.world import make_user

CASES = {
    # zone, transition date, times, {local date: {local time: expected UTC due time}}
    "new york spring forward": ("America/New_York", "2026-03-08", ["02:30", "08:00"], {
        "2026-03-07": {"02:30": "2026-03-07T07:30", "08:00": "2026-03-07T13:00"},
        "2026-03-08": {"02:30": "2026-03-08T07:00", "08:00": "2026-03-08T12:00"},
        "2026-03-09": {"02:30": "2026-03-09T06:30", "08:00": "2026-03-09T12:00"}}),
    "new york fall back": ("America/New_York", "2026-11-01", ["01:30", "08:00"], {
        "2026-10-31": {"01:30": "2026-10-31T05:30", "08:00": "2026-10-31T12:00"},
        "2026-11-01": {"01:30": "2026-11-01T05:30", "08:00": "2026-11-01T13:00"},
        "2026-11-02": {"01:30": "2026-11-02T06:30", "08:00": "2026-11-02T13:00"}}),
    "london spring forward": ("Europe/London", "2026-03-29", ["01:30", "08:00"], {
        "2026-03-28": {"01:30": "2026-03-28T01:30", "08:00": "2026-03-28T08:00"},
        "2026-03-29": {"01:30": "2026-03-29T01:00", "08:00": "2026-03-29T07:00"},
        "2026-03-30": {"01:30": "2026-03-30T00:30", "08:00": "2026-03-30T07:00"}}),
    "london fall back": ("Europe/London", "2026-10-25", ["01:30", "08:00"], {
        "2026-10-24": {"01:30": "2026-10-24T00:30", "08:00": "2026-10-24T07:00"},
        "2026-10-25": {"01:30": "2026-10-25T00:30", "08:00": "2026-10-25T08:00"},
        "2026-10-26": {"01:30": "2026-10-26T01:30", "08:00": "2026-10-26T08:00"}}),
    "lord howe half-hour fall back": ("Australia/Lord_Howe", "2026-04-05", ["01:45", "08:00"], {
        "2026-04-04": {"01:45": "2026-04-03T14:45", "08:00": "2026-04-03T21:00"},
        "2026-04-05": {"01:45": "2026-04-04T14:45", "08:00": "2026-04-04T21:30"},
        "2026-04-06": {"01:45": "2026-04-05T15:15", "08:00": "2026-04-05T21:30"}}),
    "lord howe half-hour spring forward": ("Australia/Lord_Howe", "2026-10-04", ["02:15", "08:00"], {
        "2026-10-03": {"02:15": "2026-10-02T15:45", "08:00": "2026-10-02T21:30"},
        "2026-10-04": {"02:15": "2026-10-03T15:30", "08:00": "2026-10-03T21:00"},
        "2026-10-05": {"02:15": "2026-10-04T15:15", "08:00": "2026-10-04T21:00"}}),
    "kolkata in march (no dst)": ("Asia/Kolkata", "2026-03-08", ["02:30", "08:00"], {
        "2026-03-07": {"02:30": "2026-03-06T21:00", "08:00": "2026-03-07T02:30"},
        "2026-03-08": {"02:30": "2026-03-07T21:00", "08:00": "2026-03-08T02:30"},
        "2026-03-09": {"02:30": "2026-03-08T21:00", "08:00": "2026-03-09T02:30"}}),
    "kolkata in november (no dst)": ("Asia/Kolkata", "2026-11-01", ["01:30", "08:00"], {
        "2026-10-31": {"01:30": "2026-10-30T20:00", "08:00": "2026-10-31T02:30"},
        "2026-11-01": {"01:30": "2026-10-31T20:00", "08:00": "2026-11-01T02:30"},
        "2026-11-02": {"01:30": "2026-11-01T20:00", "08:00": "2026-11-02T02:30"}}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_daily_reminders_fire_once_a_day_at_the_local_time_across_dst(client, services, clock, case):
    zone, transition, times, expected = CASES[case]
    patient = make_user(client, services, key="traveller", role="patient", time_zone=zone)
    day = date.fromisoformat(transition)
    created = client.post(f"/api/v1/patients/{patient.id}/reminders", headers=patient.headers, json={
        "kind": "tens", "title": "Morning session",
        "schedule": {"type": "weekly", "times": times, "start_date": (day - timedelta(days=5)).isoformat()}})
    assert created.status_code == 201, created.json
    start = datetime.combine(day - timedelta(days=2), datetime.min.time(), UTC)
    listed = client.get(f"/api/v1/patients/{patient.id}/occurrences", headers=patient.headers,
                        query_string={"from": start.isoformat(), "to": (start + timedelta(days=5)).isoformat()})
    assert listed.status_code == 200, listed.json
    got: dict[str, dict[str, str]] = {}
    for occurrence in listed.json["items"]:
        if occurrence["local_date"] in expected:
            slot = got.setdefault(occurrence["local_date"], {})
            assert occurrence["local_time"] not in slot, "a slot fired twice"
            slot[occurrence["local_time"]] = occurrence["due_at"][:16]
            assert occurrence["zone"] == zone
    assert got == expected


def test_two_moves_within_one_millisecond_keep_a_history_in_order(client, world, services):
    import time_machine

    patient = world["patient_a"]
    with time_machine.travel(datetime.now(UTC), tick=False):
        services.profiles.update(patient.id, {"time_zone": "Asia/Kolkata"})
        services.profiles.update(patient.id, {"time_zone": "America/New_York"})
    account = services.profiles.patient(patient.id)
    moves = [m.effective_from for m in account.time_zone_history]
    assert moves == sorted(set(moves)) and len(moves) == 3
    assert account.zone_history().zone_at(datetime.now(UTC) + timedelta(seconds=1)).key == "America/New_York"
