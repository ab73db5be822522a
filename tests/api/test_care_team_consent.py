"""A clinician reaches a patient only through the patient's consent (issue 15, finding 2): an invitation the patient
accepts in the app, or an admin's enrolment that is audited and told to the patient; emergency access stays the
time-boxed, reasoned way in. The clinician learns nothing about an email until the patient accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import time_machine

from companion.domain.access import CaregiverPermissions
from companion.domain.quiet_hours import QuietHours, in_quiet_hours
from companion.http import auditing
from tests.support.problems import assert_problem
from tests.support.world import PASSWORD, login, make_user


def _invite(client, clinician, team_id, email, reason="Referral from the GP"):
    return client.post(f"/api/v1/clinician/teams/{team_id}/invitations", headers=clinician.headers,
                       json={"patient_email": email, "reason": reason})


def quiet_hours_around_now(zone: str) -> QuietHours:
    """Quiet hours from an hour ago to three hours from now on ``zone``'s clock (covering the 30-minute spread)."""
    local_now = datetime.now(UTC).astimezone(ZoneInfo(zone)).replace(second=0, microsecond=0)
    return QuietHours((local_now - timedelta(hours=1)).time(), (local_now + timedelta(hours=3)).time())


def set_quiet_hours(client, patient, quiet: QuietHours) -> None:
    assert client.patch(f"/api/v1/patients/{patient.id}", headers=patient.headers, json={"quiet_hours": {
        "start": quiet.start.strftime("%H:%M"), "end": quiet.end.strftime("%H:%M")}}).status_code == 200


def assert_waits_for_their_end(push: dict, zone: str, quiet: QuietHours) -> None:
    goes_at = push["not_before"].astimezone(ZoneInfo(zone))
    assert not in_quiet_hours(goes_at.time(), quiet), f"pushed at {goes_at:%H:%M} local, quiet {quiet}"
    assert push["not_before"] > datetime.now(UTC) + timedelta(hours=2)  # at their end, not before they began


def test_a_clinician_cannot_enrol_a_patient_by_email(client, world):
    """The route that let any clinician give themselves lasting access to anyone's data is gone."""
    clinician, patient_b = world["clinician_team"], world["patient_b"]
    response = client.post(f"/api/v1/clinician/teams/{world.team_id}/patients", headers=clinician.headers,
                           json={"patient_email": patient_b.email, "reason": "I would like to see this patient"})
    assert response.status_code in (404, 405)
    assert client.get(f"/api/v1/patients/{patient_b.id}", headers=clinician.headers).status_code == 404


def test_an_invitation_reveals_nothing_about_the_email(client, world, services):
    clinician = world["clinician_team"]
    caregiver = world["caregiver_linked"]
    answers = [_invite(client, clinician, world.team_id, email) for email in
               (world["patient_b"].email, caregiver.email, "nobody-at-all@example.org")]
    assert {a.status_code for a in answers} == {202}
    shapes = [{k: v for k, v in a.json.items() if k not in ("id", "email", "created_at", "expires_at")}
              for a in answers]
    assert shapes[0] == shapes[1] == shapes[2] == {"team_id": world.team_id, "status": "open", "patient_id": None}
    listed = client.get(f"/api/v1/clinician/teams/{world.team_id}/invitations", headers=clinician.headers).json
    assert {i["status"] for i in listed["items"]} == {"open"}
    assert client.get(f"/api/v1/patients/{world['patient_b'].id}", headers=clinician.headers).status_code == 404


