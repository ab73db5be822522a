"""Every step that checks a credential is throttled (issue 15, finding 3): the staff TOTP step through the API
and the clinician pages, refresh, gateway pairing, pairing-code creation, sign-up, emailed and admin-issued
codes, gateway tokens. The counts live in the database (shared by every worker: the two-worker runs are in
test_login_throttling.py). Waits grow and end; none is a lock."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pyotp
import time_machine

from tests.support.world import PASSWORD, make_user


def _enrolled_clinician(client, services, key="totp_doc"):
    person = make_user(client, services, key=key, role="clinician")
    mfa_token = services.tokens.mfa_token(person.id, "clinician", password_checked_at=datetime.now(UTC))
    secret = client.post("/api/v1/auth/mfa/enrol", json={"mfa_token": mfa_token}).json["secret"]
    totp = pyotp.TOTP(secret)
    assert client.post("/api/v1/auth/mfa/confirm", json={"mfa_token": mfa_token, "code": totp.now()}).status_code == 200
    return person, totp


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_totp_guesses_through_the_api_are_slowed_down_and_the_right_code_waits_its_turn(client, services):
    person, totp = _enrolled_clinician(client, services)
    start = datetime.now(UTC) + timedelta(seconds=31)  # the next time step: the enrolment code's step is used
    with time_machine.travel(start, tick=False) as clock:
        step = client.post("/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}).json
        assert step["mfa_required"] is True
        answers = [client.post("/api/v1/auth/mfa", json={"mfa_token": step["mfa_token"], "code": _wrong(totp.now())})
                   for _ in range(60)]
        statuses = [a.status_code for a in answers]
        assert statuses[:3] == [401, 401, 401]  # three free mistakes
        assert set(statuses[3:]) <= {401, 429} and statuses.count(429) >= 50
        right = client.post("/api/v1/auth/mfa", json={"mfa_token": step["mfa_token"], "code": totp.now()})
        assert right.status_code == 429, "the right code right after 60 wrong ones must wait"
        wait = int(right.headers["Retry-After"])
        assert 1 <= wait <= 300
        clock.shift(timedelta(seconds=wait))
        accepted = client.post("/api/v1/auth/mfa", json={"mfa_token": step["mfa_token"], "code": totp.now()})
        assert accepted.status_code == 200 and "access_token" in accepted.json


def test_totp_enrolment_confirmation_is_throttled_too(client, services):
    person = make_user(client, services, key="new_doc", role="clinician")
    mfa_token = services.tokens.mfa_token(person.id, "clinician", password_checked_at=datetime.now(UTC))
    secret = client.post("/api/v1/auth/mfa/enrol", json={"mfa_token": mfa_token}).json["secret"]
    wrong = _wrong(pyotp.TOTP(secret).now())
    statuses = [client.post("/api/v1/auth/mfa/confirm", json={"mfa_token": mfa_token, "code": wrong}).status_code
                for _ in range(10)]
    assert statuses[:3] == [422, 422, 422] and 429 in statuses[3:]


def test_the_clinician_pages_code_step_shares_the_accounts_delay(app, client, services):
    person, totp = _enrolled_clinician(client, services, key="web_doc")
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=31), tick=False):
        for _ in range(4):  # through the API: three free mistakes and one more
            step = client.post("/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}).json
            client.post("/api/v1/auth/mfa", json={"mfa_token": step["mfa_token"], "code": _wrong(totp.now())})
        page = app.test_client()
        token = services.accounts.start_web_session(services.accounts.account(person.id), stage="mfa")
        page.set_cookie("companion_web", token)
        pending = services.accounts.pending_web_session(token)
        answer = page.post("/clinician/login/code", data={"csrf_token": pending["csrf_token"], "code": totp.now()})
        assert answer.status_code == 429


def test_a_client_repeating_a_dead_refresh_token_is_slowed_down_and_no_one_else_behind_its_address(client, world):
    """Refresh tokens are unguessable (256 bits; the address's rate limit bounds a flood): the backoff is for a
    client looping on its own dead token, and is kept per token and address. A clinic's Wi-Fi or a carrier's
    NAT puts many patients behind one address, and their routine failures (a session past its 30 days, a phone
    signed out) must not hold back the others' refreshes."""
    statuses = [client.post("/api/v1/auth/refresh", json={"refresh_token": "made-up-token"}).status_code
                for _ in range(20)]
    assert statuses[:10] == [401] * 10 and 429 in statuses[10:]
    others = [client.post("/api/v1/auth/refresh", json={"refresh_token": f"expired-session-{i:04d}"}).status_code
              for i in range(20)]
    assert others == [401] * 20
    patient = world["patient_a"]
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": patient.refresh_token}).status_code == 200


def test_guessing_pairing_codes_is_slowed_down(client):
    statuses = [client.post("/api/v1/gateways/pair", json={"code": f"AAAAAA{i:04d}", "name": "guess"}).status_code
                for i in range(12)]
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:]


def test_pairing_guesses_from_one_ipv6_prefix_are_slowed_down_whatever_address_each_comes_from(client):
    # One host with a routed /64 picks a fresh source address for every guess: counted as one network.
    statuses = [client.post("/api/v1/gateways/pair", json={"code": f"AAAAAA{i:04d}", "name": "guess"},
                            environ_base={"REMOTE_ADDR": f"2001:db8:1:2::{i + 1:x}"}).status_code
                for i in range(40)]
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:], statuses
    # Another network is not held back by it.
    other = client.post("/api/v1/gateways/pair", json={"code": "AAAAAAAAAA", "name": "guess"},
                        environ_base={"REMOTE_ADDR": "2001:db8:1:3::1"})
    assert other.status_code == 401


