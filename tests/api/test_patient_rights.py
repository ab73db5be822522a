"""The patient's own rights (issue 15; checklist J7): who accessed their data, a download of everything held about
them (with the FHIR and CSV exports a clinician gets), and closing the account with what is deleted, what is
kept, for how long and why, said in the answer and in the README."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import time_machine

from companion.api.moments import OLDEST
from companion.domain.access import Grant, Relationship
from companion.services.rights import BACKDATED_DAYS
from tests.support.records import session_record
from tests.support.world import PASSWORD

README = Path(__file__).resolve().parents[2] / "README.md"


def _touch_the_record(client, world):
    """The care team reads; an unrelated clinician is refused; the patient writes a diary entry."""
    patient = world["patient_a"]
    assert client.get(f"/api/v1/patients/{patient.id}", headers=world["clinician_team"].headers).status_code == 200
    assert client.get(f"/api/v1/patients/{patient.id}", headers=world["clinician_other"].headers).status_code == 404
    assert client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
        "client_entry_id": "rights-entry-1", "nrs": 5,
        # entered as six weeks ago: before the account was made (a patient catching up their diary)
        "recorded_at": (datetime.now(UTC) - timedelta(days=42)).isoformat(),
        "context": {"note": "after gardening"}}).status_code == 201


def test_the_patient_sees_who_accessed_their_data_refusals_included(client, world):
    patient = world["patient_a"]
    _touch_the_record(client, world)
    log = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers)
    assert log.status_code == 200
    seen = {(e["actor_name"], e["actor_role"], e["action"], e["outcome"]) for e in log.json["items"]}
    assert ("Clinician Team", "clinician", "R", "success") in seen
    assert ("Clinician Other", "clinician", "R", "denied") in seen
    assert all(e["actor_id"] != patient.id for e in log.json["items"])  # their own acts are not "access"
    assert "client_ip" not in json.dumps(log.json)
    for other in ("clinician_team", "caregiver_linked", "patient_b"):
        assert client.get(f"/api/v1/patients/{patient.id}/access-log",
                          headers=world[other].headers).status_code in (403, 404)


def test_a_change_to_a_care_teams_clinicians_names_the_clinician_and_the_team_never_their_email(client, world,
                                                                                                 services):
    """The access log's `team_clinician` entry says who now reads (or no longer reads) the record and through which
    team: the clinician's display name and role and the team's name, in the answer and in the download."""
    patient, admin, team = world["patient_a"], world["admin"], world.team_id
    doctor = services.accounts.sign_up(email="dr.new@example.org", password=PASSWORD, display_name="Dr New",
                                       role="clinician", time_zone="UTC")
    assert client.post(f"/api/v1/admin/teams/{team}/clinicians", headers=admin.headers,
                       json={"clinician_id": doctor.id}).status_code == 200
    named = {"clinician_id": doctor.id, "clinician_name": "Dr New", "clinician_role": "clinician",
             "team_id": team, "team_name": "Pain clinic A"}

    def team_changes(items):
        return [{k: e.get(k) for k in (*named, "actor_name", "action")} for e in items
                if e["resource_type"] == "team_clinician"]

    log = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers).json["items"]
    assert team_changes(log) == [{**named, "actor_name": "Admin", "action": "C"}]
    assert all("clinician_name" not in e for e in log if e["resource_type"] != "team_clinician")
    record = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json
    assert team_changes(record["access_log"]) == [{**named, "actor_name": "Admin", "action": "C"}]
    # Deleted, the clinician's name is erased with the account: the entries keep whom and which team.
    assert client.delete(f"/api/v1/admin/users/{doctor.id}", headers=admin.headers).status_code == 200
    log = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers)
    assert team_changes(log.json["items"]) == [{**named, "clinician_name": "Closed account", "actor_name": "Admin", "action": a}
                                               for a in ("D", "C")]
    assert "dr.new@example.org" not in log.get_data(as_text=True)


def _access_log_pages(client, patient, first: str) -> list[list[dict]]:
    pages, url = [], first
    while url:
        answer = client.get(url, headers=patient.headers)
        assert answer.status_code == 200, answer.json
        pages.append(answer.json["items"])
        url = answer.json["next"]
        assert len(pages) < 50
    return pages


def test_paging_the_access_log_skips_no_event_sharing_a_millisecond(client, world, services):
    patient, clinician = world["patient_a"], world["clinician_team"]
    # One group write: the events share one `at` (stamped to the millisecond), as concurrent requests' do.
    services.audit.write([{"actor_id": clinician.id, "actor_role": "clinician", "action": "R",
                           "resource_type": f"tie-{i}", "patient_ids": [patient.id], "outcome": "success"}
                          for i in range(3)])
    url = f"/api/v1/patients/{patient.id}/access-log"
    whole = _access_log_pages(client, patient, url + "?limit=500")
    paged = _access_log_pages(client, patient, url + "?limit=1")
    assert len(whole) == 1
    assert [e for page in paged for e in page] == whole[0]
    assert sorted(e["resource_type"] for page in paged for e in page if e["resource_type"].startswith("tie-")) \
        == ["tie-0", "tie-1", "tie-2"]


def test_the_access_log_still_answers_a_before_instant(client, world, services):
    patient, clinician = world["patient_a"], world["clinician_team"]
    services.audit.write([{"actor_id": clinician.id, "actor_role": "clinician", "action": "R",
                           "resource_type": "old", "patient_ids": [patient.id], "outcome": "success"}])
    url = f"/api/v1/patients/{patient.id}/access-log"
    newest = client.get(url, headers=patient.headers).json["items"][0]["at"]
    before = client.get(url, headers=patient.headers,
                        query_string={"before": (datetime.fromisoformat(newest) + timedelta(seconds=1)).isoformat()})
    assert before.status_code == 200 and "old" in {e["resource_type"] for e in before.json["items"]}
    assert client.get(url, headers=patient.headers, query_string={"before": "2000-01-01T00:00:00+00:00"}) \
        .json["items"] == []


def test_the_access_log_shows_an_admin_issuing_a_reset_code_and_the_password_set_with_it(client, world):
    """A reset code opens the account to whoever holds it, and what they read afterwards is recorded as the
    patient's own reading (left out of their access log): the issue and the use are what the patient can see."""
    patient, admin = world["patient_a"], world["admin"]
    issued = client.post(f"/api/v1/admin/users/{patient.id}/password-reset", headers=admin.headers)
    assert issued.status_code == 201
    assert client.post("/api/v1/auth/password-reset", json={"email": patient.email, "code": issued.json["code"],
                                                            "new_password": "a new long passphrase"}).status_code == 204
    signed_in = client.post("/api/v1/auth/login", json={"email": patient.email, "password": "a new long passphrase"})
    headers = {"Authorization": f"Bearer {signed_in.json['access_token']}"}
    log = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=headers).json["items"]
    assert [(e["resource_type"], e["action"], e["actor_role"], e["actor_name"]) for e in log[:2]] == [
        ("password", "U", "anonymous", None), ("password_reset_code", "C", "admin", "Admin")]


