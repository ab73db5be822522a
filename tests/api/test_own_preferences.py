"""Anyone signed in sets their own time zone, quiet hours and language (GET/PATCH /api/v1/me/preferences): a
caregiver's alert pushes wait for the end of the quiet hours they set, on the clock they set. Before, only a
patient's profile could set them, yet docs/pushes.md promised caregivers that wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from companion.domain.alerts import AlertCandidate, AlertKind, Severity
from companion.domain.quiet_hours import in_quiet_hours
from tests.api.test_care_team_consent import quiet_hours_around_now
from tests.support.problems import assert_problem

URL = "/api/v1/me/preferences"


def _quiet(quiet) -> dict:
    return {"start": quiet.start.strftime("%H:%M"), "end": quiet.end.strftime("%H:%M")}


def test_a_caregiver_sets_their_quiet_hours_zone_and_language_and_reads_them_back(client, world, db):
    caregiver = world["caregiver_linked"]
    answer = client.patch(URL, headers=caregiver.headers, json={
        "quiet_hours": {"start": "22:00", "end": "07:00"}, "time_zone": "Asia/Kolkata", "locale": "de"})
    assert answer.status_code == 200, answer.json
    assert answer.json == {"quiet_hours": {"start": "22:00", "end": "07:00"}, "time_zone": "Asia/Kolkata",
                           "locale": "de", "version": 1}
    assert answer.headers["ETag"] == '"1"'
    stored = db.users.find_one({"_id": caregiver.id})
    assert (stored["quiet_hours"], stored["time_zone"]) == ({"start": "22:00", "end": "07:00"}, "Asia/Kolkata")
    # Moved like a patient: the zone left is in the history, so instants before the move keep their clock.
    assert [(m["zone"], m["previous"]) for m in stored["time_zone_history"]] == [("Asia/Kolkata", "UTC")]
    read = client.get(URL, headers=caregiver.headers)
    assert (read.status_code, read.json, read.headers["ETag"]) == (200, answer.json, '"1"')
    assert client.get(URL, headers={**caregiver.headers, "If-None-Match": '"1"'}).status_code == 304
    cleared = client.patch(URL, headers=caregiver.headers, json={"quiet_hours": None})
    assert (cleared.json["quiet_hours"], cleared.json["time_zone"]) == (None, "Asia/Kolkata")


@pytest.mark.parametrize("person", ["clinician_team", "admin", "patient_a"])
def test_everyone_signed_in_has_preferences_of_their_own(client, world, person):
    caller = world[person]
    answer = client.patch(URL, headers=caller.headers, json={"quiet_hours": {"start": "23:00", "end": "06:30"}})
    assert (answer.status_code, answer.json["quiet_hours"]) == (200, {"start": "23:00", "end": "06:30"})


def test_a_patient_sets_the_same_fields_as_in_their_profile_under_the_same_version(client, world):
    patient = world["patient_a"]
    changed = client.patch(URL, headers=patient.headers, json={"time_zone": "Asia/Kolkata"})
    profile = client.get(f"/api/v1/patients/{patient.id}", headers=patient.headers)
    assert (profile.json["time_zone"], profile.headers["ETag"]) == ("Asia/Kolkata", changed.headers["ETag"])
    assert [z["zone"] for z in profile.json["time_zone_history"]] == ["Europe/London", "Asia/Kolkata"]


def test_a_caregivers_alert_push_waits_for_the_end_of_the_quiet_hours_they_set(client, world, db, services):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]  # linked for missed sessions
    quiet = quiet_hours_around_now("Asia/Kolkata")
    assert client.patch(URL, headers=caregiver.headers, json={"time_zone": "Asia/Kolkata",
                                                              "quiet_hours": _quiet(quiet)}).status_code == 200
    services.alerts.raise_once(AlertCandidate(AlertKind.MISSED_TENS, Severity.WARNING, patient.id,
                                              f"missed:{patient.id}:test", "test", "missed"))
    push = db.push_outbox.find_one({"recipient_user_id": caregiver.id, "source_key": {"$regex": "^alert:"}})
    goes_at = push["not_before"].astimezone(ZoneInfo("Asia/Kolkata"))
    assert not in_quiet_hours(goes_at.time(), quiet), f"pushed at {goes_at:%H:%M} in Kolkata, quiet {quiet}"
    assert push["not_before"] > datetime.now(UTC) + timedelta(hours=2)


def test_a_caregivers_move_touches_no_patients_days_and_the_jobs_that_read_zones_still_run(client, world, db,
                                                                                            services):
    caregiver = world["caregiver_linked"]
    marks_before = db.panel_row_marks.count_documents({})
    assert client.patch(URL, headers=caregiver.headers, json={"time_zone": "Australia/Lord_Howe"}).status_code == 200
    assert db.panel_row_marks.count_documents({}) == marks_before  # no panel row of theirs, none of a patient's
    assert db.users.count_documents({"_id": caregiver.id, "role": "caregiver"}) == 1
    services.alerts.evaluate()  # reads every patient's zone history and the caregivers' zones for quiet hours
    services.adherence_job.run()
    assert client.get(f"/api/v1/patients/{world['patient_a'].id}", headers=caregiver.headers).status_code == 200


def test_the_other_profile_fields_and_unknown_ones_are_refused(client, world):
    caregiver = world["caregiver_linked"]
    for body in ({"display_name": "Someone"}, {"caregiver_alert_delay_min": 30}, {"colour": "blue"}):
        answer = client.patch(URL, headers=caregiver.headers, json=body)
        assert_problem(answer, 422)
        assert list(answer.json["errors"]["json"]) == list(body), answer.json
    bad = client.patch(URL, headers=caregiver.headers, json={"time_zone": "Mars/Olympus",
                                                             "quiet_hours": {"start": "25:00", "end": "07:00"}})
    assert_problem(bad, 422)
    assert set(bad.json["errors"]["json"]) == {"time_zone", "quiet_hours"}


def test_a_change_from_a_stale_version_is_412_with_the_current_preferences(client, world):
    caregiver = world["caregiver_linked"]
    first = client.patch(URL, headers=caregiver.headers, json={"locale": "es"})
    stale = client.patch(URL, headers={**caregiver.headers, "If-Match": '"0"'}, json={"locale": "de"})
    assert_problem(stale, 412)
    assert (stale.json["current"], stale.headers["ETag"]) == (first.json, first.headers["ETag"])
    assert client.patch(URL, headers={**caregiver.headers, "If-Match": first.headers["ETag"]},
                        json={"locale": "de"}).json["locale"] == "de"


def test_a_change_of_ones_preferences_is_audited_against_ones_account(client, world, db):
    caregiver = world["caregiver_linked"]
    assert client.patch(URL, headers=caregiver.headers, json={"locale": "es"}).status_code == 200
    event = db.audit_events.find_one({"actor_id": caregiver.id, "resource_type": "account", "action": "U"})
    assert (event["outcome"], event["resource_ids"], event["route"]) == ("success", [caregiver.id], URL)


def test_a_gateway_has_no_preferences(client, world):
    assert_problem(client.get(URL, headers=world["gateway_a"].headers), 403)
