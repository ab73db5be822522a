"""The review's lists are read up to a limit (companion.services.review.MAX_ROWS, 5,000 of each kind): each says
whether it holds everything it covers, so that the app and the clinician know when a list was cut."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

from companion.services import review as review_module
from companion.services.review import MAX_ROWS, PatientReview
from tests.clinician.seed import oid
from tests.clinician.test_pages import sign_in


def _at(answered: str) -> datetime:
    return datetime.fromisoformat(answered)


def _ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)  # as stored


def _utc(db, patient_id):
    db.users.update_one({"_id": patient_id}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})


def test_each_review_list_says_whether_it_was_cut(world, services, seed, db, monkeypatch):
    pid = world["patient_a"].id
    _utc(db, pid)
    start = datetime.combine(datetime.now(UTC).date() - timedelta(days=3), time(9), UTC)
    reminder = seed.reminder(pid)
    for n in range(3):
        at = start + timedelta(hours=n)
        seed.pain(pid, at, 5)
        seed.session(pid, at)
        seed.occurrence(pid, reminder, at, "done")
        seed.notification(pid, pid, at, "sent")
        seed.practice(pid, at)
        seed.device_event(pid, "CTU-S0001", "connected", at)
    patient = services.profiles.patient(pid)
    monkeypatch.setattr(review_module, "DEVICE_EVENTS_SHOWN", 2)

    def flags(rows):
        review = PatientReview(services.stores, patient, rows=rows)
        pain, history, diary = review.pain(7), review.notifications(7), review.diary(7)
        return {"pain": (len(pain["entries"]), pain["entries_complete"], pain["trend_complete"]),
                "programmes": review.programme_review(7)["complete"],
                "occurrences": (len(history["occurrences"]), history["occurrences_complete"]),
                "notifications": (len(history["notifications"]), history["notifications_complete"]),
                "diary": (len(diary["entries"]), diary["entries_complete"]),
                "practice": (len(diary["practice"]), diary["practice_complete"]),
                "sessions": review.session_times(7)["sessions_complete"]}

    assert flags(2) == {"pain": (2, False, True), "programmes": False, "occurrences": (2, False),
                        "notifications": (2, False), "diary": (2, False), "practice": (2, False), "sessions": False}
    assert flags(3) == {"pain": (3, True, True), "programmes": True, "occurrences": (3, True),
                        "notifications": (3, True), "diary": (3, True), "practice": (3, True), "sessions": True}
    device = PatientReview(services.stores, patient).device()
    assert (len(device["events"]), device["events_complete"]) == (2, False)


def test_the_review_api_says_when_a_list_holds_only_the_latest_five_thousand(client, world, db):
    """5,001 pain ratings in a month: the pain, diary and programme answers hold the latest 5,000 (the first is
    left out, the one a clinician reviewing needs least) and say they were cut."""
    pid = world["patient_a"].id
    _utc(db, pid)
    first = datetime.now(UTC) - timedelta(days=20)
    db.pain_entries.insert_many([
        {"_id": oid(), "patient_id": pid, "client_entry_id": uuid.uuid4().hex, "nrs": 4, "deleted": False,
         "recorded_at": first + timedelta(minutes=5 * n), "server_received_at": first, "updated_at": first,
         "context": None, "bpi": None, "session_record_id": None, "phase": None} for n in range(MAX_ROWS + 1)])
    latest = first + timedelta(minutes=5 * MAX_ROWS)
    headers = world["clinician_team"].headers
    pain = client.get(f"/api/v1/patients/{pid}/review/pain?days=30", headers=headers).json
    diary = client.get(f"/api/v1/patients/{pid}/review/diary?days=30", headers=headers).json
    programmes = client.get(f"/api/v1/patients/{pid}/review/programmes?days=30", headers=headers).json
    assert (len(pain["entries"]), pain["entries_complete"]) == (MAX_ROWS, False)
    assert [_at(pain["entries"][0]["recorded_at"]), _at(pain["entries"][-1]["recorded_at"])] == [
        _ms(first + timedelta(minutes=5)), _ms(latest)]  # oldest first, from the second on
    assert (len(diary["entries"]), diary["entries_complete"], diary["practice_complete"]) == (MAX_ROWS, False, True)
    assert _at(diary["entries"][0]["recorded_at"]) == _ms(latest)  # newest first
    assert pain["trend_complete"] is True  # the trend reads every rating of its 28 days
    assert programmes["complete"] is False
    history = client.get(f"/api/v1/patients/{pid}/review/notifications?days=30", headers=headers).json
    device = client.get(f"/api/v1/patients/{pid}/review/device", headers=headers).json
    assert (history["occurrences_complete"], history["notifications_complete"], device["events_complete"]) == \
        (True, True, True)


def test_the_api_description_documents_each_lists_flag(client):
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    flags = {name: sorted(k for k, v in schemas[name]["properties"].items()
                          if (k == "complete" or k.endswith("_complete")) and "at most" in v.get("description", ""))
             for name in ("PainReview", "ProgrammeReview", "NotificationReview", "DeviceReview", "DiaryReview",
                          "ReviewPlanHistory", "ReviewAlertList", "ClinicalNoteList")}
    assert flags == {"PainReview": ["entries_complete"], "ProgrammeReview": ["complete"],
                     "NotificationReview": ["notifications_complete", "occurrences_complete"],
                     "DeviceReview": ["events_complete"], "DiaryReview": ["entries_complete", "practice_complete"],
                     "ReviewPlanHistory": ["items_complete"], "ReviewAlertList": ["items_complete"],
                     "ClinicalNoteList": ["items_complete"]}


def test_the_reviews_alerts_plan_versions_and_notes_keep_the_newest_and_say_when_they_were_cut(
        client, world, db, services):
    """201 open alerts, 201 plan versions and 101 clinical notes: the review's lists hold the newest 200, 200 and
    100 and say they were cut (`items_complete`), and the clinician's patient page says so beside each list."""
    pid = world["patient_a"].id
    clinician = world["clinician_team"]
    at = datetime.now(UTC) - timedelta(days=30)
    db.alerts.insert_many([
        {"_id": oid(), "patient_id": pid, "kind": "low_adherence", "severity": "warning", "text": f"Alert {n}",
         "dedup_key": f"{pid}:low_adherence:{n}", "raised_at": at + timedelta(minutes=n), "acknowledged_at": None,
         "acknowledged_by": None, "resolved_at": None, "shared_with_caregivers": False} for n in range(201)])
    db.therapy_plans.delete_many({"patient_id": pid})
    db.therapy_plans.insert_many([
        {"_id": oid(), "patient_id": pid, "version": n, "created_at": at + timedelta(minutes=n), "created_by": "c",
         "active_from": at + timedelta(minutes=n), "active_to": None, "tens": None, "medications": [],
         "mindfulness": None} for n in range(1, 202)])
    db.clinical_notes.insert_many([
        {"_id": oid(), "patient_id": pid, "author_id": clinician.id, "text": f"Note {n}",
         "created_at": at + timedelta(minutes=n)} for n in range(101)])
    base = f"/api/v1/patients/{pid}/review"
    alerts = client.get(f"{base}/alerts", headers=clinician.headers).json
    plans = client.get(f"{base}/plans", headers=clinician.headers).json
    notes = client.get(f"{base}/notes", headers=clinician.headers).json
    assert (len(alerts["items"]), alerts["items"][0]["text"], alerts["items"][-1]["text"],
            alerts["items_complete"]) == (200, "Alert 200", "Alert 1", False)
    assert ([plans["items"][0]["version"], plans["items"][-1]["version"]], plans["items_complete"]) == ([201, 2], False)
    assert (len(notes["items"]), notes["items"][0]["text"], notes["items"][-1]["text"], notes["items_complete"]) == (
        100, "Note 100", "Note 1", False)

    sign_in(client, clinician.email)
    page = client.get(f"/clinician/patients/{pid}").get_data(as_text=True)
    assert "Only the latest 200 open alerts are shown" in page and ">200+<" in page
    assert "Only the latest 200 versions are shown" in page
    assert "Only the latest 20 notes are shown" in page
    db.alerts.delete_many({"patient_id": pid, "text": "Alert 0"})
    db.therapy_plans.delete_many({"patient_id": pid, "version": 1})
    db.clinical_notes.delete_many({"patient_id": pid, "created_at": {"$lt": at + timedelta(minutes=81)}})
    assert client.get(f"{base}/alerts", headers=clinician.headers).json["items_complete"] is True
    assert client.get(f"{base}/plans", headers=clinician.headers).json["items_complete"] is True
    page = client.get(f"/clinician/patients/{pid}").get_data(as_text=True)
    assert "Only the latest" not in page and ">200<" in page