def test_the_access_log_refuses_a_cursor_it_did_not_make(client, world):
    patient = world["patient_a"]
    url = f"/api/v1/patients/{patient.id}/access-log"
    for cursor in ("not-a-cursor", "eyJvIjogMX0"):  # the second: an offset cursor of another list
        assert client.get(url, headers=patient.headers, query_string={"cursor": cursor}).status_code == 422
    both = {"cursor": "eyJvIjogMX0", "before": "2026-01-01T00:00:00+00:00"}
    assert client.get(url, headers=patient.headers, query_string=both).status_code == 422


def test_the_download_reaches_as_far_before_sign_up_as_the_app_may_report():
    assert timedelta(days=BACKDATED_DAYS) == OLDEST


def test_the_patient_downloads_everything_held_about_them(client, world, services):
    patient = world["patient_a"]
    _touch_the_record(client, world)
    answer = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers)
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    assert "no-store" in answer.headers["Cache-Control"]
    record = answer.json
    assert record["account"]["email"] == patient.email and record["account"]["status"] == "active"
    assert [c["caregiver_name"] for c in record["consents"]["caregivers"]] == ["Caregiver Linked"]
    assert [t["team_name"] for t in record["consents"]["care_teams"]] == ["Pain clinic A"]
    assert [e["context"]["note"] for e in record["pain_diary"]] == ["after gardening"]
    assert [g["id"] for g in record["gateways"]] == [world["gateway_a"].id]
    assert "secret_hash" not in answer.get_data(as_text=True) and "password" not in answer.get_data(as_text=True)
    assert any(e["actor_name"] == "Clinician Team" for e in record["access_log"])
    assert record["access_log_complete"] is True and record["records_complete"] is True
    # The same FHIR and CSV exports a clinician gets.
    fhir = client.get(f"/api/v1/patients/{patient.id}/exports/fhir?days=30", headers=patient.headers)
    csv = client.get(f"/api/v1/patients/{patient.id}/exports/csv?days=30", headers=patient.headers)
    assert fhir.status_code == csv.status_code == 200
    assert fhir.json["resourceType"] == "Bundle" and csv.get_data(as_text=True).lstrip("\ufeff").startswith("date,")
    assert client.get(f"/api/v1/patients/{patient.id}/exports/fhir", headers=world["patient_b"].headers) \
        .status_code == 404
    assert client.get(f"/api/v1/patients/{patient.id}/data-export",
                      headers=world["caregiver_linked"].headers).status_code == 403


def test_the_closure_statement_is_the_one_in_the_readme(client, world, services):
    patient = world["patient_a"]
    statement = client.get(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers).json
    readme = README.read_text()
    section = readme[readme.index("### Closing an account"):]
    flat = re.sub(r"\s+", " ", section)
    for line in statement["deleted_now"]:
        assert line.split(":")[0].split(" (")[0] in flat, line
    assert {k["for_days"] for k in statement["kept"]} == {services.settings.clinical_retention.days,
                                                          services.settings.audit_retention.days}
    assert "COMPANION_CLINICAL_RETENTION_DAYS" in section and "COMPANION_AUDIT_RETENTION_DAYS" in section