def test_the_patient_sees_the_invitation_accepts_it_with_their_password_and_the_team_sees_their_data(
        client, world, db):
    clinician, patient = world["clinician_team"], world["patient_b"]
    invited = _invite(client, clinician, world.team_id, patient.email.upper()).json
    waiting = client.get(f"/api/v1/patients/{patient.id}/invitations", headers=patient.headers).json["items"]
    assert [(w["id"], w["team_name"], w["clinician_name"], w["reason"]) for w in waiting] == [
        (invited["id"], "Pain clinic A", "Clinician Team", "Referral from the GP")]
    assert db.push_outbox.count_documents({"recipient_user_id": patient.id, "source_key": f"invitation:{invited['id']}"}) == 1
    accept = f"/api/v1/patients/{patient.id}/invitations/{invited['id']}/acceptance"
    assert client.post(accept, headers=patient.headers, json={"current_password": "not my password"}).status_code == 403
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 404
    assert client.post(accept, headers=patient.headers, json={"current_password": PASSWORD}).status_code == 200
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 200
    listed = client.get(f"/api/v1/clinician/teams/{world.team_id}/invitations", headers=clinician.headers).json
    assert [(i["status"], i["patient_id"]) for i in listed["items"]] == [("accepted", patient.id)]
    # The list names the patient (and the address they were invited at): in their access history.
    assert db.audit_events.find_one({"resource_type": "invitation", "actor_id": clinician.id,
                                  "patient_ids": patient.id})
    teams = client.get(f"/api/v1/patients/{patient.id}/care-teams", headers=patient.headers).json["items"]
    assert [(t["team_name"], t["consent"]) for t in teams if t["team_id"] == world.team_id] == [
        ("Pain clinic A", f"invitation:{invited['id']}")]
    # Accepting again (a retry whose answer was lost) answers as the first time and enrols nothing more.
    again = client.post(accept, headers=patient.headers, json={"current_password": PASSWORD})
    assert (again.status_code, again.json) == (200, {"team_id": world.team_id, "status": "accepted"})
    assert db.team_enrolments.count_documents({"patient_id": patient.id, "team_id": world.team_id}) == 1
    # Once the patient left the team, a late retry does not put them back.
    assert client.delete(f"/api/v1/patients/{patient.id}/care-teams/{world.team_id}",
                         headers=patient.headers).status_code == 204
    assert client.post(accept, headers=patient.headers, json={"current_password": PASSWORD}).status_code == 404
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 404


def test_an_invitation_push_waits_for_the_end_of_the_patients_quiet_hours(client, world, db):
    patient, clinician = world["patient_b"], world["clinician_team"]  # patient_b lives in America/New_York
    quiet = quiet_hours_around_now("America/New_York")
    set_quiet_hours(client, patient, quiet)
    assert _invite(client, clinician, world.team_id, patient.email).status_code == 202
    told = db.push_outbox.find_one({"recipient_user_id": patient.id, "source_key": {"$regex": "^invitation:"}})
    assert_waits_for_their_end(told, "America/New_York", quiet)


def test_an_invitation_answered_or_withdrawn_takes_its_waiting_push_with_it(client, world, db):
    """The push telling the patient of an invitation is still waiting (quiet hours, a retry): once the patient
    answered it, or the team took it back, it is withdrawn, not sent about nothing."""
    clinician, patient = world["clinician_team"], world["patient_b"]
    answered, declined, withdrawn = (_invite(client, clinician, world.team_id, patient.email).json for _ in range(3))
    assert client.post(f"/api/v1/patients/{patient.id}/invitations/{answered['id']}/acceptance",
                       headers=patient.headers, json={"current_password": PASSWORD}).status_code == 200
    assert client.delete(f"/api/v1/patients/{patient.id}/invitations/{declined['id']}",
                         headers=patient.headers).status_code == 204
    assert client.delete(f"/api/v1/clinician/teams/{world.team_id}/invitations/{withdrawn['id']}",
                         headers=clinician.headers).status_code == 204
    states = {d["source_key"]: d["state"] for d in db.push_outbox.find({"recipient_user_id": patient.id})}
    assert {states[f"invitation:{i['id']}"] for i in (answered, declined, withdrawn)} == {"withdrawn"}


