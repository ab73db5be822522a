"""Access can be ended (issue 15, finding 5): an admin deactivates, reactivates and deletes accounts and issues
one-time reset codes; a patient revokes a gateway; every token and web session is checked against the
account's state on every request, so the next request after any of these is refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from companion.domain.access import CaregiverPermissions
from companion.domain.errors import Invalid
from tests.support.records import session_record
from tests.support.world import PASSWORD, login, make_user

NEW_PASSWORD = "a completely new passphrase"


def _web_client(app, services, person):
    """A clinician-pages client signed in as ``person`` (a session cookie)."""
    page = app.test_client()
    page.set_cookie("companion_web", services.accounts.start_web_session(
        services.accounts.account(person.id), stage="full"))
    return page


def _me(client, person):
    return client.get("/api/v1/auth/me", headers=person.headers)


def test_a_deactivated_account_is_refused_at_its_next_request_everywhere(app, client, world, services):
    admin, clinician = world["admin"], world["clinician_team"]
    page = _web_client(app, services, clinician)
    assert page.get("/clinician/").status_code == 200
    assert _me(client, clinician).status_code == 200
    deactivated = client.post(f"/api/v1/admin/users/{clinician.id}/deactivation", headers=admin.headers,
                              json={"reason": "left the clinic"})
    assert deactivated.status_code == 200 and deactivated.json["status"] == "deactivated"
    assert _me(client, clinician).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": clinician.refresh_token}).status_code == 401
    assert page.get("/clinician/").status_code == 302  # back to the sign-in page
    wrong = client.post("/api/v1/auth/login", json={"email": clinician.email, "password": "not the password"})
    refused = client.post("/api/v1/auth/login", json={"email": clinician.email, "password": PASSWORD})
    assert refused.status_code == wrong.status_code == 401
    assert refused.json["detail"] == wrong.json["detail"]


def test_reactivation_lets_the_owner_sign_in_again_but_old_sessions_stay_ended(client, world):
    admin, caregiver = world["admin"], world["caregiver_linked"]
    url = f"/api/v1/admin/users/{caregiver.id}/deactivation"
    assert client.post(url, headers=admin.headers, json={"reason": "lost phone"}).status_code == 200
    reactivated = client.delete(url, headers=admin.headers)
    assert reactivated.status_code == 200 and reactivated.json["status"] == "active"
    assert _me(client, caregiver).status_code == 401
    fresh = login(client, caregiver.key, caregiver.email, caregiver.id, "caregiver")
    assert _me(client, fresh).status_code == 200


def test_an_admin_cannot_deactivate_or_delete_themself(client, world):
    admin = world["admin"]
    assert client.post(f"/api/v1/admin/users/{admin.id}/deactivation", headers=admin.headers,
                       json={"reason": "oops"}).status_code == 409
    assert client.delete(f"/api/v1/admin/users/{admin.id}", headers=admin.headers).status_code == 409


def test_a_deleted_caregiver_is_refused_at_once_and_loses_every_patient(client, world, db):
    admin, caregiver, patient = world["admin"], world["caregiver_linked"], world["patient_a"]
    deleted = client.delete(f"/api/v1/admin/users/{caregiver.id}", headers=admin.headers)
    assert deleted.status_code == 200 and deleted.json["deleted_now"]
    assert _me(client, caregiver).status_code == 401
    assert db.care_links.count_documents({"caregiver_id": caregiver.id, "status": "active"}) == 0
    assert db.users.find_one({"_id": caregiver.id})["email"] == f"closed:{caregiver.id}"
    # The email can be used again (a new account, a new person).
    assert client.post("/api/v1/auth/login", json={"email": caregiver.email, "password": PASSWORD}).status_code == 401
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 401


def test_a_token_whose_account_was_removed_from_the_database_is_refused_not_a_server_error(client, world, db):
    patient = world["patient_b"]
    db.users.delete_one({"_id": patient.id})
    assert _me(client, patient).status_code == 401
    assert client.get(f"/api/v1/patients/{patient.id}", headers=patient.headers).status_code == 401


def test_an_admin_issued_code_resets_the_password_once_and_ends_every_session(app, client, world, services):
    admin, clinician = world["admin"], world["clinician_team"]
    page = _web_client(app, services, clinician)
    issued = client.post(f"/api/v1/admin/users/{clinician.id}/password-reset", headers=admin.headers)
    assert issued.status_code == 201 and re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", issued.json["code"])
    code = issued.json["code"]
    reset = {"email": clinician.email, "code": code, "new_password": NEW_PASSWORD}
    wrong = client.post("/api/v1/auth/password-reset", json={**reset, "code": "ZZZZ-ZZZZ-ZZZZ"})
    nobody = client.post("/api/v1/auth/password-reset", json={**reset, "email": "nobody@example.org"})
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json["detail"] == nobody.json["detail"]
    assert client.post("/api/v1/auth/password-reset", json=reset).status_code == 204
    assert _me(client, clinician).status_code == 401
    assert page.get("/clinician/").status_code == 302
    assert client.post("/api/v1/auth/login", json={"email": clinician.email, "password": PASSWORD}).status_code == 401
    assert client.post("/api/v1/auth/login",
                       json={"email": clinician.email, "password": NEW_PASSWORD}).status_code == 200
    assert client.post("/api/v1/auth/password-reset", json={**reset, "new_password": "yet another one!!"}) \
        .status_code == 401  # the code worked once


def test_a_password_change_ends_the_clinician_pages_session_too(app, client, world, services):
    clinician = world["clinician_team"]
    page = _web_client(app, services, clinician)
    assert page.get("/clinician/").status_code == 200
    changed = client.post("/api/v1/auth/password", headers=clinician.headers,
                          json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert changed.status_code == 200
    assert page.get("/clinician/").status_code == 302


def test_the_patient_revokes_a_gateway_and_it_is_refused_at_its_next_call(client, world, services):
    patient, gateway = world["patient_a"], world["gateway_a"]
    assert client.get("/api/v1/gateway/devices", headers=gateway.headers).status_code == 200
    listed = client.get(f"/api/v1/patients/{patient.id}/gateways", headers=patient.headers).json["items"]
    assert [(g["id"], g["revoked"]) for g in listed] == [(gateway.id, False)]
    assert client.delete(f"/api/v1/patients/{patient.id}/gateways/{gateway.id}",
                         headers=patient.headers).status_code == 204
    assert client.get("/api/v1/gateway/devices", headers=gateway.headers).status_code == 401
    assert client.post("/api/v1/gateway/device-status", headers=gateway.headers, json={"devices": [{
        "serial": world.a_device, "battery_pct": 50, "firmware": "1.0", "last_seen_at": "2026-01-01T00:00:00Z"}]}) \
        .status_code == 401
    # Nor can it get a new token with its secret.
    assert services.gateways.is_active(gateway.id) is False


def test_revoking_a_gateway_again_answers_as_the_first_did_and_another_patients_is_not_found(client, world):
    patient, gateway, other = world["patient_a"], world["gateway_a"], world["gateway_b"]
    url = f"/api/v1/patients/{patient.id}/gateways/{gateway.id}"
    assert client.delete(url, headers=patient.headers).status_code == 204
    again = client.delete(url, headers=patient.headers)  # the app's retry after a lost answer
    assert again.status_code == 204, again.json
    assert client.get("/api/v1/gateway/devices", headers=gateway.headers).status_code == 401
    assert client.delete(f"/api/v1/patients/{patient.id}/gateways/{other.id}",
                         headers=patient.headers).status_code == 404
    assert client.delete(f"/api/v1/patients/{patient.id}/gateways/{'0' * 24}", headers=patient.headers).status_code == 404
    assert client.delete(f"/api/v1/patients/{world['patient_b'].id}/gateways/{other.id}",
                         headers=world["patient_b"].headers).status_code == 204
    assert client.delete(f"/api/v1/patients/{patient.id}/gateways/{other.id}",  # revoked, and still not A's
                         headers=patient.headers).status_code == 404
    listed = client.get(f"/api/v1/patients/{patient.id}/gateways", headers=patient.headers).json["items"]
    assert [(g["id"], g["revoked"], g["revoked_reason"]) for g in listed] == [(gateway.id, True, "revoked")]


def test_a_deactivated_patients_gateway_is_told_to_wait_and_is_heard_again_once_reactivated(client, world, db):
    """A deactivation is reversible: the gateway is paused (503, Retry-After), not refused as revoked (401,
    which stops it for good after a minute), and each call it makes meanwhile is in the patient's log."""
    admin, patient, gateway = world["admin"], world["patient_b"], world["gateway_b"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    paired = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall"}).json
    credentials = {"gateway_id": paired["gateway_id"], "gateway_secret": paired["gateway_secret"]}
    assert client.post(f"/api/v1/admin/users/{patient.id}/deactivation", headers=admin.headers,
                       json={"reason": "moved to another clinic"}).status_code == 200
    paused = client.get("/api/v1/gateway/devices", headers=gateway.headers)
    assert paused.status_code == 503 and paused.mimetype == "application/problem+json", paused.json
    assert int(paused.headers["Retry-After"]) >= 600
    assert "paused" in paused.json["detail"] and patient.id not in paused.get_data(as_text=True)
    renewal = client.post("/api/v1/auth/gateway-token", json=credentials)
    assert renewal.status_code == 503 and int(renewal.headers["Retry-After"]) >= 600
    refused = [(e["route"], e["patient_ids"]) for e in db.audit_events.find(
        {"outcome": "denied", "patient_ids": patient.id}).sort("seq", 1)]
    assert refused == [("/api/v1/gateway/devices", [patient.id]), ("/api/v1/auth/gateway-token", [patient.id])]

    assert client.delete(f"/api/v1/admin/users/{patient.id}/deactivation", headers=admin.headers).status_code == 200
    assert client.get("/api/v1/gateway/devices", headers=gateway.headers).status_code == 200
    assert client.post("/api/v1/auth/gateway-token", json=credentials).status_code == 200


def test_a_closed_patients_gateway_is_refused_as_revoked(client, world):
    patient, gateway = world["patient_b"], world["gateway_b"]
    assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    assert client.get("/api/v1/gateway/devices", headers=gateway.headers).status_code == 401


def test_a_revoked_gateways_refused_calls_name_the_patient_it_belonged_to(client, world, db):
    patient, gateway = world["patient_a"], world["gateway_a"]
    assert client.delete(f"/api/v1/patients/{patient.id}/gateways/{gateway.id}",
                         headers=patient.headers).status_code == 204
    assert client.post("/api/v1/gateway/session-records", headers=gateway.headers,
                       json={"records": [session_record(world.a_device, 1)]}).status_code == 401
    assert client.post("/api/v1/gateway/device-status", headers=gateway.headers, json={"devices": [{
        "serial": world.a_device, "battery_pct": 50, "firmware": "1.0", "last_seen_at": "2026-01-01T00:00:00Z"}]}) \
        .status_code == 401
    refused = list(db.audit_events.find({"actor_id": gateway.id, "outcome": "denied"}))
    assert sorted((e["route"], e["patient_ids"]) for e in refused) == [
        ("/api/v1/gateway/device-status", [patient.id]), ("/api/v1/gateway/session-records", [patient.id])]
    history = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers).json["items"]
    assert sum(e["actor_id"] == gateway.id and e["outcome"] == "denied" for e in history) == 2