def test_closing_the_account_deletes_what_it_says_keeps_what_it_says_and_ends_every_access(client, world, services,
                                                                                           db):
    patient, caregiver, clinician = world["patient_a"], world["caregiver_linked"], world["clinician_team"]
    _touch_the_record(client, world)
    client.put("/api/v1/me/push-tokens/phone-a", headers=patient.headers, json={"token": "tok-a", "platform": "ios"})
    url = f"/api/v1/patients/{patient.id}/closure"
    profile = f"/api/v1/patients/{patient.id}"
    assert client.patch(profile, headers=patient.headers, json={"quiet_hours": {"start": "22:00", "end": "07:00"}}) \
        .status_code == 200
    seen = client.get(profile, headers=clinician.headers)
    assert seen.json["quiet_hours"] is not None
    assert client.post(url, headers=patient.headers, json={"current_password": "nope", "confirm": True}) \
        .status_code == 403
    assert client.post(url, headers=patient.headers, json={"current_password": PASSWORD, "confirm": False}) \
        .status_code == 422
    closed = client.post(url, headers=patient.headers, json={"current_password": PASSWORD, "confirm": True})
    assert closed.status_code == 200
    assert closed.json["closed_at"] and closed.json["deleted_now"] and len(closed.json["kept"]) == 2
    # Every access ends: the patient's own session, the caregiver, the gateway.
    assert client.get("/api/v1/auth/me", headers=patient.headers).status_code == 401
    assert client.post("/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD}).status_code == 401
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 404
    assert client.get("/api/v1/gateway/devices", headers=world["gateway_a"].headers).status_code == 401
    # Deleted at once.
    assert db.push_tokens.count_documents({"user_id": patient.id}) == 0
    assert db.users.find_one({"_id": patient.id})["email"] == f"closed:{patient.id}"
    assert db.users.find_one({"_id": patient.id})["password_hash"] == ""
    # Kept, for the care team.
    assert db.pain_entries.count_documents({"patient_id": patient.id}) == 1
    assert client.get(f"/api/v1/patients/{patient.id}/review/diary", headers=clinician.headers).status_code == 200
    # The profile the care team held a copy of changed (its quiet hours are erased): not confirmed by a 304.
    now_seen = client.get(profile, headers={**clinician.headers, "If-None-Match": seen.headers["ETag"]})
    assert (now_seen.status_code, now_seen.json["quiet_hours"]) == (200, None)
    # The email is free for a new account.
    assert services.accounts.sign_up(email=patient.email, password=PASSWORD, display_name="New", role="patient",
                                     time_zone="UTC").id != patient.id


def test_break_glass_opens_no_closed_record_and_ends_with_the_closure(client, world):
    patient, other = world["patient_a"], world["clinician_other"]
    review = f"/api/v1/patients/{patient.id}/review/diary"
    glass = {"patient_id": patient.id, "minutes": 60, "reason": "seen in the emergency department"}
    assert client.post("/api/v1/emergency-access", headers=other.headers, json=glass).status_code == 201
    assert client.get(review, headers=other.headers).status_code == 200  # an open record, in an emergency
    assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    # The grant running at the closure ends with it, and a new one opens nothing (nor says whether the id is a
    # patient's: granting answers as for any id).
    assert client.get(review, headers=other.headers).status_code == 404
    assert client.post("/api/v1/emergency-access", headers=other.headers, json=glass).status_code == 201
    assert client.get(review, headers=other.headers).status_code == 404
    assert client.get(f"/api/v1/patients/{patient.id}/exports/fhir", headers=other.headers).status_code == 404
    assert client.get(review, headers=world["clinician_team"].headers).status_code == 200  # the care team still


def test_the_worker_deletes_the_clinical_record_when_its_retention_ends(client, world, services, db):
    from companion.domain.access import CaregiverPermissions

    patient = world["patient_a"]
    _touch_the_record(client, world)
    services.stores.care_links.grant(patient.id, world["caregiver_unlinked"].id, CaregiverPermissions())
    other = services.care.create_team("Physiotherapy")
    services.care.add_clinician(other.id, world["clinician_other"].id)
    services.care.invite(world["clinician_other"].id, other.id, patient.email, "physio referral for the knee")
    closed = client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                         json={"current_password": PASSWORD, "confirm": True})
    assert closed.status_code == 200
    audit_before = db.audit_events.count_documents({"patient_ids": patient.id})
    with time_machine.travel(datetime.now(UTC) + timedelta(days=3652)):
        assert services.lifecycle.purge_expired_records() == {"patients": 0, "failed": 0}
    with time_machine.travel(datetime.now(UTC) + timedelta(days=3654)):
        assert services.lifecycle.purge_expired_records() == {"patients": 1, "failed": 0}
    for collection in ("pain_entries", "care_links", "team_enrolments", "gateways", "devices", "push_outbox"):
        assert db[collection].count_documents({"patient_id": patient.id}) == 0, collection
    assert db.users.find_one({"_id": patient.id}) is None
    # Nor anything else that names the patient: an invitation they never accepted holds their address and the
    # clinician's reason; their sign-in history and sync counter hold their id.
    assert db.care_invitations.count_documents({"email": patient.email}) == 0
    assert db.token_families.count_documents({"user_id": patient.id}) == 0
    assert db.change_sequences.count_documents({"_id": patient.id}) == 0
    # The audit trail keeps its own, shorter or longer, period.
    assert db.audit_events.count_documents({"patient_ids": patient.id}) >= audit_before


def test_a_closure_that_fails_half_way_leaves_no_one_else_reading_and_can_be_tried_again(client, world, services,
                                                                                        monkeypatch):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    url = f"/api/v1/patients/{patient.id}/closure"
    closing = {"current_password": PASSWORD, "confirm": True}

    def crash(*args, **kwargs):
        raise RuntimeError("the process died here")

    monkeypatch.setattr(services.stores.users, "close", crash)  # every access others had is ended before this
    assert client.post(url, headers=patient.headers, json=closing).status_code == 500
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 404
    assert client.get("/api/v1/gateway/devices", headers=world["gateway_a"].headers).status_code == 401
    monkeypatch.undo()
    assert client.post(url, headers=patient.headers, json=closing).status_code == 200  # still signed in: again


def test_a_closure_stopped_after_the_account_closed_is_finished_by_the_worker(client, world, services, db,
                                                                             monkeypatch):
    """Once the account is closed its owner cannot sign in to try again: the worker finishes the closure."""
    patient = world["patient_a"]
    assert client.put("/api/v1/me/push-tokens/phone-a", headers=patient.headers,
                      json={"token": "tok-a", "platform": "ios"}).status_code in (200, 201)
    assert client.post(f"/api/v1/patients/{patient.id}/reminders", headers=patient.headers, json={
        "kind": "medication", "title": "Tablet", "schedule": {"type": "hourly", "window_start": "00:00",
                                                              "window_end": "23:00", "every_hours": 1}}) \
        .status_code == 201

    def crash(*args, **kwargs):
        raise RuntimeError("the process died here")

    monkeypatch.setattr(services.stores.reminders, "stop_all", crash)  # after the account is closed
    url = f"/api/v1/patients/{patient.id}/closure"
    closing = {"current_password": PASSWORD, "confirm": True}
    assert client.post(url, headers=patient.headers, json=closing).status_code == 500
    monkeypatch.undo()
    assert client.post(url, headers=patient.headers, json=closing).status_code == 401  # no way back in
    assert services.lifecycle.finish_closures() == {"finished": 1, "failed": 0}
    assert db.push_tokens.count_documents({"user_id": patient.id}) == 0
    assert db.reminders.count_documents({"patient_id": patient.id, "active": True}) == 0
    assert db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "pending"}) == 0
    assert services.lifecycle.finish_closures() == {"finished": 0, "failed": 0}
    # A closure that went through whole is not done again.
    assert client.post(f"/api/v1/patients/{world['patient_b'].id}/closure", headers=world["patient_b"].headers,
                       json=closing).status_code == 200
    assert services.lifecycle.finish_closures() == {"finished": 0, "failed": 0}