def test_a_declined_invitation_looks_to_the_team_like_one_never_answered(client, world):
    clinician, patient = world["clinician_team"], world["patient_b"]
    declined = _invite(client, clinician, world.team_id, patient.email).json
    ignored = _invite(client, clinician, world.team_id, "nobody-at-all@example.org").json
    assert client.delete(f"/api/v1/patients/{patient.id}/invitations/{declined['id']}",
                         headers=patient.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 404

    def statuses():
        items = client.get(f"/api/v1/clinician/teams/{world.team_id}/invitations", headers=clinician.headers).json
        return {i["id"]: i["status"] for i in items["items"]}

    assert statuses() == {declined["id"]: "open", ignored["id"]: "open"}
    with time_machine.travel(datetime.now(UTC) + timedelta(days=15)):
        clinician = login(client, "clinician_team", clinician.email, clinician.id, "clinician")
        assert statuses() == {declined["id"]: "closed", ignored["id"]: "closed"}


def test_an_invitation_to_someone_else_cannot_be_accepted_by_another_patient(client, world):
    clinician = world["clinician_team"]
    invited = _invite(client, clinician, world.team_id, world["patient_b"].email).json
    intruder = world["patient_a"]
    response = client.post(f"/api/v1/patients/{intruder.id}/invitations/{invited['id']}/acceptance",
                           headers=intruder.headers, json={"current_password": PASSWORD})
    assert response.status_code == 404


def test_the_patient_leaves_a_team_and_its_clinicians_lose_access_at_once(client, world):
    patient, clinician = world["patient_a"], world["clinician_team"]
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 200
    assert client.delete(f"/api/v1/patients/{patient.id}/care-teams/{world.team_id}",
                         headers=patient.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 404


def test_an_admin_enrolment_is_audited_and_told_to_the_patient(client, world, db):
    admin, patient = world["admin"], world["patient_b"]
    response = client.post(f"/api/v1/admin/teams/{world.team_id}/patients", headers=admin.headers,
                           json={"patient_id": patient.id})
    assert response.status_code == 204
    assert db.audit_events.count_documents({"actor_id": admin.id, "resource_type": "team_enrolment",
                                            "patient_ids": patient.id, "outcome": "success"}) == 1
    told = db.push_outbox.find_one({"recipient_user_id": patient.id, "source_key": f"enrolment:{world.team_id}"})
    assert told is not None and told["kind"] == "generic_update"
    teams = client.get(f"/api/v1/patients/{patient.id}/care-teams", headers=patient.headers).json["items"]
    assert {t["team_id"]: t["consent"] for t in teams}[world.team_id] == "admin"


def test_an_admin_enrolment_push_waits_for_the_end_of_the_patients_quiet_hours(client, world, db):
    admin, patient = world["admin"], world["patient_b"]  # patient_b lives in America/New_York
    quiet = quiet_hours_around_now("America/New_York")
    set_quiet_hours(client, patient, quiet)
    assert client.post(f"/api/v1/admin/teams/{world.team_id}/patients", headers=admin.headers,
                       json={"patient_id": patient.id}).status_code == 204
    told = db.push_outbox.find_one({"recipient_user_id": patient.id, "source_key": f"enrolment:{world.team_id}"})
    assert_waits_for_their_end(told, "America/New_York", quiet)


def test_an_admin_adding_or_removing_a_clinician_is_in_the_access_log_of_each_patient_of_the_team(
        client, world, services):
    """An admin's enrolment of a patient is audited against the patient; adding a clinician to the team opens the
    same records to a new person (and taking one off closes them to them), so each patient of the team reads it
    in their access log too, and no one else."""
    admin, team, patient_a, patient_b = world["admin"], world.team_id, world["patient_a"], world["patient_b"]
    assert client.post(f"/api/v1/admin/teams/{team}/patients", headers=admin.headers,
                       json={"patient_id": patient_b.id}).status_code == 204
    other = services.accounts.sign_up(email="new-doctor@example.org", password=PASSWORD, display_name="New Doctor",
                                      role="clinician", time_zone="UTC")
    assert client.post(f"/api/v1/admin/teams/{team}/clinicians", headers=admin.headers,
                       json={"clinician_id": other.id}).status_code == 200
    assert client.delete(f"/api/v1/admin/teams/{team}/clinicians/{other.id}", headers=admin.headers).status_code \
        == 204

    def team_changes(patient):
        log = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers).json["items"]
        return [(e["actor_id"], e["actor_role"], e["action"], e["outcome"]) for e in log
                if e["resource_type"] == "team_clinician"]

    both = [(admin.id, "admin", "D", "success"), (admin.id, "admin", "C", "success")]
    assert (team_changes(patient_a), team_changes(patient_b)) == (both, both)
    # Patient B's other team (A is not on it): in B's log only.
    other_team = services.care.teams_of(world["clinician_other"].id)[0].team.id
    assert client.post(f"/api/v1/admin/teams/{other_team}/clinicians", headers=admin.headers,
                       json={"clinician_id": other.id}).status_code == 200
    assert (len(team_changes(patient_a)), len(team_changes(patient_b))) == (2, 3)


def _team_changes(client, patient):
    log = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers).json["items"]
    return [(e["actor_id"], e["action"], e["outcome"], e["route"]) for e in log if e["resource_type"] == "team_clinician"]


