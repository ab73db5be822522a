"""Someone who knows only a person's email cannot keep them out (docs/access.md §3: never a lock).

The account-wide delays ran from the last failure, so an outsider landing one wrong guess as each delay ended
(polling for free in between) renewed it for ever: the owner who waited as Retry-After said was refused every
time, at sign-in and with an admin's reset code. Now a device that signed in before presents its device key and
skips the account-wide delay at sign-in, and codes have no account-wide delay (their 60 bits bound guessing).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from tests.support.world import PASSWORD

OUTSIDERS = [f"198.51.100.{i}" for i in range(1, 41)]
HOME, NEW_PLACE = "192.0.2.10", "203.0.113.77"


def _login(client, email, password, address, device_key=None):
    body = {"email": email, "password": password} | ({"device_key": device_key} if device_key else {})
    return client.post("/api/v1/auth/login", json=body, environ_base={"REMOTE_ADDR": address})


def _outsider_guesses(client, email, count=30):
    """Wrong passwords from many networks, each a few times (its own delay per address is no obstacle)."""
    statuses = [_login(client, email, f"guess-{i}", OUTSIDERS[i % len(OUTSIDERS)]).status_code for i in range(count)]
    assert 429 in statuses, "the guessing must build up the account-wide delay"


@pytest.fixture
def clock():
    with time_machine.travel(datetime.now(UTC), tick=False) as traveller:
        yield traveller


def test_the_owner_with_a_device_key_signs_in_at_once_while_outsiders_guess_from_many_addresses(client, world, clock):
    patient = world["patient_a"]
    first = _login(client, patient.email, PASSWORD, HOME)
    assert first.status_code == 200
    key = first.json["device_key"]
    _outsider_guesses(client, patient.email)
    # Elsewhere (a train's Wi-Fi, a new mobile address), with the phone's key: at once, and a fresh key.
    signed_in = _login(client, patient.email, PASSWORD, NEW_PLACE, key)
    assert signed_in.status_code == 200 and "access_token" in signed_in.json
    assert signed_in.json["device_key"] != key
    # The outsider goes on guessing, landing one as each wait ends: the key still lets the owner in each time.
    # (Each time from an address it never signed in from: a known address would skip the delay anyway.)
    for n in range(5):
        clock.shift(timedelta(seconds=61))
        _outsider_guesses(client, patient.email, count=3)
        assert _login(client, patient.email, PASSWORD, f"203.0.113.{100 + n}").status_code == 429
        assert _login(client, patient.email, PASSWORD, f"203.0.113.{100 + n}", key).status_code == 200


def test_an_outsider_on_the_owners_network_cannot_keep_the_owner_with_a_device_key_out(client, world, clock):
    """A housemate on the Wi-Fi, or anyone behind the same carrier NAT: the delay per account and network (up to
    15 minutes, from the last failure) was not skipped by the owner's device key, so the outsider renewed it as
    each wait ended and the owner's phone, with its key, was refused at home."""
    patient = world["patient_a"]
    key = _login(client, patient.email, PASSWORD, HOME).json["device_key"]
    for i in range(5):
        assert _login(client, patient.email, f"guess-{i}", HOME).status_code == 401
    assert _login(client, patient.email, PASSWORD, HOME).status_code == 429  # without the key: a stranger
    assert _login(client, patient.email, PASSWORD, HOME, key).status_code == 200
    # The outsider goes on from there, building the delay up again each time: the key still lets the owner in.
    for n in range(3):
        clock.shift(timedelta(minutes=1))
        assert [_login(client, patient.email, f"again-{n}-{i}", HOME).status_code for i in range(6)][-1] == 429
        assert _login(client, patient.email, PASSWORD, HOME).status_code == 429
        assert _login(client, patient.email, PASSWORD, HOME, key).status_code == 200


def test_the_owner_without_a_key_waits_as_told_a_minute_at_most_each_time(client, world, clock):
    """A brand-new device at a new address cannot be told from the guesser (the documented limit): each
    Retry-After is at most a minute, and once the guessing stops, waiting as told is enough."""
    patient = world["patient_a"]
    _outsider_guesses(client, patient.email)
    refused = _login(client, patient.email, PASSWORD, NEW_PLACE)
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 60
    clock.shift(timedelta(seconds=wait))
    assert _login(client, patient.email, PASSWORD, NEW_PLACE).status_code == 200


@pytest.mark.parametrize("which", ["garbage", "tampered", "another account's"])
def test_a_wrong_or_foreign_device_key_counts_as_none_never_an_error(client, world, clock, which):
    patient, other = world["patient_a"], world["patient_b"]
    own = _login(client, patient.email, PASSWORD, HOME).json["device_key"]
    presented = {"garbage": "not a key at all",
                 "tampered": own[:-4] + ("AAAA" if not own.endswith("AAAA") else "BBBB"),
                 "another account's": _login(client, other.email, PASSWORD, HOME).json["device_key"]}[which]
    _outsider_guesses(client, patient.email)
    assert _login(client, patient.email, PASSWORD, NEW_PLACE, presented).status_code == 429
    assert _login(client, patient.email, "a wrong password", NEW_PLACE + "0", presented).status_code in (401, 429)