def test_a_closure_keeps_the_dose_history_the_care_team_reads_and_deletes_only_what_was_still_to_come(
        client, world, services, db):
    """The doses a patient answered or missed are part of the clinical record kept after the closure (the events
    export, the review, the adherence a decision on a held session recomputes): the closure stops the reminders
    and deletes only the occurrences still pending."""
    import csv
    import io

    patient, team = world["patient_a"], world["clinician_team"]
    made = client.post(f"/api/v1/patients/{patient.id}/reminders", headers=patient.headers, json={
        "kind": "medication", "title": "Tablet", "schedule": {"type": "hourly", "window_start": "00:00",
                                                              "window_end": "23:00", "every_hours": 1}})
    assert made.status_code == 201
    reminder_id, at = made.json["id"], datetime.now(UTC)
    # Three doses of the days before (answered, skipped with a reason, missed), and the day's still to come.
    db.reminder_occurrences.insert_many([
        {"_id": f"{reminder_id}:past-{n}", "patient_id": patient.id, "reminder_id": reminder_id, "kind": "medication",
         "status": status, "skip_reason": "nausea" if status == "skipped" else None, "due_at": at - timedelta(days=3 - n),
         "local_date": (at - timedelta(days=3 - n)).date().isoformat(), "local_time": "08:00", "deleted": False}
        for n, status in enumerate(("done", "skipped", "missed"))])
    services.reminders.materialize(patient.id, at, at + timedelta(days=1))
    assert db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "pending"}) > 0
    url = f"/api/v1/patients/{patient.id}/exports/events?days=30"

    def doses() -> list[tuple[str, str]]:
        text = client.get(url, headers=team.headers).get_data(as_text=True).lstrip("\ufeff")
        return sorted((r["id"], r.get("status", "")) for r in csv.DictReader(io.StringIO(text))
                      if r["event"] == "medication_dose")

    before = doses()
    assert len(before) == 3
    assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    assert doses() == before
    assert db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "pending"}) == 0
    assert db.reminders.find_one({"_id": reminder_id})["active"] is False
    assert services.reminders.materialize(patient.id, at, at + timedelta(days=2)) == 0


def test_a_closure_keeps_a_dose_due_before_it_and_never_answered_as_missed_and_calls_off_one_still_open(
        client, world, db):
    """A dose due before the closure whose window has closed is a missed dose, not "what was still to come": the
    job that marks it missed may simply not have run yet (it runs every few minutes, or the worker was down). One
    whose window is still open at the closure is called off, as for a reminder stopped then."""
    patient = world["patient_a"]
    made = client.post(f"/api/v1/patients/{patient.id}/reminders", headers=patient.headers, json={
        "kind": "medication", "title": "Tablet", "schedule": {"type": "hourly", "window_start": "00:00",
                                                              "window_end": "23:00", "every_hours": 1}})
    assert made.status_code == 201
    at = datetime.now(UTC)

    def dose(name: str, due: datetime, window: timedelta) -> dict:
        return {"_id": f"{made.json['id']}:{name}", "patient_id": patient.id, "reminder_id": made.json["id"],
                "kind": "medication", "status": "pending", "due_at": due, "window_ends_at": due + window,
                "local_date": (due - timedelta(days=3)).date().isoformat(), "local_time": name, "deleted": False}

    db.reminder_occurrences.insert_many([dose("past", at - timedelta(hours=5), timedelta(hours=1)),
                                         dose("open", at - timedelta(minutes=10), timedelta(hours=1))])
    assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    kept = db.reminder_occurrences.find_one({"_id": f"{made.json['id']}:past"})
    assert kept is not None and kept["status"] == "missed" and not kept.get("missed_summary")
    assert db.reminder_occurrences.find_one({"_id": f"{made.json['id']}:open"}) is None
    assert db.reminder_occurrences.count_documents({"patient_id": patient.id, "status": "pending"}) == 0


def test_the_download_holds_the_adherence_of_the_accounts_whole_life(client, world, db):
    """A patient two years in gets every day's adherence, not the last 366 (the snapshots are kept ten years)."""
    patient = world["patient_a"]
    at = datetime.now(UTC)
    db.users.update_one({"_id": patient.id}, {"$set": {"created_at": at - timedelta(days=800)}})
    old = (at - timedelta(days=500)).date().isoformat()
    db.adherence_days.insert_one({"_id": f"{patient.id}:{old}", "patient_id": patient.id, "date": old,
                                  "state": "complete", "covered": True, "tens_fraction": 1.0})
    record = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json
    calendar = {d["date"]: d for d in record["adherence"]}
    assert len(calendar) > 800 and calendar[old]["covered"] is True


def test_a_closure_the_worker_cannot_finish_does_not_hold_up_the_others(client, world, services, db, monkeypatch,
                                                                      caplog):
    """Each unfinished closure is tried on its own: one account the worker cannot read (or whose steps keep
    failing) is logged by its id and tried again at the next pass, and the others finish now."""
    first, second = world["patient_a"], world["patient_b"]

    def crash(*args, **kwargs):
        raise RuntimeError("the process died here")

    closing = {"current_password": PASSWORD, "confirm": True}
    monkeypatch.setattr(services.stores.reminders, "stop_all", crash)  # after each account is closed
    for patient in (first, second):
        assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                           json=closing).status_code == 500
    monkeypatch.undo()
    db.users.update_one({"_id": first.id}, {"$set": {"quiet_hours": {"start": "25:99", "end": "07:00"}}})
    with caplog.at_level(logging.ERROR, logger="companion.jobs"):
        assert services.lifecycle.finish_closures() == {"finished": 1, "failed": 1}
    assert [r.item_id for r in caplog.records if getattr(r, "job_id", None) == "closures-finish"] == [first.id]
    assert db.users.find_one({"_id": second.id})["closure_done"] is True
    db.users.update_one({"_id": first.id}, {"$set": {"quiet_hours": {"start": "22:00", "end": "07:00"}}})
    assert services.lifecycle.finish_closures() == {"finished": 1, "failed": 0}
    assert services.lifecycle.finish_closures() == {"finished": 0, "failed": 0}


def test_a_record_the_worker_cannot_delete_does_not_keep_the_others_past_their_retention(client, world, services,
                                                                                         db, monkeypatch, caplog):
    """A patient whose record cannot be deleted today (the database timing out on it) is logged by id and
    tried again tomorrow; the other records due are deleted now, not kept past their retention with it."""
    from pymongo.errors import ExecutionTimeout

    first, second = world["patient_a"], world["patient_b"]
    for patient in (first, second):
        assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                           json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    deleting = services.stores.pain_entries.delete_for_patient

    def times_out_for_the_first(patient_id):
        if patient_id == first.id:
            raise ExecutionTimeout("operation exceeded time limit")
        return deleting(patient_id)

    monkeypatch.setattr(services.stores.pain_entries, "delete_for_patient", times_out_for_the_first)
    with time_machine.travel(datetime.now(UTC) + timedelta(days=3654)), \
            caplog.at_level(logging.ERROR, logger="companion.jobs"):
        assert services.lifecycle.purge_expired_records() == {"patients": 1, "failed": 1}
        assert [r.item_id for r in caplog.records if getattr(r, "job_id", None) == "records-retention"] \
            == [first.id]
        assert db.users.find_one({"_id": second.id}) is None
        assert db.users.find_one({"_id": first.id}) is not None
        monkeypatch.undo()
        assert services.lifecycle.purge_expired_records() == {"patients": 1, "failed": 0}
    assert db.users.find_one({"_id": first.id}) is None