def test_a_clinician_leaving_a_team_is_in_the_access_log_of_each_patient_of_the_team(client, world, services, db,
                                                                                      monkeypatch):
    """Leaving a team ends the clinician's access to its patients as an admin taking them off it does: each
    patient reads it in their access log, a large team's named across events sharing the request id."""
    clinician, team, patient_a, patient_b = world["clinician_team"], world.team_id, world["patient_a"], \
        world["patient_b"]
    services.stores.care_teams.enrol(team, patient_b.id)
    monkeypatch.setattr(auditing, "PATIENTS_PER_EVENT", 1)
    assert client.delete(f"/api/v1/clinician/teams/{team}/membership", headers=clinician.headers).status_code == 204
    left = [(clinician.id, "D", "success", "/api/v1/clinician/teams/<team_id>/membership")]
    assert (_team_changes(client, patient_a), _team_changes(client, patient_b)) == (left, left)
    events = list(db.audit_events.find({"actor_id": clinician.id, "resource_type": "team_clinician"}))
    assert sorted(e["patient_ids"] for e in events) == sorted([[patient_a.id], [patient_b.id]])
    assert len({e["request_id"] for e in events}) == 1
    assert {tuple(e["resource_ids"]) for e in events} == {(team, clinician.id)}
    # Leaving again (a retry), or a team one is not on, names no patient.
    assert client.delete(f"/api/v1/clinician/teams/{team}/membership", headers=clinician.headers).status_code == 404
    assert _team_changes(client, patient_a) == left


def test_a_clinicians_account_deactivated_reactivated_or_closed_is_in_the_access_log_of_each_patient_of_their_teams(
        client, world, services):
    """Deactivating a clinician's account ends their access to every patient of their teams, reactivating it gives
    it back, closing it ends it for good: each is in those patients' access logs, and in no one else's."""
    admin, clinician = world["admin"], world["clinician_team"]
    patient_a, patient_b = world["patient_a"], world["patient_b"]
    second = services.care.create_team("Second clinic")
    services.care.add_clinician(second.id, clinician.id)
    services.stores.care_teams.enrol(second.id, patient_b.id)
    account = f"/api/v1/admin/users/{clinician.id}"
    assert client.post(f"{account}/deactivation", headers=admin.headers, json={"reason": "on leave"}).status_code \
        == 200
    assert client.delete(f"{account}/deactivation", headers=admin.headers).status_code == 200
    assert client.delete(account, headers=admin.headers).status_code == 200
    deactivation, deletion = "/api/v1/admin/users/<user_id>/deactivation", "/api/v1/admin/users/<user_id>"
    expected = [(admin.id, "D", "success", deletion), (admin.id, "C", "success", deactivation),
                (admin.id, "D", "success", deactivation)]
    assert (_team_changes(client, patient_a), _team_changes(client, patient_b)) == (expected, expected)
    assert services.care.team_ids_of(clinician.id) == []
    # A caregiver's account is on no team: deactivating it names no patient as a team change.
    caregiver = world["caregiver_linked"]
    assert client.post(f"/api/v1/admin/users/{caregiver.id}/deactivation", headers=admin.headers,
                       json={"reason": "asked to"}).status_code == 200
    assert _team_changes(client, patient_a) == expected


