"""The review's lists are read up to a limit (companion.services.review.MAX_ROWS, 5,000 of each kind): each says
whether it holds everything it covers, so that the app and the clinician know when a list was cut."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

from companion.services import review as review_module
from companion.services.review import MAX_ROWS, PatientReview
from tests.clinician.seed import oid


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

    assert flags(2) == {"pain": (2, False, False), "programmes": False, "occurrences": (2, False),
                        "notifications": (2, False), "diary": (2, False), "practice": (2, False), "sessions": False}
    assert flags(3) == {"pain": (3, True, True), "programmes": True, "occurrences": (3, True),
                        "notifications": (3, True), "diary": (3, True), "practice": (3, True), "sessions": True}
    device = PatientReview(services.stores, patient).device()
    assert (len(device["events"]), device["events_complete"]) == (2, False)


def test_the_review_api_says_when_a_list_holds_only_the_first_five_thousand(client, world, db):
    """5,001 pain ratings in a month: the pain, diary and programme answers hold 5,000 and say they were cut."""
    pid = world["patient_a"].id
    _utc(db, pid)
    first = datetime.now(UTC) - timedelta(days=20)
    db.pain_entries.insert_many([
        {"_id": oid(), "patient_id": pid, "client_entry_id": uuid.uuid4().hex, "nrs": 4, "deleted": False,
         "recorded_at": first + timedelta(minutes=5 * n), "server_received_at": first, "updated_at": first,
         "context": None, "bpi": None, "session_record_id": None, "phase": None} for n in range(MAX_ROWS + 1)])
    headers = world["clinician_team"].headers
    pain = client.get(f"/api/v1/patients/{pid}/review/pain?days=30", headers=headers).json
    diary = client.get(f"/api/v1/patients/{pid}/review/diary?days=30", headers=headers).json
    programmes = client.get(f"/api/v1/patients/{pid}/review/programmes?days=30", headers=headers).json
    assert (len(pain["entries"]), pain["entries_complete"]) == (MAX_ROWS, False)
    assert (len(diary["entries"]), diary["entries_complete"], diary["practice_complete"]) == (MAX_ROWS, False, True)
    assert programmes["complete"] is False
    history = client.get(f"/api/v1/patients/{pid}/review/notifications?days=30", headers=headers).json
    device = client.get(f"/api/v1/patients/{pid}/review/device", headers=headers).json
    assert (history["occurrences_complete"], history["notifications_complete"], device["events_complete"]) == \
        (True, True, True)


def test_the_api_description_documents_each_lists_flag(client):
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    flags = {name: sorted(k for k, v in schemas[name]["properties"].items()
                          if (k == "complete" or k.endswith("_complete")) and "at most" in v.get("description", ""))
             for name in ("PainReview", "ProgrammeReview", "NotificationReview", "DeviceReview", "DiaryReview")}
    assert flags == {"PainReview": ["entries_complete", "trend_complete"], "ProgrammeReview": ["complete"],
                     "NotificationReview": ["notifications_complete", "occurrences_complete"],
                     "DeviceReview": ["events_complete"], "DiaryReview": ["entries_complete", "practice_complete"]}