def test_the_download_holds_device_events_reminders_favourites_and_units_worn_before(client, world, services, db):
    patient = world["patient_a"]
    pid = patient.id
    at = datetime.now(UTC)
    services.stores.device_events.record([{"_id": "CTU-A0001:1:electrode_off", "patient_id": pid,
                                           "device_serial": "CTU-A0001", "kind": "electrode_off", "at": at,
                                           "record_id": "CTU-A0001:1"}])
    services.stores.favourites.add(pid, "box-breathing", at, 1)
    db.unit_bindings.insert_one({"_id": "CTU-OLD1:x", "serial": "CTU-OLD1", "patient_id": pid,
                                 "bound_at": at - timedelta(days=40), "released_at": at - timedelta(days=10)})
    reminder = client.post(f"/api/v1/patients/{pid}/reminders", headers=patient.headers, json={
        "kind": "medication", "title": "Tablet", "schedule": {"type": "hourly", "window_start": "00:00",
                                                              "window_end": "23:00", "every_hours": 1}})
    assert reminder.status_code == 201
    slot = services.reminders.occurrences_between(Grant(pid, Relationship.SELF), at, at + timedelta(hours=2))[0]
    assert client.patch(f"/api/v1/patients/{pid}/occurrences/{slot['_id']}", headers=patient.headers,
                        json={"status": "skipped", "skip_reason": "felt sick after the tablet"}).status_code == 200
    record = client.get(f"/api/v1/patients/{pid}/data-export", headers=patient.headers).json
    assert [e["kind"] for e in record["device_events"]] == ["electrode_off"]
    assert [(o["_id"], o["skip_reason"]) for o in record["reminder_occurrences"] if o["status"] == "skipped"] == [
        (slot["_id"], "felt sick after the tablet")]
    assert record["library_favourites"] == ["box-breathing"]
    assert [u["serial"] for u in record["devices_worn_before"]] == ["CTU-OLD1"]
    assert record["records_complete"] is True


UPLOAD = "/api/v1/gateway/session-records"


def _upload(client, gateway, records) -> dict:
    answer = client.post(UPLOAD, json={"records": records}, headers=gateway.headers)
    assert answer.status_code == 200, answer.json
    return {r["record_id"]: r for r in answer.json["results"]}


def _hand_unit_from_a_to_b(client, world) -> None:
    a, b = world["patient_a"], world["patient_b"]
    assert client.delete(f"/api/v1/patients/{a.id}/devices/{world.a_device}", headers=a.headers).status_code == 204
    assert client.post(f"/api/v1/patients/{b.id}/devices", headers=b.headers,
                       json={"serial": world.a_device}).status_code == 201


def _close_and_purge(client, services, patient) -> None:
    assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    with time_machine.travel(datetime.now(UTC) + timedelta(days=3654)):
        assert services.lifecycle.purge_expired_records() == {"patients": 1, "failed": 0}


def test_the_download_holds_every_session_whenever_its_unit_placed_it_and_the_copies_kept_apart(client, world,
                                                                                               db):
    patient = world["patient_a"]
    now = datetime.now(UTC)
    answer = _upload(client, world["gateway_a"], [
        session_record(world.a_device, 1, started_at=now - timedelta(hours=3)),
        session_record(world.a_device, 2, started_at=now + timedelta(days=40)),  # the unit's clock far ahead
        session_record(world.a_device, 3, started_at=datetime(2001, 1, 1, tzinfo=UTC))])  # its clock reset
    assert answer[f"{world.a_device}:3"]["held"] is True
    # The unit restarted its count: record 1 again with other content is kept apart, for review.
    again = _upload(client, world["gateway_a"], [session_record(world.a_device, 1, duration_s=2400,
                                                                started_at=now - timedelta(minutes=20))])
    assert "conflicting_copy" in again[f"{world.a_device}:1"]["flags"]
    stored = sorted(d["_id"] for d in db.session_records.find({"patient_id": patient.id}))
    download = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json
    assert sorted(s["_id"] for s in download["tens_sessions"]) == stored and len(stored) == 3
    assert [c["record_id"] for c in download["tens_session_copies_kept_apart"]] == [f"{world.a_device}:1"]


def test_the_download_holds_every_reminder_the_current_ones_after_fifty_stopped_ones_too(client, world, db):
    patient = world["patient_a"]
    at = datetime.now(UTC)
    # Fifty reminders the patient set up over the years and stopped (stopping keeps them: DELETE only stops).
    db.reminders.insert_many([{"_id": f"old-{n}", "patient_id": patient.id, "kind": "medication",
                               "title": f"Old tablet {n}", "active": False, "created_at": at - timedelta(days=500 - n),
                               "updated_at": at - timedelta(days=400 - n), "seq": 0,
                               "schedule": {"type": "daily", "times": ["08:00"], "start_date": "2024-01-01"}}
                              for n in range(50)])
    made = client.post(f"/api/v1/patients/{patient.id}/reminders", headers=patient.headers, json={
        "kind": "medication", "title": "Today's tablet", "schedule": {"type": "hourly", "window_start": "08:00",
                                                                      "window_end": "09:00", "every_hours": 1}})
    assert made.status_code == 201, made.json
    record = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json
    assert sorted(r["_id"] for r in record["reminders"]) == sorted([made.json["id"], *(f"old-{n}" for n in range(50))])
    assert record["records_complete"] is True


def test_the_download_holds_every_alert_of_years_of_daily_ones(client, world, db):
    """Alerts were read with the alerts list's cap of 500 while the download said it was complete."""
    patient = world["patient_a"]
    at = datetime.now(UTC)
    # Two years of daily missed-session alerts, and a few more (the record is kept for ten years).
    db.alerts.insert_many([{"_id": f"alert-{n}", "patient_id": patient.id, "kind": "missed_session",
                            "severity": "info", "text": "Missed", "dedup_key": f"missed:{n}",
                            "raised_at": at - timedelta(days=n), "acknowledged_at": None, "resolved_at": None,
                            "shared_with_caregivers": False, "urgent": False, "share_kind": "missed_session"}
                           for n in range(730)])
    record = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json
    assert [a["_id"] for a in record["alerts"]] == [f"alert-{n}" for n in range(730)]  # newest first
    assert (record["records_complete"], record["records_cut_short"]) == (True, [])