def test_the_patient_is_told_again_when_an_admin_puts_them_back_in_a_team_they_left(client, world, db):
    patient, admin, team = world["patient_a"], world["admin"], world.team_id
    assert client.delete(f"/api/v1/patients/{patient.id}/care-teams/{team}", headers=patient.headers).status_code \
        == 204
    for _ in range(2):
        assert client.post(f"/api/v1/admin/teams/{team}/patients", headers=admin.headers,
                           json={"patient_id": patient.id}).status_code == 204
        db.push_outbox.update_many({"recipient_user_id": patient.id}, {"$set": {"state": "sent"}})  # told, read
        assert client.delete(f"/api/v1/patients/{patient.id}/care-teams/{team}",
                             headers=patient.headers).status_code == 204
    told = sorted(d["source_key"] for d in db.push_outbox.find({"recipient_user_id": patient.id}))
    assert told == [f"enrolment:{team}:1", f"enrolment:{team}:2"]
    listed = client.get("/api/v1/me/notifications", headers=patient.headers).json["items"]
    assert {(n["about"], n["about_id"]) for n in listed} == {("care_team", team)}


def test_no_team_is_given_a_closed_patients_record(client, world, services):
    patient, outsider, admin = world["patient_a"], world["clinician_other"], world["admin"]
    assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    other_team = services.stores.care_teams.of_clinician(outsider.id)[0].id
    refused = client.post(f"/api/v1/admin/teams/{other_team}/patients", headers=admin.headers,
                          json={"patient_id": patient.id})
    assert "closed" in assert_problem(refused, 409)["detail"]
    assert client.get(f"/api/v1/patients/{patient.id}/review/diary", headers=outsider.headers).status_code == 404
    # The team of the day keeps reading it.
    assert client.get(f"/api/v1/patients/{patient.id}/review/diary",
                      headers=world["clinician_team"].headers).status_code == 200


