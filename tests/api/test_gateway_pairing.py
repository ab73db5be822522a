"""Pairing a home gateway: a short-lived, single-use code becomes credentials bound to one patient."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import time_machine


def _token(client, paired: dict):
    return client.post("/api/v1/auth/gateway-token", json={"gateway_id": paired["gateway_id"],
                                                           "gateway_secret": paired["gateway_secret"]})


NONCE = "n" * 43  # what a gateway sends with its pairing, and again when it retries


def test_pairing_code_makes_one_gateway_even_when_raced(app, client, world, db):
    """Six requests of one gateway racing with one code (its retries, the same nonce): one gateway is made; each
    answer naming it may carry its own secret, and exactly one of those secrets works (the last given). A 401 is
    one that came before the gateway was."""
    patient = world["patient_a"]
    before = db.gateways.count_documents({"patient_id": patient.id})
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]

    def pair(_):
        return app.test_client().post("/api/v1/gateways/pair", json={"code": code, "name": "hub", "nonce": NONCE})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(pair, range(6)))
    assert {a.status_code for a in answers} <= {201, 401} and any(a.status_code == 201 for a in answers)
    paired = [a.json for a in answers if a.status_code == 201]
    assert len({p["gateway_id"] for p in paired}) == 1
    assert db.gateways.count_documents({"patient_id": patient.id}) == before + 1
    assert sorted(_token(client, p).status_code for p in paired) == [200] + [401] * (len(paired) - 1)


@pytest.mark.parametrize("nonces", [[None] * 6, [f"{i}" * 43 for i in range(6)]], ids=["no-nonce", "each-its-own"])
def test_pairing_code_answers_one_of_several_gateways_racing_with_it(app, client, world, db, nonces):
    """Six gateways racing with one code, each with its own nonce or none: exactly one is answered."""
    patient = world["patient_a"]
    before = db.gateways.count_documents({"patient_id": patient.id})
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]

    def pair(nonce):
        body = {"code": code, "name": "hub"} | ({"nonce": nonce} if nonce else {})
        return app.test_client().post("/api/v1/gateways/pair", json=body)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(pair, nonces))
    assert sorted(a.status_code for a in answers) == [201] + [401] * 5
    assert db.gateways.count_documents({"patient_id": patient.id}) == before + 1
    (paired,) = [a.json for a in answers if a.status_code == 201]
    assert _token(client, paired).status_code == 200


def test_a_pairing_whose_answer_was_lost_is_answered_again_for_the_same_gateway(client, world, db):
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    first = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall", "nonce": NONCE})
    assert first.status_code == 201  # ... and its answer is lost on the way (a timeout, the Wi-Fi dropping)
    again = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall", "nonce": NONCE})
    assert again.status_code == 201, again.json
    assert again.json["gateway_id"] == first.json["gateway_id"]
    assert again.json["gateway_secret"] != first.json["gateway_secret"]
    assert _token(client, first.json).status_code == 401  # the lost secret stops working
    assert _token(client, again.json).status_code == 200
    listed = client.get(f"/api/v1/patients/{patient.id}/gateways", headers=patient.headers).json["items"]
    assert [g["id"] for g in listed].count(first.json["gateway_id"]) == 1
    # Once it has fetched a token, the code is spent for good, even with the nonce.
    assert client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall", "nonce": NONCE}).status_code == 401
    assert _token(client, again.json).status_code == 200
    assert [e["action"] for e in db.audit_events.find(
        {"resource_type": "gateway", "resource_ids": first.json["gateway_id"], "action": {"$in": ["C", "U"]}})
        .sort("seq", 1)] == ["C", "U"]


@pytest.mark.parametrize("replayed_with", [None, "x" * 43], ids=["no-nonce", "another-nonce"])
def test_a_used_code_without_its_nonce_is_refused_and_counted_while_the_gateway_keeps_its_secret(
        client, world, db, replayed_with):
    """Whoever else holds the code (someone who saw it, a guesser) cannot take the new gateway's place before its
    first token: only the nonce the code was claimed with is answered again."""
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    home = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall", "nonce": NONCE},
                       environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert home.status_code == 201
    body = {"code": code, "name": "x"} | ({"nonce": replayed_with} if replayed_with else {})
    failures = {"key": "fail:pairing:*"}  # the server-wide count of failed pairings
    counted = db.rate_events.count_documents(failures)
    other = client.post("/api/v1/gateways/pair", json=body, environ_base={"REMOTE_ADDR": "203.0.113.66"})
    assert other.status_code == 401
    assert db.rate_events.count_documents(failures) == counted + 1  # a failed guess, as for any used code
    assert _token(client, home.json).status_code == 200
    assert db.gateways.find_one({"_id": home.json["gateway_id"]})["name"] == "hall"


def test_a_pairing_sent_without_a_nonce_is_never_answered_again(client, world):
    """An older gateway sends none: its code answers once, as before repeats were made."""
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    first = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall"})
    assert first.status_code == 201
    assert client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall"}).status_code == 401
    # (one with a nonce now cannot adopt it either: the code was claimed without one)
    assert client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall", "nonce": NONCE}).status_code == 401
    assert _token(client, first.json).status_code == 200


def test_a_pairing_nonce_is_checked(client, world, db):
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    for nonce in ["short", "n" * 129, "n" * 42 + "/", 42]:
        assert client.post("/api/v1/gateways/pair", json={"code": code, "nonce": nonce}).status_code == 422
    assert client.post("/api/v1/gateways/pair", json={"code": code, "nonce": NONCE}).status_code == 201
    stored = db.pairing_codes.find_one({"_id": hashlib.sha256(code.encode()).hexdigest()})
    assert stored["nonce_hash"] == hashlib.sha256(NONCE.encode()).hexdigest()  # only its hash


def test_a_used_pairing_code_is_not_answered_again_once_expired(client, world):
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    assert client.post("/api/v1/gateways/pair", json={"code": code}).status_code == 201
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=11)):
        assert client.post("/api/v1/gateways/pair", json={"code": code}).status_code == 401


def test_a_gateway_paired_a_day_ago_that_never_connected_is_revoked_audited_and_listed_so(client, world, services, db):
    patient, connected = world["patient_a"], world["gateway_a"]  # the world's gateway fetched its token
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    orphan = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall"}).json  # answer lost
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    older = client.post("/api/v1/gateways/pair", json={"code": code, "name": "kitchen"}).json
    db.gateways.update_one({"_id": older["gateway_id"]}, {"$unset": {"token_fetched": ""}})  # paired before
    # A day is left to finish setting a gateway up.
    assert services.housekeeping.purge_expired()["gateways_never_connected"] == 0
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=25)):
        assert services.housekeeping.purge_expired()["gateways_never_connected"] == 1
        assert services.housekeeping.purge_expired()["gateways_never_connected"] == 0
    # (back to now: the patient's session is a 15-minute token)
    listed = {g["id"]: g for g in client.get(f"/api/v1/patients/{patient.id}/gateways",
                                             headers=patient.headers).json["items"]}
    assert (listed[orphan["gateway_id"]]["revoked"], listed[orphan["gateway_id"]]["revoked_reason"]) == (
        True, "never_connected")
    assert listed[orphan["gateway_id"]]["revoked_at"] is not None
    assert not listed[connected.id]["revoked"] and not listed[older["gateway_id"]]["revoked"]
    assert _token(client, orphan).status_code == 401
    (event,) = db.audit_events.find({"resource_type": "gateway", "action": "D", "patient_ids": patient.id})
    assert (event["actor_role"], event["resource_ids"], event["outcome"]) == (
        "system", [orphan["gateway_id"]], "success")
    history = client.get(f"/api/v1/patients/{patient.id}/access-log", headers=patient.headers).json["items"]
    assert any(e["actor_role"] == "system" and e["action"] == "D" for e in history)


def test_pairing_code_expires_after_ten_minutes(client, world):
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=11)):
        assert client.post("/api/v1/gateways/pair", json={"code": code}).status_code == 401


def test_gateway_sees_only_its_patients_units(client, world):
    listed = client.get("/api/v1/gateway/devices", headers=world["gateway_a"].headers).json["devices"]
    assert [d["serial"] for d in listed] == [world.a_device]


def test_a_unit_bound_to_one_patient_cannot_be_bound_to_another(client, world):
    response = client.post(f"/api/v1/patients/{world['patient_b'].id}/devices", json={"serial": world.a_device},
                           headers=world["patient_b"].headers)
    assert response.status_code == 409


def test_revoked_gateway_token_stops_working(client, world, services):
    from companion.store.relationships import Gateways

    Gateways(services.db).revoke(world["gateway_a"].id)
    assert client.get("/api/v1/gateway/devices", headers=world["gateway_a"].headers).status_code == 401


def test_a_used_code_replayed_from_another_network_does_not_take_the_paired_gateway_over(client, world, db):
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    home = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall"},
                       environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert home.status_code == 201
    other = client.post("/api/v1/gateways/pair", json={"code": code, "name": "x"},
                        environ_base={"REMOTE_ADDR": "203.0.113.66"})
    assert (other.status_code == 201, _token(client, home.json).status_code) == (False, 200)
