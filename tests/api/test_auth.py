"""Accounts and sessions: sign-up, login, token rotation and reuse, bad tokens, TOTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header

import jwt
import pyotp
import pytest
import time_machine

from tests.conftest import FAST_PASSWORDS
from tests.support.mailbox import Mailbox, sign_up
from tests.support.world import PASSWORD, make_user


def signup(client, email="pat@example.org", **extra):
    """Sign up through the API: ask, read the code the app emailed, confirm (the confirmation's answer)."""
    mailbox = Mailbox(client.application.extensions["companion"].settings.mail_dir)
    return sign_up(client, mailbox, email=email, password=PASSWORD, display_name="Pat", time_zone="Europe/London",
                   **extra)


def login(client, email="pat@example.org", password=PASSWORD):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


def test_signup_then_login_reads_own_account(client):
    created = signup(client)
    assert created.status_code == 201
    assert created.json["role"] == "patient" and "password" not in created.json
    tokens = login(client).json
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json["email"] == "pat@example.org" and me.json["time_zone"] == "Europe/London"


def test_a_mistyped_password_at_confirmation_leaves_the_code_for_the_right_one(client):
    """The code is spent only by a confirmation that makes the account: a typo in the password is refused
    (and counted, like a wrong code) but the person can try again with the code they were sent."""
    mailbox = Mailbox(client.application.extensions["companion"].settings.mail_dir)
    assert client.post("/api/v1/auth/signup", json={"email": "pat@example.org", "password": PASSWORD,
                                                    "display_name": "Pat", "role": "patient",
                                                    "time_zone": "Europe/London"}).status_code == 202
    confirm = {"email": "pat@example.org", "code": mailbox.last_code("pat@example.org"), "password": PASSWORD}
    typo = client.post("/api/v1/auth/signup/confirm", json={**confirm, "password": PASSWORD + "x"})
    assert typo.status_code == 401
    made = client.post("/api/v1/auth/signup/confirm", json=confirm)
    assert made.status_code == 201, made.json
    assert client.post("/api/v1/auth/signup/confirm", json=confirm).status_code == 401  # spent now


def test_signup_cannot_choose_a_staff_role(client, db):
    response = client.post("/api/v1/auth/signup", json={"email": "pat@example.org", "password": PASSWORD,
                                                         "display_name": "Pat", "role": "clinician"})
    assert response.status_code == 422
    assert db.users.count_documents({}) == 0


def test_password_is_stored_as_an_argon2_hash(client, db):
    signup(client)
    stored = db.users.find_one({"email": "pat@example.org"})["password_hash"]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_wrong_password_and_unknown_email_get_the_same_answer(client):
    signup(client)
    wrong = login(client, password="not the password at all")
    unknown = login(client, email="nobody@example.org")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json["detail"] == unknown.json["detail"]


def test_refresh_rotates_and_the_old_refresh_token_dies(client):
    signup(client)
    first = login(client).json
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert second.json["refresh_token"] != first["refresh_token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {second.json['access_token']}"})
    assert me.status_code == 200


def test_reusing_a_refresh_token_revokes_the_whole_family(client):
    signup(client)
    first = login(client).json
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).json
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=11)):  # past the grace for a lost answer
        replay = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert replay.status_code == 401
        newer = client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
        assert newer.status_code == 401
        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {second['access_token']}"})
        assert me.status_code == 401


def test_logout_kills_the_access_token_at_once(client):
    signup(client)
    tokens = login(client).json
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def _forged(claims_update: dict, key: str = "t" * 48, algorithm: str = "HS256", drop: str | None = None) -> str:
    now = datetime.now(UTC)
    claims = {"sub": "x", "role": "patient", "fam": "f", "typ": "access", "iss": "companion",
              "aud": "companion-api", "iat": now, "nbf": now, "exp": now + timedelta(minutes=5)}
    claims.update(claims_update)
    if drop:
        claims.pop(drop)
    return jwt.encode(claims, key, algorithm=algorithm)


