"""The patient review API against scripted data (see conftest.scripted_a)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, time, timedelta


def _get(client, world, path, who="clinician_team"):
    return client.get(f"/api/v1/patients/{world['patient_a'].id}/review/{path}", headers=world[who].headers)


def _on_utc(db, patient_id):
    db.users.update_one({"_id": patient_id}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})


def test_adherence_calendar_and_pdc_match_the_scripted_days(client, world, scripted_a):
    body = _get(client, world, "adherence?days=30").json
    today = datetime.now(UTC).date()
    assert len(body["calendar"]) == 30
    assert body["calendar"][-1]["date"] == today.isoformat()
    assert body["calendar"][-1]["state"] == "missing"  # today: no snapshot yet
    assert body["pdc_7"] == round(4 / 7, 4)
    assert body["pdc_30"] == round(27 / 30, 4)
    assert body["calendar"][-2]["covered"] is True and body["calendar"][-3]["covered"] is False


def test_tens_minutes_per_day_are_set_against_the_plan_in_force(client, world, scripted_a):
    days = {d["date"]: d for d in _get(client, world, "tens?days=14").json["days"]}
    today = datetime.now(UTC).date()
    two, three, ten = (str(today - timedelta(days=n)) for n in (2, 3, 10))
    assert (days[two]["minutes"], days[two]["sessions"], days[two]["target_minutes"]) == (60.0, 2, 40)
    assert (days[three]["minutes"], days[three]["sessions"], days[three]["target_minutes"]) == (45.0, 1, 40)
    assert (days[ten]["minutes"], days[ten]["target_minutes"]) == (0.0, 60)


def test_pain_review_pairs_ratings_around_sessions_and_ignores_deleted_entries(client, world, scripted_a):
    body = _get(client, world, "pain?days=30").json
    assert len(body["entries"]) == 8  # 3 pairs and 2 single ratings; the deleted one left out
    changes = sorted((p["session_id"], p["before"], p["after"], p["change"]) for p in body["pairs"])
    ids = [s["_id"] for s in scripted_a["sessions"]]
    assert changes == sorted([(ids[0], 7, 4, -3), (ids[1], 6, 5, -1), (ids[2], 8, 4, -4)])
    # Last 14 days: 7, 4, 6, 5, 8, 4 → 5.67; the 14 before: 4, 4 → 4.0.
    assert body["trend"] == {"recent_mean": 5.67, "previous_mean": 4.0, "change": 1.67, "direction": "rising"}


def test_programmes_that_helped_most_come_first(client, world, scripted_a):
    items = _get(client, world, "programmes?days=30").json["items"]
    assert items == [{"programme": 1, "frequency_hz": 100, "sessions": 2, "mean_change": -3.5},
                     {"programme": 3, "frequency_hz": 4, "sessions": 1, "mean_change": -1.0}]


def test_a_held_or_excluded_session_does_not_count_in_what_helped(client, world, scripted_a, db):
    db.session_records.update_many({"patient_id": world["patient_a"].id, "programme": 3}, {"$set": {"held": True}})
    items = _get(client, world, "programmes?days=30").json["items"]
    assert items == [{"programme": 1, "frequency_hz": 100, "sessions": 2, "mean_change": -3.5}]


def test_reminder_and_notification_history_carries_delivery_states(client, world, scripted_a):
    body = _get(client, world, "notifications?days=30").json
    assert [(o["status"], o["title"]) for o in body["occurrences"]] == [("done", "Morning TENS"), ("missed", "Morning TENS")]
    by_kind = {n["kind"]: n for n in body["notifications"]}
    assert by_kind["reminder"]["state"] == "sent" and by_kind["reminder"]["delivered_at"] is not None
    assert by_kind["reminder"]["to_patient"] is True
    assert by_kind["caregiver_alert"]["state"] == "failed"
    assert by_kind["caregiver_alert"]["error_codes"] == ["UNREGISTERED"]


def test_device_status_diary_and_plan_history(client, world, scripted_a):
    device = _get(client, world, "device").json
    units = {d["serial"]: d for d in device["devices"]}
    assert units["CTU-S0001"]["days_since_sync"] == 3 and units["CTU-S0001"]["status"]["battery_pct"] == 76
    assert units["CTU-A0001"]["days_since_sync"] is None  # bound in the world, never synced
    assert [e["kind"] for e in device["events"]] == ["electrode_off"]
    diary = _get(client, world, "diary?days=30").json
    assert diary["entries"][-1]["context"]["note"] == "slept badly"
    assert diary["practice"][0]["minutes"] == 12
    plans = _get(client, world, "plans").json["items"]
    assert [(p["version"], p["tens"]["daily_minutes_target"]) for p in plans] == [(2, 40), (1, 60)]


def test_acknowledging_an_alert_closes_it_and_keeps_the_first_acknowledgement(client, world, scripted_a, db):
    a, alert_id = world["patient_a"].id, scripted_a["open_alert"]["_id"]
    assert [x["id"] for x in _get(client, world, "alerts").json["items"]] == [alert_id]
    url = f"/api/v1/patients/{a}/review/alerts/{alert_id}/acknowledgement"
    first = client.post(url, headers=world["clinician_team"].headers)
    assert first.status_code == 200 and first.json["acknowledged_by"] == world["clinician_team"].id
    again = client.post(url, headers=world["clinician_team"].headers)
    assert again.json["acknowledged_at"] == first.json["acknowledged_at"]
    assert _get(client, world, "alerts").json["items"] == []
    assert len(_get(client, world, "alerts?state=all").json["items"]) == 2


def test_an_alert_of_another_patient_is_not_found_under_this_patient(client, world, seed):
    other = seed.alert(world["patient_b"].id, datetime.now(UTC))
    response = client.post(f"/api/v1/patients/{world['patient_a'].id}/review/alerts/{other['_id']}/acknowledgement",
                           headers=world["clinician_team"].headers)
    assert response.status_code == 404


def test_clinical_notes_are_written_and_listed_newest_first(client, world):
    url = f"/api/v1/patients/{world['patient_a'].id}/review/notes"
    headers = world["clinician_team"].headers
    assert client.post(url, json={"text": "Started low-frequency trial"}, headers=headers).status_code == 201
    assert client.post(url, json={"text": "Review in two weeks"}, headers=headers).status_code == 201
    items = client.get(url, headers=headers).json["items"]
    assert [n["text"] for n in items] == ["Review in two weeks", "Started low-frequency trial"]
    assert items[0]["author_name"] == "Clinician Team"


def test_a_notes_line_breaks_count_one_character_each_and_are_stored_as_lf(client, world):
    """As on the dashboard's form: a note of 5,000 characters whose line breaks came as CRLF (a web view's
    textarea) is taken, and kept with LF; 5,001 characters are refused."""
    url = f"/api/v1/patients/{world['patient_a'].id}/review/notes"
    headers = world["clinician_team"].headers
    typed = "\n".join(["x" * 99] * 50) + "y"
    answer = client.post(url, json={"text": typed.replace("\n", "\r\n")}, headers=headers)
    assert answer.status_code == 201 and answer.json["text"] == typed
    assert client.post(url, json={"text": typed + "z"}, headers=headers).status_code == 422


def test_a_clinician_outside_the_team_gets_404_on_every_review_route(client, world, scripted_a):
    a = world["patient_a"].id
    headers = world["clinician_other"].headers
    for path in ("adherence", "tens", "pain", "programmes", "notifications", "device", "diary", "plans", "alerts",
                 "notes"):
        response = client.get(f"/api/v1/patients/{a}/review/{path}", headers=headers)
        assert response.status_code == 404, path
        assert "Patient A" not in response.get_data(as_text=True)
    for path in ("exports/csv", "exports/fhir"):
        assert client.get(f"/api/v1/patients/{a}/{path}", headers=headers).status_code == 404
    ack = f"/api/v1/patients/{a}/review/alerts/{scripted_a['open_alert']['_id']}/acknowledgement"
    assert client.post(ack, headers=headers).status_code == 404


def test_review_reads_are_audited_for_the_patient(client, world, db):
    _get(client, world, "pain?days=7")
    event = db.audit_events.find_one({"patient_ids": world["patient_a"].id, "resource_type": "pain_entry"})
    assert event["actor_id"] == world["clinician_team"].id and event["outcome"] == "success"


def test_the_diary_review_holds_the_practice_of_its_days_as_the_events_csv_does(client, world, seed, db):
    """The review read a day's margin before the period for the time zones and kept it: a 7-day review listed
    a practice of the day before its first, which the events CSV of the same 7 days leaves out."""
    pid = world["patient_a"].id
    _on_utc(db, pid)
    first = datetime.now(UTC).date() - timedelta(days=6)
    seed.practice(pid, datetime.combine(first - timedelta(days=1), time(12), UTC), minutes=20)
    seed.practice(pid, datetime.combine(first, time(0, 30), UTC), minutes=15)
    practice = _get(client, world, "diary?days=7").json["practice"]
    export = client.get(f"/api/v1/patients/{pid}/exports/events?days=7", headers=world["clinician_team"].headers)
    in_csv = [r for r in csv.DictReader(io.StringIO(export.get_data(as_text=True).lstrip("\ufeff")))
              if r["event"] == "mindfulness_practice"]
    assert [p["minutes"] for p in practice] == [float(r["duration_min"]) for r in in_csv] == [15]


def test_the_reminder_review_holds_the_occurrences_of_its_days_only(client, world, seed, db):
    """Read from a day before the period up to tomorrow, the review listed the day before's occurrences and
    tomorrow's; today's still to come stay."""
    pid = world["patient_a"].id
    _on_utc(db, pid)
    today = datetime.now(UTC).date()
    rid = seed.reminder(pid, title="Morning TENS")
    seed.occurrence(pid, rid, datetime.combine(today - timedelta(days=7), time(20), UTC), "missed")  # before the 7
    seed.occurrence(pid, rid, datetime.combine(today - timedelta(days=6), time(0, 30), UTC), "done")
    seed.occurrence(pid, rid, datetime.combine(today, time(23, 59), UTC), "pending")
    seed.occurrence(pid, rid, datetime.combine(today + timedelta(days=1), time(0, 30), UTC), "pending")
    seed.notification(pid, pid, datetime.combine(today - timedelta(days=7), time(20), UTC), "sent")
    seed.notification(pid, pid, datetime.combine(today - timedelta(days=6), time(0, 30), UTC), "sent")
    history = _get(client, world, "notifications?days=7").json
    assert sorted((o["local_date"], o["status"]) for o in history["occurrences"]) == [
        (str(today - timedelta(days=6)), "done"), (str(today), "pending")]
    assert [n["created_at"][:10] for n in history["notifications"]] == [str(today - timedelta(days=6))]