def test_the_download_says_which_kinds_of_record_reached_the_limit_it_reads_them_to(client, world, db, monkeypatch):
    """Every kind is read up to the download's limit and under no smaller cap: one that reaches it is named."""
    from companion.services import rights

    patient = world["patient_a"]
    at = datetime.now(UTC)
    db.alerts.insert_many([{"_id": f"alert-{n}", "patient_id": patient.id, "kind": "missed_session",
                            "dedup_key": f"missed:{n}", "raised_at": at - timedelta(days=n)} for n in range(3)])
    paired = db.gateways.find_one({"patient_id": patient.id})
    db.gateways.insert_many([{**paired, "_id": f"old-gateway-{n}", "revoked": True} for n in range(2)])
    monkeypatch.setattr(rights, "DOWNLOAD_ROWS", 3)
    record = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json
    assert record["records_complete"] is False
    assert {"alerts", "gateways"} <= set(record["records_cut_short"])
    assert len(record["alerts"]) == 3 and "reminders" not in record["records_cut_short"]


def test_the_download_holds_what_the_patients_gateway_could_not_deliver(client, world):
    """Dead letters are stored with the patient's id and purged with the record: they are held about them."""
    patient, gateway = world["patient_a"], world["gateway_a"]
    reported = client.post("/api/v1/gateway/dead-letters", headers=gateway.headers, json={"items": [{
        "id": 7, "device_serial": world.a_device, "record_id": f"{world.a_device}:9", "reason": "refused: bad field",
        "source": "server", "dead_at": datetime.now(UTC).isoformat(),
        "payload": '{"duration_s": 1800, "intensity_mean_ma": 22, "programme": "burst"}'}]})
    assert reported.status_code == 200, reported.json
    record = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json
    assert [(d["record_id"], d["reason"], json.loads(d["payload"])["intensity_mean_ma"])
            for d in record["gateway_dead_letters"]] == [(f"{world.a_device}:9", "refused: bad field", 22)]


def test_the_download_holds_a_deleted_diary_entry_while_its_tombstone_is_kept(client, world):
    patient = world["patient_a"]
    made = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
        "client_entry_id": "to-delete-1", "nrs": 7, "recorded_at": datetime.now(UTC).isoformat(),
        "context": {"note": "argued with my sister about money"}})
    assert made.status_code == 201
    assert client.delete(f"/api/v1/patients/{patient.id}/pain-entries/{made.json['id']}",
                         headers=patient.headers).status_code == 204
    download = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json
    assert made.json["id"] not in [e["_id"] for e in download["pain_diary"]]
    assert [(e["_id"], e["context"]["note"]) for e in download["pain_diary_deleted"]] == [
        (made.json["id"], "argued with my sister about money")]


def test_purging_one_patient_leaves_another_patients_copy_kept_apart_and_purges_their_own(client, world, services,
                                                                                          db):
    a, b = world["patient_a"], world["patient_b"]
    _upload(client, world["gateway_a"], [session_record(world.a_device, 1,
                                                        started_at=datetime.now(UTC) - timedelta(days=3))])
    _hand_unit_from_a_to_b(client, world)
    copy = session_record(world.a_device, 1, started_at=datetime.now(UTC) - timedelta(minutes=50), duration_s=2400)
    assert "conflicting_copy" in _upload(client, world["gateway_b"], [copy])[copy["record_id"]]["flags"]
    _close_and_purge(client, services, a)
    kept = db.session_conflicts.find_one({"delivered_for": b.id})
    assert kept is not None and kept["first_patient_id"] is None  # B's, no longer naming A
    _close_and_purge(client, services, b)
    assert db.session_conflicts.count_documents({}) == 0


def test_a_download_names_no_other_patient_in_the_sessions_and_copies_it_holds(client, world, services, db):
    """B's copy kept apart names the first copy's owner, A (the unit's previous wearer), and a session held
    between them names both: in either download the other is "another patient", never their id."""
    a, b = world["patient_a"], world["patient_b"]
    _upload(client, world["gateway_a"], [session_record(world.a_device, 1,
                                                        started_at=datetime.now(UTC) - timedelta(days=3))])
    _hand_unit_from_a_to_b(client, world)
    copy = session_record(world.a_device, 1, started_at=datetime.now(UTC) - timedelta(minutes=50), duration_s=2400)
    assert "conflicting_copy" in _upload(client, world["gateway_b"], [copy])[copy["record_id"]]["flags"]
    assert db.session_conflicts.find_one({"delivered_for": b.id})["first_patient_id"] == a.id
    serial, now = "CTU-PASSED2", datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=3))
    services.stores.devices.unbind(serial, a.id, at=now - timedelta(hours=6), stated=True)
    services.gateways.bind_unit(b.id, serial, "companion-tens", bound_at=now - timedelta(hours=6))
    _upload(client, world["gateway_b"], [session_record(serial, 1, started_at=now - timedelta(hours=6),
                                                        clock_status="reset")])
    for me, other in ((b, a), (a, b)):
        answer = client.get(f"/api/v1/patients/{me.id}/data-export", headers=me.headers)
        assert other.id not in answer.get_data(as_text=True)
        held = next(s for s in answer.json["tens_sessions"] if s["_id"] == f"{serial}:1")
        assert sorted(held["candidate_patient_ids"]) == sorted([me.id, "another patient"])
    copies = client.get(f"/api/v1/patients/{b.id}/data-export", headers=b.headers).json["tens_session_copies_kept_apart"]
    assert [(c["record_id"], c["first_patient_id"]) for c in copies] == [(copy["record_id"], "another patient")]


def test_the_download_still_shows_a_care_team_that_had_access_after_it_ended(client, world, services, db):
    patient = world["patient_a"]
    assert client.get(f"/api/v1/patients/{patient.id}", headers=world["clinician_team"].headers).status_code == 200
    assert client.delete(f"/api/v1/patients/{patient.id}/care-teams/{world.team_id}",
                         headers=patient.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=world["clinician_team"].headers).status_code == 404
    consents = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json["consents"]
    assert consents["care_teams"] == []
    [before] = consents["care_teams_before"]
    assert (before["team_id"], before["ended_by"]) == (world.team_id, "patient")
    assert before["enrolled_at"] < before["ended_at"]
    _close_and_purge(client, services, patient)
    assert db.team_enrolments_ended.count_documents({"patient_id": patient.id}) == 0