def test_a_flood_of_pairing_guesses_from_many_networks_meets_the_servers_ceiling_and_a_real_code_waits_a_minute(
        client, world):
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        flood = [client.post("/api/v1/gateways/pair", json={"code": f"AAAAAA{i:04d}", "name": "guess"},
                             environ_base={"REMOTE_ADDR": f"2001:db8:{i + 1:x}::1"}) for i in range(70)]
        assert [a.status_code for a in flood[:60]] == [401] * 60  # each network's first guess
        assert {a.status_code for a in flood[60:]} == {429}
        assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in flood[60:])
        # The gateway with the real code, from a network that never guessed, waits too: never longer than a minute.
        real = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall"},
                           environ_base={"REMOTE_ADDR": "203.0.113.7"})
        assert real.status_code == 429 and real.mimetype == "application/problem+json"
        wait = int(real.headers["Retry-After"])
        assert 1 <= wait <= 60
        clock.shift(timedelta(seconds=wait))
        assert client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall"},
                           environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 201


def test_a_household_sharing_an_ipv6_prefix_signs_in_as_before_and_a_rotated_address_stays_known(client, world):
    """Keyed by /64, a household's devices count as one network, as a household behind one IPv4 address always
    did: a housemate's mistakes on their own account do not delay the patient (failures are per account and
    network), and the 60 sign-ins a minute are the household's. The patient's own address, once they signed in,
    stays known when their phone rotates its privacy address within the /64: a guesser elsewhere does not delay
    them (per exact address, the rotated address was a stranger's, and the patient waited)."""
    patient, housemate = world["patient_a"], world["caregiver_unlinked"]

    def login(email, password, address):
        return client.post("/api/v1/auth/login", json={"email": email, "password": password},
                           environ_base={"REMOTE_ADDR": address})

    assert login(patient.email, PASSWORD, "2001:db8:aa:bb::10").status_code == 200
    assert [login(housemate.email, "wrong password", "2001:db8:aa:bb::20").status_code for _ in range(6)][:5] == [
        401] * 5
    assert login(patient.email, PASSWORD, "2001:db8:aa:bb::10").status_code == 200
    for i in range(15):  # someone elsewhere guesses the patient's password: the account-wide delay grows
        login(patient.email, f"guess-{i}", f"198.51.100.{i + 1}")
    assert login(patient.email, PASSWORD, "198.51.100.200").status_code == 429  # a stranger's address waits
    assert login(patient.email, PASSWORD, "2001:db8:aa:bb:1c2d:3e4f:5a6b:7c8d").status_code == 200


def test_a_patient_can_make_a_few_pairing_codes_an_hour_not_endlessly(client, world):
    patient = world["patient_b"]  # one code made already, pairing the world's gateway B
    statuses = [client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).status_code
                for _ in range(12)]
    assert statuses[:9] == [201] * 9 and 429 in statuses[9:]


def test_sign_up_requests_from_one_address_are_limited(client):
    body = {"password": PASSWORD, "display_name": "Someone", "time_zone": "UTC"}
    statuses = [client.post("/api/v1/auth/signup", json={"email": f"new{i}@example.org", **body}).status_code
                for i in range(12)]
    assert statuses[:10] == [202] * 10 and statuses[10:] == [429, 429]


def test_one_mailbox_is_not_flooded_with_sign_up_mail(client, mailbox):
    body = {"email": "flooded@example.org", "password": PASSWORD, "display_name": "Someone", "time_zone": "UTC"}
    statuses = [client.post("/api/v1/auth/signup", json=body).status_code for _ in range(6)]
    assert statuses[:3] == [202] * 3 and 429 in statuses[3:]
    assert len(mailbox.messages("flooded@example.org")) == 3


def test_guessing_reset_codes_is_slowed_down(client, world):
    admin, caregiver = world["admin"], world["caregiver_unlinked"]
    assert client.post(f"/api/v1/admin/users/{caregiver.id}/password-reset", headers=admin.headers).status_code == 201
    statuses = [client.post("/api/v1/auth/password-reset", json={
        "email": caregiver.email, "code": f"BBBB-BBBB-{i:04d}", "new_password": "a new passphrase here"}).status_code
        for i in range(8)]
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:]


def test_guessing_a_gateways_secret_is_slowed_down(client, world):
    gateway = world["gateway_a"]
    statuses = [client.post("/api/v1/auth/gateway-token", json={
        "gateway_id": gateway.id, "gateway_secret": f"guess-{i}"}).status_code for i in range(14)]
    assert statuses[:10] == [401] * 10 and 429 in statuses[10:]


def test_the_throttles_keep_no_digest_of_an_address_or_email_that_anyone_could_recompute(client, world, db):
    """The counters' keys are keyed digests: a plain SHA-256 of an IPv4 address is reversed by trying them all, and
    one of an email address by anyone holding the database (or a backup) and a list of addresses."""
    email = world["patient_a"].email
    for _ in range(2):
        assert client.post("/api/v1/auth/login", json={"email": email, "password": "wrong"},
                           environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 401
    keys = " ".join(e["key"] for e in db.rate_events.find())
    assert "fail:login:" in keys and "try:login:" in keys
    email_digest = hashlib.sha256(email.encode()).hexdigest()
    recomputable = [hashlib.sha256(v.encode()).hexdigest()[:32]
                    for v in ("203.0.113.7", email_digest, f"{email_digest}|203.0.113.7")]
    assert not [d for d in recomputable if d in keys]
