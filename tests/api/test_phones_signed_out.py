"""A phone whose session ended stops receiving the person's notifications.

Each install's push token is registered under the API session (token family) that registered it. When that
session ends (signing out, a replayed refresh token), so does the phone's registration; a password change,
an admin's reset code or a deactivation ends every session, and with them every phone but the one that changed
the password (the install it names, if registered under its session). A stolen phone left signed in therefore stops getting "your 08:00 session is ready" or a
caregiver's alerts the moment its owner changes the password, not 60 days later when its token goes stale.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.world import PASSWORD, Person, login

NEW_PASSWORD = "a completely new passphrase"


def _signed_in_again(client, person):
    return login(client, person.key, person.email, person.id, person.role)


def _with_tokens(person: Person, tokens: dict) -> Person:
    return replace(person, token=tokens["access_token"], refresh_token=tokens["refresh_token"])


def _register(client, person, install: str) -> None:
    assert client.put(f"/api/v1/me/push-tokens/{install}", headers=person.headers,
                      json={"token": f"tok-{install}", "platform": "android"}).status_code == 200


def _installs(db, person) -> list[str]:
    return sorted(doc["install_id"] for doc in db.push_tokens.find({"user_id": person.id}))


def test_signing_out_on_one_phone_forgets_that_phone_only(client, world, db):
    on_a = world["patient_a"]
    on_b = _signed_in_again(client, on_a)
    _register(client, on_a, "phone-a")
    _register(client, on_b, "phone-b")
    assert client.post("/api/v1/auth/logout", headers=on_b.headers).status_code == 204
    assert _installs(db, on_a) == ["phone-a"]


def test_a_password_change_forgets_every_other_phone_and_keeps_the_one_that_changed_it(client, world, db):
    on_a = world["patient_a"]
    stolen = _signed_in_again(client, on_a)
    _register(client, on_a, "phone-a")
    _register(client, stolen, "stolen-phone")
    changed = client.post("/api/v1/auth/password", headers=on_a.headers,
                          json={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "install_id": "phone-a"})
    assert changed.status_code == 200
    assert _installs(db, on_a) == ["phone-a"]
    # The phone that changed it goes on under its new session: signing out there forgets it too.
    assert client.post("/api/v1/auth/logout",
                       headers={"Authorization": f"Bearer {changed.json['access_token']}"}).status_code == 204
    assert _installs(db, on_a) == []


def test_a_password_change_keeps_only_the_phone_that_changed_it(client, world, db):
    # Someone who copied phone-a's access token registered their own install under its session.
    on_a = world["patient_a"]
    _register(client, on_a, "phone-a")
    _register(client, on_a, "copier-phone")
    changed = client.post("/api/v1/auth/password", headers=on_a.headers,
                          json={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "install_id": "phone-a"})
    assert changed.status_code == 200
    assert _installs(db, on_a) == ["phone-a"]


def test_a_password_change_naming_no_install_keeps_no_phone(client, world, db):
    on_a = world["patient_a"]
    _register(client, on_a, "phone-a")
    changed = client.post("/api/v1/auth/password", headers=on_a.headers,
                          json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert changed.status_code == 200
    assert _installs(db, on_a) == []
    # The app registers again with its new tokens.
    _register(client, _with_tokens(on_a, changed.json), "phone-a")
    assert _installs(db, on_a) == ["phone-a"]


def test_a_password_change_naming_another_sessions_install_keeps_no_phone(client, world, db):
    on_a = world["patient_a"]
    other = _signed_in_again(client, on_a)
    _register(client, other, "phone-b")
    changed = client.post("/api/v1/auth/password", headers=on_a.headers,
                          json={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "install_id": "phone-b"})
    assert changed.status_code == 200
    assert _installs(db, on_a) == []


def test_an_admins_reset_code_and_a_deactivation_forget_every_phone(client, world, db):
    admin, patient, caregiver = world["admin"], world["patient_a"], world["caregiver_linked"]
    _register(client, patient, "phone-a")
    _register(client, caregiver, "cara-phone")
    code = client.post(f"/api/v1/admin/users/{patient.id}/password-reset", headers=admin.headers).json["code"]
    assert client.post("/api/v1/auth/password-reset", json={"email": patient.email, "code": code,
                                                             "new_password": NEW_PASSWORD}).status_code == 204
    assert _installs(db, patient) == []
    assert client.post(f"/api/v1/admin/users/{caregiver.id}/deactivation", headers=admin.headers,
                       json={"reason": "lost phone"}).status_code == 200
    assert _installs(db, caregiver) == []


def test_a_replayed_refresh_token_forgets_the_phones_of_the_session_it_ended(client, world, db):
    patient = world["patient_a"]
    other = _signed_in_again(client, patient)
    _register(client, patient, "phone-a")
    _register(client, other, "phone-b")
    first = client.post("/api/v1/auth/refresh", json={"refresh_token": other.refresh_token})
    assert first.status_code == 200
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": first.json["refresh_token"]}).status_code == 200
    # The first refresh token again, after its successor was used: a theft; the whole session ends.
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": other.refresh_token}).status_code == 401
    assert _installs(db, patient) == ["phone-a"]


def _sign_out(services, world, person):
    services.tokens.end_session(services.tokens.actor_from(person.token))


def _change_password_elsewhere(services, world, person):
    services.accounts.change_password(person.id, PASSWORD, NEW_PASSWORD)


def _deactivate(services, world, person):
    services.lifecycle.deactivate(person.id, by=world["admin"].id, reason="lost phone")


@pytest.mark.parametrize("end_the_session", [_sign_out, _change_password_elsewhere, _deactivate])
def test_a_phone_registered_as_its_session_ends_does_not_outlive_it(client, world, db, services, monkeypatch,
                                                                    end_the_session):
    # The session ends after the request's check of it and before its registration is written.
    patient, tokens = world["patient_a"], services.stores.push_tokens
    register = tokens.register

    def ended_first(*args, **kwargs):
        end_the_session(services, world, patient)
        return register(*args, **kwargs)

    monkeypatch.setattr(tokens, "register", ended_first)
    answer = client.put("/api/v1/me/push-tokens/phone-a", headers=patient.headers,
                        json={"token": "tok-phone-a", "platform": "android"})
    assert answer.status_code == 401
    assert _installs(db, patient) == []