def test_the_download_keeps_each_period_of_a_caregivers_access_and_each_change_of_what_it_covered(
        client, world, services, db):
    """The closure statement and the download promise "the history ... of who was given access (caregivers, care
    teams, emergency access)", as care_teams_before keeps it for teams. A caregiver is given the notes, then not;
    leaves; is given access again, which the patient ends; and a third time, which the closure ends."""
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    url = f"/api/v1/patients/{patient.id}/caregivers"

    def offer(**permissions):
        return client.post(url, headers=patient.headers, json={"caregiver_email": caregiver.email,
                                                               "current_password": PASSWORD,
                                                               "permissions": {"alerts": [], **permissions}}).json

    def accept(offered):
        answer = client.post(f"/api/v1/caregiver/invitations/{offered['id']}/acceptance", headers=caregiver.headers,
                             json={"current_password": PASSWORD})
        assert answer.status_code == 200
        return answer.json["link_id"]

    first = offer(diary_notes=True)
    link_id = accept(first)
    assert offer(diary_notes=False)["status"] == "active"  # a change of what the link covers
    assert client.delete(f"/api/v1/caregiver/patients/{patient.id}", headers=caregiver.headers).status_code == 204
    second = offer(write=True)
    assert accept(second) == link_id
    assert client.delete(f"{url}/{link_id}", headers=patient.headers).status_code == 204
    third = offer()
    accept(third)
    consents = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json["consents"]
    assert [(c["status"], c["permissions"]["write"]) for c in consents["caregivers"]
            if c["caregiver_id"] == caregiver.id] == [("active", False)]
    before = consents["caregivers_before"]
    assert [(b["caregiver_id"], b["offer_id"], b["status"], b["ended_by"], b["permissions"]["diary_notes"],
             b["permissions"]["write"]) for b in before] == [
        (caregiver.id, first["id"], "changed", "patient", True, False),
        (caregiver.id, first["id"], "revoked", "caregiver", False, False),
        (caregiver.id, second["id"], "revoked", "patient", False, True)]
    assert all(b["granted_at"] <= b["ended_at"] for b in before)
    assert before[0]["ended_at"] == before[1]["granted_at"]  # the change: one set of permissions, then the next
    assert {b["caregiver_name"] for b in before} == {"Caregiver Unlinked"}
    # The closure ends the third, and says so; the history goes with the record once its retention ends.
    services.lifecycle.close(patient.id, by=patient.id)
    ended = db.care_links.find_one({"_id": link_id})
    assert (ended["status"], ended["ended_by"], ended["offer_id"]) == ("revoked", "closure", third["id"])
    with time_machine.travel(datetime.now(UTC) + timedelta(days=3654)):
        assert services.lifecycle.purge_expired_records() == {"patients": 1, "failed": 0}
    assert db.care_link_history.count_documents({"patient_id": patient.id}) == 0


class _StopsOnce:
    """A collection whose first ``find_one_and_update`` stops the process (raises) before writing."""

    def __init__(self, collection):
        self.collection, self.stopped = collection, False

    def __getattr__(self, name):
        return getattr(self.collection, name)

    def find_one_and_update(self, *args, **kwargs):
        if not self.stopped:
            self.stopped = True
            raise RuntimeError("the process stopped here")
        return self.collection.find_one_and_update(*args, **kwargs)


def test_a_change_of_permissions_that_stopped_half_way_leaves_the_history_true(client, world, services, db,
                                                                                 monkeypatch):
    """A change keeps the permissions it replaces before writing the new ones. Stopped between the two, the link
    is unchanged and the history holds an entry for a change that never happened; what really ended those
    permissions (here the caregiver leaving) takes its place once known."""
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    url = f"/api/v1/patients/{patient.id}/caregivers"
    monkeypatch.setattr(services.stores.care_links, "col", _StopsOnce(services.stores.care_links.col))
    assert client.post(url, headers=patient.headers, json={
        "caregiver_email": caregiver.email, "current_password": PASSWORD,
        "permissions": {"alerts": [], "diary_notes": True}}).status_code == 500
    monkeypatch.undo()
    assert client.delete(f"/api/v1/caregiver/patients/{patient.id}", headers=caregiver.headers).status_code == 204
    offered = client.post(url, headers=patient.headers, json={
        "caregiver_email": caregiver.email, "current_password": PASSWORD, "permissions": {"alerts": []}}).json
    assert client.post(f"/api/v1/caregiver/invitations/{offered['id']}/acceptance", headers=caregiver.headers,
                       json={"current_password": PASSWORD}).status_code == 200
    kept = list(db.care_link_history.find({"patient_id": patient.id}))
    assert [(k["status"], k["ended_by"], k["permissions"]["diary_notes"], k["permissions"]["alerts"])
            for k in kept] == [("revoked", "caregiver", False, ["missed_session"])]