def test_bad_tokens_are_refused_with_one_uniform_body(client, world):
    patient = world["patient_a"]
    real = jwt.decode(patient.token, options={"verify_signature": False})
    base = {"sub": real["sub"], "fam": real["fam"]}
    unsigned = jwt.encode({**real}, key=None, algorithm="none")
    bad = {
        "alg none": unsigned,
        "wrong key": _forged(base, key="k" * 48),
        "expired": _forged({**base, "exp": datetime.now(UTC) - timedelta(seconds=5)}),
        "not yet valid": _forged({**base, "nbf": datetime.now(UTC) + timedelta(minutes=5)}),
        "wrong audience": _forged({**base, "aud": "someone-else"}),
        "wrong issuer": _forged({**base, "iss": "evil"}),
        "no expiry": _forged(base, drop="exp"),
        "mfa-only token": _forged({**base, "typ": "mfa"}),
        "no session start": _forged(base),  # signed, but issued before tokens said when their session began
        "session start not a number": _forged({**base, "ses": str(real["ses"])}),
        "garbage": "not-a-jwt",
    }
    bodies = set()
    for name, token in bad.items():
        response = client.get(f"/api/v1/patients/{patient.id}", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        bodies.add((response.json["title"], response.json["detail"]))
    assert len(bodies) == 1
    assert client.get(f"/api/v1/patients/{patient.id}", headers=patient.headers).status_code == 200


def test_a_session_ended_early_is_kept_on_the_account_only_while_it_could_still_be_alive(client, db):
    """Each sign-out is recorded on the account (its one read per request decides); entries for sessions past
    the longest lifetime (30 days) are dropped at the next sign-out, so the list stays short."""
    signup(client)
    start = datetime.now(UTC)
    ended = []
    for _ in range(3):
        tokens = login(client).json
        ended.append(jwt.decode(tokens["access_token"], options={"verify_signature": False})["fam"])
        assert client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
                           ).status_code == 204
    assert set(db.users.find_one({"email": "pat@example.org"})["ended_sessions"]) == set(ended)
    with time_machine.travel(start + timedelta(days=30, minutes=5)):
        tokens = login(client).json
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
        assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 401
        latest = jwt.decode(tokens["access_token"], options={"verify_signature": False})["fam"]
        assert set(db.users.find_one({"email": "pat@example.org"})["ended_sessions"]) == {latest}


def test_access_token_expires_after_fifteen_minutes(client, world):
    patient = world["patient_a"]
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=15, seconds=5)):
        assert client.get("/api/v1/auth/me", headers=patient.headers).status_code == 401


def _staff(client, services, key="doc"):
    make_user(client, services, key=key, role="clinician")
    return f"{key}@example.org"


def test_clinician_enrols_totp_and_then_needs_it_to_log_in(client, services):
    email = _staff(client, services)
    challenge = login(client, email=email).json
    assert "access_token" in challenge  # MFA optional in development until enrolled
    mfa_token = services.tokens.mfa_token(services.accounts.by_email(email).id, "clinician",
                                        password_checked_at=datetime.now(UTC))
    enrolment = client.post("/api/v1/auth/mfa/enrol", json={"mfa_token": mfa_token}).json
    totp = pyotp.TOTP(enrolment["secret"])
    confirmed = client.post("/api/v1/auth/mfa/confirm", json={"mfa_token": mfa_token, "code": totp.now()})
    assert confirmed.status_code == 200 and "access_token" in confirmed.json

    step = login(client, email=email).json
    assert step["mfa_required"] is True and "access_token" not in step
    denied = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {step['mfa_token']}"})
    assert denied.status_code == 401
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=31)):
        code = totp.now()
        done = client.post("/api/v1/auth/mfa", json={"mfa_token": step["mfa_token"], "code": code})
        assert done.status_code == 200 and "access_token" in done.json
        replay = client.post("/api/v1/auth/mfa", json={"mfa_token": step["mfa_token"], "code": code})
        assert replay.status_code == 401


def test_staff_mfa_required_setting_withholds_tokens_until_enrolled(mongo_uri, db_name):
    from companion import create_app

    app = create_app({"mongodb_uri": mongo_uri, "mongodb_db": db_name, "secret_key": "s" * 48,
                      "staff_mfa_required": True, **FAST_PASSWORDS})
    client = app.test_client()
    services = app.extensions["companion"]
    services.accounts.sign_up(email="doc2@example.org", password=PASSWORD, display_name="Doc", role="clinician",
                              time_zone="UTC")
    step = login(client, email="doc2@example.org").json
    assert step == {"mfa_required": True, "mfa_token": step["mfa_token"], "mfa_enrolled": False,
                    "device_key": step["device_key"]}
    app.extensions["companion"].client.close()


def test_racing_refreshes_with_one_token_get_one_pair_and_the_session_goes_on(app, client):
    """Eight refreshes racing with one token are one refresh and its retries: within the grace window they all
    get the same new pair (an answer lost on the way is not a theft), and the session continues."""
    from concurrent.futures import ThreadPoolExecutor

    signup(client)
    first = login(client).json

    def attempt(_):
        return app.test_client().post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(attempt, range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert len({(r.json["access_token"], r.json["refresh_token"]) for r in responses}) == 1
    pair = responses[0].json
    assert client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"}).status_code == 200
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 200


def test_a_retried_refresh_within_seconds_gets_the_same_pair_and_a_late_replay_ends_the_session(client):
    signup(client)
    first = login(client).json
    answered = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    retried = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert answered.status_code == retried.status_code == 200
    assert retried.json == answered.json
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=30)):
        replayed = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert replayed.status_code == 401
        headers = {"Authorization": f"Bearer {answered.json['access_token']}"}
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 401


def test_a_retry_after_the_new_token_was_used_is_a_theft_and_ends_the_session(client):
    signup(client)
    first = login(client).json
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).json
    third = client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert third.status_code == 200
    stolen = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert stolen.status_code == 401
    headers = {"Authorization": f"Bearer {third.json['access_token']}"}
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 401


