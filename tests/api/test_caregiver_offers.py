"""A caregiver sees a patient's data only once both said yes: the patient offers access by email, and the owner of
the email accepts it, with their password, from a caregiver account. The patient's answer says nothing about the
email (whether it has an account, whether they declined), and either of them can end it at any time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine

from tests.api.test_care_team_consent import assert_waits_for_their_end, quiet_hours_around_now
from tests.support.world import PASSWORD, login, make_user


def _offer(client, patient, email, **permissions):
    return client.post(f"/api/v1/patients/{patient.id}/caregivers", headers=patient.headers, json={
        "caregiver_email": email, "current_password": PASSWORD, "permissions": permissions or {"alerts": []}})


def _accept(client, caregiver, offer_id, password=PASSWORD):
    return client.post(f"/api/v1/caregiver/invitations/{offer_id}/acceptance", headers=caregiver.headers,
                       json={"current_password": password})


def _waiting(client, caregiver):
    return client.get("/api/v1/caregiver/invitations", headers=caregiver.headers).json["items"]


def _permissions_seen_by(client, caregiver) -> dict:
    return client.get("/api/v1/caregiver/patients", headers=caregiver.headers).json["items"][0]["permissions"]


def _listed(client, patient):
    return client.get(f"/api/v1/patients/{patient.id}/caregivers", headers=patient.headers).json["items"]


def test_the_answer_to_an_offer_is_the_same_whatever_the_email(client, world, db):
    patient = world["patient_a"]
    answers = [_offer(client, patient, email) for email in (
        world["caregiver_unlinked"].email, world["patient_b"].email, "nobody-at-all@example.org")]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert [client.get(a.headers["Location"], headers=patient.headers).json for a in answers] == [
        a.json for a in answers]
    shapes = [{k: v for k, v in a.json.items() if k not in ("id", "caregiver_email", "offered_at", "expires_at")}
              for a in answers]
    assert shapes[0] == shapes[1] == shapes[2]
    assert (shapes[0]["status"], shapes[0]["caregiver_id"], shapes[0]["caregiver_name"]) == ("pending", None, None)
    # Nobody was linked: the caregiver with that email still cannot see the patient.
    assert db.care_links.count_documents({"caregiver_id": world["caregiver_unlinked"].id}) == 0
    assert client.get(f"/api/v1/patients/{patient.id}", headers=world["caregiver_unlinked"].headers).status_code == 404
    pending = [(c["caregiver_email"], c["status"]) for c in _listed(client, patient) if c["status"] == "pending"]
    assert sorted(pending) == sorted((a.json["caregiver_email"], "pending") for a in answers)
    # The care team sees that offers are pending, not the addresses the patient typed.
    seen = client.get(f"/api/v1/patients/{patient.id}/caregivers", headers=world["clinician_team"].headers).json
    assert [c["caregiver_email"] for c in seen["items"] if c["status"] == "pending"] == [None, None, None]


def test_the_caregiver_accepts_with_their_password_and_sees_the_patient_from_then_on(client, world, db):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    offered = _offer(client, patient, caregiver.email.upper(), diary_notes=True, alerts=["missed_session"]).json
    # Told by a push that says nothing about the patient (it is about an offer waiting for the caregiver).
    told = db.push_outbox.find_one({"recipient_user_id": caregiver.id})
    assert (told["kind"], told["patient_id"], told["source_key"]) == (
        "generic_update", caregiver.id, f"caregiver-invitation:{offered['id']}")
    waiting = _waiting(client, caregiver)
    assert [(w["id"], w["patient_id"], w["patient_name"], w["permissions"]) for w in waiting] == [
        (offered["id"], patient.id, "Patient A", {"write": False, "alerts": ["missed_session"], "diary_notes": True})]
    # The caregiver's list of offers names the patient: in the patient's access history.
    assert db.audit_events.find_one({"actor_id": caregiver.id, "resource_type": "caregiver_invitation",
                                     "patient_ids": patient.id})
    assert _accept(client, caregiver, offered["id"], "not my password").status_code == 403
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 404
    accepted = _accept(client, caregiver, offered["id"]).json
    link_id = accepted.pop("link_id")
    assert accepted == {"patient_id": patient.id, "status": "accepted"}
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 200
    cared_for = client.get("/api/v1/caregiver/patients", headers=caregiver.headers).json["items"]
    assert [(p["patient_id"], p["permissions"]["diary_notes"]) for p in cared_for] == [(patient.id, True)]
    # The patient sees the link (named now) in the offer's place; the push, not sent yet, is not sent at all.
    mine = [c for c in _listed(client, patient) if c["caregiver_id"] == caregiver.id or c["status"] == "pending"]
    assert [(c["id"], c["status"], c["caregiver_name"]) for c in mine] == [(link_id, "active", "Caregiver Unlinked")]
    # The offer's URL (its Location), kept by the patient's app, now answers the link it made.
    seen = client.get(f"/api/v1/patients/{patient.id}/caregivers/{offered['id']}", headers=patient.headers).json
    assert (seen["id"], seen["status"]) == (link_id, "active")
    assert db.push_outbox.find_one({"_id": told["_id"]})["withdrawn_reason"] == "invitation_settled"
    # Accepting again (a retry whose answer was lost) answers as the first time, with the same link.
    again = _accept(client, caregiver, offered["id"])
    assert (again.status_code, again.json) == (200, {**accepted, "link_id": link_id})
    assert db.care_links.count_documents({"caregiver_id": caregiver.id}) == 1
    assert _waiting(client, caregiver) == []


def test_the_push_telling_a_caregiver_of_an_offer_waits_for_the_end_of_their_quiet_hours(client, world, db):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]  # the caregiver lives in UTC
    quiet = quiet_hours_around_now("UTC")
    db.users.update_one({"_id": caregiver.id}, {"$set": {"quiet_hours": {
        "start": quiet.start.strftime("%H:%M"), "end": quiet.end.strftime("%H:%M")}}})
    offered = _offer(client, patient, caregiver.email).json
    told = db.push_outbox.find_one({"source_key": f"caregiver-invitation:{offered['id']}"})
    assert_waits_for_their_end(told, "UTC", quiet)


def test_a_retried_acceptance_does_not_bring_back_a_link_that_ended(client, world, db):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    offered = _offer(client, patient, caregiver.email).json
    link_id = _accept(client, caregiver, offered["id"]).json["link_id"]
    assert client.delete(f"/api/v1/patients/{patient.id}/caregivers/{link_id}", headers=patient.headers).status_code \
        == 204
    assert _accept(client, caregiver, offered["id"]).status_code == 404
    assert db.care_links.find_one({"_id": link_id})["status"] == "revoked"
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 404
    # Offered anew and accepted: the link is given again, and a late retry of the old acceptance changes nothing
    # (what that offer gave ended: 404, as its URL shows it revoked).
    renewed = _offer(client, patient, caregiver.email, alerts=["pain_flare"]).json
    assert _accept(client, caregiver, renewed["id"]).json["link_id"] == link_id
    assert _accept(client, caregiver, offered["id"]).status_code == 404
    assert _permissions_seen_by(client, caregiver)["alerts"] == ["pain_flare"]


def test_a_retried_acceptance_does_not_override_the_patients_later_narrower_offer(client, world, services, db,
                                                                                  monkeypatch):
    """The acceptance marked the offer accepted and stopped before making the link (a crash, a lost answer). The
    patient's list showed nothing for that email, so the patient offered again, narrower (no notes); the
    caregiver's app retried the first acceptance, the link was made with the first offer's permissions and the
    newer offer silently withdrawn. The patient now sees the first offer pending meanwhile; once they offered
    again, the retry is refused (404) and the newer offer stays, for the caregiver to accept or not."""
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    wide = _offer(client, patient, caregiver.email, diary_notes=True, alerts=["pain_flare"]).json
    real_grant = services.stores.care_links.grant

    def stops(*args, **kwargs):
        raise RuntimeError("the process stopped here")

    monkeypatch.setattr(services.stores.care_links, "grant", stops)
    assert _accept(client, caregiver, wide["id"]).status_code == 500
    monkeypatch.setattr(services.stores.care_links, "grant", real_grant)
    assert [(c["id"], c["status"]) for c in _listed(client, patient) if c["caregiver_id"] is None] == [
        (wide["id"], "pending")]
    narrow = _offer(client, patient, caregiver.email, diary_notes=False, alerts=[]).json
    assert narrow["status"] == "pending" and narrow["id"] != wide["id"]
    assert [c["id"] for c in _listed(client, patient) if c["caregiver_id"] is None] == [narrow["id"]]
    assert _accept(client, caregiver, wide["id"]).status_code == 404  # the app's retry
    assert client.get("/api/v1/caregiver/patients", headers=caregiver.headers).json["items"] == []
    assert [w["id"] for w in _waiting(client, caregiver)] == [narrow["id"]]
    assert _accept(client, caregiver, narrow["id"]).status_code == 200
    assert _permissions_seen_by(client, caregiver) == {"write": False, "alerts": [], "diary_notes": False}
    assert db.caregiver_invitations.find_one({"_id": narrow["id"]})["status"] == "accepted"


def test_a_retried_acceptance_makes_the_link_while_the_patient_sees_the_offer_pending_and_not_after(
        client, world, services, monkeypatch):
    """The first acceptance stopped before making the link. Retried while the offer runs, it makes it; retried
    once the offer expired (the patient's list says expired), or after the patient took it back, it does not."""
    patient = world["patient_a"]
    stopped = {}

    def stops(*args, **kwargs):
        raise RuntimeError("the process stopped here")

    for key in ("retried_in_time", "retried_late", "taken_back"):
        caregiver = make_user(client, services, key=key, role="caregiver")
        offered = _offer(client, patient, caregiver.email).json
        monkeypatch.setattr(services.stores.care_links, "grant", stops)
        assert _accept(client, caregiver, offered["id"]).status_code == 500
        monkeypatch.undo()
        stopped[key] = (caregiver, offered["id"])
    caregiver, offer_id = stopped["retried_in_time"]
    assert _accept(client, caregiver, offer_id).status_code == 200
    assert _permissions_seen_by(client, caregiver)["alerts"] == []
    caregiver, offer_id = stopped["taken_back"]
    assert client.delete(f"/api/v1/patients/{patient.id}/caregivers/{offer_id}", headers=patient.headers) \
        .status_code == 204
    assert offer_id not in {c["id"] for c in _listed(client, patient)}
    assert _accept(client, caregiver, offer_id).status_code == 404
    caregiver, offer_id = stopped["retried_late"]
    with time_machine.travel(datetime.now(UTC) + timedelta(days=15)):
        patient = login(client, "patient_a", patient.email, patient.id, "patient")
        caregiver = login(client, caregiver.key, caregiver.email, caregiver.id, "caregiver")
        assert [c["status"] for c in _listed(client, patient) if c["id"] == offer_id] == ["expired"]
        assert _accept(client, caregiver, offer_id).status_code == 404
        assert client.get("/api/v1/caregiver/patients", headers=caregiver.headers).json["items"] == []


def test_of_two_offers_that_raced_the_newer_is_the_one_accepted(client, world, db):
    """Two offers to one email made at once are both open. Accepting the older is refused (the patient offered
    again since); accepting the newer closes the older, never the reverse."""
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    older = _offer(client, patient, caregiver.email, diary_notes=True).json
    stored = db.caregiver_invitations.find_one({"_id": older["id"]})
    newer_id = "6b0000000000000000000001"
    db.caregiver_invitations.insert_one({**stored, "_id": newer_id, "created_at": stored["created_at"] +
                                         timedelta(milliseconds=5), "permissions": {"alerts": []}})
    assert _accept(client, caregiver, older["id"]).status_code == 404
    assert [w["id"] for w in _waiting(client, caregiver)] == [newer_id]
    assert _accept(client, caregiver, newer_id).status_code == 200
    assert _permissions_seen_by(client, caregiver)["diary_notes"] is False
    assert db.caregiver_invitations.find_one({"_id": older["id"]})["status"] == "accepted"  # (refused; not made)
    assert older["id"] not in {c["id"] for c in _listed(client, patient)}


def test_a_declined_offer_looks_to_the_patient_like_one_never_answered(client, world, services):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    declined = _offer(client, patient, caregiver.email).json
    ignored = _offer(client, patient, "nobody-at-all@example.org").json
    assert client.delete(f"/api/v1/caregiver/invitations/{declined['id']}", headers=caregiver.headers).status_code == 204
    assert _waiting(client, caregiver) == []

    def statuses():
        return {c["id"]: c["status"] for c in _listed(client, patient) if c["caregiver_id"] is None}

    assert statuses() == {declined["id"]: "pending", ignored["id"]: "pending"}
    with time_machine.travel(datetime.now(UTC) + timedelta(days=15)):
        patient = login(client, "patient_a", patient.email, patient.id, "patient")
        assert statuses() == {declined["id"]: "expired", ignored["id"]: "expired"}
        # An offer that expired cannot be accepted: the email's owner signing up now sees nothing.
        late = make_user(client, services, key="nobody_at_all", role="caregiver")
        assert _waiting(client, late) == []


def test_a_caregiver_who_signs_up_after_the_offer_finds_it(client, world, services):
    patient = world["patient_a"]
    offered = _offer(client, patient, "new_helper@example.org").json
    helper = make_user(client, services, key="new_helper", role="caregiver")
    assert [w["id"] for w in _waiting(client, helper)] == [offered["id"]]
    assert _accept(client, helper, offered["id"]).status_code == 200
    assert client.get(f"/api/v1/patients/{patient.id}", headers=helper.headers).status_code == 200


def test_only_the_owner_of_the_email_can_answer_an_offer(client, world, services):
    patient = world["patient_a"]
    offered = _offer(client, patient, world["caregiver_unlinked"].email).json
    intruder = world["caregiver_linked"]
    assert _accept(client, intruder, offered["id"]).status_code == 404
    assert client.delete(f"/api/v1/caregiver/invitations/{offered['id']}", headers=intruder.headers).status_code == 404
    assert client.get("/api/v1/caregiver/invitations", headers=world["patient_b"].headers).status_code == 403
    # A patient account with the email cannot take a caregiver's access either.
    to_patient = _offer(client, patient, world["patient_b"].email).json
    assert client.post(f"/api/v1/caregiver/invitations/{to_patient['id']}/acceptance", headers=world["patient_b"].headers,
                       json={"current_password": PASSWORD}).status_code == 403
    assert _accept(client, world["caregiver_unlinked"], offered["id"]).status_code == 200


def test_a_failed_acceptance_is_audited_naming_the_patient_who_made_the_offer(client, world, db):
    patient, caregiver, intruder = world["patient_a"], world["caregiver_unlinked"], world["caregiver_linked"]
    offered = _offer(client, patient, caregiver.email).json
    taken_back = _offer(client, patient, "someone-else@example.org").json
    assert client.delete(f"/api/v1/patients/{patient.id}/caregivers/{taken_back['id']}",
                         headers=patient.headers).status_code == 204
    assert _accept(client, caregiver, offered["id"], "not my password").status_code == 403
    assert _accept(client, intruder, offered["id"]).status_code == 404
    assert _accept(client, caregiver, taken_back["id"]).status_code == 404
    assert _accept(client, caregiver, "0" * 24).status_code == 404
    failed = list(db.audit_events.find({"route": "/api/v1/caregiver/invitations/<invitation_id>/acceptance",
                                        "outcome": "denied"}).sort([("at", 1), ("seq", 1)]))
    assert [(e["actor_id"], e["status"], e["patient_ids"]) for e in failed] == [
        (caregiver.id, 403, [patient.id]), (intruder.id, 404, [patient.id]), (caregiver.id, 404, [patient.id]),
        (caregiver.id, 404, [None])]


def test_a_decline_refused_or_not_is_audited_naming_the_patient_who_made_the_offer(client, world, db):
    patient, caregiver, intruder = world["patient_a"], world["caregiver_unlinked"], world["caregiver_linked"]
    offered = _offer(client, patient, caregiver.email).json
    url = f"/api/v1/caregiver/invitations/{offered['id']}"
    assert client.delete(url, headers=intruder.headers).status_code == 404
    assert client.delete(url, headers=caregiver.headers).status_code == 204
    assert client.delete("/api/v1/caregiver/invitations/" + "0" * 24, headers=caregiver.headers).status_code == 404
    answers = list(db.audit_events.find({"route": "/api/v1/caregiver/invitations/<invitation_id>",
                                         "status": {"$ne": None}}).sort([("at", 1), ("seq", 1)]))
    assert [(e["actor_id"], e["status"], e["patient_ids"]) for e in answers] == [
        (intruder.id, 404, [patient.id]), (caregiver.id, 204, [patient.id]), (caregiver.id, 404, [None])]


def test_the_patient_takes_back_an_offer_and_ends_an_accepted_one_by_its_id(client, world, db):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    taken_back = _offer(client, patient, caregiver.email).json
    url = f"/api/v1/patients/{patient.id}/caregivers"
    assert client.delete(f"{url}/{taken_back['id']}", headers=patient.headers).status_code == 204
    assert client.delete(f"{url}/{taken_back['id']}", headers=patient.headers).status_code == 204  # a retry
    assert _waiting(client, caregiver) == []
    assert _accept(client, caregiver, taken_back["id"]).status_code == 404
    assert taken_back["id"] not in {c["id"] for c in _listed(client, patient)}
    assert db.push_outbox.find_one({"source_key": f"caregiver-invitation:{taken_back['id']}"})["state"] == "withdrawn"
    # Offered again and accepted: the id the patient's app kept (the offer's) ends the link it made.
    offered = _offer(client, patient, caregiver.email).json
    assert _accept(client, caregiver, offered["id"]).status_code == 200
    assert client.delete(f"{url}/{offered['id']}", headers=patient.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 404
    assert [c["status"] for c in _listed(client, patient) if c["caregiver_id"] == caregiver.id] == ["revoked"]
    assert client.delete(f"{url}/not-an-id", headers=patient.headers).status_code == 404


def test_a_late_retry_of_ending_an_old_offer_leaves_the_link_a_newer_offer_made(client, world, db):
    """The patient ends an accepted offer, offers again and it is accepted; the first ending's answer was lost and
    the app retries it, late: the retry answers as the first did and ends nothing more (the caregiver keeps the
    access just given again, and what is queued for them stays)."""
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    url = f"/api/v1/patients/{patient.id}/caregivers"
    first = _offer(client, patient, caregiver.email).json
    assert _accept(client, caregiver, first["id"]).status_code == 200
    assert client.delete(f"{url}/{first['id']}", headers=patient.headers).status_code == 204
    second = _offer(client, patient, caregiver.email).json
    assert _accept(client, caregiver, second["id"]).status_code == 200
    # Narrowed since (the link's permissions changed): still the second offer's link.
    assert _offer(client, patient, caregiver.email, alerts=["pain_flare"]).json["status"] == "active"
    assert client.delete(f"{url}/{first['id']}", headers=patient.headers).status_code == 204  # the late retry
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 200
    # Ending the second offer by its id still ends the link it made, narrowed or not.
    assert client.delete(f"{url}/{second['id']}", headers=patient.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 404


def test_an_offers_url_shows_and_ends_the_access_that_offer_gave_and_no_other(client, world):
    """The offer's URL (its Location, kept by the patient's app) answered the link the caregiver had now, given by
    a later offer, while DELETE on it answered 204 and ended nothing. It shows what that offer gave (ended by the
    caregiver), and DELETE on it ends that (nothing more); the later offer's URL shows and ends the access now."""
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    url = f"/api/v1/patients/{patient.id}/caregivers"
    first = _offer(client, patient, caregiver.email, diary_notes=True).json
    assert _accept(client, caregiver, first["id"]).status_code == 200
    assert client.delete(f"/api/v1/caregiver/patients/{patient.id}", headers=caregiver.headers).status_code == 204
    second = _offer(client, patient, caregiver.email).json
    assert _accept(client, caregiver, second["id"]).status_code == 200
    shown = client.get(f"{url}/{first['id']}", headers=patient.headers).json
    assert (shown["status"], shown["caregiver_id"], shown["permissions"]["diary_notes"]) == (
        "revoked", caregiver.id, True)
    assert shown["granted_at"] < shown["revoked_at"]
    assert client.delete(f"{url}/{first['id']}", headers=patient.headers).status_code == 204
    assert client.get(f"{url}/{first['id']}", headers=patient.headers).json == shown
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 200
    assert client.get(f"{url}/{second['id']}", headers=patient.headers).json["status"] == "active"
    assert client.delete(f"{url}/{second['id']}", headers=patient.headers).status_code == 204
    assert client.get(f"{url}/{second['id']}", headers=patient.headers).json["status"] == "revoked"
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 404


def test_a_link_from_before_links_named_their_offer_is_the_last_accepted_offers(client, world, db):
    """Links made before they recorded their offer (no offer_id): the offer the caregiver accepted last before the
    link was given is the one whose URL shows and ends it; an earlier offer's shows nothing and ends nothing."""
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    url = f"/api/v1/patients/{patient.id}/caregivers"
    earlier = _offer(client, patient, caregiver.email).json
    assert _accept(client, caregiver, earlier["id"]).status_code == 200
    assert client.delete(f"/api/v1/caregiver/patients/{patient.id}", headers=caregiver.headers).status_code == 204
    last = _offer(client, patient, caregiver.email).json
    assert _accept(client, caregiver, last["id"]).status_code == 200
    db.care_links.update_many({"patient_id": patient.id}, {"$unset": {"offer_id": ""}})  # as written then
    db.care_link_history.delete_many({"patient_id": patient.id})  # (nor was there a history)
    assert client.get(f"{url}/{earlier['id']}", headers=patient.headers).status_code == 404
    assert client.delete(f"{url}/{earlier['id']}", headers=patient.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 200
    assert client.get(f"{url}/{last['id']}", headers=patient.headers).json["status"] == "active"
    assert client.delete(f"{url}/{last['id']}", headers=patient.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 404


def test_a_linked_caregivers_permissions_change_at_once(client, world, db):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    changed = _offer(client, patient, caregiver.email, write=True, alerts=["pain_flare"])
    assert changed.status_code == 201
    assert (changed.json["status"], changed.json["caregiver_id"], changed.json["caregiver_name"],
            changed.json["permissions"]) == ("active", caregiver.id, "Caregiver Linked",
                                             {"write": True, "alerts": ["pain_flare"], "diary_notes": False})
    assert db.caregiver_invitations.count_documents({}) == 0
    cared_for = client.get("/api/v1/caregiver/patients", headers=caregiver.headers).json["items"]
    assert [p["permissions"]["write"] for p in cared_for] == [True]


def test_offering_again_renews_the_offer_with_the_new_permissions(client, world, db):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    first = _offer(client, patient, caregiver.email, alerts=["missed_session"]).json
    again = _offer(client, patient, caregiver.email, alerts=["pain_flare"], write=True).json
    assert again["id"] == first["id"] and db.caregiver_invitations.count_documents({}) == 1
    assert [w["permissions"]["alerts"] for w in _waiting(client, caregiver)] == [["pain_flare"]]
    assert db.push_outbox.count_documents({"recipient_user_id": caregiver.id}) == 1  # told once
    assert _accept(client, caregiver, first["id"]).status_code == 200
    assert _permissions_seen_by(client, caregiver) == {"write": True, "alerts": ["pain_flare"], "diary_notes": False}


def test_closing_an_account_ends_the_offers_it_made_or_was_made(client, world, services):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    _offer(client, patient, caregiver.email)
    services.lifecycle.close(patient.id, by=patient.id)
    assert _waiting(client, caregiver) == []
    other = world["patient_b"]
    to_closed = _offer(client, other, caregiver.email).json
    services.lifecycle.close(caregiver.id, by=world["admin"].id)
    reborn = make_user(client, services, key="caregiver_unlinked", role="caregiver")  # the email signed up anew
    assert _waiting(client, reborn) == []
    assert _accept(client, reborn, to_closed["id"]).status_code == 404


def test_offering_again_after_a_decline_looks_as_after_silence_and_both_can_be_taken_back(client, world):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    declined = _offer(client, patient, caregiver.email).json
    ignored = _offer(client, patient, "nobody-at-all@example.org").json
    assert client.delete(f"/api/v1/caregiver/invitations/{declined['id']}", headers=caregiver.headers).status_code == 204
    # Offered again: the same offer, open again, in both cases (a new one would say the email had said no).
    assert _offer(client, patient, "nobody-at-all@example.org").json["id"] == ignored["id"]
    assert _offer(client, patient, caregiver.email).json["id"] == declined["id"]
    assert [w["id"] for w in _waiting(client, caregiver)] == [declined["id"]]
    assert client.delete(f"/api/v1/caregiver/invitations/{declined['id']}", headers=caregiver.headers).status_code == 204
    # Taken back: gone from the patient's list either way.
    for offer in (declined, ignored):
        assert client.delete(f"/api/v1/patients/{patient.id}/caregivers/{offer['id']}",
                             headers=patient.headers).status_code == 204
    assert {declined["id"], ignored["id"]} & {c["id"] for c in _listed(client, patient)} == set()


def test_the_push_telling_of_an_offer_is_withdrawn_when_the_patient_closes_their_account(client, world, db):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    offered = _offer(client, patient, caregiver.email).json
    assert client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    told = db.push_outbox.find_one({"source_key": f"caregiver-invitation:{offered['id']}"})
    assert (told["state"], told["withdrawn_reason"]) == ("withdrawn", "invitation_settled")
    assert _waiting(client, caregiver) == []


def test_a_revocation_by_the_offers_id_retried_after_a_stop_withdraws_what_waits_for_the_caregiver(
        client, world, services, db, monkeypatch):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    offered = _offer(client, patient, caregiver.email, alerts=["missed_session"]).json
    assert _accept(client, caregiver, offered["id"]).status_code == 200
    waiting, _ = services.stores.outbox.schedule(
        source_key="alert:retried-revocation", recipient_user_id=caregiver.id, patient_id=patient.id,
        kind="missed_session_caregiver", send_at=services.clock() + timedelta(hours=1), share_kind="missed_session")
    real_withdraw = services.stores.outbox.withdraw

    def stops_before_withdrawing(*args, **kwargs):
        if kwargs.get("recipient_user_id") == caregiver.id:
            raise RuntimeError("the process stopped here")
        return real_withdraw(*args, **kwargs)

    url = f"/api/v1/patients/{patient.id}/caregivers/{offered['id']}"
    monkeypatch.setattr(services.stores.outbox, "withdraw", stops_before_withdrawing)
    assert client.delete(url, headers=patient.headers).status_code == 500  # the link is revoked, nothing withdrawn
    monkeypatch.undo()
    assert db.push_outbox.find_one({"_id": waiting["_id"]})["state"] == "scheduled"
    assert client.delete(url, headers=patient.headers).status_code == 204  # the app retries with the same id
    assert db.push_outbox.find_one({"_id": waiting["_id"]})["state"] == "withdrawn"