def test_admins_take_clinicians_and_patients_off_teams(client, world, services):
    admin, patient, clinician = world["admin"], world["patient_a"], world["clinician_team"]
    other = make_user(client, services, key="second_doctor", role="clinician")
    services.care.add_clinician(world.team_id, other.id)
    assert client.get(f"/api/v1/patients/{patient.id}", headers=other.headers).status_code == 200
    assert client.delete(f"/api/v1/admin/teams/{world.team_id}/clinicians/{other.id}",
                         headers=admin.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=other.headers).status_code == 404
    assert client.delete(f"/api/v1/admin/teams/{world.team_id}/patients/{patient.id}",
                         headers=admin.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 404


def test_emergency_access_is_still_the_reasoned_time_boxed_way_in(client, world, db):
    clinician, patient = world["clinician_other"], world["patient_a"]
    granted = client.post("/api/v1/emergency-access", headers=clinician.headers, json={
        "patient_id": patient.id, "reason": "patient in A&E, team unreachable", "minutes": 30})
    assert granted.status_code == 201
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 200
    assert db.audit_events.count_documents({"actor_id": clinician.id, "action": "emergency"}) == 1


def test_a_team_the_patient_left_no_longer_sees_who_accepted_its_invitation(client, world, db):
    patient, clinician = world["patient_b"], world["clinician_team"]
    team = world.team_id
    invited = client.post(f"/api/v1/clinician/teams/{team}/invitations", headers=clinician.headers,
                          json={"patient_email": patient.email, "reason": "referral from GP"}).json
    assert client.post(f"/api/v1/patients/{patient.id}/invitations/{invited['id']}/acceptance",
                       headers=patient.headers, json={"current_password": PASSWORD}).status_code == 200
    assert client.delete(f"/api/v1/patients/{patient.id}/care-teams/{team}",
                         headers=patient.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 404
    listed = client.get(f"/api/v1/clinician/teams/{team}/invitations", headers=clinician.headers).json["items"]
    # The patient ended the team's access: the team no longer reads their account id.
    assert [(i["status"], i["patient_id"]) for i in listed if i["id"] == invited["id"]] == [("ended", None)]


def test_a_retried_acceptance_does_not_put_back_a_patient_who_left_the_team_whoever_enrolled_them(client, world):
    """docs/access.md 2: "once the patient left that team, a retry does not put them back (404)". Patient A is on
    the team already (an admin's enrolment); the team invites them and they accept (200, nothing new). They leave
    the team (the admin's enrolment ends); their app retries the acceptance whose answer was lost."""
    patient, clinician, team = world["patient_a"], world["clinician_team"], world.team_id
    invited = _invite(client, clinician, team, patient.email).json
    accept = f"/api/v1/patients/{patient.id}/invitations/{invited['id']}/acceptance"
    assert client.post(accept, headers=patient.headers, json={"current_password": PASSWORD}).status_code == 200
    assert client.delete(f"/api/v1/patients/{patient.id}/care-teams/{team}", headers=patient.headers).status_code \
        == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 404
    retried = client.post(accept, headers=patient.headers, json={"current_password": PASSWORD})
    seen = client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers)
    assert (retried.status_code, seen.status_code) == (404, 404)


def test_the_patient_reading_their_invitations_and_care_teams_is_audited(client, world, db):
    clinician, patient = world["clinician_team"], world["patient_b"]
    invited = _invite(client, clinician, world.team_id, patient.email).json
    assert client.get(f"/api/v1/patients/{patient.id}/invitations", headers=patient.headers).status_code == 200
    read = db.audit_events.find_one({"actor_id": patient.id, "resource_type": "invitation", "action": "R"})
    assert read is not None and read["patient_ids"] == [patient.id] and read["resource_ids"] == [invited["id"]]
    assert read["outcome"] == "success"
    assert client.get(f"/api/v1/patients/{patient.id}/care-teams", headers=patient.headers).status_code == 200
    read = db.audit_events.find_one({"actor_id": patient.id, "resource_type": "team_enrolment", "action": "R"})
    assert read is not None and read["patient_ids"] == [patient.id] and read["outcome"] == "success"


def test_withdrawing_a_declined_invitation_answers_as_for_one_never_answered(client, world):
    """A decline is not told apart from silence: the team can take back either, and sees it ``withdrawn`` either
    way (a retry answers 204 as the first time)."""
    clinician, patient = world["clinician_team"], world["patient_b"]
    declined = _invite(client, clinician, world.team_id, patient.email).json
    ignored = _invite(client, clinician, world.team_id, "nobody-at-all@example.org").json
    assert client.delete(f"/api/v1/patients/{patient.id}/invitations/{declined['id']}",
                         headers=patient.headers).status_code == 204
    listed = client.get(f"/api/v1/clinician/teams/{world.team_id}/invitations", headers=clinician.headers).json
    assert {i["id"]: i["status"] for i in listed["items"]} == {declined["id"]: "open", ignored["id"]: "open"}
    for _ in range(2):  # the second time, a retry
        answers = [client.delete(f"/api/v1/clinician/teams/{world.team_id}/invitations/{i['id']}",
                                 headers=clinician.headers).status_code for i in (ignored, declined)]
        assert answers[0] == answers[1] == 204, answers
    listed = client.get(f"/api/v1/clinician/teams/{world.team_id}/invitations", headers=clinician.headers).json
    assert {i["id"]: i["status"] for i in listed["items"]} == {declined["id"]: "withdrawn",
                                                               ignored["id"]: "withdrawn"}
    # The patient's own retry of their decline (its answer lost) still answers as the first time; the invitation
    # is no longer waiting for them.
    assert client.delete(f"/api/v1/patients/{patient.id}/invitations/{declined['id']}",
                         headers=patient.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}/invitations", headers=patient.headers).json["items"] == []


def test_withdrawing_an_invitation_whose_patient_closed_their_account_answers_as_for_one_never_answered(
        client, world, services):
    """Closing an account closes the invitations waiting for it (``declined``): the team still takes them back
    as any other it sent."""
    clinician, patient, admin = world["clinician_team"], world["patient_b"], world["admin"]
    invited = _invite(client, clinician, world.team_id, patient.email).json
    assert client.delete(f"/api/v1/admin/users/{patient.id}", headers=admin.headers).status_code == 200
    url = f"/api/v1/clinician/teams/{world.team_id}/invitations/{invited['id']}"
    assert [client.delete(url, headers=clinician.headers).status_code for _ in range(2)] == [204, 204]


def _caregiver_access_changes(client, patient):
    log = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers).json["items"]
    return [(e["actor_id"], e["action"], e["outcome"], e["route"], e.get("caregiver_id"), e.get("caregiver_name"),
             e.get("caregiver_role")) for e in log if e["resource_type"] == "care_link" and e["actor_role"] == "admin"]


