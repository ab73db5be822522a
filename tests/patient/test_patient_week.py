"""A patient's week driven through the HTTP API, checking every number.

Patient A moves to New York on Friday 6 March 2026, a clinician prescribes two 30-minute TENS sessions a
day and 10 minutes of mindfulness, and the patient sets a TENS reminder at 08:00 and 20:00. New York
springs forward on Sunday 8 March (08:00 moves from 13:00 to 12:00 UTC). On Wednesday 11 March at
10:00 UTC (06:00 in New York) the patient lands in London: the Wednesday 08:00 slot has passed on the
new clock (and its two-hour window closed at the landing), so it is kept on the London clock as missed
because of the move; later slots move to London time. The TENS sessions arrive as the gateway
would store them; the diary is uploaded offline on Thursday; Thursday noon (UTC, also London) the app
asks for today, the streak, the week and suggestions after the morning's flare.
"""

from __future__ import annotations

from datetime import UTC, datetime

from companion.services.touched_days import TouchedDays
from companion.store.stores import Stores
from tests.patient.helpers import PLAN
from tests.support.world import login

FLARE_ITEM = "three-breath-reset"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def tens_session(db, patient_id: str, seq: int, started: str, minutes: int = 30) -> None:
    """A session record as the gateway ingestion stores it (companion/store/sessions.py, data contract)."""
    at = utc(started)
    db.session_records.insert_one({
        "_id": f"CTU-A0001:{seq}", "patient_id": patient_id, "device_serial": "CTU-A0001", "device_seq": seq,
        "started_at": at, "device_started_at": at, "clock_offset_s": 0, "clock_status": "ok",
        "gateway_received_at": at, "server_received_at": at, "duration_s": minutes * 60, "programme": 1,
        "frequency_hz": 100, "pulse_width_us": 200, "intensity_mean_ma": 20.0, "intensity_peak_ma": 25.0,
        "end_reason": "completed", "battery_pct": 80, "content_hash": "x", "gateway_id": None})
    TouchedDays(Stores(db)).instants(patient_id, [at], "session")  # as ingestion marks the day it touches


def slots(items):
    return [(o["local_date"], o["local_time"], o["due_at"][:16], o["zone"], o["status"]) for o in items]


DIARY = [  # recorded_at (UTC), NRS, extra
    ("2026-03-06T14:00", 5, {}), ("2026-03-07T14:00", 4, {}), ("2026-03-08T14:00", 5, {}),
    ("2026-03-09T14:00", 4, {}), ("2026-03-09T16:00", 2, {"context": {"activity": "after breathing"}}),
    ("2026-03-10T12:00", 5, {"session_record_id": "CTU-A0001:9", "phase": "before"}),
    ("2026-03-10T12:40", 3, {"session_record_id": "CTU-A0001:9", "phase": "after"}),
    ("2026-03-11T14:00", 4, {}),
    ("2026-03-12T09:00", 8, {"context": {"location": "lower back", "note": "woke up stiff"}}),
]