def test_a_revoked_gateway_asking_for_a_new_token_is_refused_naming_the_patient_it_belonged_to(client, world, db):
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    paired = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall"}).json
    assert client.delete(f"/api/v1/patients/{patient.id}/gateways/{paired['gateway_id']}",
                         headers=patient.headers).status_code == 204
    credentials = {"gateway_id": paired["gateway_id"], "gateway_secret": paired["gateway_secret"]}
    refused = client.post("/api/v1/auth/gateway-token", json=credentials)
    unknown = client.post("/api/v1/auth/gateway-token", json={**credentials, "gateway_id": "0" * 24})
    assert (refused.status_code, refused.json["detail"]) == (unknown.status_code, unknown.json["detail"])
    assert refused.status_code == 401
    events = list(db.audit_events.find({"route": "/api/v1/auth/gateway-token", "outcome": "denied"})
                  .sort([("at", 1), ("seq", 1)]))
    assert [e["patient_ids"] for e in events] == [[patient.id], [None]]


def test_admins_find_accounts_by_email_and_see_their_state(client, world):
    admin, caregiver = world["admin"], world["caregiver_unlinked"]
    found = client.get("/api/v1/admin/users", query_string={"email": caregiver.email.upper()}, headers=admin.headers)
    assert found.status_code == 200
    assert [(a["id"], a["status"]) for a in found.json["items"]] == [(caregiver.id, "active")]
    assert client.get("/api/v1/admin/users", headers=world["clinician_team"].headers).status_code == 403