def test_an_admin_suspending_restoring_or_deleting_a_caregivers_account_is_in_the_access_log_of_each_patient_linked(
        client, world, services):
    """Deactivating a caregiver's account stops their access to every patient sharing with them, reactivating it
    gives it back (the links never ended), deleting it revokes them: each is in those patients' access logs,
    naming the caregiver (never their email), and in no one else's."""
    admin, caregiver = world["admin"], world["caregiver_linked"]
    patient_a, patient_b = world["patient_a"], world["patient_b"]
    patient_c = make_user(client, services, key="patient_c", role="patient")
    services.stores.care_links.grant(patient_c.id, caregiver.id, CaregiverPermissions())
    ended = services.stores.care_links.grant(patient_b.id, caregiver.id, CaregiverPermissions())
    assert client.delete(f"/api/v1/patients/{patient_b.id}/caregivers/{ended.id}",
                         headers=patient_b.headers).status_code == 204  # (B no longer shares with them)
    assert client.get(f"/api/v1/patients/{patient_a.id}", headers=caregiver.headers).status_code == 200
    account = f"/api/v1/admin/users/{caregiver.id}"
    assert client.post(f"{account}/deactivation", headers=admin.headers, json={"reason": "on leave"}).status_code \
        == 200
    assert client.delete(f"{account}/deactivation", headers=admin.headers).status_code == 200
    assert client.delete(account, headers=admin.headers).status_code == 200
    deactivation, deletion = "/api/v1/admin/users/<user_id>/deactivation", "/api/v1/admin/users/<user_id>"
    named = (caregiver.id, "Closed account", "caregiver")  # the name erased with the account; never the email
    expected = [(admin.id, "D", "success", deletion, *named), (admin.id, "C", "success", deactivation, *named),
                (admin.id, "D", "success", deactivation, *named)]
    assert (_caregiver_access_changes(client, patient_a), _caregiver_access_changes(client, patient_c)) == \
        (expected, expected)
    assert _caregiver_access_changes(client, patient_b) == []
    log = client.get(f"/api/v1/patients/{patient_a.id}/access-log", headers=patient_a.headers).get_data(as_text=True)
    assert caregiver.email not in log


def test_an_admin_suspending_a_caregiver_names_them_by_their_name_while_the_account_has_one(client, world):
    admin, caregiver, patient = world["admin"], world["caregiver_linked"], world["patient_a"]
    assert client.post(f"/api/v1/admin/users/{caregiver.id}/deactivation", headers=admin.headers,
                       json={"reason": "on leave"}).status_code == 200
    [entry] = _caregiver_access_changes(client, patient)
    assert entry[1:] == ("D", "success", "/api/v1/admin/users/<user_id>/deactivation", caregiver.id,
                         "Caregiver Linked", "caregiver")