def test_a_week_of_plan_reminders_diary_practice_and_progress(client, world, db, services, clock):
    patient, clinician = world["patient_a"], world["clinician_team"]
    pid, headers = patient.id, patient.headers
    base = f"/api/v1/patients/{pid}"
    services.library.load()

    def at(moment: str) -> None:
        clock.move_to(utc(moment))

    def done(key, status="done", **extra):
        answer = client.patch(f"{base}/occurrences/{ids[key]}", json={"status": status, **extra}, headers=headers)
        assert answer.status_code == 200, answer.json
        assert answer.json["status"] == status

    def step(moment: str, seq: int | None = None, started: str | None = None, key=None, **outcome) -> None:
        """At `moment`: the gateway has stored session `seq` started at `started`; the patient ticks `key`."""
        at(moment)
        if seq is not None:
            tens_session(db, pid, seq, started)
        if key is not None:
            done(key, **outcome)

    def practise(start: str, end: str) -> dict:
        at(start)
        started = client.post(f"{base}/practice", json={"item_slug": FLARE_ITEM}, headers=headers).json
        at(end)
        return client.post(f"{base}/practice/{started['id']}/complete", json={}, headers=headers).json

    # Friday: move to New York, the plan, the reminder.
    at("2026-03-06T12:00")
    assert client.patch(base, json={"time_zone": "America/New_York"}, headers=headers).status_code == 200
    # A staff session lasts 12 hours: days after the world was built, the clinician signs in again.
    clinician = login(client, "clinician_team", clinician.email, clinician.id, "clinician")
    plan = client.put(f"{base}/therapy-plan", json={**PLAN, "medications": []}, headers=clinician.headers)
    assert plan.status_code == 201 and plan.json["version"] == 1
    reminder = client.post(f"{base}/reminders", headers=headers, json={
        "kind": "tens", "title": "TENS session", "completion_window_min": 120,
        "schedule": {"type": "weekly", "times": ["08:00", "20:00"], "start_date": "2026-03-06"}})
    assert reminder.status_code == 201, reminder.json

    listed = client.get(f"{base}/occurrences", headers=headers,
                        query_string={"from": "2026-03-06T12:00:00Z", "to": "2026-03-13T00:00:00Z"}).json["items"]
    ny = "America/New_York"
    assert slots(listed) == [
        ("2026-03-06", "08:00", "2026-03-06T13:00", ny, "pending"),
        ("2026-03-06", "20:00", "2026-03-07T01:00", ny, "pending"),
        ("2026-03-07", "08:00", "2026-03-07T13:00", ny, "pending"),
        ("2026-03-07", "20:00", "2026-03-08T01:00", ny, "pending"),
        ("2026-03-08", "08:00", "2026-03-08T12:00", ny, "pending"),  # daylight saving from 02:00
        ("2026-03-08", "20:00", "2026-03-09T00:00", ny, "pending"),
        ("2026-03-09", "08:00", "2026-03-09T12:00", ny, "pending"),
        ("2026-03-09", "20:00", "2026-03-10T00:00", ny, "pending"),
        ("2026-03-10", "08:00", "2026-03-10T12:00", ny, "pending"),
        ("2026-03-10", "20:00", "2026-03-11T00:00", ny, "pending"),
        ("2026-03-11", "08:00", "2026-03-11T12:00", ny, "pending"),
        ("2026-03-11", "20:00", "2026-03-12T00:00", ny, "pending"),
        ("2026-03-12", "08:00", "2026-03-12T12:00", ny, "pending"),
    ]
    ids = {(o["local_date"][8:], o["local_time"]): o["id"] for o in listed}

    # Friday to Wednesday morning in New York: sessions, check-offs, one skip, one missed.
    step("2026-03-06T13:40", 1, "2026-03-06T13:10", ("06", "08:00"))
    step("2026-03-07T01:30", key=("06", "20:00"), status="skipped", skip_reason="too tired")
    step("2026-03-07T13:40", 2, "2026-03-07T13:05", ("07", "08:00"))
    step("2026-03-08T01:40", 3, "2026-03-08T01:05", ("07", "20:00"))
    step("2026-03-08T12:40", 4, "2026-03-08T12:05", ("08", "08:00"))
    at("2026-03-09T03:00")
    assert services.reminders.mark_missed(datetime.now(UTC)) == 1  # the scheduler's tick: Sunday 20:00 was never done
    step("2026-03-09T12:40", 5, "2026-03-09T12:05", ("09", "08:00"))
    assert practise("2026-03-09T15:00", "2026-03-09T15:02")["minutes"] == 2.0
    step("2026-03-10T00:40", 6, "2026-03-10T00:05", ("09", "20:00"))
    step("2026-03-10T12:40", 9, "2026-03-10T12:05", ("10", "08:00"))
    step("2026-03-11T00:40", 10, "2026-03-11T00:05", ("10", "20:00"))

    # Wednesday 10:00 UTC: landed in London.
    at("2026-03-11T10:00")
    moved = client.patch(base, json={"time_zone": "Europe/London"}, headers=headers).json
    assert [(z["zone"], z["effective_from"][:16]) for z in moved["time_zone_history"]] == [
        ("Europe/London", "2026-03-02T09:00"), (ny, "2026-03-06T12:00"), ("Europe/London", "2026-03-11T10:00")]
    after_move = client.get(f"{base}/occurrences", headers=headers,
                            query_string={"from": "2026-03-11T00:00:00Z", "to": "2026-03-13T00:00:00Z"}).json
    london = "Europe/London"
    assert slots(after_move["items"]) == [
        ("2026-03-10", "20:00", "2026-03-11T00:00", ny, "done"),
        ("2026-03-11", "08:00", "2026-03-11T08:00", london, "missed"),
        ("2026-03-11", "20:00", "2026-03-11T20:00", london, "pending"),
        ("2026-03-12", "08:00", "2026-03-12T08:00", london, "pending"),
        ("2026-03-12", "20:00", "2026-03-12T20:00", london, "pending"),
    ]
    assert after_move["items"][1]["missed_reason"] == "time_zone_change"
    step("2026-03-11T11:30", 11, "2026-03-11T11:00")
    step("2026-03-11T20:40", 12, "2026-03-11T20:05", ("11", "20:00"))
    step("2026-03-12T08:45", 13, "2026-03-12T08:10", ("12", "08:00"))
    assert practise("2026-03-12T09:30", "2026-03-12T09:32")["minutes"] == 2.0

    # Thursday: the diary kept offline is uploaded (twice: the app retried).
    at("2026-03-12T11:00")
    batch = {"entries": [{"client_entry_id": f"week-entry-{n:02d}", "recorded_at": when + ":00Z", "nrs": nrs,
                          **extra} for n, (when, nrs, extra) in enumerate(DIARY)]}
    first = client.post(f"{base}/pain-entries/batch", json=batch, headers=headers).json
    again = client.post(f"{base}/pain-entries/batch", json=batch, headers=headers).json
    assert (first["created"], first["duplicates"], again["created"], again["duplicates"]) == (9, 0, 0, 9)
    assert db.pain_entries.count_documents({"patient_id": pid}) == 9

    # Thursday noon: today, the streak, the weeks, the suggestions.
    at("2026-03-12T12:00")
    today = client.get(f"{base}/today", headers=headers).json
    assert (today["date"], today["zone"]) == ("2026-03-12", london)
    reminders = today["reminders"]
    assert (reminders["due"], reminders["done"], reminders["pending"], reminders["skipped"], reminders["missed"]) \
        == (2, 1, 1, 0, 0)
    assert [(o["local_time"], o["status"]) for o in reminders["items"]] == [("08:00", "done"), ("20:00", "pending")]
    assert today["tens"] == {"state": "progress", "fraction": 0.5, "minutes": 30.0, "minutes_target": 60.0,
                             "done": 1, "planned": 2, "sessions": 1, "counts_towards_adherence": True}
    assert today["mindfulness"] == {"state": "progress", "fraction": 0.2, "minutes": 2.0, "minutes_target": 10.0,
                                    "done": 1, "planned": 0, "counts_towards_adherence": True,
                                    "goal": {"minutes_per_day": 10, "sessions_per_week": None},
                                    "sessions_this_week": 2}
    assert today["medication"]["state"] == "no_tasks"
    assert today["pain"] == {"entries": 1, "latest_nrs": 8}

    streak = client.get(f"{base}/progress/streak", headers=headers).json
    assert (streak["current"], streak["longest"], streak["forgiven"]) == (4, 4, ["2026-03-08"])
    strict = client.get(f"{base}/progress/streak", query_string={"grace_days": 0}, headers=headers).json
    assert (strict["current"], strict["longest"], strict["forgiven"]) == (3, 3, [])

    week = client.get(f"{base}/progress/week", headers=headers).json
    assert (week["week_start"], week["iso_week"], week["days_with_plan"], week["days_covered"]) == \
        ("2026-03-09", 11, 3, 3)  # today, half done at noon, has no verdict yet: it counts once covered
    assert (week["tens_minutes"], week["practice_minutes"], week["pain_entries"]) == (210.0, 4.0, 6)
    assert round(week["mean_pain"], 4) == round(26 / 6, 4)
    assert [(d["date"], d["covered"], d["tens_minutes"], d["mindfulness_minutes"], d["reminders_done"],
             d["reminders_missed"], d["pain_entries"], d["max_pain"]) for d in week["days"]] == [
        ("2026-03-09", True, 60.0, 2.0, 2, 0, 2, 4),
        ("2026-03-10", True, 60.0, 0.0, 2, 0, 2, 5),
        ("2026-03-11", True, 60.0, 0.0, 1, 1, 1, 4),  # 08:00 jumped over by the flight: kept, missed
        ("2026-03-12", None, 30.0, 2.0, 1, 0, 1, 8),  # in progress, not "not covered"
        ("2026-03-13", None, 0.0, 0.0, 0, 0, 0, None),
        ("2026-03-14", None, 0.0, 0.0, 0, 0, 0, None),
        ("2026-03-15", None, 0.0, 0.0, 0, 0, 0, None),
    ]
    before = client.get(f"{base}/progress/week", query_string={"date": "2026-03-06"}, headers=headers).json
    assert (before["days_with_plan"], before["days_covered"], before["tens_minutes"], before["pain_entries"]) == \
        (3, 1, 120.0, 3)
    assert round(before["mean_pain"], 4) == round(14 / 3, 4)
    assert [(d["date"], d["covered"], d["reminders_done"], d["reminders_skipped"], d["reminders_missed"])
            for d in before["days"][4:]] == [("2026-03-06", False, 1, 1, 0), ("2026-03-07", True, 2, 0, 0),
                                             ("2026-03-08", False, 1, 0, 1)]
    assert [d["covered"] for d in before["days"][:4]] == [None] * 4

    suggested = client.get(f"{base}/suggestions", headers=headers).json
    assert suggested["flare"] == {"recorded_at": "2026-03-12T09:00:00+00:00", "nrs": 8, "reason": "above_median",
                                  "baseline_median": 4.0}
    first_item = suggested["items"][0]
    assert (first_item["slug"], first_item["mean_pain_change"], first_item["pairs"]) == (FLARE_ITEM, -2.0, 1)
    assert len(suggested["items"]) == 3
    assert all(i["duration_min"] <= 10 and i["mean_pain_change"] is None for i in suggested["items"][1:])

    # Thursday evening: the second session completes the day and the streak grows.
    step("2026-03-12T20:40", 14, "2026-03-12T20:05")
    assert client.get(f"{base}/progress/streak", headers=headers).json["current"] == 5
    assert client.get(f"{base}/today", headers=headers).json["tens"]["fraction"] == 1.0
    completed = client.get(f"{base}/progress/week", headers=headers).json
    assert (completed["days_with_plan"], completed["days_covered"]) == (4, 4)
    assert [d["covered"] for d in completed["days"][3:5]] == [True, None]