def test_after_a_purge_what_the_unit_recorded_for_the_closed_patient_is_given_to_nobody(client, world, services,
                                                                                        db, monkeypatch):
    """The purge deletes the closed patient's record but keeps who wore the unit when (as nobody nameable): the
    unit's next wearer is never given the sessions its memory still holds from then."""
    a, b = world["patient_a"], world["patient_b"]
    old = [session_record(world.a_device, seq, started_at=datetime.now(UTC) - timedelta(days=5, minutes=-seq * 60))
           for seq in (1, 2, 3)]
    _upload(client, world["gateway_a"], old)
    assert db.session_records.count_documents({"patient_id": a.id}) == 3
    assert client.post(f"/api/v1/patients/{a.id}/closure", headers=a.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    # A clinic that keeps closed records for no time at all: the purge runs at once (no travel in time, so that
    # the unit's release is now, before its next wearer's binding).
    monkeypatch.setattr(services.lifecycle, "settings", replace(services.settings, clinical_retention=timedelta(0)))
    assert services.lifecycle.purge_expired_records() == {"patients": 1, "failed": 0}
    assert db.unit_bindings.count_documents({"patient_id": a.id}) == 0  # nothing names the patient
    assert client.post(f"/api/v1/patients/{b.id}/devices", headers=b.headers,
                       json={"serial": world.a_device}).status_code == 201
    answered = _upload(client, world["gateway_b"], old)  # the unit's memory, read by B's new gateway
    assert {r["status"] for r in answered.values()} == {"discarded"}
    assert db.session_records.count_documents({}) == 0
    # A session begun as the unit changed hands may be B's, never the erased wearer's: held, with B alone named.
    new = session_record(world.a_device, 4, started_at=datetime.now(UTC))
    assert _upload(client, world["gateway_b"], [new])[new["record_id"]]["status"] == "created"
    stored = db.session_records.find_one({"_id": new["record_id"]})
    assert (stored["patient_id"], stored["candidate_patient_ids"], stored["held"]) == (None, [b.id], True)


def test_a_purge_leaves_no_session_naming_the_erased_patient_and_places_those_they_may_have_worn_again(
        client, world, services, db):
    """A session held because its unit changed hands about then is stored with no owner and both wearers as
    candidates (companion.services.session_times); the first wearer's download holds it while they are one. Purging
    their record places it again for the other wearer alone, and nothing names them as a candidate or as the
    patient whose gateway handed a session over."""
    a, b = world["patient_a"], world["patient_b"]
    serial, now = "CTU-PASSED1", datetime.now(UTC)
    moved = now - timedelta(hours=6)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=3))
    services.stores.devices.unbind(serial, a.id, at=moved, stated=True)
    services.gateways.bind_unit(b.id, serial, "companion-tens", bound_at=moved)
    # One the unit recorded as it changed hands (its clock reset), and one A's old hub brought from after the move.
    _upload(client, world["gateway_b"], [session_record(serial, 4, started_at=moved, clock_status="reset")])
    _upload(client, world["gateway_a"], [session_record(serial, 5, started_at=now - timedelta(hours=1))])
    for seq in (4, 5):
        held = db.session_records.find_one({"_id": f"{serial}:{seq}"})
        assert held["patient_id"] is None and set(held["candidate_patient_ids"]) == {a.id, b.id}
    download = client.get(f"/api/v1/patients/{a.id}/data-export", headers=a.headers).json
    assert {f"{serial}:4", f"{serial}:5"} <= {s["_id"] for s in download["tens_sessions"]}
    _close_and_purge(client, services, a)
    for seq in (4, 5):
        placed = db.session_records.find_one({"_id": f"{serial}:{seq}"})
        assert (placed["patient_id"], placed["candidate_patient_ids"], placed["held"]) == (None, [b.id], True), seq
    for field in ("patient_id", "candidate_patient_ids", "delivered_for", "also_delivered_for"):
        assert db.session_records.count_documents({field: a.id}) == 0, field
    # Whose gateway brought the second is nobody nameable now, still not B's: it stays held for a clinician.
    assert db.session_records.find_one({"_id": f"{serial}:5"})["delivered_for"] == "erased"


def test_a_purge_deletes_a_held_session_only_the_erased_patient_may_have_worn(client, world, services, db):
    """A unit released and bound to nobody since: a session after the release may be only its last wearer's.
    Held with them alone as candidate, it is deleted with their record (nobody else's to place it for)."""
    a = world["patient_a"]
    serial, now = "CTU-LAID-DOWN", datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=3))
    services.stores.devices.unbind(serial, a.id, at=now - timedelta(hours=6), stated=True)
    _upload(client, world["gateway_a"], [session_record(serial, 1, started_at=now - timedelta(hours=1))])
    held = db.session_records.find_one({"_id": f"{serial}:1"})
    assert (held["patient_id"], held["candidate_patient_ids"], held["held"]) == (None, [a.id], True)
    _close_and_purge(client, services, a)
    assert db.session_records.find_one({"_id": f"{serial}:1"}) is None


def test_the_care_team_reads_and_settles_a_closed_record_but_adds_nothing_to_it(client, world, services, db):
    """Closing, the patient is told their care team can still read the record and nothing new is added: a plan,
    a note or a unit is refused (403, saying why); acknowledging an alert and reading are not."""
    patient, clinician = world["patient_a"], world["clinician_team"]
    alert, _ = services.stores.alerts.raise_once(
        patient_id=patient.id, kind="battery_low", severity="info", text="Battery low", dedup_key="battery_low:t:1",
        shared_with_caregivers=True, urgent=False, share_kind="device_fault")
    assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    base = f"/api/v1/patients/{patient.id}"
    plan = {"tens": {"sessions_per_day": 2, "minutes_per_session": 30, "intensity_min_ma": 10,
                     "intensity_max_ma": 20, "start_date": "2026-01-01"}}
    for refused in (client.put(f"{base}/therapy-plan", headers=clinician.headers, json=plan),
                    client.post(f"{base}/review/notes", headers=clinician.headers, json={"text": "Seen today"}),
                    client.post(f"{base}/devices", headers=clinician.headers, json={"serial": "CTU-CLOSED1"})):
        assert refused.status_code == 403 and "closed their account" in refused.json["detail"], refused.json
    assert db.clinical_notes.count_documents({"patient_id": patient.id}) == 0
    assert client.post(f"{base}/review/alerts/{alert['_id']}/acknowledgement", headers=clinician.headers) \
        .status_code == 200
    # Releasing the patient's unit (nobody else can now) lets it be given to another patient.
    assert client.delete(f"{base}/devices/{world.a_device}", headers=clinician.headers).status_code == 204
    assert db.devices.find_one({"_id": world.a_device}) is None  # released: its interval kept in the history
    assert client.get(f"{base}/review/diary", headers=clinician.headers).status_code == 200


def test_a_refused_team_change_naming_a_patient_by_mistake_shows_that_patient_to_no_one(client, world):
    """An admin pasting a patient's id as a clinician's (refused, 422, and audited against the team's patients):
    the entry named that other patient, by name, role and id, in every team patient's access log."""
    patient, admin, other = world["patient_a"], world["admin"], world["patient_b"]
    answer = client.post(f"/api/v1/admin/teams/{world.team_id}/clinicians", headers=admin.headers,
                         json={"clinician_id": other.id})
    assert answer.status_code == 422
    log = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers)
    entries = [e for e in log.json["items"] if e["resource_type"] == "team_clinician"]
    assert entries and all(e.get("clinician_name") is None and e.get("clinician_role") is None for e in entries)
    assert other.id not in log.get_data(as_text=True) and "Patient B" not in log.get_data(as_text=True)