def test_caregiver_no_longer_lists_notifications_about_a_closed_patient(client, world, services, db):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    # An alert notification about the patient, sent to the caregiver while they shared it.
    doc, _ = services.stores.outbox.schedule(source_key="alert:abc123", recipient_user_id=caregiver.id,
                                             patient_id=patient.id, kind="missed_session_caregiver", send_at=services.clock(),
                                             share_kind="missed_session")
    db.push_outbox.update_one({"_id": doc["_id"]}, {"$set": {"state": "sent", "sent_at": services.clock()}})
    listed = client.get("/api/v1/me/notifications", headers=caregiver.headers).json["items"]
    assert [n["patient_id"] for n in listed] == [patient.id]
    # The patient closes the account: "caregivers' access (every link is revoked: they see nothing from their
    # next request)".
    closed = client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                         json={"current_password": PASSWORD, "confirm": True})
    assert closed.status_code == 200, closed.json
    assert db.care_links.find_one({"patient_id": patient.id})["status"] == "revoked"
    listed = client.get("/api/v1/me/notifications", headers=caregiver.headers).json["items"]
    assert [n["patient_id"] for n in listed] == []


def test_caregiver_cannot_post_receipts_for_notifications_about_a_closed_patient(client, world, services, db):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    doc, _ = services.stores.outbox.schedule(source_key="alert:def456", recipient_user_id=caregiver.id,
                                             patient_id=patient.id, kind="missed_session_caregiver",
                                             send_at=services.clock(), share_kind="missed_session")
    db.push_outbox.update_one({"_id": doc["_id"]}, {"$set": {"state": "sent", "sent_at": services.clock()}})
    assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    # As for a revoked link (tests/scheduler/test_consent_at_delivery.py): 404, as for any notification not theirs.
    receipt = client.post(f"/api/v1/me/notifications/{doc['_id']}/receipts", headers=caregiver.headers,
                          json={"receipt": "opened"})
    assert receipt.status_code == 404