def test_a_session_ends_thirty_days_after_login_however_often_it_is_refreshed(client):
    signup(client)
    tokens = login(client).json
    start = datetime.now(UTC)
    for day in (10, 20, 29):
        with time_machine.travel(start + timedelta(days=day)):
            tokens = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json
            assert "access_token" in tokens
    with time_machine.travel(start + timedelta(days=30, minutes=1)):
        assert client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def test_a_staff_session_ends_twelve_hours_after_login(client, services):
    email = _staff(client, services, key="doc12")
    tokens = login(client, email=email).json
    start = datetime.now(UTC)
    with time_machine.travel(start + timedelta(hours=11, minutes=50)):
        tokens = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
    with time_machine.travel(start + timedelta(hours=12, minutes=1)):
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 401
        assert client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


@pytest.mark.parametrize("change", ["password", "caregiver"])
def test_guessing_the_password_through_a_change_that_asks_for_it_is_throttled_as_signing_in_is(
        client, world, change):
    """A stolen session cannot guess the password through a step-up: its failures count with sign-in's."""
    patient = world["patient_a"]

    def guess(n):
        if change == "password":
            return client.post("/api/v1/auth/password", headers=patient.headers,
                               json={"current_password": f"guess {n}", "new_password": "a brand new passphrase"})
        return client.post(f"/api/v1/patients/{patient.id}/caregivers", headers=patient.headers, json={
            "caregiver_email": world["caregiver_unlinked"].email, "current_password": f"guess {n}",
            "permissions": {"alerts": []}})

    answers = [guess(n).status_code for n in range(12)]
    assert answers[:5] == [403] * 5 and 429 in answers[5:]


def test_a_sign_in_under_way_while_the_password_changes_ends_with_the_change(client, services, monkeypatch):
    signup(client)
    owner = {"Authorization": f"Bearer {login(client).json['access_token']}"}
    passwords = services.accounts.passwords
    real_matches, changed = passwords.matches, []

    def checked_then_changed(stored_hash, password):
        matched = real_matches(stored_hash, password)
        if not changed:  # someone else's sign-in has passed the old password; the owner changes it now
            changed.append("changing")
            changed[0] = client.post("/api/v1/auth/password", headers=owner, json={
                "current_password": PASSWORD, "new_password": "a brand new passphrase"}).status_code
        return matched

    monkeypatch.setattr(passwords, "matches", checked_then_changed)
    other = login(client)  # with the old password, checked just before the change
    monkeypatch.undo()
    assert changed == [200] and other.status_code == 200
    stale = {"Authorization": f"Bearer {other.json['access_token']}"}
    assert client.get("/api/v1/auth/me", headers=stale).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": other.json["refresh_token"]}).status_code == 401


def test_an_mfa_token_from_before_a_password_change_opens_nothing(client, services):
    email = _staff(client, services)
    user = services.accounts.by_email(email)
    mfa_token = services.tokens.mfa_token(user.id, "clinician", password_checked_at=datetime.now(UTC))
    # An admin resets the password (the owner reported it leaked) before the token's five minutes are up.
    code, _ = services.accounts.issue_password_reset(user.id)
    services.accounts.reset_password(email=email, code=code, new_password="another long passphrase",
                                     address="192.0.2.1")
    assert client.post("/api/v1/auth/mfa/enrol", json={"mfa_token": mfa_token}).status_code == 401


def test_password_change_needs_the_current_one_and_ends_other_sessions(client):
    signup(client)
    phone = login(client).json
    laptop = login(client).json
    headers = {"Authorization": f"Bearer {laptop['access_token']}"}
    wrong = client.post("/api/v1/auth/password", headers=headers,
                        json={"current_password": "not it at all", "new_password": "a brand new passphrase"})
    # A mistyped current password is not a bad session: 403 naming the field, and no invalid_token (an app
    # that signs the person out on a 401 must not do so over a typo).
    assert (wrong.status_code, wrong.json["errors"], wrong.headers.get("WWW-Authenticate")) == (
        403, {"current_password": ["is not this account's password"]}, None)
    changed = client.post("/api/v1/auth/password", headers=headers,
                          json={"current_password": PASSWORD, "new_password": "a brand new passphrase"})
    assert changed.status_code == 200
    assert client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {phone['access_token']}"}).status_code == 401
    fresh = {"Authorization": f"Bearer {changed.json['access_token']}"}
    assert client.get("/api/v1/auth/me", headers=fresh).status_code == 200
    assert login(client).status_code == 401
    assert login(client, password="a brand new passphrase").status_code == 200


def test_the_sign_up_email_is_written_in_the_language_the_app_asked_in(client):
    settings = client.application.extensions["companion"].settings
    asked = client.post("/api/v1/auth/signup", json={"email": "ana@example.org", "password": PASSWORD,
                                                     "display_name": "Ana", "time_zone": "Europe/Madrid"},
                        headers={"Accept-Language": "es-ES,es;q=0.9,en;q=0.5"})
    assert asked.status_code == 202
    (mail,) = Mailbox(settings.mail_dir).messages("ana@example.org")
    assert str(make_header(decode_header(mail["Subject"]))) == "Tu código de registro en Companion"
    assert "Introdúcelo en la app" in mail.get_payload(decode=True).decode()