def test_a_stolen_device_key_is_worth_ten_guesses_an_hour_past_the_delay(client, world, clock):
    patient = world["patient_a"]
    key = _login(client, patient.email, PASSWORD, HOME).json["device_key"]
    _outsider_guesses(client, patient.email)
    # The thief with the key, from as many networks as it likes (each network's own delay is no obstacle).
    statuses = [_login(client, patient.email, f"thief-{i}", f"100.64.0.{i + 1}", key).status_code for i in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    # The key is now a device like any other: its owner waits as a new device does, and a sign-in without the
    # key, waiting as told, forgives nothing of the key's failures.
    assert _login(client, patient.email, PASSWORD, NEW_PLACE, key).status_code == 429


@pytest.mark.parametrize("how", ["changed", "reset"])
def test_a_password_change_or_reset_ends_every_device_key_given_before(client, world, clock, how):
    patient, admin = world["patient_a"], world["admin"]
    key = _login(client, patient.email, PASSWORD, HOME).json["device_key"]
    new_password = "an entirely new passphrase"
    clock.shift(timedelta(seconds=1))
    if how == "changed":
        changed = client.post("/api/v1/auth/password", headers=patient.headers,
                              json={"current_password": PASSWORD, "new_password": new_password},
                              environ_base={"REMOTE_ADDR": HOME})
        assert changed.status_code == 200
    else:
        code = client.post(f"/api/v1/admin/users/{patient.id}/password-reset", headers=admin.headers).json["code"]
        assert client.post("/api/v1/auth/password-reset", json={"email": patient.email, "code": code,
                                                                "new_password": new_password}).status_code == 204
    clock.shift(timedelta(seconds=1))
    _outsider_guesses(client, patient.email)
    assert _login(client, patient.email, new_password, NEW_PLACE, key).status_code == 429


def test_the_device_that_changes_the_password_is_given_a_fresh_device_key(client, world, clock):
    """The change ends every key given before, the changing phone's own too: it was answered none, and its next
    sign-in waited as a stranger's while someone guessed (often why the password was changed)."""
    patient = world["patient_a"]
    assert _login(client, patient.email, PASSWORD, HOME).status_code == 200
    clock.shift(timedelta(seconds=1))
    new_password = "an entirely new passphrase"
    changed = client.post("/api/v1/auth/password", headers=patient.headers,
                          json={"current_password": PASSWORD, "new_password": new_password},
                          environ_base={"REMOTE_ADDR": HOME})
    assert changed.status_code == 200
    assert "device_key" in changed.json, sorted(changed.json)
    key = changed.json["device_key"]
    _outsider_guesses(client, patient.email)
    assert _login(client, patient.email, new_password, NEW_PLACE).status_code == 429
    signed_in = _login(client, patient.email, new_password, NEW_PLACE, key)
    assert signed_in.status_code == 200 and signed_in.json["device_key"] != key


def test_the_clinician_pages_keep_the_device_key_in_a_long_lived_http_only_cookie(app, client, world, clock):
    clinician = world["clinician_team"]
    page = app.test_client()

    def sign_in(address):
        page.get("/clinician/login", environ_base={"REMOTE_ADDR": address})
        token = page.get_cookie("companion_login_csrf", path="/clinician/").value
        return page.post("/clinician/login", data={"email": clinician.email, "password": PASSWORD,
                                                   "csrf_token": token}, environ_base={"REMOTE_ADDR": address})

    signed_in = sign_in(HOME)
    assert signed_in.status_code == 303
    cookie = next(c for c in signed_in.headers.getlist("Set-Cookie") if c.startswith("companion_device="))
    assert "HttpOnly" in cookie and "Max-Age=34560000" in cookie and "SameSite=Strict" in cookie
    _outsider_guesses(client, clinician.email)
    assert sign_in(NEW_PLACE).status_code == 303
    page.delete_cookie("companion_device")
    assert sign_in("203.0.113.99").status_code == 429


def test_the_owner_uses_an_admins_reset_code_at_once_while_outsiders_guess_codes(client, world, clock):
    """26 wrong codes an hour from anywhere kept the owner's right code refused for good (the per-account delay ran
    from the last failure). Codes are 12 characters (60 bits) now and have no account-wide delay."""
    caregiver, admin = world["caregiver_unlinked"], world["admin"]
    issued = client.post(f"/api/v1/admin/users/{caregiver.id}/password-reset", headers=admin.headers)
    code = issued.json["code"]
    for round_ in range(3):
        guesses = [client.post("/api/v1/auth/password-reset", json={
            "email": caregiver.email, "code": f"BBBB-BBBB-{round_}{i:03d}", "new_password": "the outsider's one"},
            environ_base={"REMOTE_ADDR": address}).status_code for i, address in enumerate(OUTSIDERS)]
        assert set(guesses) == {401}
        clock.shift(timedelta(minutes=5))
    used = client.post("/api/v1/auth/password-reset", json={"email": caregiver.email, "code": code.lower(),
                                                            "new_password": "the owner's new one"},
                       environ_base={"REMOTE_ADDR": NEW_PLACE})
    assert used.status_code == 204
    assert _login(client, caregiver.email, "the owner's new one", NEW_PLACE).status_code == 200


def _change_password(client, who, current, address, new="an entirely new passphrase"):
    return client.post("/api/v1/auth/password", headers=who.headers,
                       json={"current_password": current, "new_password": new}, environ_base={"REMOTE_ADDR": address})


def test_the_owner_changes_their_password_from_a_new_address_at_once_while_outsiders_guess(client, world, clock):
    """The step-up (the current password, asked again) shared sign-in's account-wide delay and took no device key:
    someone guessing elsewhere made the owner's password change from a new address wait a minute at a time. The
    caller's live session now stands in for a device key."""
    patient = world["patient_a"]
    _outsider_guesses(client, patient.email)
    assert _login(client, patient.email, PASSWORD, NEW_PLACE).status_code == 429  # the delay is on
    for _ in range(3):  # the outsider goes on, landing a guess as each wait ends
        clock.shift(timedelta(seconds=61))
        _outsider_guesses(client, patient.email, count=3)
    changed = _change_password(client, patient, PASSWORD, NEW_PLACE)
    assert changed.status_code == 200 and "access_token" in changed.json


def test_a_stolen_session_is_worth_ten_password_guesses_an_hour_past_the_delay(client, world, clock):
    """The session skips the delays per account and per account and network only while it has fewer than 10
    failures in the last hour, as a device key does; the per-address guard stays."""
    patient = world["patient_b"]
    _outsider_guesses(client, patient.email)
    statuses = [_change_password(client, patient, f"thief-{i}", f"100.64.0.{i + 1}").status_code for i in range(12)]
    assert statuses[:10] == [403] * 10 and statuses[10:] == [429, 429]
    # From one address too: the session's own limit, not the delay per account and network, bounds it.
    other = world["caregiver_unlinked"]
    one_place = [_change_password(client, other, f"guess-{i}", NEW_PLACE).status_code for i in range(12)]
    assert one_place[:10] == [403] * 10 and one_place[10:] == [429, 429]


OWNERS_NEW = "the owner's new one"


def _reset(client, email, code, address, chosen=OWNERS_NEW):
    return client.post("/api/v1/auth/password-reset", json={"email": email, "code": code, "new_password": chosen},
                       environ_base={"REMOTE_ADDR": address})


def _old_code(services, account_id, code="ABCD2345"):
    """A reset code of 8 characters, as issued before the codes grew to 12 (alive up to 24 hours after)."""
    from companion.services.accounts import RESET
    accounts, at = services.accounts, services.clock()
    accounts.codes.issue(RESET, account_id, accounts._code_hash(code), at=at, expires_at=at + timedelta(hours=24))
    return code


def test_a_reset_code_of_the_old_eight_characters_is_still_bounded_per_account(client, world, services, clock):
    """A code issued before the deploy (8 characters, 40 bits) still works for its 24 hours, and had lost the
    account-wide delay that bounded guessing at it: 200 guesses from 40 networks, none refused. A guess shorter
    than 12 characters meets the old step again; the owner of an old code may be kept waiting while someone
    guesses (only during the transition), and an admin's new code is not."""
    caregiver, admin = world["caregiver_unlinked"], world["admin"]
    _old_code(services, caregiver.id)
    statuses = []
    for round_ in range(5):
        statuses += [_reset(client, caregiver.email, f"ZZZ{round_}{i:04d}"[:8], address, "the outsider's one").status_code
                     for i, address in enumerate(OUTSIDERS)]
        clock.shift(timedelta(minutes=1))
    assert 429 in statuses, f"{len(statuses)} guesses at a 40-bit code, none held back"
    assert statuses.count(401) <= 26
    # The owner of the old code, once the guessing stops, waits as told (at most 5 minutes) and uses it.
    refused = _reset(client, caregiver.email, "abcd-2345", NEW_PLACE)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) <= 300
    clock.shift(timedelta(seconds=int(refused.headers["Retry-After"])))
    assert _reset(client, caregiver.email, "abcd-2345", NEW_PLACE).status_code == 204
    # Guesses at old codes delay nobody with a code of 12 characters: an admin's new one works at once.
    _old_code(services, caregiver.id)
    for round_ in range(3):
        [_reset(client, caregiver.email, f"YYY{round_}{i:04d}"[:8], address) for i, address in enumerate(OUTSIDERS)]
        clock.shift(timedelta(minutes=1))
    code = client.post(f"/api/v1/admin/users/{caregiver.id}/password-reset", headers=admin.headers).json["code"]
    assert _reset(client, caregiver.email, code, NEW_PLACE, "the owner's newer one").status_code == 204


def test_an_old_code_nobody_guesses_at_works_at_once(client, world, services, clock):
    caregiver = world["caregiver_unlinked"]
    _old_code(services, caregiver.id, "QRST6789")
    assert _reset(client, caregiver.email, "wrong-one", NEW_PLACE).status_code == 401  # a mistype costs nothing
    assert _reset(client, caregiver.email, "qrst 6789", NEW_PLACE).status_code == 204