def test_a_refused_session_is_audited_under_the_account_or_gateway_it_belongs_to(client, world, db):
    admin, clinician, patient = world["admin"], world["clinician_team"], world["patient_a"]
    assert client.post(f"/api/v1/admin/users/{clinician.id}/deactivation", headers=admin.headers,
                       json={"reason": "left the clinic"}).status_code == 200
    # The deactivated clinician's app still asks for A's record: refused, and A's history says by whom.
    assert client.get(f"/api/v1/patients/{patient.id}", headers=clinician.headers).status_code == 401
    (refused,) = db.audit_events.find({"patient_ids": patient.id, "outcome": "denied", "status": 401})
    assert (refused["actor_id"], refused["actor_role"]) == (clinician.id, "clinician")
    # A revoked hub that keeps uploading is named too.
    gateway = world["gateway_a"]
    assert client.delete(f"/api/v1/patients/{patient.id}/gateways/{gateway.id}",
                         headers=patient.headers).status_code == 204
    assert client.get("/api/v1/gateway/devices", headers=gateway.headers).status_code == 401
    refused = db.audit_events.find_one({"route": "/api/v1/gateway/devices", "outcome": "denied"})
    assert (refused["actor_id"], refused["actor_role"]) == (gateway.id, "gateway")
    # A token that is no one's (not signed with the key) stays anonymous.
    assert client.get(f"/api/v1/patients/{patient.id}", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
    forged = db.audit_events.find_one({"patient_ids": patient.id, "status": 401, "actor_id": None})
    assert forged is not None and forged["actor_role"] == "anonymous"


def test_an_admin_clears_a_lost_authenticator_and_its_owner_enrols_a_new_one_at_the_next_sign_in(client, world,
                                                                                                 services, db):
    """A clinician with a new phone has lost their TOTP secret: an admin clears it (audited against the
    account and the patients of their team; every session ends, as after a password change) and the next sign-in
    goes through enrolment."""
    import pyotp

    admin, clinician = world["admin"], world["clinician_team"]
    mfa_token = services.tokens.mfa_token(clinician.id, "clinician", password_checked_at=datetime.now(UTC))
    secret = client.post("/api/v1/auth/mfa/enrol", json={"mfa_token": mfa_token}).json["secret"]
    assert client.post("/api/v1/auth/mfa/confirm", json={"mfa_token": mfa_token,
                                                         "code": pyotp.TOTP(secret).now()}).status_code == 200
    signing_in = client.post("/api/v1/auth/login", json={"email": clinician.email, "password": PASSWORD}).json
    assert signing_in["mfa_required"] is True and signing_in.get("mfa_enrolled", True) is True
    assert client.delete(f"/api/v1/admin/users/{admin.id}/mfa", headers=admin.headers).status_code == 409

    cleared = client.delete(f"/api/v1/admin/users/{clinician.id}/mfa", headers=admin.headers)
    assert cleared.status_code == 200, cleared.json
    assert _me(client, clinician).status_code == 401  # every session ended
    assert client.post("/api/v1/auth/mfa", json={"mfa_token": signing_in["mfa_token"],
                                                 "code": pyotp.TOTP(secret).now()}).status_code == 401
    for about in (clinician, world["patient_a"]):  # the account itself, and the patient of its team
        assert db.audit_events.count_documents({"route": "/api/v1/admin/users/<user_id>/mfa", "patient_ids": about.id,
                                                "resource_ids": clinician.id, "outcome": "success"}) == 1
    again = client.post("/api/v1/auth/login", json={"email": clinician.email, "password": PASSWORD}).json
    assert "access_token" in again or again.get("mfa_enrolled") is False  # enrolment, not the lost code
    assert client.delete("/api/v1/admin/users/000000000000000000000000/mfa",
                         headers=admin.headers).status_code == 404


def _openings(client, patient):
    """The admin's reset codes and authenticator clears in a patient's access log: what, of whose account."""
    log = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers).json["items"]
    return sorted([(e["resource_type"], e["action"], e["actor_role"], e.get("caregiver_id") or e.get("clinician_id"),
                    e.get("caregiver_name") or e.get("clinician_name"), e.get("team_name")) for e in log
                   if e["resource_type"] in ("password_reset_code", "authenticator")], key=repr)


def test_a_reset_code_or_an_authenticator_cleared_for_a_caregiver_or_a_clinician_is_in_their_patients_access_logs(
        client, world, services):
    """Whoever holds a reset code takes the account over, and what they then read is recorded as its owner's
    reading. For a linked caregiver or a team's clinician only the owner's account recorded the code (or the
    authenticator cleared): the patients whose data the admin could then read as them saw nothing. Each is in the
    access log of every patient sharing with the caregiver, or of each of the clinician's teams, naming whom (and
    which team), as a deactivation of those accounts is; and in no other patient's."""
    admin, caregiver, clinician = world["admin"], world["caregiver_linked"], world["clinician_team"]
    patient_a, patient_b = world["patient_a"], world["patient_b"]
    patient_c = make_user(client, services, key="patient_c", role="patient")  # shares with nobody, on no team
    second = services.care.create_team("Second clinic")
    services.care.add_clinician(second.id, clinician.id)
    services.stores.care_teams.enrol(second.id, patient_b.id)
    services.stores.care_links.grant(patient_c.id, world["caregiver_unlinked"].id, CaregiverPermissions())
    for person in (caregiver, clinician, world["caregiver_unlinked"]):
        assert client.post(f"/api/v1/admin/users/{person.id}/password-reset", headers=admin.headers).status_code \
            == 201
    for person in (caregiver, clinician):
        assert client.delete(f"/api/v1/admin/users/{person.id}/mfa", headers=admin.headers).status_code == 200
    caregivers = [(what, action, "admin", caregiver.id, "Caregiver Linked", None)
                  for what, action in (("authenticator", "D"), ("password_reset_code", "C"))]
    assert _openings(client, patient_a) == sorted(caregivers + [
        (what, action, "admin", clinician.id, "Clinician Team", "Pain clinic A")
        for what, action in (("authenticator", "D"), ("password_reset_code", "C"))], key=repr)
    assert _openings(client, patient_b) == [
        (what, action, "admin", clinician.id, "Clinician Team", "Second clinic")
        for what, action in (("authenticator", "D"), ("password_reset_code", "C"))]
    assert _openings(client, patient_c) == [("password_reset_code", "C", "admin", world["caregiver_unlinked"].id,
                                             "Caregiver Unlinked", None)]
    # The patient's own account: the code for it is theirs, naming nobody else.
    assert client.post(f"/api/v1/admin/users/{patient_b.id}/password-reset", headers=admin.headers).status_code \
        == 201
    assert ("password_reset_code", "C", "admin", None, None, None) in _openings(client, patient_b)
    assert len(_openings(client, patient_a)) == 4


def test_an_account_the_cli_makes_can_reset_its_password(client, services, world):
    """sign_up took a looser email than the API's: `companion create-user --email first..last@example.org` made an
    account that signed in but whose POST /auth/password-reset answered 422 for ever. sign_up refuses it now, and
    what it takes the reset takes."""
    with pytest.raises(Invalid) as refused:
        services.accounts.sign_up(email="first..last@example.org", password=PASSWORD, display_name="First Last",
                                  role="caregiver", time_zone="UTC")
    assert refused.value.errors == {"email": ["Not a valid email address."]}
    person = services.accounts.sign_up(email="first.o'last@example.org", password=PASSWORD, display_name="F",
                                       role="caregiver", time_zone="UTC")
    code = client.post(f"/api/v1/admin/users/{person.id}/password-reset", headers=world["admin"].headers).json["code"]
    assert client.post("/api/v1/auth/password-reset", json={"email": person.email, "code": code,
                                                            "new_password": "a new passphrase here"}).status_code == 204
